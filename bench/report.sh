#!/usr/bin/env bash
# Write BENCHMARKS.md from the summaries of one `make bench` (bench/run-all.sh
# calls it). To redo the page from earlier runs, point it at their folders:
#   PROXY_DIR=bench/out/proxy-… WS_DIR=bench/out/ws-… BOOKING_DIR=bench/out/booking-… SALE_DIR=bench/out/sale-… \
#   POW_DIR=bench/out/pow-… bench/report.sh
# The *_RUNS, *_ARGS, SALE_* and QUICK variables only label the commands (see bench/run-all.sh).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
QUICK="${QUICK:-0}"; BENCH_ONLY="${BENCH_ONLY:-proxy ws booking sale pow}"; LOG="${LOG:-bench/out}"
PROXY_DIR="${PROXY_DIR:-}"; WS_DIR="${WS_DIR:-}"; BOOKING_DIR="${BOOKING_DIR:-}"; SALE_DIR="${SALE_DIR:-}"
POW_DIR="${POW_DIR:-}"; POW_BITS="${POW_BITS:-10 12 14 16 18 20}"; POW_SAMPLES="${POW_SAMPLES:-9}"
PROXY_RUNS="${PROXY_RUNS:-5}"; PROXY_DURATION="${PROXY_DURATION:-10s}"
WS_CONNECTIONS="${WS_CONNECTIONS:-15000}"; WS_SECONDS="${WS_SECONDS:-40}"
BOOKING_RUNS="${BOOKING_RUNS:-3}"; BOOKING_ARGS="${BOOKING_ARGS:-}"
SALE_RATES="${SALE_RATES:-250 500 750 1000 1500 2000}"; SALE_DURATION="${SALE_DURATION:-20s}"; SALE_CONFIRM="${SALE_CONFIRM:-2}"
wanted() { [[ " $BENCH_ONLY " == *" $1 "* ]]; }

# --- reading the summaries ---------------------------------------------------
field() { # field FILE REGEX N: field N of the first line matching REGEX
  [ -n "$1" ] && [ -f "$1" ] && awk -v n="$3" "/$2/ {print (n == \"NF\" ? \$NF : \$n); exit}" "$1"
}
num() { # a number with thousands separators
  if [[ "${1:-}" =~ ^[0-9.]+$ ]]; then printf "%.0f" "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; else echo "${1:-?}"; fi
}
ge() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 >= b + 0) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "" && b != "" && a + 0 <= b + 0) }'; }
yes_no() { if "$@"; then echo "**yes**"; else echo "**no**"; fi; }

P="$PROXY_DIR/summary.txt"
joins=$(field "$P" '^joins[/]s through proxy' 5); evalr=$(field "$P" '^redis-benchmark EVALSHA' 5)
join_ratio=$(field "$P" '^redis-benchmark EVALSHA' NF)
adm=$(field "$P" '^admitted req[/]s' 5); adm_p99=$(field "$P" '^admitted req[/]s' 7)
ngx=$(field "$P" '^nginx reverse proxy' 5); ngx_p99=$(field "$P" '^nginx reverse proxy' 7)
adm_ratio=$(field "$P" '^nginx reverse proxy' NF)
pg=$(field "$P" '^fast lane off' 6); pg_p99=$(field "$P" '^fast lane off' 8); pg_ratio=$(field "$P" '^fast lane off' NF)
sn=$(field "$P" '^sched_batch off' 5); sn_p99=$(field "$P" '^sched_batch off' 7); sn_ratio=$(field "$P" '^sched_batch off' NF)
proxy_load=$(sed -n 's/^load: //p' "$P" 2>/dev/null)

W="$WS_DIR/summary.txt"
ws_conns=$(field "$W" '^connections held' 3)
ws_p50=$(field "$W" '^steady-state delay' 4); ws_p99=$(field "$W" '^steady-state delay' 7)
ws_all_p99=$(field "$W" '^release-to-update delay' 7)
ws_rss=$(field "$W" '^proxy RSS per connection' 5); ws_setup=$(sed -n 's/^setup: //p' "$W" 2>/dev/null)

