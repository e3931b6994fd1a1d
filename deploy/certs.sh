#!/usr/bin/env bash
# The development CA and one certificate per component and example service
# under deploy/certs (git-ignored), made offline on first run and reused
# after; `deploy/certs.sh --renew` makes new component certificates from the
# same CA (the processes pick them up at their next connection);
# `deploy/certs.sh --service my-api` adds one for your own service.
# Usage: deploy/certs.sh [--renew] [--service NAME]...
#   (SWITCHYARD_CERTS=DIR for another place)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${SWITCHYARD_CERTS:-deploy/certs}
bin=target/x86_64-unknown-linux-gnu/release/switchyard-certs
# deploy/build.sh keeps it current; built here only if missing (the
# end-to-end tests run this while cargo test holds the build directory).
[ -x "$bin" ] || cargo build --release --locked -q -p switchyard-tls --features dev-ca --bin switchyard-certs
"$bin" "$dir" "$@"
# The images run as uid 10001, which must read its key through the
# bind mount; the CA's key and the operator's stay with whoever ran this.
keys=()
for name in registry balancer gateway hello echo etcd; do keys+=("$dir/$name-key.pem"); done
if [ "$(id -u)" = 0 ]; then
  chown 10001:10001 "${keys[@]}"
else
  # Not root: no chown. These are development keys, made for this stack.
  chmod 0644 "${keys[@]}"
fi
