#!/usr/bin/env bash
# How long a visitor's browser takes to solve the queue's proof-of-work
# challenge: headless Chromium opens the real queue page of a local proxy
# (memory store) whose queues pow<bits> always ask for <bits> zero bits; the
# page solves in its Web Worker (WebCrypto SHA-256, and again with WebCrypto
# removed: the plain-JavaScript fallback). Each sample is a new visitor; the
# time is the page's own measure from starting the solver to the nonce.
# Usage: bench/pow.sh   (env: BITS="10 12 14 16 18 20" SAMPLES=9 POW_MODES="webcrypto plain")
set -euo pipefail
source "$(dirname "$0")/lib.sh"
BITS="${BITS:-10 12 14 16 18 20}"; SAMPLES="${SAMPLES:-9}"; export POW_MODES="${POW_MODES:-webcrypto plain}"
CHROMIUM="${WR_CHROMIUM:-/usr/bin/chromium}"
OUT="$OUT_BASE/pow-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
cd "$ROOT"
cargo build --release -q -p waiting-room
BIN="$TARGET_DIR/release/waiting-room"
BROWSER_DIR="$ROOT/waiting-room/tests/browser"
[ -x "$CHROMIUM" ] || { echo "$CHROMIUM is missing: apt-get install -y chromium" >&2; exit 1; }
[ -f "$BROWSER_DIR/node_modules/playwright-core/package.json" ] || npm ci --prefix "$BROWSER_DIR"

pick_port WR_PORT 18280; pick_port WR_METRICS 18281; pick_port UP_PORT 18282
# Every sample is a new visitor from 127.0.0.1: per-client limits off. The
# upstream is never called (nobody is admitted).
cat > "$OUT/wr.toml" <<TOML
server = { threads = 1, release_ticks = true }
store = { backend = "memory" }
keys = { dir = "$OUT/keys" }
log = { level = "warn" }
admin = { listen = "" }
limits = { max_connections_per_client = 0, max_websockets_per_client = 0, max_waiting_per_client = 0, new_visitors = { rate = 0.0, burst = 0.0 }, joins = { rate = 0.0, burst = 0.0 } }
TOML
for b in $BITS; do
  printf '[[queues]]\nid = "pow%s"\npaths = ["/pow%s"]\nrelease_per_tick = 1\ntick = "1h"\nsession = "10m"\nchallenge = "pow"\nchallenge_min_bits = %s\nchallenge_max_bits = %s\nchallenge_ttl = "1h"\n' \
    "$b" "$b" "$b" "$b" >> "$OUT/wr.toml"
done
WR_SERVER__LISTEN="127.0.0.1:$WR_PORT" WR_SERVER__METRICS_LISTEN="127.0.0.1:$WR_METRICS" \
  WR_SERVER__UPSTREAM="127.0.0.1:$UP_PORT" "$BIN" --config "$OUT/wr.toml" 2> "$OUT/wr.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$WR_PORT/wr/healthz"

# shellcheck disable=SC2086
(cd "$BROWSER_DIR" && WR_CHROMIUM="$CHROMIUM" node pow-bench.js "http://127.0.0.1:$WR_PORT" "$SAMPLES" $BITS) > "$OUT/pow.jsonl"

{
  echo "# proof-of-work solve time in headless Chromium ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo "machine: $(machine)"
  echo "setup: $("$CHROMIUM" --version 2>/dev/null | head -1), the queue page's solver (pow.js) in a Web Worker, $SAMPLES samples per difficulty, each a new visitor; modes: $POW_MODES"
  node -e '
    const rows = require("fs").readFileSync(process.argv[1], "utf8").trim().split("\n").map(JSON.parse);
    const ms = (x) => x.toFixed(0);
    for (const r of rows) {
      console.log(`difficulty ${r.bits} ${r.mode}: median ${ms(r.median_ms)} ms, p90 ${ms(r.p90_ms)} ms, ` +
        `${Math.round(r.hashes_per_second)} hashes/s (expected hashes ${2 ** r.bits})`);
    }' "$OUT/pow.jsonl"
  echo "raw output: $OUT"
} | tee "$OUT/summary.txt"
