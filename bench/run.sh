#!/usr/bin/env bash
# Side-by-side benchmarks of the gateway against nginx, HAProxy and direct
# calls, balancing quality, and failover; writes bench/RESULTS.md.
#
#   bench/run.sh            everything
#   bench/run.sh proxies    one scenario: proxies | balancing | failover | registry
#
# Each proxy is pinned to CPU 1 with one worker (nginx worker_processes 1,
# HAProxy nbthread 1, gateway --worker-threads 1); the load generator and the
# backends are pinned to CPU 0. Logging is off everywhere. Medians of RUNS runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
RUNS=${RUNS:-3}
SECS=${SECS:-10}
mkdir -p "$OUT"
only=${1:-all}

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need haproxy haproxy
need taskset util-linux
need python3 python3
need etcd etcd-server

cargo build --release --locked -p switchyard-bench --bin bench-backend --bin bench-load --bin bench-registry >/dev/null
cargo build --release --locked --bin registry --bin gateway >/dev/null
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# CPU time (user+system, in clock ticks) of a process and its children.
cpu_ticks() {
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    if [ -r "/proc/$p/stat" ]; then
      total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    fi
  done
  echo "$total"
}
TICKS=$(getconf CLK_TCK)

load() { taskset -c 0 "$BIN/bench-load" "$@"; }
json() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

start_backends() { # delay-ms for the third backend
  local slow=${1:-0}
  for i in 1 2 3; do
    local d=0; [ "$i" = 3 ] && d=$slow
    taskset -c 0 "$BIN/bench-backend" "127.0.0.1:900$i" 1024 "$d" "b$i" & pids+=($!)
  done
  sleep 0.3
}

start_registry() { # policy
  "$BIN/registry" --grpc-listen 127.0.0.1:17100 --http-listen 127.0.0.1:17101 --warm-up 0s >/dev/null 2>&1 & pids+=($!)
  sleep 0.5
  for i in 1 2 3; do
    curl -s -d "{\"service\":\"bench\",\"instance_id\":\"b$i\",\"address\":\"127.0.0.1:900$i\",\"protocol\":\"http1\",\"ttl_seconds\":300,\"metadata\":{\"lb.policy\":\"$1\"}}" \
      http://127.0.0.1:17101/api/register >/dev/null
  done
}

start_gateway() {
  cat > "$OUT/routes.toml" <<EOF
[[route]]
name = "bench"
service = "bench"
path_prefix = "/"
EOF
  taskset -c 1 "$BIN/gateway" --http-listen 127.0.0.1:8380 --admin-listen 127.0.0.1:8381 --routes "$OUT/routes.toml" \
    --registry http://127.0.0.1:17100 --register-self false --access-log false --worker-threads 1 >/dev/null 2>&1 & pids+=($!)
  GATEWAY_PID=$!
  for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8381/readyz >/dev/null && break; sleep 0.1; done
}

start_nginx() {
  mkdir -p "$OUT/nginx"
  cat > "$OUT/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path $OUT/nginx; proxy_temp_path $OUT/nginx; fastcgi_temp_path $OUT/nginx; uwsgi_temp_path $OUT/nginx; scgi_temp_path $OUT/nginx;
  upstream b { server 127.0.0.1:9001 max_fails=1 fail_timeout=10s; server 127.0.0.1:9002 max_fails=1 fail_timeout=10s; server 127.0.0.1:9003 max_fails=1 fail_timeout=10s; keepalive 128; }
  server {
    listen 127.0.0.1:8180;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_next_upstream error timeout; }
  }
}
EOF
  taskset -c 1 nginx -c "$OUT/nginx/nginx.conf" & pids+=($!)
  NGINX_PID=$!
  sleep 0.5
}

start_haproxy() {
  cat > "$OUT/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 5000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:8280
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:9001
  server s2 127.0.0.1:9002
  server s3 127.0.0.1:9003
EOF
  taskset -c 1 haproxy -db -f "$OUT/haproxy.cfg" & pids+=($!)
  HAPROXY_PID=$!
  sleep 0.5
}

