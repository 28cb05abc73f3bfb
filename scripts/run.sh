#!/usr/bin/env bash
# `make run`: build both services (release) and start the demo with the
# checked-in configs: the waiting room (memory queue, :8080) in front of the
# booking core (SQLite under data/, seeded with a demo event, :8081; its
# operator listener with /metrics and /healthz on 127.0.0.1:9093).
# Ctrl-C (or SIGTERM) stops both and exits 0. Logs go to data/*.log.
#
# Environment variables pass through, so WR_… / BC_… overrides work, e.g.
#   WR_STORE__BACKEND=redis BC_REDIS__URL=redis://127.0.0.1:6379 \
#   BC_DATABASE__URL=postgres://postgres@127.0.0.1/booking make run
set -euo pipefail
cd "$(dirname "$0")/.."

# The ports of configs/waiting-room.toml and configs/booking-core.toml.
PROXY_PORT=8080
PROXY_METRICS_PORT=9091
BOOKING_PORT=8081
BOOKING_ADMIN_PORT=9093
QUEUE=demo
EVENT=1

# http_ok PORT PATH: 127.0.0.1:PORT answers GET PATH with 200. Plain bash, so
# a fresh machine needs no curl.
http_ok() (
  status=""
  exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
  IFS= read -r -t 5 status <&3 || true
  [[ "$status" == HTTP/1.?" 200"* ]]
)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for port in "$PROXY_PORT" "$PROXY_METRICS_PORT" "$BOOKING_PORT" "$BOOKING_ADMIN_PORT"; do
  if port_busy "$port"; then
    echo "error: port $port is already in use (another 'make run' still running?); stop that first." >&2
    exit 1
  fi
done

SETSID=""
command -v setsid >/dev/null && SETSID="setsid"

# Everything started from here on is stopped on Ctrl-C, SIGTERM or any exit.
pids=()
stop() {
  trap - INT TERM EXIT
  local pid
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap 'echo; echo "== stopping"; stop; echo "== stopped"; exit 0' INT TERM
trap stop EXIT

echo "== building waiting-room and booking-core (release; the first build takes a few minutes)"
# In the foreground: Ctrl-C reaches cargo (and rustc) directly; a SIGTERM to
# this script alone is handled once the build is over, before anything starts.
cargo build --release -p waiting-room -p booking-core --bins
target="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="${target:-target}/release"
mkdir -p data

# start NAME PORT HEALTH_PATH BINARY ARGS...: start in the background and wait
# until healthy; on failure show the end of its log.
start() {
  local name="$1" port="$2" health="$3"
  shift 3
  # In a session of its own: Ctrl-C in the terminal signals the whole
  # foreground process group, and a service that got SIGINT directly would
  # exit under `wait -n` before the trap below could stop both in order.
  # (setsid execs in place here, so $! is the service's own pid.)
  $SETSID "$@" >"data/$name.log" 2>&1 &
  pids+=("$!")
  local pid="$!"
  for _ in $(seq 300); do
    if http_ok "$port" "$health" 2>/dev/null; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  echo "error: $name did not start; the end of data/$name.log:" >&2
  tail -n 20 "data/$name.log" >&2
  exit 1
}

# The waiting room first: it creates the signing keys in data/keys on its
# first start, and the booking core reads their public half when it starts.
# Until the booking core is up, the proxy answers 502 for upstream paths.
echo "== starting the waiting room (log: data/waiting-room.log)"
start waiting-room "$PROXY_PORT" /wr/healthz "$bin/waiting-room" --config configs/waiting-room.toml
echo "== starting the booking core (log: data/booking-core.log)"
start booking-core "$BOOKING_ADMIN_PORT" /healthz "$bin/booking-core" --config configs/booking-core.toml

lan="$(hostname -I 2>/dev/null | awk '{print $1}' || true)"
cat <<EOF

  The demo is running. Open the event page; you will queue first
  (5 visitors are let in every 5 s), then land on the seat map:

    Event page (protected):  http://127.0.0.1:$PROXY_PORT/events/$EVENT
    Queue page:              http://127.0.0.1:$PROXY_PORT/wr/$QUEUE
    Queue status (JSON):     http://127.0.0.1:$PROXY_PORT/wr/$QUEUE/status
    Proxy metrics:           http://127.0.0.1:$PROXY_METRICS_PORT/metrics
    Booking-core metrics:    http://127.0.0.1:$BOOKING_ADMIN_PORT/metrics
EOF
if [ -n "$lan" ]; then
  echo "    From a phone on this network: http://$lan:$PROXY_PORT/events/$EVENT"
fi
cat <<EOF

  Logs: data/waiting-room.log, data/booking-core.log. Ctrl-C stops both.

EOF

# Run until Ctrl-C, or until either service exits on its own.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "error: a service exited unexpectedly (status $status); the ends of the logs:" >&2
tail -n 10 data/waiting-room.log data/booking-core.log >&2
exit 1
