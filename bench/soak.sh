#!/usr/bin/env bash
# Soak: DURATION (default 10 minutes) of joins, abandons and admitted traffic
# (the loadtest harness: visitors join, some abandon, the rest wait, are let
# in, read the seat map, hold, book, claim), with the resident memory (RSS)
# and the open descriptors of every process of the stack sampled every
# INTERVAL, printed as a table, and per process the slope per minute (least
# squares over the samples after the first minute's warm-up). Flat memory and
# descriptors mean nothing grows with the number of visitors or tokens seen.
#
# Usage: bench/soak.sh   (env: DURATION=600 INTERVAL=30 RATE=50 BENCH_NO_BUILD=0)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION="${DURATION:-600}"; INTERVAL="${INTERVAL:-30}"; RATE="${RATE:-50}"
stack_setup soak
db="soak_bench_$(date +%s)_$RANDOM"; prefix="soakbench$(date +%s)$RANDOM"
psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
# One address stands for every visitor: the per-client limits are off (they
# are measured in bench/abuse.sh). Sessions of 2 minutes: what is kept per
# admitted visitor (verified tokens, sessions in Redis) lives as long as the
# session, so it levels off after two minutes instead of growing for the
# whole soak as it would with the default 10.
write_stack "$OUT" "$prefix" "$db" "$RATE" 1s "$LIMITS_OFF" 2m
start_stack "$OUT"

# The harness: a steady stream for the whole soak; a large sale so stock
# lasts (sold-out claims still exercise every path).
"$BIN/loadtest" --proxy "http://127.0.0.1:$WR_PORT" --queue sale --arrivals "$RATE/s" --duration "${DURATION}s" \
  --poll-share 0.2 --abandon-share 0.1 --max-wait 60s --drain 30s --request-timeout 30s \
  --proxy-admin "http://127.0.0.1:$WR_ADMIN" --booking "http://127.0.0.1:$BC_PORT" --booking-admin "http://127.0.0.1:$BC_ADMIN" \
  --admin-token "$TOKEN" --database-url "$PG_SERVER/$db" --create-sale 20x50,100000 \
  --out "$OUT/report.json" > "$OUT/report.txt" 2> "$OUT/progress.log" &
LT_PID=$!; PIDS+=("$LT_PID")

REDIS_PID=$(redis-cli -u "$REDIS_URL" INFO server | tr -d '\r' | sed -n 's/^process_id://p')
# PostgreSQL: the backends serving this soak's database (pool connections).
pg_pids() { psql -qAt "$PG_URL" -c "SELECT pid FROM pg_stat_activity WHERE datname = '$db'" 2>/dev/null; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
sample() { # sample NAME PIDS...: summed RSS (MiB) and descriptors
  local name="$1" rss=0 fd=0 p; shift
  for p in "$@"; do rss=$((rss + $(rss_kib "$p"))); fd=$((fd + $(fds "$p"))); done
  printf "%s %s %.1f %d\n" "$elapsed" "$name" "$(echo "$rss / 1024" | bc -l)" "$fd"
}

: > "$OUT/samples.txt"
start=$(date +%s)
while :; do
  elapsed=$(( $(date +%s) - start ))
  {
    sample waiting-room "$WR_PID"
    sample booking-core "$BC_PID"
    sample loadtest "$LT_PID"
    sample redis "$REDIS_PID"
    # shellcheck disable=SC2046
    sample postgres $(pg_pids)
  } >> "$OUT/samples.txt"
  [ "$elapsed" -ge "$DURATION" ] && break
  kill -0 "$LT_PID" 2>/dev/null || break
  sleep "$INTERVAL"
done
status=PASS
wait "$LT_PID" || status=FAIL
kv() { grep -m1 '^summary ' "$OUT/report.txt" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }

{
  echo "# soak ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: release waiting-room (2 threads, Redis, sessions 2m) + booking-core (PostgreSQL, Redis); loadtest at $RATE/s for ${DURATION}s,"
  echo "       poll share 0.2, abandon share 0.1; RSS and descriptors every ${INTERVAL}s (postgres: the soak database's backends)"
  echo "command: DURATION=$DURATION INTERVAL=$INTERVAL RATE=$RATE bench/soak.sh"
  echo
  gawk '
    { t[$1] = 1; rss[$2, $1] = $3; fd[$2, $1] = $4; if (!($2 in seen)) { seen[$2] = 1; order[++n] = $2 } }
    END {
      printf "%8s", "t (s)"; for (i = 1; i <= n; i++) printf "  %22s", order[i] " MiB/fds"; printf "\n"
      m = asorti(t, ts, "@ind_num_asc")
      for (k = 1; k <= m; k++) {
        printf "%8d", ts[k]
        for (i = 1; i <= n; i++) printf "  %15.1f / %5d", rss[order[i], ts[k]], fd[order[i], ts[k]]
        printf "\n"
      }
      printf "%8s", "slope/min"
      for (i = 1; i <= n; i++) {
        # least squares after the first minute (warm-up: pools and caches filling)
        sx = sy = sxx = sxy = sf = sxf = c = 0
        for (k = 1; k <= m; k++) {
          x = ts[k] / 60; if (x < 1) continue
          y = rss[order[i], ts[k]]; f = fd[order[i], ts[k]]
          sx += x; sy += y; sxx += x * x; sxy += x * y; sf += f; sxf += x * f; c++
        }
        d = c * sxx - sx * sx
        if (c < 2 || d == 0) { printf "  %22s", "n/a"; continue }
        printf "  %+11.2f / %+8.2f", (c * sxy - sx * sy) / d, (c * sxf - sx * sf) / d
      }
      printf "\n"
    }' "$OUT/samples.txt"
  echo
  echo "harness: $(kv visitors) visitors, $(kv admitted_by_tick) admitted, $(kv bookings) bookings, $(kv claims) coupons," \
    "$(kv failed_visitors) failed, failed checks: $(kv failed_checks), audit $status"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
redis-cli -u "$REDIS_URL" --scan --pattern "*$prefix*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
