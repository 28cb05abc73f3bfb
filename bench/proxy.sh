#!/usr/bin/env bash
# Issue 2 benchmarks, each next to its baseline measured in the same run:
#  1. joins/s through the proxy (Redis backend), per-client limits at their
#     defaults, each join from its own X-Forwarded-For address behind a
#     trusted 127.0.0.1 (bench/join.lua), vs redis-benchmark running the same
#     join script (EVALSHA, with the places cap) directly against Redis: the ceiling.
#  2. admitted requests/s and p99 through the proxy (valid, cached token) vs
#     nginx as a plain reverse proxy in front of the same upstream, same
#     worker count, same wrk load (the same requests, token header included);
#     and, for reference, the same proxy with the fast lane off (every request
#     through Pingora's proxy loop) and with server.sched_batch off (workers
#     under the default CPU scheduling policy). Joins are also measured on an
#     instance with every per-client limit off: the cost of the limits.
# Usage: bench/proxy.sh   (env: RUNS=3 DURATION=10s CONNS=64 THREADS=2)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RUNS="${RUNS:-3}"; DURATION="${DURATION:-10s}"; CONNS="${CONNS:-64}"; THREADS="${THREADS:-2}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
OUT="$OUT_BASE/proxy-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
cd "$ROOT"
cargo build --release -q -p waiting-room
BIN="$TARGET_DIR/release/waiting-room"

pick_port UP_PORT 18181; pick_port WR_PORT 18080; pick_port WR_METRICS 18091; pick_port NGX_PORT 18090
pick_port PG_PORT 18070; pick_port PG_METRICS 18071; pick_port SN_PORT 18060; pick_port SN_METRICS 18061
pick_port NL_PORT 18050; pick_port NL_METRICS 18051
PREFIX="bench$(date +%s)"

# The upstream both proxies forward to: nginx answering 200 "ok" (1 worker).
cat > "$OUT/upstream.conf" <<NGX
worker_processes 1;
error_log $OUT/upstream-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$UP_PORT; location / { return 200 "ok\n"; } }
}
NGX
start_nginx "$OUT/upstream.conf" "$OUT/upstream"

# nginx as a plain reverse proxy, same worker count as the waiting room's threads.
cat > "$OUT/nginx-proxy.conf" <<NGX
worker_processes $THREADS;
error_log $OUT/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NGX_PORT;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
NGX
start_nginx "$OUT/nginx-proxy.conf" "$OUT/nginx-proxy"

cat > "$OUT/wr.toml" <<TOML
[server]
listen = "127.0.0.1:$WR_PORT"
metrics_listen = "127.0.0.1:$WR_METRICS"
upstream = "127.0.0.1:$UP_PORT"
threads = $THREADS
# wrk stands for a CDN in front of many visitors: its X-Forwarded-For is believed.
trusted_proxies = ["127.0.0.1/32"]
[store]
backend = "redis"
redis_url = "$REDIS_URL"
key_prefix = "$PREFIX"
[keys]
dir = "$OUT/keys"
[log]
level = "warn"
[admin]
listen = ""
# Joins: nobody is released during the run (one release an hour).
[[queues]]
id = "join"
paths = ["/join"]
release_per_tick = 1
tick = "1h"
session = "10m"
# Admitted traffic: free entry hands out a token at once.
[[queues]]
id = "open"
paths = ["/api"]
free_entry = 1000000
release_per_tick = 1
tick = "1h"
session = "1h"
TOML
"$BIN" --config "$OUT/wr.toml" 2> "$OUT/wr.log" &
PIDS+=($!)
# The same proxy with the fast lane off, sharing keys and queues.
WR_SERVER__LISTEN="127.0.0.1:$PG_PORT" WR_SERVER__METRICS_LISTEN="127.0.0.1:$PG_METRICS" WR_SERVER__FAST_LANE=false \
  WR_SERVER__RELEASE_TICKS=false "$BIN" --config "$OUT/wr.toml" 2> "$OUT/wr-pingora.log" &
PIDS+=($!)
# The same proxy with its workers under the default scheduling policy.
WR_SERVER__LISTEN="127.0.0.1:$SN_PORT" WR_SERVER__METRICS_LISTEN="127.0.0.1:$SN_METRICS" WR_SERVER__SCHED_BATCH=false \
  WR_SERVER__RELEASE_TICKS=false "$BIN" --config "$OUT/wr.toml" 2> "$OUT/wr-normal.log" &
PIDS+=($!)
# The same proxy with every per-client limit off (same keys, queues and Redis).
{ cat "$OUT/wr.toml"; printf '[limits]\nnew_visitors = { rate = 0.0, burst = 0.0 }\njoins = { rate = 0.0, burst = 0.0 }\nmax_waiting_per_client = 0\n'; } \
  > "$OUT/wr-nolimits.toml"
WR_SERVER__LISTEN="127.0.0.1:$NL_PORT" WR_SERVER__METRICS_LISTEN="127.0.0.1:$NL_METRICS" \
  WR_SERVER__RELEASE_TICKS=false "$BIN" --config "$OUT/wr-nolimits.toml" 2> "$OUT/wr-nolimits.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$WR_PORT/wr/healthz"
wait_http "http://127.0.0.1:$NL_PORT/wr/healthz"
wait_http "http://127.0.0.1:$SN_PORT/wr/healthz"
wait_http "http://127.0.0.1:$PG_PORT/wr/healthz"
wait_http "http://127.0.0.1:$NGX_PORT/"

TOKEN=$(curl -s -X POST "http://127.0.0.1:$WR_PORT/wr/open/join" | sed -E 's/.*"token":"([^"]+)".*/\1/')
[ "${#TOKEN}" -gt 100 ] || { echo "no token: $TOKEN"; exit 1; }
for port in "$WR_PORT" "$PG_PORT" "$SN_PORT"; do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/api/x")" = 200 ]
done

