#!/usr/bin/env bash
# Builds everything, replaces any running stack, starts it, and waits until
# every container is healthy. Usage: deploy/up.sh [ha]
#   (no argument)  the single-node stack, docker-compose.yml
#   ha             highly available: 3 etcd, 3 registry replicas (docker-compose.ha.yml)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-compose >/dev/null || { echo "up.sh: docker-compose is not installed" >&2; exit 1; }
case "${1:-}" in
  "") file=docker-compose.yml ;;
  ha) file=docker-compose.ha.yml ;;
  *) echo "usage: deploy/up.sh [ha]" >&2; exit 64 ;;
esac
compose() { docker-compose -p switchyard -f "$file" "$@"; }

deploy/build.sh
# mTLS between the components: the development CA and certificates under
# deploy/certs, made on the first run and reused after.
deploy/certs.sh
# Never recreate containers in place (compose 1.29 breaks on it with new engines).
compose down --remove-orphans
compose up -d

deadline=$((SECONDS + 120))
while :; do
  ids=$(compose ps -q)
  unhealthy=0
  for id in $ids; do
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    [ "$state" = healthy ] || [ "$state" = running ] || unhealthy=$((unhealthy + 1))
  done
  [ "$unhealthy" -eq 0 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    compose ps
    echo "up.sh: not healthy after 120 s" >&2
    exit 1
  fi
  sleep 1
done
compose ps
# Where this stack listens and who the operator is, for the `switchyard`
# CLI run from the repository (it reads deploy/stack.env when no flag or
# SWITCHYARD_* variable says otherwise).
certs=$(cd "${SWITCHYARD_CERTS:-deploy/certs}" && pwd)
if [ "$file" = docker-compose.ha.yml ]; then
  registries="https://127.0.0.1:${SWITCHYARD_REGISTRY1_GRPC_PORT:-7000},https://127.0.0.1:${SWITCHYARD_REGISTRY2_GRPC_PORT:-7100},https://127.0.0.1:${SWITCHYARD_REGISTRY3_GRPC_PORT:-7200}"
else
  registries=https://127.0.0.1:${SWITCHYARD_REGISTRY_GRPC_PORT:-7000}
fi
cat > deploy/stack.env <<ENV
# Written by deploy/up.sh for the switchyard CLI: the stack it started.
SWITCHYARD_REGISTRY=$registries
SWITCHYARD_GATEWAY_ADMIN=http://127.0.0.1:${SWITCHYARD_GATEWAY_ADMIN_PORT:-8081}
SWITCHYARD_MTLS_CA=$certs/ca.pem
SWITCHYARD_MTLS_CERT=$certs/operator.pem
SWITCHYARD_MTLS_KEY=$certs/operator-key.pem
ENV
ui_port=${SWITCHYARD_REGISTRY_HTTP_PORT:-7001}
[ "$file" = docker-compose.ha.yml ] && ui_port=${SWITCHYARD_REGISTRY1_HTTP_PORT:-7001}
if [ "$file" = docker-compose.ha.yml ]; then
  registry="  registry gRPC      localhost:7000, localhost:7100, localhost:7200 (replicas of one registry)
  registry HTTP/JSON http://localhost:7001/api/services (and :7101, :7201)"
else
  registry="  registry gRPC      localhost:7000
  registry HTTP/JSON http://localhost:7001/api/services"
fi
cat <<MSG

Switchyard is up.
  dashboard          http://localhost:$ui_port/ui/  (drain and weight: operator token dev-operator-token)
                     http://localhost:${SWITCHYARD_GATEWAY_ADMIN_PORT:-8081}/ui/  (the gateway's endpoints and their figures)
  gateway            http://localhost:8080       (admin http://localhost:8081/api/services)
$registry
Try:
  target/x86_64-unknown-linux-gnu/release/switchyard services
  curl -s http://localhost:8080/hello/world
  target/x86_64-unknown-linux-gnu/release/echo-via-gateway http://localhost:8080 10
  curl -s http://localhost:8081/api/services
MSG
