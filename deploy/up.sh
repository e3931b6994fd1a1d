#!/usr/bin/env bash
# Builds everything, replaces any running stack, starts it, and waits until
# every container is healthy. Usage: deploy/up.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker-compose >/dev/null || { echo "up.sh: docker-compose is not installed" >&2; exit 1; }

deploy/build.sh
# Never recreate containers in place (compose 1.29 breaks on it with new engines).
docker-compose -p switchyard down --remove-orphans
docker-compose -p switchyard up -d

deadline=$((SECONDS + 120))
while :; do
  ids=$(docker-compose -p switchyard ps -q)
  unhealthy=0
  for id in $ids; do
    state=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
    [ "$state" = healthy ] || [ "$state" = running ] || unhealthy=$((unhealthy + 1))
  done
  [ "$unhealthy" -eq 0 ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    docker-compose -p switchyard ps
    echo "up.sh: not healthy after 120 s" >&2
    exit 1
  fi
  sleep 1
done
docker-compose -p switchyard ps
cat <<'MSG'

Switchyard is up.
  gateway            http://localhost:8080       (admin http://localhost:8081/api/services)
  registry gRPC      localhost:7000
  registry HTTP/JSON http://localhost:7001/api/services
Try:
  curl -s http://localhost:8080/hello/world
  target/x86_64-unknown-linux-gnu/release/echo-via-gateway http://localhost:8080 10
  curl -s http://localhost:8081/api/services
MSG
