#!/usr/bin/env bash
# Issue 3 benchmark: hold CONNECTIONS waiting WebSockets on one proxy process
# (Redis backend) and measure release-to-update delay (p50/p99), messages per
# second while fanning out, and proxy RSS per waiting connection. The delay
# target is read on the releases after every socket is open ("steady state"):
# while the client is still connecting, fewer sockets are held and thousands
# of handshakes and joins compete for the same two cores; that figure is
# printed too, as is each release's p99.
# Usage: bench/ws.sh   (env: CONNECTIONS=15000 N=500 TICK=2s SECONDS_=40 RUNS=1)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
CONNECTIONS="${CONNECTIONS:-15000}"; N="${N:-500}"; TICK="${TICK:-2s}"; SECS="${SECONDS_:-40}"; RUNS="${RUNS:-1}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
OUT="$OUT_BASE/ws-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
cd "$ROOT"
cargo build --release -q -p waiting-room
cargo bench -q -p waiting-room --bench ws_fanout --no-run 2> "$OUT/build.log"
CLIENT=$(ls -t "$TARGET_DIR"/release/deps/ws_fanout-* | grep -v '\.d$' | head -1)
pick_port WR_PORT 18080; pick_port WR_METRICS 18091; pick_port UP_PORT 18181

for run in $(seq "$RUNS"); do
  PREFIX="wsbench$(date +%s)$run"
  cat > "$OUT/wr.toml" <<TOML
[server]
listen = "127.0.0.1:$WR_PORT"
metrics_listen = "127.0.0.1:$WR_METRICS"
upstream = "127.0.0.1:$UP_PORT"
threads = 2
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
[[queues]]
id = "q"
paths = ["/api"]
release_per_tick = $N
tick = "$TICK"
session = "10m"
abandon_after = "60s"
TOML
  "$TARGET_DIR/release/waiting-room" --config "$OUT/wr.toml" 2> "$OUT/wr-$run.log" &
  WR_PID=$!
  PIDS+=("$WR_PID")
  wait_http "http://127.0.0.1:$WR_PORT/wr/healthz"
  "$CLIENT" --url "http://127.0.0.1:$WR_PORT" --queue q --connections "$CONNECTIONS" --seconds "$SECS" --pid "$WR_PID" \
    | tee "$OUT/client-$run.txt"
  kill "$WR_PID"; wait "$WR_PID" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "{$PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" DEL > /dev/null
done

val() { for r in $(seq "$RUNS"); do awk -v k="$1" '$1==k {print $2}' "$OUT/client-$r.txt"; done | median; }
{
  echo "# WebSocket fan-out benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: one proxy process (2 threads, Redis backend), N=$N per tick, tick=$TICK, $CONNECTIONS waiting sockets, median of $RUNS run(s)"
  echo "connections held            $(val connections_held) (connect errors $(val connect_errors), connected in $(val connect_seconds) s)"
  echo "steady-state delay          p50 $(val steady_delay_p50_ms) ms, p99 $(val steady_delay_p99_ms) ms, max $(val steady_delay_max_ms) ms over $(val steady_updates) updates (releases after every socket was open)"
  echo "release-to-update delay     p50 $(val delay_p50_ms) ms, p99 $(val delay_p99_ms) ms, max $(val delay_max_ms) ms over $(val updates) updates, $(val releases_seen) releases (all, including the connect ramp)"
  for r in $(seq "$RUNS"); do echo "per release (run $r)        $(awk '$1=="per_release" {$1=""; print substr($0, 2)}' "$OUT/client-$r.txt")   (updates:p99 ms; c = during the connect ramp)"; done
  echo "messages per second         $(val messages_per_second) (while fanning out)"
  echo "proxy RSS per connection    $(val rss_per_connection_kib) KiB (before $(val rss_before_kib) KiB, after $(val rss_after_kib) KiB)"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
