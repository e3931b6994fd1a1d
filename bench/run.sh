#!/usr/bin/env bash
# Side-by-side benchmarks of the gateway against nginx, HAProxy and direct
# calls, balancing quality, and failover; writes bench/RESULTS.md.
#
#   bench/run.sh            everything
#   bench/run.sh proxies    one scenario (or several): proxies | concurrent | syscalls | latency | h2 | tls | upstream-tls | balancing | failover |
#                           registry | registry-ha | instructions | shared | idle
#
# Each proxy is pinned to CPU 1 with one worker (nginx worker_processes 1,
# HAProxy nbthread 1, gateway --worker-threads 1); the load generator and the
# backends are pinned to CPU 0. Logging is off everywhere. Medians of RUNS runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# The binaries refuse to start without mTLS files or plaintext said out loud;
# the data-path scenarios measure the proxies, with plaintext control links
# (the registry-mtls scenario measures the cost of mTLS itself).
export SWITCHYARD_PLAINTEXT=true
OUT=$ROOT/bench/out
RUNS=${RUNS:-3}
SECS=${SECS:-10}
mkdir -p "$OUT"
scenarios=("${@:-all}")
for only in "${scenarios[@]}"; do
  case $only in
    all | proxies | concurrent | syscalls | latency | h2 | tls | upstream-tls | balancing | failover | registry | registry-mtls | registry-ha | instructions | shared | idle) ;;
    *) echo "bench/run.sh: unknown scenario '$only' (all, proxies, concurrent, syscalls, latency, h2, tls, upstream-tls, balancing, failover, registry, registry-mtls, registry-ha, instructions, shared, idle)" >&2; exit 64 ;;
  esac
done

need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }
need nginx nginx
need haproxy haproxy
need taskset util-linux
need python3 python3
need etcd etcd-server
need etcdctl etcd-client
need h2load nghttp2-client

cargo build --release --locked -p switchyard-bench --bin bench-backend --bin bench-load --bin bench-registry >/dev/null
# The instruction counts run the gateway's profiling build (built there):
# a run of those alone spares the release gateway's build (fat LTO).
release_bins=(--bin registry --bin echo)
[ "${scenarios[*]}" = instructions ] || release_bins+=(--bin gateway)
cargo build --release --locked "${release_bins[@]}" >/dev/null
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release

