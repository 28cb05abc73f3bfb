#!/usr/bin/env bash
# Make sure this machine has what building and testing the project needs, and
# install or start only what is missing (idempotent; fast when all is there).
#
#   scripts/ensure-deps.sh build   # toolchain pieces for `make run` (cmake)
#   scripts/ensure-deps.sh test    # + Redis, PostgreSQL, Chromium, Node deps, Prometheus
#   scripts/ensure-deps.sh bench   # + nginx, wrk, gawk
set -euo pipefail
what="${1:-test}"
root="$(cd "$(dirname "$0")/.." && pwd)"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
apt_updated=0
need() { # need PACKAGE...: install Debian packages
  if [ "$apt_updated" = 0 ]; then
    echo "== apt-get update"
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  echo "== installing $*"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v cmake >/dev/null || need cmake
command -v cc >/dev/null || need build-essential
[ "$what" = build ] && exit 0

# Redis at 127.0.0.1:6379
if ! (command -v redis-cli >/dev/null && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG); then
  command -v redis-server >/dev/null || need redis-server
  echo "== starting redis-server"
  mkdir -p /tmp/redis-ci
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/redis-ci \
    --logfile /tmp/redis-ci/redis.log
  for _ in $(seq 50); do redis-cli ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
fi

# PostgreSQL at 127.0.0.1:5432, user postgres, trust auth
if ! (command -v pg_isready >/dev/null && pg_isready -h 127.0.0.1 -p 5432 -q); then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then need postgresql; fi
  version="$(ls /etc/postgresql | sort -V | tail -n1)"
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  if ! grep -q "^host all all 127.0.0.1/32 trust" "$hba"; then
    echo "== allowing trust auth on 127.0.0.1 for tests"
    $SUDO sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  echo "== starting PostgreSQL $version"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$version" main start || $SUDO pg_ctlcluster "$version" main start
  for _ in $(seq 100); do pg_isready -h 127.0.0.1 -p 5432 -q && break; sleep 0.1; done
fi

# Headless browser and Node for the queue-page test
[ -x /usr/bin/chromium ] || need chromium
command -v node >/dev/null || need nodejs npm
browser="$root/waiting-room/tests/browser"
if [ -f "$browser/package.json" ] && { [ ! -d "$browser/node_modules/playwright-core" ] || [ ! -d "$browser/node_modules/axe-core" ]; }; then
  echo "== npm ci (playwright-core, axe-core; no browser download)"
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --prefix "$root/waiting-room/tests/browser"
fi

# Prometheus server for the dashboard test
command -v prometheus >/dev/null || need prometheus

# The test runner
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "== installing cargo-nextest"
  cargo install cargo-nextest --locked
fi

if [ "$what" = bench ]; then
  command -v nginx >/dev/null || need nginx
  command -v wrk >/dev/null || need wrk
  command -v redis-benchmark >/dev/null || need redis-tools
  command -v gawk >/dev/null || need gawk
fi
exit 0
