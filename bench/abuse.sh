#!/usr/bin/env bash
# Abuse benchmark: one client address floods joins (new visitor ids, as fast
# as wrk can send them) and holds SLOW slowloris connections, while HONEST
# visitors from other addresses (the loadtest harness, spread over
# 127.0.3.1-127.0.3.50) join, wait on their sockets, are admitted, book and
# claim. The proxy runs with its [limits] at their defaults.
#
# Prints the flood's attempts/s and the proxy's refusals by reason, what the
# slow connections got, and for the honest visitors: join p99, errors, the
# admission order (Kendall tau against join order) and the harness's audit.
# Target (issue 13): flood >= 20,000 attempts/s; honest join p99 <= 1 s,
# zero errors, admitted in join order.
#
# The attacker (wrk and the slow clients) runs at nice 10: on a real sale day
# the attacker's machines are not ours, but here they share our 2 cores, and
# at the default priority they take CPU from Redis (the store then misses its
# 250 ms response timeout and honest joins get 503s). Nice 10 still lets the
# flood run far above the 20,000/s target (it reports its own rate). The
# honest visitors' harness runs at the default priority, so its latencies
# are not inflated by its own scheduling.
#
# Usage: bench/abuse.sh   (env: DURATION=20s HONEST_RATE=25 SLOW=2000 ATTACKER_NICE=10 BENCH_NO_BUILD=0)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
DURATION="${DURATION:-20s}"; HONEST_RATE="${HONEST_RATE:-25}"; SLOW="${SLOW:-2000}"; ATTACKER_NICE="${ATTACKER_NICE:-10}"
stack_setup abuse
SECS="${DURATION%s}"
db="abuse_bench_$(date +%s)_$RANDOM"; prefix="abusebench$(date +%s)$RANDOM"
psql -q "$PG_URL" -c "CREATE DATABASE $db" >/dev/null

# Default [limits]: nothing in the config loosens them for the bench.
write_stack "$OUT" "$prefix" "$db" "$HONEST_RATE" 1s
start_stack "$OUT"

refused() { # refused REASON: the proxy's count so far
  curl -s "http://127.0.0.1:$WR_METRICS/metrics" | awk -v r="waiting_room_refused_total{reason=\"$1\"}" '$1 == r {print $2}'
}

echo "== flood and $SLOW slow connections from 127.0.0.1; honest visitors at $HONEST_RATE/s for $DURATION from 127.0.3.1-50"
nice -n "$ATTACKER_NICE" python3 bench/slow_clients.py --port "$WR_PORT" --source 127.0.0.1 --count "$SLOW" --duration "$((SECS + 10))" \
  > "$OUT/slow.txt" &
SLOW_PID=$!
nice -n "$ATTACKER_NICE" wrk -t2 -c64 -d"$((SECS + 10))s" -s bench/flood.lua "http://127.0.0.1:$WR_PORT/wr/sale/join" > "$OUT/flood.txt" &
FLOOD_PID=$!
sleep 3
status=PASS
"$BIN/loadtest" --proxy "http://127.0.0.1:$WR_PORT" --queue sale --arrivals "$HONEST_RATE/s" --duration "$DURATION" \
  --source-addrs 127.0.3.1-127.0.3.50 --max-wait 60s --drain 60s \
  --proxy-admin "http://127.0.0.1:$WR_ADMIN" --booking "http://127.0.0.1:$BC_PORT" --booking-admin "http://127.0.0.1:$BC_ADMIN" \
  --admin-token "$TOKEN" --database-url "$PG_SERVER/$db" --create-sale 10x40,2000 \
  --out "$OUT/report.json" > "$OUT/report.txt" 2> "$OUT/progress.log" || status=FAIL
wait "$FLOOD_PID" "$SLOW_PID" || true

retried_503() { # per step, from the harness's JSON report
  python3 - "$OUT/report.json" <<'PY' 2>/dev/null || echo unknown
import json, sys
r = json.load(open(sys.argv[1]))
print(", ".join("%s %d" % (s["step"], s["outcomes"].get("retried_503", 0)) for s in r["steps"] if s["step"] in ("join", "poll")))
PY
}
kv() { grep -m1 '^summary ' "$OUT/report.txt" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$1=//p"; }
sv() { sed -n "s/^slow_$1=//p" "$OUT/slow.txt"; }
{
  echo "# abuse benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: release waiting-room (2 threads, Redis, default [limits]) + booking-core (PostgreSQL, Redis), all on this machine"
  echo "command: DURATION=$DURATION HONEST_RATE=$HONEST_RATE SLOW=$SLOW ATTACKER_NICE=$ATTACKER_NICE bench/abuse.sh"
  printf "flood (127.0.0.1, wrk -c64 new visitor per request)  %8.0f attempts/s   (%s answered with an error status)\n" \
    "$(wrk_rps "$OUT/flood.txt")" "$(wrk_errors "$OUT/flood.txt")"
  for r in new_visitor_rate join_rate client_places client_connections connections head_timeout; do
    printf "  refused %-20s %10s\n" "$r" "$(refused "$r")"
  done
  echo "slow connections ($SLOW from 127.0.0.1): refused or cut $(( $(sv answered) + $(sv closed) + $(sv reset) ))," \
    "held to the end $(sv held_to_the_end), connect failed $(sv connect_failed), median lifetime $(sv median_lifetime_s) s"
  echo "honest visitors: $(kv visitors) arrived, $(kv admitted_by_tick) admitted by ticks, $(kv failed_visitors) failed," \
    "join p99 $(kv p99_join_ms) ms, order tau $(kv tau), failed checks: $(kv failed_checks), audit $status"
  # A 503 (the store did not answer in time) is retried after its
  # Retry-After, as the queue page does: counted here, not as a failure.
  echo "honest requests retried after a 503: $(retried_503)"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
psql -q "$PG_URL" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
redis-cli -u "$REDIS_URL" --scan --pattern "*$prefix*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