# Runs `load` against URL for PID; prints "rps cpu_us_per_request p50 p99 p999".
measure() {
  local url=$1 pid=$2 rate=$3 before after result
  before=$(cpu_ticks "$pid")
  result=$(load "$url" "$rate" "$SECS" 64)
  after=$(cpu_ticks "$pid")
  python3 - "$result" "$before" "$after" "$TICKS" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); b, a, t = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu_us = (a - b) / t * 1e6 / max(r["ok"], 1)
print(f'{r["rps"]:.0f} {cpu_us:.2f} {r["p50_us"]} {r["p99_us"]} {r["p999_us"]} {r["failed"]}')
PY
}

proxies() {
  start_backends 0
  start_registry peak_ewma
  start_gateway
  start_nginx
  start_haproxy
  declare -A url=([direct]=http://127.0.0.1:9001/ [nginx]=http://127.0.0.1:8180/ [haproxy]=http://127.0.0.1:8280/ [gateway]=http://127.0.0.1:8380/)
  declare -A pid=([direct]=$$ [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID)
  : > "$OUT/proxies.txt"
  for name in direct nginx haproxy gateway; do load "${url[$name]}" 0 2 64 >/dev/null; done # warm up
  declare -A max
  for name in nginx haproxy gateway direct; do
    vals=()
    for _ in $(seq 1 "$RUNS"); do vals+=("$(measure "${url[$name]}" "${pid[$name]}" 0 | awk '{print $1}')"); done
    max[$name]=$(median "${vals[@]}")
    echo "max $name ${max[$name]}" | tee -a "$OUT/proxies.txt"
  done
  slower=$(python3 -c "print(int(min(${max[nginx]}, ${max[gateway]}, ${max[haproxy]}) / 2))")
  echo "fixed rate $slower" | tee -a "$OUT/proxies.txt"
  for name in nginx haproxy gateway direct; do
    cpus=(); p50=(); p99=(); p999=()
    for _ in $(seq 1 "$RUNS"); do
      read -r _ cpu a b c _ < <(measure "${url[$name]}" "${pid[$name]}" "$slower")
      cpus+=("$cpu"); p50+=("$a"); p99+=("$b"); p999+=("$c")
    done
    echo "fixed $name cpu_us $(median "${cpus[@]}") p50 $(median "${p50[@]}") p99 $(median "${p99[@]}") p999 $(median "${p999[@]}")" | tee -a "$OUT/proxies.txt"
  done
  cleanup; pids=()
}

balancing() {
  : > "$OUT/balancing.txt"
  for policy in round_robin least_request peak_ewma; do
    start_backends 20   # b3 sleeps 20 ms: ten times slower than the ~2 ms of the others under load
    start_registry "$policy"
    start_gateway
    load http://127.0.0.1:8380/ 200 2 64 >/dev/null
    result=$(load http://127.0.0.1:8380/ 400 "$SECS" 64)
    share=$(echo "$result" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); b=r['by_instance']; print(round(100*b.get('b3',0)/max(sum(b.values()),1),2))")
    echo "$policy slow_share $share $(echo "$result" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('p50', r['p50_us'], 'p99', r['p99_us'], 'p999', r['p999_us'], 'failed', r['failed'])")" | tee -a "$OUT/balancing.txt"
    cleanup; pids=()
  done
}

failover() {
  : > "$OUT/failover.txt"
  start_backends 0
  start_registry peak_ewma
  start_gateway
  start_nginx
  for name in gateway nginx; do
    port=8380; [ "$name" = nginx ] && port=8180
    load "http://127.0.0.1:$port/" 1000 "$SECS" 64 > "$OUT/failover-$name.json" &
    lp=$!
    sleep 3
    victim=$(pgrep -f "bench-backend 127.0.0.1:9002" | head -1)
    kill -9 "$victim"
    wait "$lp"
    echo "$name killed-one-of-three $(python3 -c "import json; r=json.load(open('$OUT/failover-$name.json')); print('failed', r['failed'], 'ok', r['ok'], 'p999', r['p999_us'])")" | tee -a "$OUT/failover.txt"
    taskset -c 0 "$BIN/bench-backend" 127.0.0.1:9002 1024 0 b2 & pids+=($!)
    sleep 1
  done
  cleanup; pids=()
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# The registry and etcd, each alone on CPU 1 (tokio's worker count and Go's
# GOMAXPROCS both follow the affinity), the client on CPU 0. Debian's etcd
# (3.4) has no --unsafe-no-fsync; its data directory on tmpfs (/dev/shm)
# makes fsync return at once, which is the same non-durable setting. The
# durable etcd writes to $OUT on the machine's disk.
start_store() { # switchyard | etcd-nofsync | etcd-fsync
  case $1 in
    switchyard)
      taskset -c 1 "$BIN/registry" --grpc-listen 127.0.0.1:17200 --http-listen 127.0.0.1:17201 --warm-up 0s \
        >/dev/null 2>&1 & pids+=($!)
      STORE_PID=$!; STORE_URL=http://127.0.0.1:17200; STORE_KIND=switchyard ;;
    etcd-*)
      local dir=/dev/shm/switchyard-bench-etcd
      [ "$1" = etcd-fsync ] && dir=$OUT/etcd-data
      rm -rf "$dir"
      taskset -c 1 etcd --data-dir "$dir" --listen-client-urls http://127.0.0.1:2379 \
        --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
        --log-level error >/dev/null 2>&1 & pids+=($!)
      STORE_PID=$!; STORE_URL=http://127.0.0.1:2379; STORE_KIND=etcd ;;
  esac
  for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/"${STORE_URL##*:}") 2>/dev/null && break; sleep 0.1; done
  sleep 0.5
}

