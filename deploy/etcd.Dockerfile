# etcd for the highly available stack (issue 18): FROM scratch with Debian's
# etcd and etcdctl and the only two libraries they link (libc and the
# loader), copied by deploy/build.sh from this machine; nothing is pulled.
# etcd runs as the same numeric non-root user as the other images, in a
# directory it owns (it creates its data directory inside, mode 0700).
FROM scratch
COPY root/ /
COPY --chown=10001:10001 data/ /var/lib/etcd/
USER 10001:10001
WORKDIR /var/lib/etcd
ENTRYPOINT ["/usr/bin/etcd"]