# BASELINE=<commit> also runs that commit's gateway in the proxies scenario
# (as "baseline"), for before/after figures measured in the same run.
# Built once per commit: a second run with the same BASELINE reuses it.
if [ -n "${BASELINE:-}" ] && [ "$(cat "$OUT/gateway-baseline.commit" 2>/dev/null)" != "$(git rev-parse "$BASELINE")" ]; then
  rm -rf "$OUT/baseline-tree"
  git worktree add -f "$OUT/baseline-tree" "$BASELINE" >/dev/null
  (cd "$OUT/baseline-tree" && CARGO_TARGET_DIR=$ROOT/target cargo build --release --locked --bin gateway >/dev/null)
  cp "$BIN/gateway" "$OUT/gateway-baseline"
  # Its profiling build too, for the instruction counts (see instructions()).
  (cd "$OUT/baseline-tree" && CARGO_TARGET_DIR=$ROOT/target cargo build --profile profiling --locked --bin gateway >/dev/null)
  cp "$ROOT/target/x86_64-unknown-linux-gnu/profiling/gateway" "$OUT/gateway-baseline-profiling"
  git worktree remove --force "$OUT/baseline-tree"
  # The current one back in place. A commit with the same dependencies
  # builds to the same artifact names, and cargo then finds the current
  # sources older than that artifact and keeps the baseline's: touched,
  # they are newer.
  touch "$ROOT"/*/src/lib.rs
  cargo build --release --locked --bin gateway >/dev/null
  cargo build --profile profiling --locked --bin gateway >/dev/null
  git rev-parse "$BASELINE" > "$OUT/gateway-baseline.commit"
fi

pids=()
cleanup() {
  for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  local dir; for dir in /sys/fs/cgroup/cpu/switchyard-bench-* /sys/fs/cgroup/switchyard-bench-*; do [ -d "$dir" ] && rmdir "$dir" 2>/dev/null; done; true
}
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

share_pct() { # "part whole" counters before and after (cpu0_ticks, throttled): the part's share in between, %
  python3 -c "a, b, c, d = map(int, '$1 $2'.split()); print(round(100 * (c - a) / max(d - b, 1)))"
}
load() { taskset -c 0 "$BIN/bench-load" "$@"; }
# Proxies on CPU 1, backends on CPU 0, unless SHARED=1 (the shared and idle
# scenarios: nothing pinned, as users run them). For background starts
# only (`on_cpu 1 prog args &`): it execs, so that `$!` is the program's
# own pid (its CPU time, its children, its kill at cleanup).
on_cpu() { # cpu command...
  local cpu=$1; shift
  if [ "${SHARED:-0}" = 1 ]; then exec "$@"; else exec taskset -c "$cpu" "$@"; fi
}
# Per name, the medians of its runs in a file of lines "<scenario> <name>
# <run> <key> <value> <key> <value>...": "<name> runs <n> <key> <median>...".
medians() { # runs-file name...
  python3 - "$@" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for name in sys.argv[2:]:
    mine = [r for r in rows if r[1] == name]
    keys = mine[0][3::2]
    med = {k: statistics.median(float(r[3 + 2 * i + 1]) for r in mine) for i, k in enumerate(keys)}
    print(f"{name} runs {len(mine)} " + " ".join(f"{k} {v:g}" for k, v in med.items()))
PY
}
json() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
median() { python3 -c "import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }

start_backends() { # delay-ms for the third backend
  local slow=${1:-0}
  for i in 1 2 3; do
    local d=0; [ "$i" = 3 ] && d=$slow
    on_cpu 0 "$BIN/bench-backend" "127.0.0.1:900$i" 1024 "$d" "b$i" & pids+=($!)
  done
  sleep 0.3
}

start_registry() { # policy
  # Leases of an hour: nothing renews these registrations, and a scenario
  # with long runs lasts more than the default 5-minute cap.
  "$BIN/registry" --grpc-listen 127.0.0.1:17100 --http-listen 127.0.0.1:17101 --warm-up 0s --max-ttl-secs 3600 >/dev/null 2>&1 & pids+=($!)
  sleep 0.5
  for i in 1 2 3; do
    curl -s -d "{\"service\":\"bench\",\"instance_id\":\"b$i\",\"address\":\"127.0.0.1:900$i\",\"protocol\":\"http1\",\"ttl_seconds\":3600,\"metadata\":{\"lb.policy\":\"$1\"}}" \
      http://127.0.0.1:17101/api/register >/dev/null
  done
}

write_routes() {
  mkdir -p "$OUT/gateway"
  cat > "$OUT/gateway/routes.toml" <<EOF
[[route]]
name = "echo"
service = "echo"
path_prefix = "/echo.v1.Echo/"

[[route]]
name = "bench"
service = "bench"
path_prefix = "/"
EOF
}

gateway_args() { # http-port admin-port [workers: 1, or "default" for the gateway's own default]
  echo --http-listen "127.0.0.1:$1" --admin-listen "127.0.0.1:$2" --routes "$OUT/gateway/routes.toml" \
    --registry "${REGISTRY_URL:-http://127.0.0.1:17100}" --register-self false --access-log "${ACCESS_LOG:-false}" \
    "$([ "${3:-1}" = default ] || echo "--worker-threads ${3:-1}")" ${GATEWAY_EXTRA:-}
}

wait_ready() { # admin-port [tries of 0.1 s]
  for _ in $(seq 1 "${2:-50}"); do curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return; sleep 0.1; done
}

start_gateway() { # [binary http-port admin-port workers]
  local bin=${1:-$BIN/gateway} port=${2:-8380} admin=${3:-8381}
  write_routes
  # shellcheck disable=SC2046 # the flags split on purpose
  # With the access log on, its lines go to a file, as nginx's do.
  local log=/dev/null; [ "${ACCESS_LOG:-false}" = true ] && log=$OUT/gateway/access-$port.log
  on_cpu 1 "$bin" $(gateway_args "$port" "$admin" "${4:-1}") >"$log" 2>/dev/null & pids+=($!)
  GATEWAY_PID=$!
  wait_ready "$admin"
}

write_nginx_conf() { # [extra main-context directive]; NGINX_WORKERS (1), NGINX_CONNS, ACCESS_LOG, TLS_DIR (a TLS server on 8443),
                     # UPSTREAM_TLS_DIR (8190 proxying to TLS backends on 9441-9443 with that directory's certificates)
  mkdir -p "$OUT/nginx"
  local log="access_log off;"
  [ "${ACCESS_LOG:-false}" = true ] && log="access_log $OUT/nginx/access.log;"
  cat > "$OUT/nginx/nginx.conf" <<EOF
worker_processes ${NGINX_WORKERS:-1};
worker_rlimit_nofile $(ulimit -Hn);
${1:-}
daemon off;
pid $OUT/nginx/nginx.pid;
error_log $OUT/nginx/error.log;
events { worker_connections ${NGINX_CONNS:-8192}; }
http {
  $log
  # Unlimited requests per connection on both sides, as HAProxy and the
  # gateway have by default (nginx closes after 1,000: an HTTP/2 client
  # that does not reconnect then stops, and HTTP/1.1 pays a reconnect).
  keepalive_requests 1000000000;
  client_body_temp_path $OUT/nginx; proxy_temp_path $OUT/nginx; fastcgi_temp_path $OUT/nginx; uwsgi_temp_path $OUT/nginx; scgi_temp_path $OUT/nginx;
  upstream b { server 127.0.0.1:9001 max_fails=1 fail_timeout=10s; server 127.0.0.1:9002 max_fails=1 fail_timeout=10s; server 127.0.0.1:9003 max_fails=1 fail_timeout=10s; keepalive 128; keepalive_requests 1000000000; }
  upstream e { server 127.0.0.1:9101; server 127.0.0.1:9102; server 127.0.0.1:9103; keepalive 128; keepalive_requests 1000000000; }
  server {
    listen 127.0.0.1:8180;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_next_upstream error timeout; }
  }
$([ -n "${TLS_DIR:-}" ] && cat <<TLS
  server {
    listen 127.0.0.1:8443 ssl http2;
    ssl_certificate $TLS_DIR/cert.pem; ssl_certificate_key $TLS_DIR/key.pem; ssl_protocols TLSv1.3;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_next_upstream error timeout; }
  }
TLS
)
$([ -n "${UPSTREAM_TLS_DIR:-}" ] && cat <<TLS
  upstream t { server 127.0.0.1:9441; server 127.0.0.1:9442; server 127.0.0.1:9443; keepalive 128; keepalive_requests 1000000000; }
  server {
    listen 127.0.0.1:8190;
    location / {
      proxy_pass https://t; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_next_upstream error timeout;
      proxy_ssl_certificate $UPSTREAM_TLS_DIR/gateway.pem; proxy_ssl_certificate_key $UPSTREAM_TLS_DIR/gateway-key.pem;
      proxy_ssl_trusted_certificate $UPSTREAM_TLS_DIR/ca.pem; proxy_ssl_verify on; proxy_ssl_name bench;
      proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse on;
    }
  }
TLS
)
  server {
    listen 127.0.0.1:8181 http2;
    location /echo.v1.Echo/ { grpc_pass grpc://e; }
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_next_upstream error timeout; }
  }
}
EOF
}

start_nginx() {
  write_nginx_conf
  on_cpu 1 nginx -c "$OUT/nginx/nginx.conf" & pids+=($!)
  NGINX_PID=$!
  sleep 0.5
}

# HAProxy's configuration in `mode` (http, or tcp for the relay) on port,
# with the given global and defaults lines, before the three backends.
haproxy_cfg() { # mode port global-lines defaults-lines
  cat <<EOF
global
  maxconn ${HAPROXY_CONNS:-5000}
  $3
defaults
  mode $1
  $4
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$2
  default_backend b
backend b
  balance roundrobin
  server s1 127.0.0.1:9001
  server s2 127.0.0.1:9002
  server s3 127.0.0.1:9003
EOF
}

start_haproxy() { # HAPROXY_THREADS (1; "default": HAProxy's own, one per CPU), HAPROXY_CONNS
  local threads="nbthread ${HAPROXY_THREADS:-1}" log="" logging="" out=/dev/null
  [ "${HAPROXY_THREADS:-1}" = default ] && threads=""
  # With the access log on: HAProxy's HTTP log format, one line per
  # request, written to stdout (it has no file target) and on to a file.
  if [ "${ACCESS_LOG:-false}" = true ]; then
    log="log stdout format raw local0"; logging=$'log global\n  option httplog'; out=$OUT/haproxy-access.log
  fi
  haproxy_cfg http 8280 "$threads"$'\n  '"$log" "$logging"$'\n  http-reuse always' > "$OUT/haproxy.cfg"
  on_cpu 1 haproxy -db -f "$OUT/haproxy.cfg" >"$out" & pids+=($!)
  HAPROXY_PID=$!
  sleep 0.5
}

# The floor for item 3 of issue 20: HAProxy as a layer-4 relay (`mode tcp`,
# port 8580, one thread on CPU 1). Each client connection is paired with
# one backend connection and bytes are copied both ways, no HTTP read or
# written: the same receives, sends and loopback TCP work per request as
# an HTTP proxy's, with next to no work of its own: about what a proxy
# costs here once its HTTP work is taken away.
start_relay() {
  haproxy_cfg tcp 8580 "nbthread 1" "" > "$OUT/relay.cfg"
  on_cpu 1 haproxy -db -f "$OUT/relay.cfg" >/dev/null & pids+=($!)
  RELAY_PID=$!
  sleep 0.5
}

# With BASELINE set, starts that commit's gateway (port 8480) and adds it
# to the calling scenario's names, url and pid.
add_baseline() {
  if [ -x "$OUT/gateway-baseline" ] && [ -n "${BASELINE:-}" ]; then
    start_gateway "$OUT/gateway-baseline" 8480 8481
    url[baseline]=http://127.0.0.1:8480/; pid[baseline]=$GATEWAY_PID; names+=(baseline)
  fi
}

# Busy and total clock ticks of CPU 0 so far ("busy total").
cpu0_ticks() { awk '/^cpu0 / {print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# The throughput maximum counts only when the proxy's CPU is the saturated
# one. Uncapped, on two cores, CPU 0 (the generator and three backends)
# saturates first: the "maximum" then measures how cheaply CPU 0 runs, not
# the proxy. So each proxy is also held to CAP % of one CPU with the cgroup
# cpu controller (CFS bandwidth, 10 ms periods): its quota saturates while
# CPU 0 keeps room, and the maximum is the proxy's own. Root and a writable
# cgroup v1 `cpu` or v2 hierarchy are needed; without them the capped
# figures are skipped and said so.
CAP=${CAP:-50}
CG_V1=/sys/fs/cgroup/cpu
CG_V2=/sys/fs/cgroup
cap_dir() { # name
  if [ -w "$CG_V1/cpu.cfs_quota_us" ] || [ -w "$CG_V1/cgroup.procs" ]; then echo "$CG_V1/switchyard-bench-$1"
  elif grep -qw cpu "$CG_V2/cgroup.controllers" 2>/dev/null; then echo "$CG_V2/switchyard-bench-$1"
  fi
}
cap() { # name pid: holds pid, its children and all their threads to CAP % of one CPU
  local dir p
  dir=$(cap_dir "$1"); [ -n "$dir" ] || return 1
  mkdir -p "$dir" || return 1
  if [ -e "$dir/cpu.cfs_quota_us" ]; then
    echo 10000 > "$dir/cpu.cfs_period_us" && echo $((CAP * 100)) > "$dir/cpu.cfs_quota_us" || return 1
  else
    echo "+cpu" > "$CG_V2/cgroup.subtree_control" 2>/dev/null || true
    echo "$((CAP * 100)) 10000" > "$dir/cpu.max" || return 1
  fi
  for p in "$2" $(pgrep -P "$2" || true); do echo "$p" > "$dir/cgroup.procs" || return 1; done
}
uncap() { # name pid: back to the root group, and the group removed
  local dir p root
  dir=$(cap_dir "$1"); [ -n "$dir" ] && [ -d "$dir" ] || return 0
  root=$(dirname "$dir")
  for p in $(cat "$dir/cgroup.procs" 2>/dev/null); do echo "$p" > "$root/cgroup.procs" 2>/dev/null || true; done
  rmdir "$dir" 2>/dev/null || true
}
throttled() { # name: "throttled periods" of the group so far
  awk '/^nr_periods/ {n = $2} /^nr_throttled/ {t = $2} END {print t + 0, n + 0}' "$(cap_dir "$1")/cpu.stat"
}

# Runs `load` against URL for PID; prints "rps cpu_us_per_request p50 p99 p999".
measure() { # url pid rate [name: keep the run's percentiles in $OUT/latency-name.json]
  local url=$1 pid=$2 rate=$3 before after result
  before=$(cpu_ticks "$pid")
  result=$(load "$url" "$rate" "$SECS" 64)
  after=$(cpu_ticks "$pid")
  [ -n "${4:-}" ] && echo "$result" > "$OUT/latency-$4.json"
  python3 - "$result" "$before" "$after" "$TICKS" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); b, a, t = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cpu_us = (a - b) / t * 1e6 / max(r["ok"], 1)
print(f'{r["rps"]:.0f} {cpu_us:.2f} {r["p50_us"]} {r["p99_us"]} {r["p999_us"]} {r["failed"]}')
PY
}

proxies() {
  start_pinned
  declare -A url=([direct]=http://127.0.0.1:9001/ [nginx]=http://127.0.0.1:8180/ [haproxy]=http://127.0.0.1:8280/ [gateway]=http://127.0.0.1:8380/)
  declare -A pid=([direct]=$$ [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID)
  names=(nginx haproxy gateway direct)
  add_baseline
  : > "$OUT/proxies.txt"
  : > "$OUT/proxies-runs.txt"
  for name in "${names[@]}"; do load "${url[$name]}" 0 2 64 >/dev/null; done # warm up
  # Runs interleave the targets (a b c, a b c, ...) so that a slow stretch
  # of the machine falls on all of them alike.
  for run in $(seq 1 "$RUNS"); do
    for name in "${names[@]}"; do
      local c0 c1 rps
      c0=$(cpu0_ticks)
      rps=$(measure "${url[$name]}" "${pid[$name]}" 0 | awk '{print $1}')
      c1=$(cpu0_ticks)
      # The run's maximum and how busy CPU 0 was (%) meanwhile.
      echo "max $name $run $rps $(share_pct "$c0" "$c1")" >> "$OUT/proxies-runs.txt"
    done
  done
  # The same closed loop with each proxy held to CAP % of a CPU (see cap()).
  local capped=()
  for name in "${names[@]}"; do
    [ "$name" = direct ] && continue
    if cap "$name" "${pid[$name]}"; then capped+=("$name"); else uncap "$name"; fi
  done
  if [ "${#capped[@]}" -gt 0 ]; then
    for name in "${capped[@]}"; do load "${url[$name]}" 0 2 64 >/dev/null; done
    for run in $(seq 1 "$RUNS"); do
      for name in "${capped[@]}"; do
        local c0 c1 t0 t1 rps
        c0=$(cpu0_ticks); t0=$(throttled "$name")
        rps=$(measure "${url[$name]}" "${pid[$name]}" 0 | awk '{print $1}')
        c1=$(cpu0_ticks); t1=$(throttled "$name")
        # rps, CPU 0 busy %, and the share of CFS periods in which the proxy used up its quota (%).
        echo "capped $name $run $rps $(share_pct "$c0" "$c1") $(share_pct "$t0" "$t1")" >> "$OUT/proxies-runs.txt"
      done
    done
    for name in "${capped[@]}"; do uncap "$name"; done
    echo "cap $CAP" >> "$OUT/proxies.txt"
  else
    echo "no cap: no writable cgroup cpu controller (run as root), so no throughput figure with the proxy saturated" | tee -a "$OUT/proxies.txt"
  fi
  per_name() { python3 - "$OUT/proxies-runs.txt" "$1" "$2" <<'PY'
import statistics, sys
kind, name = sys.argv[2], sys.argv[3]
rows = [l.split() for l in open(sys.argv[1]) if l.split()[:2] == [kind, name]]
print(" ".join(str(statistics.median(float(r[i]) for r in rows)) for i in range(3, len(rows[0]))))
PY
  }
  declare -A max
  for name in "${names[@]}"; do
    read -r max[$name] busy < <(per_name max "$name")
    echo "max $name ${max[$name]} cpu0_busy $busy" | tee -a "$OUT/proxies.txt"
  done
  for name in "${capped[@]}"; do
    read -r rps busy thr < <(per_name capped "$name")
    echo "capped $name $rps cpu0_busy $busy throttled $thr" | tee -a "$OUT/proxies.txt"
  done
  slower=$(python3 -c "print(int(min(${max[nginx]}, ${max[gateway]}, ${max[haproxy]}) / 2))")
  echo "fixed rate $slower" | tee -a "$OUT/proxies.txt"
  for run in $(seq 1 "$RUNS"); do
    for name in "${names[@]}"; do
      echo "fixed $name $run $(measure "${url[$name]}" "${pid[$name]}" "$slower" "$name" | awk '{print $2, $3, $4, $5}')" >> "$OUT/proxies-runs.txt"
    done
  done
  for name in "${names[@]}"; do
    read -r cpu a b c < <(per_name fixed "$name")
    echo "fixed $name cpu_us $cpu p50 $a p99 $b p999 $c" | tee -a "$OUT/proxies.txt"
  done
  cleanup; pids=()
}

# The same CPU-per-request figure with the proxies measured at the same
# time: nginx, HAProxy, the gateway (and the baseline commit's) all pinned to CPU 1,
# each offered the same rate by its own generator on CPU 0. Measured one
# after another, a proxy's CPU per request moved by up to ±15 % from one
# 5-second run to the next on this machine (a virtual CPU on a shared host),
# more than the difference being measured; measured together, a slow
# stretch of the host falls on all of them in the same seconds, and each
# run gives one ratio.
concurrent() {
  start_pinned
  declare -A url=([nginx]=http://127.0.0.1:8180/ [haproxy]=http://127.0.0.1:8280/ [gateway]=http://127.0.0.1:8380/)
  declare -A pid=([nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID)
  names=(nginx haproxy gateway)
  # Each proxy's share: together about the proxies scenario's fixed rate
  # (the relay and the baseline are offered the same on top).
  local rate=${CONCURRENT_RATE:-$((16000 / ${#names[@]}))}
  add_baseline
  start_relay
  url[relay]=http://127.0.0.1:8580/; pid[relay]=$RELAY_PID; names+=(relay)
  : > "$OUT/concurrent.txt"
  for name in "${names[@]}"; do load "${url[$name]}" 0 2 64 >/dev/null; done # warm up
  for run in $(seq 1 "$RUNS"); do
    declare -A before=() lp=()
    for name in "${names[@]}"; do before[$name]=$(cpu_ticks "${pid[$name]}"); done
    for name in "${names[@]}"; do
      load "${url[$name]}" "$rate" "$SECS" 32 > "$OUT/concurrent-$name.json" &
      lp[$name]=$!
    done
    for name in "${names[@]}"; do wait "${lp[$name]}"; done
    local line="concurrent run $run rate $rate"
    for name in "${names[@]}"; do
      local after ok
      after=$(cpu_ticks "${pid[$name]}")
      ok=$(json ok < "$OUT/concurrent-$name.json")
      line+=" $name $(python3 -c "print(round(($after - ${before[$name]}) / $TICKS * 1e6 / max($ok, 1), 2))")"
    done
    echo "$line" | tee -a "$OUT/concurrent.txt"
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

# Milliseconds from now until the gateway's admin API shows instance $1
# ejected (or "never" after 10 s).
time_to_ejection() {
  local t0 now
  t0=$(date +%s%N)
  for _ in $(seq 1 2000); do
    if curl -s http://127.0.0.1:8381/api/services | python3 -c "
import json, sys
d = json.load(sys.stdin)
sys.exit(0 if any(e['instance_id'] == '$1' and e['ejected'] for s in d['services'] for e in s['endpoints']) else 1)"; then
      now=$(date +%s%N); echo $(((now - t0) / 1000000)); return
    fi
    [ $(( ($(date +%s%N) - t0) / 1000000 )) -gt 10000 ] && break
  done
  echo never
}

restart_backend() { # n
  pkill -9 -f "bench-backend 127.0.0.1:900$1 " || true
  sleep 1
  taskset -c 0 "$BIN/bench-backend" "127.0.0.1:900$1" 1024 0 "b$1" & pids+=($!)
}

# SIGKILL of one of three backends, then a rolling restart of all three
# (each killed, started again a second later, the next two seconds after),
# both at 1,000 requests/s through the gateway and through nginx
# (passive max_fails=1, proxy_next_upstream error timeout).
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
    pkill -9 -f "bench-backend 127.0.0.1:9002 " || true
    ejected="n/a"
    [ "$name" = gateway ] && ejected=$(time_to_ejection b2)
    wait "$lp"
    echo "kill $name ejected_ms $ejected $(python3 -c "import json; r=json.load(open('$OUT/failover-$name.json')); print('failed', r['failed'], 'ok', r['ok'], 'p99', r['p99_us'], 'p999', r['p999_us'])")" | tee -a "$OUT/failover.txt"
    taskset -c 0 "$BIN/bench-backend" 127.0.0.1:9002 1024 0 b2 & pids+=($!)
    sleep 1
  done
  for name in gateway nginx; do
    port=8380; [ "$name" = nginx ] && port=8180
    load "http://127.0.0.1:$port/" 1000 14 64 > "$OUT/rolling-$name.json" &
    lp=$!
    sleep 2
    for n in 1 2 3; do restart_backend "$n"; sleep 2; done
    wait "$lp"
    echo "rolling $name $(python3 -c "import json; r=json.load(open('$OUT/rolling-$name.json')); print('failed', r['failed'], 'ok', r['ok'], 'p99', r['p99_us'], 'p999', r['p999_us'])")" | tee -a "$OUT/failover.txt"
    sleep 2
  done
  cleanup; pids=()
}

start_echo() { # three gRPC echo backends, registered as service "echo"
  for i in 1 2 3; do
    taskset -c 0 "$BIN/echo" --listen "127.0.0.1:910$i" --admin-listen "127.0.0.1:912$i" >/dev/null 2>&1 & pids+=($!)
  done
  sleep 0.5
  for i in 1 2 3; do
    curl -s -d "{\"service\":\"echo\",\"instance_id\":\"e$i\",\"address\":\"127.0.0.1:910$i\",\"protocol\":\"grpc\",\"ttl_seconds\":300}" \
      http://127.0.0.1:17101/api/register >/dev/null
  done
}

# h2load at a fixed rate (H2_CONNS connections, 10; H2_STREAMS streams
# each, 10), or as fast as it goes with rate 0; prints
# "rps cpu_us_per_request mean_us failed session", the session being
# "TLS-version/cipher/ALPN" as h2load reports it ("plain" without TLS).
h2measure() { # url pid rate [h2load args]
  local url=$1 pid=$2 rate=$3 before after; shift 3
  before=$(cpu_ticks "$pid")
  h2load_at "$url" "$rate" "$@" > "$OUT/h2load.out" 2>&1
  after=$(cpu_ticks "$pid")
  h2figures "$OUT/h2load.out" "$((after - before))"
}

h2load_at() { # url rate [h2load args]: h2load's report
  local url=$1 rate=$2 conns=${H2_CONNS:-10} paced=(); shift 2
  [ "$rate" -gt 0 ] && paced=(--rps $((rate / conns)))
  taskset -c 0 h2load -c "$conns" -m "${H2_STREAMS:-10}" "${paced[@]}" -D "$SECS" "$@" "$url"
}

h2figures() { # h2load-report-file proxy-cpu-ticks: see h2measure
  python3 - "$1" "$2" "$TICKS" "$SECS" <<'PY'
import re, sys
out, ticks, t, secs = open(sys.argv[1]).read(), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
ok, failed = (int(m.group(4)), int(m.group(5)) + int(m.group(6))) if m else (0, -1)
mean = re.search(r"time for request:\s+\S+\s+\S+\s+(\S+)", out)
unit = mean.group(1) if mean else "0us"
v = float(re.sub(r"[a-z]+$", "", unit)); v *= {"us": 1, "ms": 1000, "s": 1e6}[re.search(r"[a-z]+$", unit).group(0)]
said = lambda key: (re.search(key + r":\s*(\S+)", out) or [None, "-"])[1]
session = "/".join([said("TLS Protocol"), said("Cipher"), said("Application protocol")]) if "TLS Protocol" in out else "plain"
print(f"{ok / secs:.0f} {ticks / t * 1e6 / max(ok, 1):.2f} {v:.0f} {failed} {session}")
PY
}

# HTTP/2 (h2c by prior knowledge) and unary gRPC through the gateway and
# nginx (http2 listener; proxy_pass to the HTTP/1.1 backends, grpc_pass to
# the echo backends), at the same fixed rate.
h2() {
  : > "$OUT/h2.txt"
  start_backends 0
  start_registry peak_ewma
  start_echo
  start_gateway
  start_nginx
  printf '\x00\x00\x00\x00\x07\x0a\x05hello' > "$OUT/echo-request.bin"
  declare -A port=([gateway]=8380 [nginx]=8181)
  declare -A pid=([gateway]=$GATEWAY_PID [nginx]=$NGINX_PID)
  for kind in h2c grpc; do
    for name in nginx gateway; do
      args=(); path=/
      if [ "$kind" = grpc ]; then
        args=(-d "$OUT/echo-request.bin" -H 'content-type: application/grpc' -H 'te: trailers')
        path=/echo.v1.Echo/Unary
      fi
      h2measure "http://127.0.0.1:${port[$name]}$path" "${pid[$name]}" 2000 -D 1 "${args[@]}" >/dev/null # warm up
      rps=(); cpus=(); means=(); fails=()
      for _ in $(seq 1 "$RUNS"); do
        read -r r c m f _ < <(h2measure "http://127.0.0.1:${port[$name]}$path" "${pid[$name]}" "${H2_RATE:-5000}" "${args[@]}")
        rps+=("$r"); cpus+=("$c"); means+=("$m"); fails+=("$f")
      done
      echo "h2 $kind $name rps $(median "${rps[@]}") cpu_us $(median "${cpus[@]}") mean_us $(median "${means[@]}") failed $(median "${fails[@]}")" | tee -a "$OUT/h2.txt"
    done
  done
  cleanup; pids=()
}

# The three backends, the registry, and nginx, HAProxy and the gateway,
# each pinned to CPU 1 with one worker.
start_pinned() {
  start_backends 0
  start_registry peak_ewma
  start_gateway
  start_nginx
  start_haproxy
}

# Issue 20 item 7: the gateway's latency at a fixed rate (LATENCY_RATE,
# 21,453/s: half the slowest maximum in the proxies scenario) against the
# BASELINE commit's, both pinned to CPU 1 with one worker, interleaved,
# LATENCY_RUNS runs (5); medians of p50, p99, p99.9 and CPU per request.
latency() {
  start_backends 0
  start_registry peak_ewma
  start_gateway
  declare -A url=([gateway]=http://127.0.0.1:8380/) pid=([gateway]=$GATEWAY_PID)
  local names=(gateway) name run
  add_baseline
  for name in "${names[@]}"; do load "${url[$name]}" 0 2 64 >/dev/null; done # warm up
  : > "$OUT/latency-runs.txt"
  for run in $(seq 1 "${LATENCY_RUNS:-5}"); do
    for name in "${names[@]}"; do
      measure "${url[$name]}" "${pid[$name]}" "${LATENCY_RATE:-21453}" \
        | awk -v n="$name" -v r="$run" '{print "latency", n, r, "rps", $1, "cpu_us", $2, "p50", $3, "p99", $4, "p999", $5, "failed", $6}' \
        | tee -a "$OUT/latency-runs.txt"
    done
  done
  medians "$OUT/latency-runs.txt" "${names[@]}" | tee "$OUT/latency.txt"
  cleanup; pids=()
}

# Issue 20: TLS 1.3 termination with the same certificate (ECDSA P-256,
# made here by openssl) against nginx (`ssl_protocols TLSv1.3`), each
# pinned to CPU 1 with one worker, h2load and the backends on CPU 0:
# HTTP/1.1 over TLS (ALPN http/1.1, 64 connections), h2 over TLS (ALPN h2,
# 10 connections of 10 streams) and h2c by prior knowledge (the same), all
# to the three HTTP/1.1 backends. For each, RUNS runs: the CPU per request
# at TLS_RATE (4,000/s) with both proxies loaded at the same time (one
# after another, it moved by more than the difference between them), then
# each one's maximum requests/s held to CAP % of a CPU (see cap()), so that
# it saturates, not CPU 0.
# Connections are made once per run: this is the cost of the records, not
# of handshakes.
tls_cert() {
  mkdir -p "$OUT/tls"
  [ -s "$OUT/tls/cert.pem" ] && [ -s "$OUT/tls/key.pem" ] && return
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$OUT/tls/key.pem" -out "$OUT/tls/cert.pem" 2>/dev/null
}

tls() {
  tls_cert
  start_backends 0
  start_registry peak_ewma
  GATEWAY_EXTRA="--https-listen 127.0.0.1:8343 --tls-cert $OUT/tls/cert.pem --tls-key $OUT/tls/key.pem" start_gateway
  TLS_DIR=$OUT/tls start_nginx
  declare -A pid=([gateway]=$GATEWAY_PID [nginx]=$NGINX_PID)
  declare -A tls_port=([gateway]=8343 [nginx]=8443) plain_port=([gateway]=8380 [nginx]=8181)
  local rate=${TLS_RATE:-4000} kind name run
  : > "$OUT/tls-runs.txt"
  for kind in h1-tls h2-tls h2c; do
    local conns=10 args=()
    [ "$kind" = h1-tls ] && conns=64 args=(--h1)
    for name in nginx gateway; do # warm up
      H2_CONNS=$conns H2_STREAMS=1 SECS=1 h2measure "$(tls_url "$kind" "$name")" "${pid[$name]}" 1000 "${args[@]}" >/dev/null
    done
    local streams=10
    [ "$kind" = h1-tls ] && streams=1
    for run in $(seq 1 "$RUNS"); do
      # CPU per request with both loaded at the same time, each by its
      # own h2load (see concurrent()).
      declare -A before=() lp=()
      for name in nginx gateway; do before[$name]=$(cpu_ticks "${pid[$name]}"); done
      for name in nginx gateway; do
        H2_CONNS=$conns H2_STREAMS=$streams h2load_at "$(tls_url "$kind" "$name")" "$rate" "${args[@]}" > "$OUT/tls-$name.out" 2>&1 &
        lp[$name]=$!
      done
      for name in nginx gateway; do wait "${lp[$name]}"; done
      for name in nginx gateway; do
        local r c m f session rmax=-
        read -r r c m f session < <(h2figures "$OUT/tls-$name.out" $(($(cpu_ticks "${pid[$name]}") - before[$name])))
        if cap "$name" "${pid[$name]}"; then
          rmax=$(H2_CONNS=$conns H2_STREAMS=$streams h2measure "$(tls_url "$kind" "$name")" "${pid[$name]}" 0 "${args[@]}" | awk '{print $1}')
        fi
        uncap "$name"
        echo "tls $kind $name $run rps $r cpu_us $c mean_us $m failed $f capped_max $rmax session $session" | tee -a "$OUT/tls-runs.txt"
      done
    done
  done
  python3 - "$OUT/tls-runs.txt" <<'PY' | tee "$OUT/tls.txt"
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for kind in ["h1-tls", "h2-tls", "h2c"]:
    for name in ["nginx", "gateway"]:
        mine = [r for r in rows if r[1] == kind and r[2] == name]
        if not mine:
            continue
        med = lambda key: statistics.median(float(r[r.index(key) + 1]) for r in mine if r[r.index(key) + 1] != "-") if any(r[r.index(key) + 1] != "-" for r in mine) else "-"
        sessions = sorted({r[r.index("session") + 1] for r in mine})
        print(f"tls {kind} {name} runs {len(mine)} rps {med('rps')} cpu_us {med('cpu_us')} mean_us {med('mean_us')} "
              f"failed {med('failed')} capped_max {med('capped_max')} session {','.join(sessions)}")
PY
  cleanup; pids=()
}
# Upstream TLS (issue 21): the gateway and nginx each proxying HTTP/1.1 to
# the same three TLS backends (one nginx on CPU 0 answering 1 KiB over TLS
# 1.3, a client certificate required), both proxies on CPU 1, loaded at the
# same time at the same rate by their own generators (see concurrent()).
# Both check the backends' certificate against the CA and present theirs;
# connections to the backends are kept alive, so this is the cost of the
# records, not of handshakes.
upstream_tls() {
  local certs=$OUT/upstream-certs dir=$OUT/tls-backends body
  cargo build --release --locked -p switchyard-tls --features dev-ca --bin switchyard-certs >/dev/null
  rm -rf "$certs" && "$BIN/switchyard-certs" "$certs" --service bench >/dev/null
  mkdir -p "$dir"
  body=$(head -c 1024 /dev/zero | tr '\0' x)
  cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir; uwsgi_temp_path $dir; scgi_temp_path $dir;
  ssl_certificate $certs/bench.pem; ssl_certificate_key $certs/bench-key.pem; ssl_protocols TLSv1.3;
  ssl_client_certificate $certs/ca.pem; ssl_verify_client on;
  server {
    listen 127.0.0.1:9441 ssl; listen 127.0.0.1:9442 ssl; listen 127.0.0.1:9443 ssl;
    location / { return 200 "$body"; }
  }
}
EOF
  on_cpu 0 nginx -c "$dir/nginx.conf" & pids+=($!)
  local tls=(--plaintext false --mtls-ca "$certs/ca.pem" --mtls-cert "$certs/registry.pem" --mtls-key "$certs/registry-key.pem")
  "$BIN/registry" --grpc-listen 127.0.0.1:17100 --http-listen 127.0.0.1:17101 --warm-up 0s --max-ttl-secs 3600 "${tls[@]}" \
    >/dev/null 2>&1 & pids+=($!)
  sleep 0.5
  for i in 1 2 3; do
    curl -sf -d "{\"service\":\"bench\",\"instance_id\":\"t$i\",\"address\":\"127.0.0.1:944$i\",\"tls\":true,\"ttl_seconds\":3600}" \
      http://127.0.0.1:17101/api/register >/dev/null
  done
  REGISTRY_URL=https://127.0.0.1:17100 \
    GATEWAY_EXTRA="--plaintext false --mtls-ca $certs/ca.pem --mtls-cert $certs/gateway.pem --mtls-key $certs/gateway-key.pem" start_gateway
  UPSTREAM_TLS_DIR=$certs start_nginx
  declare -A url=([nginx]=http://127.0.0.1:8190/ [gateway]=http://127.0.0.1:8380/)
  declare -A pid=([nginx]=$NGINX_PID [gateway]=$GATEWAY_PID)
  local rate=${UPSTREAM_TLS_RATE:-4000} name run
  : > "$OUT/upstream-tls.txt"
  for name in nginx gateway; do load "${url[$name]}" 0 2 64 >/dev/null; done # warm up
  for run in $(seq 1 "$RUNS"); do
    declare -A before=() lp=()
    for name in nginx gateway; do before[$name]=$(cpu_ticks "${pid[$name]}"); done
    for name in nginx gateway; do
      load "${url[$name]}" "$rate" "$SECS" 32 > "$OUT/upstream-tls-$name.json" &
      lp[$name]=$!
    done
    for name in nginx gateway; do wait "${lp[$name]}"; done
    local line="upstream-tls run $run rate $rate"
    for name in nginx gateway; do
      local after ok failed
      after=$(cpu_ticks "${pid[$name]}")
      ok=$(json ok < "$OUT/upstream-tls-$name.json")
      failed=$(json failed < "$OUT/upstream-tls-$name.json")
      line+=" $name $(python3 -c "print(round(($after - ${before[$name]}) / $TICKS * 1e6 / max($ok, 1), 2))") ${name}_failed $failed"
    done
    echo "$line" | tee -a "$OUT/upstream-tls.txt"
  done
  cleanup; pids=()
}

tls_url() { # kind name
  case $1 in
    h2c) echo "http://127.0.0.1:${plain_port[$2]}/" ;;
    *) echo "https://127.0.0.1:${tls_port[$2]}/" ;;
  esac
}

# User-space instructions per proxied request, counted by callgrind: within
# a few percent for the same binary and load whatever else the machine is
# doing, where CPU time from /proc moves by about ±20 % between runs here. Each
# proxy runs under callgrind twice, for N1 and for N2 requests (500/s, 8
# connections; for h2c and h2 over TLS, see below); (Ir(N2) - Ir(N1)) / (N2 - N1) leaves out start-up, shutdown
# and work done per second rather than per request. System calls are the
# kernel's and are not counted. The gateway runs its `profiling` build (the
# release build with symbols), so that the clock calibration of the metrics
# exporter at start-up, which takes a different number of rounds each time
# (millions of instructions apart), can be taken out of its counts.
instructions() {
  need valgrind valgrind
  cargo build --profile profiling --locked --bin gateway >/dev/null
  local n1=${N1:-1000} n2=${N2:-5000} rate=500 profiled=$ROOT/target/x86_64-unknown-linux-gnu/profiling/gateway
  : > "$OUT/instructions.txt"
  start_backends 0
  start_registry peak_ewma
  write_routes
  tls_cert
  TLS_DIR=$OUT/tls write_nginx_conf "master_process off;"
  names=(nginx gateway)
  [ -x "$OUT/gateway-baseline-profiling" ] && [ -n "${BASELINE:-}" ] && names+=(baseline)
  # COUNT=gateway counts the current gateway alone (a quicker look while
  # working; the figures to report come from a run of all of them).
  [ -n "${COUNT:-}" ] && read -ra names <<< "$COUNT"
  # HTTP/1.1 (8 connections, bench-load), then h2c and h2 over TLS 1.3
  # (h2load, 10 connections of up to 10 streams, as in the tls scenario;
  # its handshakes are in both counts and cancel out). PROTOS= narrows.
  local proto
  for proto in ${PROTOS:-h1 h2c h2-tls}; do
    for name in "${names[@]}"; do
      # The baseline commit is counted on HTTP/1.1 only.
      [ "$proto" != h1 ] && [ "$name" = baseline ] && continue
      local counts=() label=$name
      [ "$proto" = h1 ] || label=$name-$proto
      for n in "$n1" "$n2"; do
        local out=$OUT/callgrind-$label-$n.out cmd url
        case $name in
          nginx) cmd=(nginx -c "$OUT/nginx/nginx.conf") ;;
          gateway) read -ra cmd < <(echo "$profiled" "$(GATEWAY_EXTRA="--https-listen 127.0.0.1:8343 --tls-cert $OUT/tls/cert.pem --tls-key $OUT/tls/key.pem" gateway_args 8380 8381)") ;;
          baseline) read -ra cmd < <(echo "$OUT/gateway-baseline-profiling" "$(gateway_args 8380 8381)") ;;
        esac
        case $proto/$name in
          h1/nginx) url=http://127.0.0.1:8180/ ;;
          h2c/nginx) url=http://127.0.0.1:8181/ ;;
          h2-tls/nginx) url=https://127.0.0.1:8443/ ;;
          h2-tls/*) url=https://127.0.0.1:8343/ ;;
          *) url=http://127.0.0.1:8380/ ;;
        esac
        valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" >/dev/null 2>&1 &
        local vp=$!
        # Ready: /readyz for a gateway (no proxied request before the count),
        # the port for nginx.
        if [ "$name" = nginx ]; then
          for _ in $(seq 1 300); do (echo > /dev/tcp/127.0.0.1/8180) 2>/dev/null && break; sleep 0.2; done
        else
          wait_ready 8381 600
        fi
        # Counted from here: start-up (route compilation, the metrics
        # recorder's clock calibration, whose length varies with the
        # machine's load) is left out by zeroing the counters once ready.
        callgrind_control -z "$vp" >/dev/null 2>&1
        local ok
        if [ "$proto" = h1 ]; then
          ok=$(taskset -c 0 "$BIN/bench-load" "$url" "$rate" $((n / rate)) 8 | json ok)
        else
          ok=$(SECS=$((n / rate)) H2_CONNS=10 H2_STREAMS=10 h2load_at "$url" "$rate" 2>&1 |
            sed -n 's/^requests: .* \([0-9]*\) succeeded.*/\1/p')
        fi
        kill -TERM "$vp"; wait "$vp" 2>/dev/null || true
        local total
        total=$(awk '/^summary:/ {print $2}' "$out")
        counts+=("${ok:-0}" "$total")
      done
      echo "instructions $label per_request $(python3 -c "print(round((${counts[3]} - ${counts[1]}) / max(${counts[2]} - ${counts[0]}, 1)))") runs ${counts[0]}/${counts[1]} ${counts[2]}/${counts[3]}" | tee -a "$OUT/instructions.txt"
    done
  done
  cleanup; pids=()
}

