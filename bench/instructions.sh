#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: the
# same for the same binary and load whatever else the machine is doing,
# where CPU time from /proc moves by ±20 % between runs here.
#
#   bench/instructions.sh            (bench/run.sh instructions runs it too)
#
# Each proxy runs under callgrind twice, once for N1 and once for N2
# requests (500 requests/s, 8 connections); (Ir(N2) - Ir(N1)) / (N2 - N1)
# leaves out start-up, shutdown and what it does per second rather than per
# request. System calls are not instructions of the process: the kernel's
# share is in the CPU-time figures of RESULTS.md. Writes
# bench/out/instructions.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/out
BIN=$ROOT/target/x86_64-unknown-linux-gnu/release
mkdir -p "$OUT/cg"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
N1=${N1:-1000} N2=${N2:-5000} RATE=500

pids=()
cleanup() { for p in "${pids[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

for i in 1 2 3; do "$BIN/bench-backend" "127.0.0.1:900$i" 1024 0 "b$i" & pids+=($!); done
"$BIN/registry" --grpc-listen 127.0.0.1:17100 --http-listen 127.0.0.1:17101 --warm-up 0s >/dev/null 2>&1 & pids+=($!)
sleep 0.5
for i in 1 2 3; do
  curl -s -d "{\"service\":\"bench\",\"instance_id\":\"b$i\",\"address\":\"127.0.0.1:900$i\",\"protocol\":\"http1\",\"ttl_seconds\":300,\"metadata\":{\"lb.policy\":\"peak_ewma\"}}" \
    http://127.0.0.1:17101/api/register >/dev/null
done
mkdir -p "$OUT/cg/gateway" "$OUT/cg/nginx"
printf '[[route]]\nname = "bench"\nservice = "bench"\npath_prefix = "/"\n' > "$OUT/cg/gateway/routes.toml"
cat > "$OUT/cg/nginx/nginx.conf" <<EOF
worker_processes 1;
master_process off;
daemon off;
pid $OUT/cg/nginx/nginx.pid;
error_log $OUT/cg/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000000;
  client_body_temp_path $OUT/cg/nginx; proxy_temp_path $OUT/cg/nginx; fastcgi_temp_path $OUT/cg/nginx; uwsgi_temp_path $OUT/cg/nginx; scgi_temp_path $OUT/cg/nginx;
  upstream b { server 127.0.0.1:9001; server 127.0.0.1:9002; server 127.0.0.1:9003; keepalive 128; keepalive_requests 1000000000; }
  server {
    listen 127.0.0.1:8180;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF

# Runs proxy $1 (gateway | baseline | nginx) under callgrind for $2 requests;
# prints "ok instructions".
one() {
  local name=$1 n=$2 port=8180 out=$OUT/cg/$1-$2.out cmd
  case $name in
    nginx) cmd=(nginx -c "$OUT/cg/nginx/nginx.conf") ;;
    *)
      local bin=$BIN/gateway; [ "$name" = baseline ] && bin=$OUT/gateway-baseline
      port=8380
      cmd=("$bin" --http-listen 127.0.0.1:8380 --admin-listen 127.0.0.1:8381 --routes "$OUT/cg/gateway/routes.toml"
        --registry http://127.0.0.1:17100 --register-self false --access-log false --worker-threads 1) ;;
  esac
  valgrind --tool=callgrind --callgrind-out-file="$out" "${cmd[@]}" >/dev/null 2>&1 &
  local vp=$!
  # Ready: the admin's /readyz for a gateway (no proxied request before
  # the count starts), the port for nginx.
  for _ in $(seq 1 300); do
    if [ "$name" = nginx ]; then
      (echo > /dev/tcp/127.0.0.1/8180) 2>/dev/null && break
    else
      curl -sf http://127.0.0.1:8381/readyz >/dev/null && break
    fi
    sleep 0.2
  done
  local ok
  ok=$("$BIN/bench-load" "http://127.0.0.1:$port/" "$RATE" $((n / RATE)) 8 | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['ok'])")
  kill -TERM "$vp"; wait "$vp" 2>/dev/null || true
  echo "$ok $(awk '/^summary:/ {print $2}' "$out")"
}

names=(nginx gateway)
[ -x "$OUT/gateway-baseline" ] && names+=(baseline)
: > "$OUT/instructions.txt"
for name in "${names[@]}"; do
  read -r ok1 ir1 < <(one "$name" "$N1")
  read -r ok2 ir2 < <(one "$name" "$N2")
  per=$(python3 -c "print(round(($ir2 - $ir1) / max($ok2 - $ok1, 1)))")
  echo "instructions $name per_request $per runs $ok1/$ir1 $ok2/$ir2" | tee -a "$OUT/instructions.txt"
done
