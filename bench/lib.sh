# Helpers shared by the benchmark scripts (sourced, not run).
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_BASE="${OUT_BASE:-$ROOT/bench/out}"
# Where cargo puts builds: the scripts run the binaries they just built from here.
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PIDS=()

cleanup() {
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_http() { # wait_http URL: until it answers (any status)
  for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "timeout waiting for $1" >&2; return 1
}

median() { # median of the numbers on stdin
  sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'
}

wrk_rps() { grep -E '^Requests/sec' "$1" | awk '{print $2}'; }
wrk_p99_ms() { # latency p99 from `wrk --latency` output, in ms
  awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' "$1"
}
wrk_errors() { # non-2xx/3xx responses + socket errors
  local n e
  n=$(grep -E 'Non-2xx or 3xx responses' "$1" | awk '{print $NF}'); n=${n:-0}
  e=$(grep -E 'Socket errors' "$1" | sed 's/[^0-9 ]//g' | awk '{s=0; for(i=1;i<=NF;i++) s+=$i; print s}'); e=${e:-0}
  echo $((n + e))
}

start_nginx() { # start_nginx CONF DIR: run nginx in the foreground-less way with its own prefix
  mkdir -p "$2/logs"
  nginx -p "$2" -c "$1" -g "pid $2/nginx.pid;" 
  for _ in $(seq 50); do [ -f "$2/nginx.pid" ] && break; sleep 0.1; done
  PIDS+=("$(cat "$2/nginx.pid")")
}

TAKEN_PORTS=" "
pick_port() { # pick_port VAR BASE: set VAR to the first port from BASE up that nobody listens on (nor picked before)
  local p="$2"
  while [[ "$TAKEN_PORTS" == *" $p "* ]] || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  TAKEN_PORTS+="$p "
  printf -v "$1" '%s' "$p"
}

machine() {
  echo "$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -sr)"
}

# stack_setup NAME: what every whole-stack benchmark starts with: the Redis
# and PostgreSQL URLs, OUT (bench/out/NAME-<time>), release builds of the
# three binaries in BIN (BENCH_NO_BUILD=1 reuses those already built, e.g.
# while the tree does not compile), free ports and an admin TOKEN.
stack_setup() {
  REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
  PG_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  PG_SERVER="${PG_URL%/*}"
  OUT="$OUT_BASE/$1-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
  cd "$ROOT"
  [ "${BENCH_NO_BUILD:-0}" = 1 ] || cargo build --release -q -p waiting-room -p booking-core -p loadtest
  BIN="$TARGET_DIR/release"
  pick_port WR_PORT 18080; pick_port WR_METRICS 18091; pick_port WR_ADMIN 18092; pick_port BC_PORT 18181
  pick_port BC_ADMIN 18193
  TOKEN="bench-admin-token-$(date +%s)"
}

# The [limits] of a harness whose visitors all come from 127.0.0.1, standing
# for thousands of people: the per-client limits (measured in bench/abuse.sh)
# are off, so a benchmark measures the sale, not the limits.
LIMITS_OFF="[limits]
max_connections_per_client = 0
max_websockets_per_client = 0
new_visitors = { rate = 0.0, burst = 0.0 }
joins = { rate = 0.0, burst = 0.0 }
max_waiting_per_client = 0"

# write_stack DIR PREFIX DB N TICK [LIMITS] [SESSION]: the configs of one stack
# (release waiting room on Redis under PREFIX with queue "sale" at N per TICK,
# sessions of SESSION (default 10m), booking core on database DB) in DIR.
# LIMITS: extra TOML for the waiting room (e.g. a [limits] table); empty keeps
# the defaults. Needs WR_PORT WR_METRICS WR_ADMIN
# BC_PORT BC_ADMIN TOKEN REDIS_URL PG_SERVER.
write_stack() {
  local dir="$1" prefix="$2" db="$3" n="$4" tick="$5" limits="${6:-}" session="${7:-10m}"
  mkdir -p "$dir"
  cat > "$dir/waiting-room.toml" <<TOML
[server]
listen = "127.0.0.1:$WR_PORT"
metrics_listen = "127.0.0.1:$WR_METRICS"
upstream = "127.0.0.1:$BC_PORT"
threads = 2
[store]
backend = "redis"
redis_url = "$REDIS_URL"
key_prefix = "$prefix"
[keys]
dir = "$dir/keys"
[log]
level = "warn"
[admin]
listen = "127.0.0.1:$WR_ADMIN"
token = "$TOKEN"
$limits
[[queues]]
id = "sale"
paths = ["/api/events", "/api/holds", "/api/coupons", "/api/me"]
release_per_tick = $n
tick = "$tick"
session = "$session"
TOML
  cat > "$dir/booking-core.toml" <<TOML
[server]
listen = "127.0.0.1:$BC_PORT"
[database]
url = "$PG_SERVER/$db"
[redis]
url = "$REDIS_URL"
prefix = "$prefix"
[keys]
public_dir = "$dir/keys/public"
[admin]
listen = "127.0.0.1:$BC_ADMIN"
token = "$TOKEN"
[log]
level = "warn"
[[queues]]
id = "sale"
all_events = true
TOML
}

# start_stack DIR: start the stack written by write_stack; sets WR_PID, BC_PID.
start_stack() {
  "$BIN/waiting-room" --config "$1/waiting-room.toml" 2> "$1/waiting-room.log" &
  WR_PID=$!; PIDS+=("$WR_PID")
  wait_http "http://127.0.0.1:$WR_PORT/wr/livez"
  "$BIN/booking-core" --config "$1/booking-core.toml" 2> "$1/booking-core.log" &
  BC_PID=$!; PIDS+=("$BC_PID")
  wait_http "http://127.0.0.1:$BC_ADMIN/healthz"
}
