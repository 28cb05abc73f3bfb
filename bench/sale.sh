#!/usr/bin/env bash
# Full-sale benchmark: the loadtest harness against the whole stack (release
# builds of waiting-room and booking-core on Redis + PostgreSQL), at a ladder
# of arrival rates. Each rate gets a fresh stack (fresh database, fresh Redis
# prefix) and one harness run; a rate is sustained when the audit passes with
# zero failures, the harness started visitors on schedule (>= 95% of the rate)
# and every request step's p99 (gate, join, first WebSocket message, poll,
# seat map, hold, confirm, claim; not the time in line) is at most MAX_P99_MS
# (empty: no latency bound). The ladder stops at the first rate that fails;
# the highest sustained rate is then run CONFIRM more times.
#
# Usage: bench/sale.sh   (env: RATES="250 500 750 1000 1500 2000" DURATION=20s CONFIRM=2 TICK=1s MAX_P99_MS=1000
#                          SEATS=10x40 STOCK=2000 POLL_SHARE=0.1 ABANDON_SHARE=0.05 EXTRA="" BENCH_NO_BUILD=0)
# N per tick is the arrival rate × TICK (admission keeps up, so the sale's
# bookings run at the arrival rate); visitors wait for one or two ticks.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
RATES="${RATES:-250 500 750 1000 1500 2000}"; DURATION="${DURATION:-20s}"; CONFIRM="${CONFIRM:-2}"; TICK="${TICK:-1s}"
MAX_P99_MS="${MAX_P99_MS-1000}"
SEATS="${SEATS:-10x40}"; STOCK="${STOCK:-2000}"; POLL_SHARE="${POLL_SHARE:-0.1}"; ABANDON_SHARE="${ABANDON_SHARE:-0.05}"
EXTRA="${EXTRA:-}"
stack_setup sale
TICK_SECS=$(awk -v t="$TICK" 'BEGIN { if (t ~ /ms$/) { sub(/ms/, "", t); print t / 1000 } else { sub(/s$/, "", t); print t } }')
# run_rate RATE LABEL: one fresh stack, one harness run; prints PASS or FAIL.
run_rate() {
  local rate="$1" label="$2" n db prefix dir wr_pid bc_pid status
  n=$(awk -v r="$rate" -v t="$TICK_SECS" 'BEGIN { n = int(r * t + 0.5); print (n < 1 ? 1 : n) }')
  db="sale_bench_$(date +%s)_$RANDOM"; prefix="salebench$(date +%s)$RANDOM"; dir="$OUT/$label"
  mkdir -p "$dir"
  psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
  write_stack "$dir" "$prefix" "$db" "$n" "$TICK" "$LIMITS_OFF"
  start_stack "$dir"; wr_pid=$WR_PID; bc_pid=$BC_PID
  status=PASS
  # shellcheck disable=SC2086
  "$BIN/loadtest" --proxy "http://127.0.0.1:$WR_PORT" --queue sale --arrivals "$rate/s" --duration "$DURATION" \
    --poll-share "$POLL_SHARE" --abandon-share "$ABANDON_SHARE" --max-wait 60s --drain 60s --request-timeout 30s \
    --proxy-admin "http://127.0.0.1:$WR_ADMIN" --booking "http://127.0.0.1:$BC_PORT" --booking-admin "http://127.0.0.1:$BC_ADMIN" --admin-token "$TOKEN" \
    --database-url "$PG_SERVER/$db" --create-sale "$SEATS,$STOCK" --progress-interval 5s \
    --out "$dir/report.json" $EXTRA > "$dir/report.txt" 2> "$dir/progress.log" || status=FAIL
  # Started on schedule: at least 95% of the planned rate.
  if [ "$status" = PASS ] && ! awk -v a="$(kv achieved_per_second "$dir/report.txt")" -v p="$(kv planned_per_second "$dir/report.txt")" \
       'BEGIN { exit !(a >= 0.95 * p) }'; then
    status=FAIL
  fi
  # Every request step (not the time in line) within the latency bound.
  if [ "$status" = PASS ] && [ -n "$MAX_P99_MS" ]; then
    for step in gate join ws_first_message poll seat_map hold confirm claim; do
      p99=$(kv "p99_${step}_ms" "$dir/report.txt")
      if [ -n "$p99" ] && ! awk -v p="$p99" -v m="$MAX_P99_MS" 'BEGIN { exit !(p <= m) }'; then status=FAIL; fi
    done
  fi
  kill "$wr_pid" "$bc_pid" 2>/dev/null || true; wait "$wr_pid" "$bc_pid" 2>/dev/null || true
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS_URL" --scan --pattern "*$prefix*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
  echo "$status"
}

# kv KEY FILE: a value from the harness's "summary key=value …" line.
kv() { grep -m1 '^summary ' "$2" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# One line per run: the figures behind the verdict.
describe() { # describe DIR
  local f="$1/report.txt"
  grep -q '^summary ' "$f" 2>/dev/null || { echo "no report (see $f and $1/progress.log)"; return; }
  echo "planned $(kv planned_per_second "$f")/s started $(kv achieved_per_second "$f")/s;" \
    "$(kv admitted_by_tick "$f") admitted, $(kv bookings "$f") bookings, $(kv claims "$f") coupons;" \
    "tau $(kv tau "$f"); failed checks: $(kv failed_checks "$f");" \
    "p99 ms: join $(kv p99_join_ms "$f"), ws first $(kv p99_ws_first_message_ms "$f"), seat map $(kv p99_seat_map_ms "$f")," \
    "hold $(kv p99_hold_ms "$f"), confirm $(kv p99_confirm_ms "$f"), claim $(kv p99_claim_ms "$f")"
}

best=0
: > "$OUT/runs.txt"
for rate in $RATES; do
  echo "== sale at $rate/s for $DURATION"
  verdict=$(run_rate "$rate" "rate-$rate")
  echo "rate $rate $verdict $(describe "$OUT/rate-$rate")" | tee -a "$OUT/runs.txt"
  [ "$verdict" = PASS ] || break
  best=$rate
done
confirmed=0; tried=0
if [ "$best" != 0 ]; then
  confirmed=1; tried=1
  for i in $(seq "$CONFIRM"); do
    echo "== confirming $best/s ($i/$CONFIRM)"
    verdict=$(run_rate "$best" "confirm-$best-$i")
    echo "rate $best $verdict $(describe "$OUT/confirm-$best-$i")" | tee -a "$OUT/runs.txt"
    tried=$((tried + 1)); [ "$verdict" = PASS ] && confirmed=$((confirmed + 1))
  done
fi
{
  echo "# full-sale benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: release waiting-room (2 threads, Redis) + booking-core (PostgreSQL, Redis), one stack per run; N = rate x T, T = $TICK;"
  echo "       sale $SEATS seats, $STOCK coupons; poll share $POLL_SHARE, abandon share $ABANDON_SHARE; $DURATION of arrivals per run"
  echo "sustained = zero audit failures, arrivals started on schedule, p99 of every request step <= ${MAX_P99_MS:-(no bound)} ms"
  echo "command: RATES=\"$RATES\" DURATION=$DURATION MAX_P99_MS=$MAX_P99_MS bench/sale.sh (loadtest --arrivals RATE/s --duration $DURATION --create-sale $SEATS,$STOCK …)"
  cat "$OUT/runs.txt"
  echo "sustained_rate $best"
  echo "confirmed $confirmed/$tried"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
