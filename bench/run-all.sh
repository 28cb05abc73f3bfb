#!/usr/bin/env bash
# `make bench`: run every benchmark against locally started services (release
# builds, Redis, PostgreSQL), then write BENCHMARKS.md from their summaries.
#
#   bench/run-all.sh                  # full suite (~15-20 min on 2 cores)
#   BENCH_QUICK=1 bench/run-all.sh    # short runs to check the suite end to end (~5 min, numbers not comparable)
#
# Each part can be sized through the environment (defaults: full / quick):
#   PROXY_RUNS=5/1 PROXY_DURATION=10s/3s                       bench/proxy.sh
#   WS_CONNECTIONS=15000/2000 WS_SECONDS=40/12 WS_RUNS=1/1     bench/ws.sh
#   BOOKING_RUNS=3/1 BOOKING_ARGS=""/"--claims 5000 …"         bench/booking/run.sh
#   SALE_RATES="250 500 750 1000 1500 2000"/"100 200" SALE_DURATION=20s/5s SALE_CONFIRM=2/0   bench/sale.sh
#   (and bench/sale.sh's own MAX_P99_MS, SEATS, STOCK, …)
#   POW_BITS="10 12 14 16 18 20"/"10 12 14" POW_SAMPLES=9/3    bench/pow.sh
#   BENCH_ONLY="proxy ws booking sale pow"                     a subset (the other rows say "not run")
# A part that fails leaves "failed" in its rows; the suite goes on. bench/report.sh writes the page.
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# One build directory for every script (bench/booking/run.sh would otherwise build into target-bc).
export CARGO_TARGET_DIR="$TARGET_DIR"
QUICK="${BENCH_QUICK:-0}"
q() { if [ "$QUICK" = 1 ]; then echo "$2"; else echo "$1"; fi; } # q FULL QUICK
PROXY_RUNS="${PROXY_RUNS:-$(q 5 1)}"; PROXY_DURATION="${PROXY_DURATION:-$(q 10s 3s)}"
WS_CONNECTIONS="${WS_CONNECTIONS:-$(q 15000 2000)}"; WS_SECONDS="${WS_SECONDS:-$(q 40 12)}"; WS_RUNS="${WS_RUNS:-1}"
BOOKING_RUNS="${BOOKING_RUNS:-$(q 3 1)}"
BOOKING_ARGS="${BOOKING_ARGS-$(q "" "--claims 5000 --visitors 2000 --stock 500 --seats 500")}"
SALE_RATES="${SALE_RATES:-$(q "250 500 750 1000 1500 2000" "100 200")}"; SALE_DURATION="${SALE_DURATION:-$(q 20s 5s)}"
SALE_CONFIRM="${SALE_CONFIRM:-$(q 2 0)}"
POW_BITS="${POW_BITS:-$(q "10 12 14 16 18 20" "10 12 14")}"; POW_SAMPLES="${POW_SAMPLES:-$(q 9 3)}"
BENCH_ONLY="${BENCH_ONLY:-proxy ws booking sale pow}"
STAMP="$(date +%Y%m%d-%H%M%S)"
LOG="$OUT_BASE/all-$STAMP"; mkdir -p "$LOG"
started=$(date +%s)

wanted() { [[ " $BENCH_ONLY " == *" $1 "* ]]; }
# run_part NAME COMMAND...: run a benchmark, keep its output, and print the summary dir it reports.
run_part() {
  local name="$1"; shift
  echo "== $name: $*" >&2
  if "$@" > "$LOG/$name.log" 2>&1; then
    sed -n 's/^raw output: //p' "$LOG/$name.log" | tail -1
  else
    echo "   $name failed; see $LOG/$name.log" >&2
  fi
}

PROXY_DIR=""; WS_DIR=""; BOOKING_DIR=""; SALE_DIR=""; POW_DIR=""
if wanted proxy; then PROXY_DIR=$(run_part proxy env RUNS="$PROXY_RUNS" DURATION="$PROXY_DURATION" bench/proxy.sh); fi
if wanted ws; then WS_DIR=$(run_part ws env CONNECTIONS="$WS_CONNECTIONS" SECONDS_="$WS_SECONDS" RUNS="$WS_RUNS" bench/ws.sh); fi
if wanted booking; then
  # bench/booking/run.sh prints to stdout; keep each run and take medians here.
  BOOKING_DIR="$OUT_BASE/booking-$STAMP"; mkdir -p "$BOOKING_DIR"
  echo "== booking: bench/booking/run.sh $BOOKING_ARGS (x$BOOKING_RUNS)" >&2
  for r in $(seq "$BOOKING_RUNS"); do
    # shellcheck disable=SC2086
    bench/booking/run.sh $BOOKING_ARGS > "$BOOKING_DIR/run-$r.txt" 2>&1 || echo "   booking run $r failed" >&2
  done
fi
if wanted sale; then
  SALE_DIR=$(run_part sale env RATES="$SALE_RATES" DURATION="$SALE_DURATION" CONFIRM="$SALE_CONFIRM" bench/sale.sh)
fi

if wanted pow; then POW_DIR=$(run_part pow env BITS="$POW_BITS" SAMPLES="$POW_SAMPLES" bench/pow.sh); fi

export QUICK POW_BITS POW_SAMPLES POW_DIR PROXY_RUNS PROXY_DURATION WS_CONNECTIONS WS_SECONDS WS_RUNS BOOKING_RUNS BOOKING_ARGS SALE_RATES SALE_DURATION
export SALE_CONFIRM BENCH_ONLY PROXY_DIR WS_DIR BOOKING_DIR SALE_DIR
MINUTES=$(( ($(date +%s) - started) / 60 )) LOG="$LOG" bench/report.sh