SHA=$(redis-cli -u "$REDIS_URL" SCRIPT LOAD "$(cat waiting-room/src/store/lua/standing.lua)")
K="{${PREFIX}-rb:q}"

for run in $(seq "$RUNS"); do
  echo "== run $run/$RUNS"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/join.lua "http://127.0.0.1:$WR_PORT/wr/join/join" > "$OUT/joins-$run.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -s bench/join.lua "http://127.0.0.1:$NL_PORT/wr/join/join" > "$OUT/joins-nolimits-$run.txt"
  redis-benchmark -u "$REDIS_URL" -q -n 300000 -c "$CONNS" -r 100000000 \
    EVALSHA "$SHA" 10 "$K:line" "$K:seen" "$K:sessions" "$K:admitted" "$K:seq" "$K:places" "$K:place_of" "$K:proof:-" \
    "$K:epoch" "$K:honoured" __rand_int__ join 0 0 600000 60000 0 "c__rand_int__" 50 "" 0 00000000000000e1 "" "" \
    > "$OUT/redis-eval-$run.txt" 2>&1
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$WR_PORT/api/x" > "$OUT/admitted-$run.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$NGX_PORT/api/x" > "$OUT/nginx-$run.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PG_PORT/api/x" > "$OUT/pingora-$run.txt"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$SN_PORT/api/x" > "$OUT/normal-$run.txt"
done

joins=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/joins-$r.txt"; done | median)
join_err=$(for r in $(seq "$RUNS"); do wrk_errors "$OUT/joins-$r.txt"; done | paste -sd+ | bc)
nl=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/joins-nolimits-$r.txt"; done | median)
eval_rate=$(for r in $(seq "$RUNS"); do tr '\r' '\n' < "$OUT/redis-eval-$r.txt" | grep -Eo '[0-9.]+ requests per second' | tail -1 | awk '{print $1}'; done | median)
adm=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/admitted-$r.txt"; done | median)
adm_p99=$(for r in $(seq "$RUNS"); do wrk_p99_ms "$OUT/admitted-$r.txt"; done | median)
adm_err=$(for r in $(seq "$RUNS"); do wrk_errors "$OUT/admitted-$r.txt"; done | paste -sd+ | bc)
ngx=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/nginx-$r.txt"; done | median)
ngx_p99=$(for r in $(seq "$RUNS"); do wrk_p99_ms "$OUT/nginx-$r.txt"; done | median)
pg=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/pingora-$r.txt"; done | median)
pg_p99=$(for r in $(seq "$RUNS"); do wrk_p99_ms "$OUT/pingora-$r.txt"; done | median)
pg_err=$(for r in $(seq "$RUNS"); do wrk_errors "$OUT/pingora-$r.txt"; done | paste -sd+ | bc)
sn=$(for r in $(seq "$RUNS"); do wrk_rps "$OUT/normal-$r.txt"; done | median)
sn_p99=$(for r in $(seq "$RUNS"); do wrk_p99_ms "$OUT/normal-$r.txt"; done | median)
sn_err=$(for r in $(seq "$RUNS"); do wrk_errors "$OUT/normal-$r.txt"; done | paste -sd+ | bc)
waiting=$(redis-cli -u "$REDIS_URL" ZCARD "{$PREFIX:join}:line")

{
  echo "# proxy benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "load: wrk -t$THREADS -c$CONNS -d$DURATION, median of $RUNS runs; proxy threads=$THREADS, nginx worker_processes=$THREADS"
  printf "joins/s through proxy (Redis)        %10.0f   (errors: %s; %s visitors in line after the runs)\n" "$joins" "$join_err" "$waiting"
  printf "redis-benchmark EVALSHA join script  %10.0f   ratio proxy/EVAL = %.2f\n" "$eval_rate" "$(echo "$joins / $eval_rate" | bc -l)"
  printf "joins/s, per-client limits off       %10.0f   ratio limits on/off = %.2f\n" "$nl" "$(echo "$joins / $nl" | bc -l)"
  printf "admitted req/s through proxy         %10.0f   p99 %s ms (errors: %s)\n" "$adm" "$adm_p99" "$adm_err"
  printf "nginx reverse proxy req/s            %10.0f   p99 %s ms   ratio proxy/nginx = %.2f\n" "$ngx" "$ngx_p99" "$(echo "$adm / $ngx" | bc -l)"
  printf "fast lane off: admitted req/s       %10.0f   p99 %s ms (errors: %s)   ratio to nginx = %.2f\n" "$pg" "$pg_p99" "$pg_err" "$(echo "$pg / $ngx" | bc -l)"
  printf "sched_batch off: admitted req/s     %10.0f   p99 %s ms (errors: %s)   ratio to nginx = %.2f\n" "$sn" "$sn_p99" "$sn_err" "$(echo "$sn / $ngx" | bc -l)"
  for r in $(seq "$RUNS"); do
    a=$(wrk_rps "$OUT/admitted-$r.txt"); n=$(wrk_rps "$OUT/nginx-$r.txt"); b=$(wrk_rps "$OUT/normal-$r.txt")
    printf "  run %s: proxy %.0f/s, nginx %.0f/s, ratio %.2f; sched_batch off %.0f/s, ratio %.2f\n" \
      "$r" "$a" "$n" "$(echo "$a / $n" | bc -l)" "$b" "$(echo "$b / $n" | bc -l)"
  done
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
redis-cli -u "$REDIS_URL" --scan --pattern "{$PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
redis-cli -u "$REDIS_URL" --scan --pattern "{$PREFIX-rb*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
