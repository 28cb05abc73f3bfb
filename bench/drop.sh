#!/usr/bin/env bash
# A drop (issue 16): VISITORS arrive during a queue's pre-queue, the lottery
# orders them at `opens_at`, LATE more arrive after the opening, and a
# ROWSxSEATS event (400 seats) sells out; the queue follows the booking
# core's stock (`stop_when_sold_out`), so everyone still in line hears
# SOLD_OUT. One run on a fresh stack (release waiting-room on Redis,
# booking-core on a fresh PostgreSQL database), the loadtest harness with
# --drop: its audit checks the published draw, the admission order against
# it (then FIFO for later arrivals), no admission after sell-out beyond
# freed stock, and that every waiting socket heard SOLD_OUT within 1 s of
# the last booking; `waiting-room verify-lottery` checks the draw too.
#
# Usage: bench/drop.sh   (env: VISITORS=10000 RATE=500 LATE=20 SEATS=20x20 N=50 TICK=1s STOCK_POLL=200ms
#                         POLL_SHARE=0.1 LEAD=25 MARGIN=10 EXTRA="" BENCH_NO_BUILD=0)
# The pre-queue opens LEAD s after the script starts (time to start the
# stack) and the sale opens MARGIN s after the last planned arrival.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
VISITORS="${VISITORS:-10000}"; RATE="${RATE:-500}"; LATE="${LATE:-20}"; SEATS="${SEATS:-20x20}"
N="${N:-50}"; TICK="${TICK:-1s}"; STOCK_POLL="${STOCK_POLL:-200ms}"; POLL_SHARE="${POLL_SHARE:-0.1}"
LEAD="${LEAD:-25}"; MARGIN="${MARGIN:-10}"; EXTRA="${EXTRA:-}"
stack_setup drop
DURATION_MS=$(awk -v v="$VISITORS" -v r="$RATE" 'BEGIN { printf "%d", v * 1000 / r }')
NOW=$(date +%s)
PREQUEUE_FROM=$(date -u -d "@$((NOW + LEAD))" +%Y-%m-%dT%H:%M:%SZ)
OPENS_AT=$(date -u -d "@$((NOW + LEAD + (DURATION_MS + 999) / 1000 + MARGIN))" +%Y-%m-%dT%H:%M:%SZ)
db="drop_bench_$(date +%s)_$RANDOM"; prefix="dropbench$(date +%s)$RANDOM"; dir="$OUT/run"
psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null
cleanup_drop() {
  psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  redis-cli -u "$REDIS_URL" --scan --pattern "*$prefix*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
}
trap 'cleanup; cleanup_drop' EXIT
write_stack "$dir" "$prefix" "$db" "$N" "$TICK" "$LIMITS_OFF" 30m
# The queue (last table of the file) gets its schedule and follows the
# stock of event 1: the first event of the fresh database, which the
# harness creates (--create-sale) before the pre-queue opens.
cat >> "$dir/waiting-room.toml" <<TOML
prequeue_from = "$PREQUEUE_FROM"
opens_at = "$OPENS_AT"
stop_when_sold_out = true
stock_events = [1]

[stock]
url = "http://127.0.0.1:$BC_ADMIN/admin/stock"
token = "$TOKEN"
poll_interval = "$STOCK_POLL"
TOML
start_stack "$dir"
echo "== drop: $VISITORS visitors at $RATE/s into the pre-queue from $PREQUEUE_FROM, opening $OPENS_AT, $SEATS seats"
status=PASS
# shellcheck disable=SC2086
"$BIN/loadtest" --drop --proxy "http://127.0.0.1:$WR_PORT" --queue sale --arrivals "$RATE/s" --duration "${DURATION_MS}ms" \
  --late-arrivals "$LATE" --poll-share "$POLL_SHARE" --abandon-share 0 --confirm 1 --claim-twice 0 \
  --max-wait 10m --drain 120s --request-timeout 30s \
  --proxy-admin "http://127.0.0.1:$WR_ADMIN" --booking "http://127.0.0.1:$BC_PORT" --booking-admin "http://127.0.0.1:$BC_ADMIN" \
  --admin-token "$TOKEN" --database-url "$PG_SERVER/$db" --create-sale "$SEATS,1000000" --progress-interval 5s \
  --out "$dir/report.json" $EXTRA > "$dir/report.txt" 2> "$dir/progress.log" || status=FAIL
"$BIN/waiting-room" verify-lottery --url "http://127.0.0.1:$WR_PORT" --queue sale > "$dir/verify-lottery.txt" 2>&1 || status=FAIL
event=$(grep -o '"event": *[0-9]*' "$dir/report.json" 2>/dev/null | head -1 | grep -o '[0-9]*$' || true)
[ "${event:-1}" = 1 ] || { echo "the sale's event is $event, the queue follows event 1" >&2; status=FAIL; }
kv() { grep -m1 '^summary ' "$dir/report.txt" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }
{
  echo "# drop benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: release waiting-room (2 threads, Redis) + booking-core (PostgreSQL), N = $N per $TICK, stock read every $STOCK_POLL;"
  echo "       $VISITORS visitors at $RATE/s into the pre-queue, $LATE after the opening; $SEATS seats; poll share $POLL_SHARE"
  echo "command: bench/drop.sh (VISITORS=$VISITORS RATE=$RATE LATE=$LATE SEATS=$SEATS N=$N)"
  echo "verdict: $status"
  echo "entrants $(kv entrants) (harness $(kv harness_entrants)); later arrivals $(kv later_arrivals), admitted $(kv admitted_later)"
  echo "admitted $(kv admitted_by_tick) by tick ($(kv admitted_entrants) entrants), first $(kv first_admission_after_draw_ms) ms after the draw; bookings $(kv bookings)"
  echo "stock at zero $(kv sold_out_after_draw_ms) ms after the draw; admitted after it $(kv admitted_after_sold_out) (freed $(kv freed_after_sold_out));" \
    "last booking $(kv last_booking_after_draw_ms) ms after the draw"
  echo "told SOLD_OUT $(kv sold_out_visitors), on a socket $(kv sockets_told); slowest socket $(kv slowest_socket_after_last_booking_ms) ms after the last booking"
  echo "join p99 $(kv p99_join_ms) ms, ws first message p99 $(kv p99_ws_first_message_ms) ms, start lag p99 $(kv start_lag_p99_ms) ms; failed checks: $(kv failed_checks)"
  echo "verify-lottery: $(head -c 300 "$dir/verify-lottery.txt" | tr '\n' ' ')"
  sed -n '/^drop: /p; /^audit:/,/^audit /p' "$dir/report.txt"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
[ "$status" = PASS ]