registry() {
  : > "$OUT/registry.txt"
  for store in switchyard etcd-nofsync etcd-fsync; do
    for run in $(seq 1 "$RUNS"); do
      start_store "$store"
      reg=$(taskset -c 0 "$BIN/bench-registry" "$STORE_KIND" "$STORE_URL" register "${REG_N:-20000}" 64 | json per_sec)
      renew=$(taskset -c 0 "$BIN/bench-registry" "$STORE_KIND" "$STORE_URL" renew 1000 "${RENEW_ROUNDS:-300}" | json per_sec)
      prop=$(taskset -c 0 "$BIN/bench-registry" "$STORE_KIND" "$STORE_URL" propagate 1000 "${PROP_WRITES:-100}")
      echo "registry $store run $run register_per_sec $reg renew_per_sec $renew propagate $(echo "$prop" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('p50_us', r['p50_us'], 'p99_us', r['p99_us'], 'missed', r['missed'])")" | tee -a "$OUT/registry.txt"
      cleanup; pids=()
    done
    # Memory: a fresh server, then 100,000 instances (one lease each).
    start_store "$store"
    before=$(rss_kb "$STORE_PID")
    taskset -c 0 "$BIN/bench-registry" "$STORE_KIND" "$STORE_URL" register "${MEM_N:-100000}" 64 >/dev/null
    sleep 1
    after=$(rss_kb "$STORE_PID")
    echo "memory $store instances ${MEM_N:-100000} rss_before_kb $before rss_after_kb $after" | tee -a "$OUT/registry.txt"
    cleanup; pids=()
  done
  rm -rf /dev/shm/switchyard-bench-etcd "$OUT/etcd-data"
}

case $only in
  proxies) proxies ;;
  balancing) balancing ;;
  failover) failover ;;
  registry) registry ;;
  all) proxies; balancing; failover; registry ;;
  *) echo "usage: bench/run.sh [proxies|balancing|failover|registry]" >&2; exit 64 ;;
esac

python3 bench/report.py "$OUT" > bench/RESULTS.md
echo "wrote bench/RESULTS.md"