# Issue 20 item 3: where a proxied request's CPU goes, per proxy (one
# worker each, pinned to CPU 1; nginx's worker process itself), at
# SYSCALL_RATE (5,000/s) over 64 connections, RUNS runs interleaved: user
# and system time per request (/proc, 10 ms ticks) and the system calls
# per request by kind (perf's syscall tracepoints; skipped without perf).
syscalls() {
  start_pinned
  start_relay
  declare -A url=([nginx]=http://127.0.0.1:8180/ [haproxy]=http://127.0.0.1:8280/ [gateway]=http://127.0.0.1:8380/ [relay]=http://127.0.0.1:8580/)
  declare -A pid=([nginx]=$(pgrep -P "$NGINX_PID" | head -1) [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID [relay]=$RELAY_PID)
  local rate=${SYSCALL_RATE:-5000} kinds=read,write,recvfrom,sendto,readv,writev,recvmsg,sendmsg,epoll_wait,epoll_ctl,futex
  local events=raw_syscalls:sys_enter
  for k in ${kinds//,/ }; do events+=",syscalls:sys_enter_$k"; done
  : > "$OUT/syscalls.txt"
  local names=(nginx haproxy gateway relay) name
  for name in "${names[@]}"; do load "${url[$name]}" 0 1 64 >/dev/null; done # warm up
  for run in $(seq 1 "$RUNS"); do
    for name in "${names[@]}"; do
      local p=${pid[$name]} before after sp="" ok
      before=$(awk '{print $14, $15, $10}' "/proc/$p/stat")
      if command -v perf >/dev/null; then
        perf stat -x, -e "$events" -p "$p" -o "$OUT/perf-$name.txt" -- sleep "$SECS" & sp=$!
      fi
      ok=$(load "${url[$name]}" "$rate" "$SECS" 64 | json ok)
      [ -n "$sp" ] && wait "$sp"
      after=$(awk '{print $14, $15, $10}' "/proc/$p/stat")
      python3 - "$name" "$run" "$ok" "$before" "$after" "$TICKS" "$OUT/perf-$name.txt" "$sp" <<'PY' | tee -a "$OUT/syscalls.txt"
import sys
name, run, ok, before, after, hz, perf, sp = sys.argv[1:]
ok, hz = max(int(ok), 1), int(hz)
(u0, s0, f0), (u1, s1, f1) = map(int, before.split()), map(int, after.split())
line = f"syscalls {name} {run} user_us {(u1 - u0) / hz * 1e6 / ok:.2f} sys_us {(s1 - s0) / hz * 1e6 / ok:.2f}"
# Minor page faults: kernel time that is no system call (an allocator
# giving pages back and touching them again).
line += f" faults {(f1 - f0) / ok:.3f}"
if sp:
    for row in open(perf):
        f = row.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            line += f" {f[2].split(':')[-1].replace('sys_enter_', '').replace('sys_enter', 'all')} {int(f[0]) / ok:.3f}"
print(line)
PY
    done
  done
  cleanup; pids=()
}

rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# Context switches (voluntary and not) of a process, its children and all
# their threads so far.
ctx_switches() { # pid
  local p
  for p in "$1" $(pgrep -P "$1" || true); do cat /proc/"$p"/task/*/status 2>/dev/null; done \
    | awk '/ctxt_switches/ {s += $2} END {print s + 0}'
}
rss_total_kb() { # pid: resident memory of a process and its children
  local total=0 p
  for p in "$1" $(pgrep -P "$1" || true); do total=$((total + $(rss_kb "$p"))); done
  echo "$total"
}

# Starts nginx, HAProxy and the gateway with their default worker counts
# (nginx `worker_processes auto`, HAProxy one thread per CPU, the gateway
# one runtime worker per core), nothing pinned, for the shared and idle
# scenarios; the access log as ACCESS_LOG says (off by default).
start_defaults() {
  SHARED=1
  start_backends 0
  start_registry peak_ewma
  NGINX_WORKERS=auto NGINX_CONNS=${NGINX_CONNS:-8192} start_nginx
  HAPROXY_THREADS=default HAPROXY_CONNS=${HAPROXY_CONNS:-5000} start_haproxy
  start_gateway "$BIN/gateway" 8380 8381 "${GATEWAY_WORKERS:-default}"
}

# Issue 20: the proxies as users usually run them, on a shared machine:
# default worker counts, nothing pinned; the proxy, the three backends
# (1 KiB answers) and wrk -t2 -c64 share the two cores. Runs interleave
# the proxies (SHARED_RUNS runs of SECS each; medians): requests/s, CPU µs
# per request (the proxy's processes, user + system) and context switches
# per request. ACCESS_LOG=true runs it with every proxy's access log on.
shared() {
  need wrk wrk
  start_defaults
  declare -A url=([nginx]=http://127.0.0.1:8180/ [haproxy]=http://127.0.0.1:8280/ [gateway]=http://127.0.0.1:8380/)
  declare -A pid=([nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [gateway]=$GATEWAY_PID)
  local names=(nginx haproxy gateway) tag=shared
  if [ -x "$OUT/gateway-baseline" ] && [ -n "${BASELINE:-}" ]; then
    start_gateway "$OUT/gateway-baseline" 8480 8481 "${GATEWAY_WORKERS:-default}"
    url[baseline]=http://127.0.0.1:8480/; pid[baseline]=$GATEWAY_PID; names+=(baseline)
  fi
  [ "${ACCESS_LOG:-false}" = true ] && tag=shared-logged
  : > "$OUT/$tag-runs.txt"
  for name in "${names[@]}"; do wrk -t2 -c64 -d2s "${url[$name]}" >/dev/null; done # warm up
  for run in $(seq 1 "${SHARED_RUNS:-5}"); do
    for name in "${names[@]}"; do
      local t0 t1 c0 c1 out
      t0=$(cpu_ticks "${pid[$name]}"); c0=$(ctx_switches "${pid[$name]}")
      out=$(wrk -t2 -c64 -d"${SECS}s" "${url[$name]}")
      t1=$(cpu_ticks "${pid[$name]}"); c1=$(ctx_switches "${pid[$name]}")
      python3 - "$out" "$name" "$run" "$((t1 - t0))" "$((c1 - c0))" "$TICKS" "$SECS" <<'PY' | tee -a "$OUT/$tag-runs.txt"
import re, sys
out, name, run, ticks, ctx, hz, secs = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:])
n = int(re.search(r"(\d+) requests in", out).group(1))
bad = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
bad += sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
print(f"shared {name} {run} rps {n / secs:.0f} cpu_us {ticks / hz * 1e6 / max(n, 1):.2f} "
      f"ctx_per_req {ctx / max(n, 1):.3f} ctx_per_sec {ctx / secs:.0f} errors {bad}")
PY
    done
  done
  medians "$OUT/$tag-runs.txt" "${names[@]}" | tee "$OUT/$tag.txt"
  cleanup; pids=()
}

# Issue 20: resident memory with IDLE_CONNS (10,000) idle keep-alive
# client connections, each of which has made one request, per proxy with
# its default worker count (the processes' RSS summed: nginx's master and
# workers). One proxy at a time; before and with the connections. The
# client (bench/idle_clients.py) needs a descriptor per connection.
idle() {
  local n=${IDLE_CONNS:-10000}
  ulimit -n "$(ulimit -Hn)"
  NGINX_CONNS=$((n + 1024)) start_defaults
  declare -A port=([nginx]=8180 [gateway]=8380)
  declare -A pid=([nginx]=$NGINX_PID [gateway]=$GATEWAY_PID)
  : > "$OUT/idle.txt"
  # (HAProxy reserves two descriptors per connection it may take: 10,000
  # would need more than this machine's limit of 20,000.)
  for name in nginx gateway; do
    local before fifo="$OUT/idle-stdin" client ready=""
    before=$(rss_total_kb "${pid[$name]}")
    rm -f "$fifo"; mkfifo "$fifo"
    python3 "$ROOT/bench/idle_clients.py" 127.0.0.1 "${port[$name]}" "$n" < "$fifo" > "$OUT/idle-$name.out" &
    client=$!
    exec 7> "$fifo"
    for _ in $(seq 1 600); do
      ready=$(grep -m1 '^ready' "$OUT/idle-$name.out" || true)
      [ -n "$ready" ] && break
      sleep 0.1
    done
    sleep 1
    local with
    with=$(rss_total_kb "${pid[$name]}")
    echo "idle $name conns $n $ready rss_before_kb $before rss_kb $with per_conn_bytes $(((with - before) * 1024 / n))" | tee -a "$OUT/idle.txt"
    exec 7>&-
    wait "$client" 2>/dev/null || true
    sleep 1
  done
  cleanup; pids=()
}

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

# The registry with mutual TLS against the same registry in plaintext
# (issue 21), interleaved run by run, each alone on CPU 1 with the client on
# CPU 0: registrations over 10 long-lived HTTP/2 connections (as SDKs hold
# theirs) and propagation to 1,000 watchers as the operator; renewals of
# 1,000 leases as the service that holds them (its rights are checked on
# every renewal).
registry_mtls() {
  : > "$OUT/registry-mtls.txt"
  local certs=$OUT/certs
  cargo build --release --locked -p switchyard-tls --features dev-ca --bin switchyard-certs >/dev/null
  rm -rf "$certs" && "$BIN/switchyard-certs" "$certs" --service renew >/dev/null
  for run in $(seq 1 "$RUNS"); do
    for mode in plaintext mtls; do
      local tls=(--plaintext true) client_env=()
      if [ "$mode" = mtls ]; then
        tls=(--plaintext false --mtls-ca "$certs/ca.pem" --mtls-cert "$certs/registry.pem" --mtls-key "$certs/registry-key.pem")
        client_env=(BENCH_MTLS_DIR="$certs")
      fi
      taskset -c 1 "$BIN/registry" --grpc-listen 127.0.0.1:17200 --http-listen 127.0.0.1:17201 --warm-up 0s "${tls[@]}" \
        >/dev/null 2>&1 & pids+=($!)
      for _ in $(seq 1 50); do (echo > /dev/tcp/127.0.0.1/17200) 2>/dev/null && break; sleep 0.1; done
      sleep 0.5
      reg=$(env "${client_env[@]}" taskset -c 0 "$BIN/bench-registry" switchyard http://127.0.0.1:17200 register "${REG_N:-20000}" 64 | json per_sec)
      prop=$(env "${client_env[@]}" taskset -c 0 "$BIN/bench-registry" switchyard http://127.0.0.1:17200 propagate 1000 "${PROP_WRITES:-100}")
      renew=$(env "${client_env[@]}" BENCH_MTLS_AS=renew taskset -c 0 "$BIN/bench-registry" switchyard http://127.0.0.1:17200 renew 1000 "${RENEW_ROUNDS:-100}" | json per_sec)
      echo "registry-mtls $mode $run register_per_sec $reg renew_per_sec $renew $(echo "$prop" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('p50_us', r['p50_us'], 'p99_us', r['p99_us'], 'missed', r['missed'])")" | tee -a "$OUT/registry-mtls.txt"
      cleanup; pids=()
    done
  done
  medians "$OUT/registry-mtls.txt" plaintext mtls
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

# Three etcd members on tmpfs, on loopback, as one cluster (CPU 1, with the
# registry replicas when there are any): ETCD_URLS lists them.
start_etcd_cluster() {
  local i cluster="" dir
  for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((2380 + 100 * i))"; done
  for i in 0 1 2; do
    dir=/dev/shm/switchyard-bench-etcd-$i
    rm -rf "$dir"
    taskset -c 1 etcd --name "m$i" --data-dir "$dir" \
      --listen-client-urls "http://127.0.0.1:$((2379 + 100 * i))" --advertise-client-urls "http://127.0.0.1:$((2379 + 100 * i))" \
      --listen-peer-urls "http://127.0.0.1:$((2380 + 100 * i))" --initial-advertise-peer-urls "http://127.0.0.1:$((2380 + 100 * i))" \
      --initial-cluster "$cluster" --initial-cluster-state new --heartbeat-interval 250 --election-timeout 2500 \
      --log-level error >/dev/null 2>&1 & pids+=($!)
  done
  ETCD_URLS=http://127.0.0.1:2379,http://127.0.0.1:2479,http://127.0.0.1:2579
  for _ in $(seq 1 100); do ETCDCTL_API=3 etcdctl --endpoints "$ETCD_URLS" endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
}

# Issue 18: the registry on etcd (three replicas) against etcd itself doing
# the same work on the same three members.
registry_ha() {
  : > "$OUT/registry-ha.txt"
  for store in switchyard-ha etcd-cluster; do
    for run in $(seq 1 "$RUNS"); do
      start_etcd_cluster
      url=$ETCD_URLS kind=etcd
      if [ "$store" = switchyard-ha ]; then
        url=""
        for i in 0 1 2; do
          taskset -c 1 "$BIN/registry" --store etcd --etcd-endpoints "$ETCD_URLS" --replica-name "r$i" \
            --grpc-listen "127.0.0.1:$((17300 + 10 * i))" --http-listen "127.0.0.1:$((17301 + 10 * i))" \
            --warm-up 0s --max-ttl-secs 3600 >/dev/null 2>&1 & pids+=($!)
          url+="${url:+,}http://127.0.0.1:$((17300 + 10 * i))"
        done
        for i in 0 1 2; do wait_ready $((17301 + 10 * i)) 100; done
        kind=switchyard
      fi
      reg=$(taskset -c 0 "$BIN/bench-registry" "$kind" "$url" register "${REG_N:-20000}" 64 | json per_sec)
      renew=$(taskset -c 0 "$BIN/bench-registry" "$kind" "$url" renew 1000 "${RENEW_ROUNDS:-300}" | json per_sec)
      prop=$(taskset -c 0 "$BIN/bench-registry" "$kind" "$url" propagate 1000 "${PROP_WRITES:-100}")
      echo "registry-ha $store run $run register_per_sec $reg renew_per_sec $renew propagate $(echo "$prop" | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('p50_us', r['p50_us'], 'p99_us', r['p99_us'], 'missed', r['missed'])")" | tee -a "$OUT/registry-ha.txt"
      cleanup; pids=()
      rm -rf /dev/shm/switchyard-bench-etcd-*
    done
  done
}

for only in "${scenarios[@]}"; do
case $only in
  registry-ha) registry_ha ;;
  proxies) proxies ;;
  balancing) balancing ;;
  failover) failover ;;
  registry) registry ;;
  registry-mtls) registry_mtls ;;
  h2) h2 ;;
  tls) tls ;;
  upstream-tls) upstream_tls ;;
  syscalls) syscalls ;;
  latency) latency ;;
  concurrent) concurrent ;;
  instructions) instructions ;;
  shared) shared ;;
  idle) idle ;;
  all) proxies; concurrent; syscalls; h2; tls; upstream_tls; balancing; failover; registry; registry_mtls; registry_ha; instructions; shared; idle ;;
  *) echo "usage: bench/run.sh [proxies|concurrent|syscalls|latency|h2|tls|upstream-tls|balancing|failover|registry|registry-mtls|registry-ha|instructions|shared|idle]..." >&2; exit 64 ;;
esac
done

python3 bench/report.py "$OUT" > bench/RESULTS.md
echo "wrote bench/RESULTS.md"
