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