b_vals() { # b_vals SED-EXPR: the value from every booking run, one a line
  for f in "$BOOKING_DIR"/run-*.txt; do [ -f "$f" ] && sed -n "$1" "$f" | head -1; done
}
if [ -n "$BOOKING_DIR" ] && ls "$BOOKING_DIR"/run-*.txt >/dev/null 2>&1; then
  gate=$(b_vals 's/^gate .*: *\([0-9.]*\) claims\/s.*/\1/p' | median)
  naive=$(b_vals 's/^naive .*: *\([0-9.]*\) claims\/s.*/\1/p' | median)
  claim_ratio=$(b_vals 's/^ratio: \([0-9.]*\).*/\1/p' | median)
  holds=$(b_vals 's/^holds on distinct seats: *\([0-9.]*\) holds\/s.*/\1/p' | median)
  audits=$(cat "$BOOKING_DIR"/run-*.txt | grep -c 'audit:.*→ OK'); audit_fail=$(cat "$BOOKING_DIR"/run-*.txt | grep -c 'audit:.*VIOLATION')
  workload=$(sed -n 's/^workload: //p' "$BOOKING_DIR/run-1.txt" 2>/dev/null)
  { echo "# booking benchmark ($(date -u +%Y-%m-%dT%H:%MZ)), median of $BOOKING_RUNS run(s)"
    echo "workload: $workload"
    echo "gate claims/s $gate, naive claims/s $naive, ratio $claim_ratio, holds/s $holds"
    echo "over-issue audits: $audits OK, $audit_fail violations"
    echo "raw output: $BOOKING_DIR"; } > "$BOOKING_DIR/summary.txt"
fi

S="$SALE_DIR/summary.txt"
sale_rule=$(sed -n 's/^sustained = //p' "$S" 2>/dev/null)
sale_rate=$(sed -n 's/^sustained_rate //p' "$S" 2>/dev/null); sale_conf=$(sed -n 's/^confirmed //p' "$S" 2>/dev/null)
sale_best_line=$(grep "^rate ${sale_rate:-x} PASS" "$S" 2>/dev/null | tail -1 | cut -d' ' -f4-)
sale_fail_line=$(grep '^rate [0-9]* FAIL' "$S" 2>/dev/null | head -1)

O="$POW_DIR/summary.txt"
pow_setup=$(sed -n 's/^setup: //p' "$O" 2>/dev/null)
pow_row() { # pow_row BITS: the table row of one difficulty
  local w p
  w=$(grep "^difficulty $1 webcrypto:" "$O" 2>/dev/null | sed 's/^[^:]*: //; s/ (expected.*//')
  p=$(grep "^difficulty $1 plain:" "$O" 2>/dev/null | sed 's/^[^:]*: //; s/ (expected.*//')
  echo "| challenge solve time in headless Chromium, $1 bits ($(num $((1 << $1))) hashes expected) | WebCrypto: ${w:-not run}; plain JavaScript: ${p:-not run} | — | — | — | — | \`BITS=\"$POW_BITS\" SAMPLES=$POW_SAMPLES bench/pow.sh\` |"
}

na() { [ -n "$1" ] && echo "$2" || echo "$3"; }
notrun() { wanted "$1" && echo "failed (see \`$LOG/$1.log\`)" || echo "not run"; }

