#!/usr/bin/env bash
# Builds static release binaries and one FROM-scratch image per binary,
# offline: nothing is pulled. Usage: deploy/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export DOCKER_BUILDKIT=0 # the legacy builder: buildx is not installed here
# Debian's etcd: the etcd store's tests run real etcd processes (issue 18).
# The HA stack's etcd image is made of the same binaries.
{ command -v etcd && command -v etcdctl; } >/dev/null \
  || { apt-get update -qq && apt-get install -y -qq etcd-server etcd-client >/dev/null; }
bins=(registry balancer gateway hello echo)
cargo build --release --locked $(printf -- "--bin %s " "${bins[@]}") --bin echo-client --bin echo-via-gateway --bin switchyard
# The development CA's tool for deploy/certs.sh (a feature of its own, so
# the servers do not carry certificate making).
cargo build --release --locked -p switchyard-tls --features dev-ca --bin switchyard-certs

out=target/x86_64-unknown-linux-gnu/release
ctx=target/docker-context
rm -rf "$ctx" && mkdir -p "$ctx/bin"
cp -r deploy/rootfs "$ctx/rootfs"
for bin in "${bins[@]}"; do
  cp "$out/$bin" "$ctx/bin/$bin"
  if ! file "$ctx/bin/$bin" 2>/dev/null | grep -q 'static'; then
    ldd "$ctx/bin/$bin" 2>&1 | grep -q 'not a dynamic\|statically' \
      || { echo "build.sh: $bin is not statically linked" >&2; exit 1; }
  fi
  # The legacy builder warns that it is deprecated on every build: keep its
  # output for failures only.
  if ! docker build --quiet -f deploy/Dockerfile --build-arg BIN="$bin" -t "switchyard/$bin:dev" "$ctx" >"$ctx/build.log" 2>&1; then
    cat "$ctx/build.log" >&2
    exit 1
  fi
  size=$(docker image inspect "switchyard/$bin:dev" --format '{{.Size}}')
  echo "built switchyard/$bin:dev ($((size / 1024 / 1024)) MB)"
done

# etcd for `deploy/up.sh ha`: Debian's binaries and what `ldd` lists.
ectx=target/docker-context-etcd
rm -rf "$ectx" && mkdir -p "$ectx/root/usr/bin" "$ectx/data"
cp -r deploy/rootfs/etc "$ectx/root/etc"
for bin in /usr/bin/etcd /usr/bin/etcdctl; do
  cp "$bin" "$ectx/root/usr/bin/"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    cp -L --parents "$lib" "$ectx/root/"
  done
done
if ! docker build --quiet -f deploy/etcd.Dockerfile -t switchyard/etcd:dev "$ectx" >"$ectx/build.log" 2>&1; then
  cat "$ectx/build.log" >&2
  exit 1
fi
size=$(docker image inspect switchyard/etcd:dev --format '{{.Size}}')
echo "built switchyard/etcd:dev ($((size / 1024 / 1024)) MB)"