# --- BENCHMARKS.md -------------------------------------------------------------
mode=$([ "$QUICK" = 1 ] && echo "**quick** (BENCH_QUICK=1: short runs for checking the suite; do not compare these numbers)" || echo "full")
{
  echo "# Benchmarks"
  echo
  echo "Generated by \`make bench\` (\`bench/run-all.sh\`) on $(date -u +'%Y-%m-%d %H:%M UTC')${MINUTES:+, $MINUTES min}."
  echo
  echo "- Machine: $(machine)"
  echo "- Mode: $mode"
  echo "- Every service runs locally on this machine, next to the load generator, in release builds;"
  echo "  Redis and PostgreSQL are local too. Baselines are measured in the same run, so the ratios are the"
  echo "  stable part: absolute numbers move with whatever else the machine is doing."
  echo
  echo "| measure | result | baseline (same run) | ratio | target | met | command |"
  echo "|---|---|---|---|---|---|---|"
  if [ -n "$joins" ]; then
    echo "| joins/s through the proxy (Redis) | $(num "$joins")/s | redis-benchmark EVALSHA of the join script (the ceiling): $(num "$evalr")/s | ${join_ratio}× | ≥ 20,000/s | $(yes_no ge "$joins" 20000) | \`RUNS=$PROXY_RUNS DURATION=$PROXY_DURATION bench/proxy.sh\` ($proxy_load) |"
    echo "| admitted requests/s through the proxy (valid token), p99 | $(num "$adm")/s, p99 $adm_p99 ms | nginx reverse proxy, same upstream and workers: $(num "$ngx")/s, p99 $ngx_p99 ms | ${adm_ratio}× | ≥ 1.0× nginx | $(yes_no ge "$adm_ratio" 1.0) | same run |"
    if [ -n "$pg" ]; then
      echo "| for reference: admitted requests/s with \`server.fast_lane = false\` (every request through Pingora's proxy loop), p99 | $(num "$pg")/s, p99 $pg_p99 ms | the same nginx run | ${pg_ratio}× | — | — | same run |"
    fi
    if [ -n "$sn" ]; then
      echo "| for reference: admitted requests/s with \`server.sched_batch = false\` (workers under the default CPU scheduling policy), p99 | $(num "$sn")/s, p99 $sn_p99 ms | the same nginx run | ${sn_ratio}× | — | — | same run |"
    fi
  else
    echo "| joins/s through the proxy | $(notrun proxy) | | | ≥ 20,000/s | | \`bench/proxy.sh\` |"
    echo "| admitted requests/s, p99 | $(notrun proxy) | | | ≥ 1.0× nginx | | \`bench/proxy.sh\` |"
  fi
  if [ -n "$ws_conns" ]; then
    at15k=$(ge "$ws_conns" 15000 && echo 1 || echo 0)
    ws_met() { if [ "$at15k" = 1 ]; then yes_no "$@"; else echo "not at 15,000"; fi; }
    echo "| WebSocket connections held on one proxy | $(num "$ws_conns") | — | — | 15,000 | $(yes_no ge "$ws_conns" 15000) | \`CONNECTIONS=$WS_CONNECTIONS SECONDS_=$WS_SECONDS bench/ws.sh\` ($ws_setup) |"
    echo "| release-to-delivery delay p50 / p99, every socket open | $ws_p50 / $ws_p99 ms (p99 $ws_all_p99 ms counting the releases during the connect ramp) | — | — | p99 ≤ 500 ms at 15,000 | $(ws_met le "$ws_p99" 500) | same run |"
    echo "| proxy RSS per waiting connection | $ws_rss KiB | — | — | ≤ 20 KiB | $(ws_met le "$ws_rss" 20) | same run |"
  else
    echo "| WebSocket fan-out | $(notrun ws) | | | p99 ≤ 500 ms at 15,000, ≤ 20 KiB | | \`bench/ws.sh\` |"
  fi
  if [ -n "${gate:-}" ]; then
    echo "| coupon claims/s (leased claim gate), with over-issue and stock-conservation audits | $(num "$gate")/s; audits: $audits OK, $audit_fail violations | row-lock baseline (\`SELECT … FOR UPDATE\`): $(num "$naive")/s | ${claim_ratio}× | ≥ 18× | $(yes_no ge "$claim_ratio" 18) | \`bench/booking/run.sh $BOOKING_ARGS\` ×$BOOKING_RUNS ($workload) |"
    echo "| holds/s on distinct seats (per-visitor limit and session bound in the statement) | $(num "$holds")/s | — | — | ≥ 5,000/s | $(yes_no ge "$holds" 5000) | same runs |"
  else
    echo "| coupon claims/s, holds/s | $(notrun booking) | | | ≥ 18×, ≥ 5,000/s | | \`bench/booking/run.sh\` |"
  fi
  if [ -n "$sale_rate" ] && [ "$sale_rate" != 0 ]; then
    echo "| full sale: arrivals/s sustained with zero audit failures | $(num "$sale_rate")/s (passed $sale_conf runs at this rate) | — | — | sustained = $sale_rule | — | \`RATES=\"$SALE_RATES\" DURATION=$SALE_DURATION CONFIRM=$SALE_CONFIRM bench/sale.sh\` |"
  elif [ -n "$sale_rate" ]; then
    echo "| full sale: arrivals/s sustained with zero audit failures | none of $SALE_RATES /s passed | — | — | — | — | \`RATES=\"$SALE_RATES\" DURATION=$SALE_DURATION bench/sale.sh\` |"
  else
    echo "| full sale | $(notrun sale) | | | | | \`bench/sale.sh\` |"
  fi
  if [ -f "$O" ]; then
    for b in $(sed -n 's/^difficulty \([0-9]*\) webcrypto:.*/\1/p' "$O"); do pow_row "$b"; done
  else
    echo "| challenge solve time in headless Chromium | $(notrun pow) | | | | | \`bench/pow.sh\` |"
  fi
  echo
  if [ -n "$pow_setup" ]; then
    echo "Challenge solves: $pow_setup."
    echo
  fi
  if [ -n "$sale_best_line" ]; then
    echo "Full sale at $(num "$sale_rate")/s: $sale_best_line."
    [ -n "$sale_fail_line" ] && echo "First rate that did not hold: ${sale_fail_line#rate }."
    echo
  fi
  echo "## Summaries"
  echo
  echo "Each script's own summary, verbatim (raw outputs under \`bench/out/\`, git-ignored)."
  for f in "$P" "$W" "$BOOKING_DIR/summary.txt" "$S" "$O"; do
    if [ -n "$f" ] && [ -f "$f" ] && [ "$f" != "/summary.txt" ]; then
      echo; echo '```'; cat "$f"; echo '```'
    fi
  done
  echo
  echo "## Reproduce"
  echo
  echo '```sh'
  echo "make bench                 # this page (BENCH_QUICK=1 make bench for a short check)"
  echo "bench/proxy.sh; bench/ws.sh; bench/booking/run.sh; bench/sale.sh; bench/pow.sh   # one part"
  echo '```'
  echo
  echo "See [bench/README.md](bench/README.md) for what each figure measures."
} > "$ROOT/BENCHMARKS.md"
echo "== wrote BENCHMARKS.md (logs in $LOG)"
cat "$ROOT/BENCHMARKS.md"
