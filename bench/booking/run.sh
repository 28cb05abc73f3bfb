#!/usr/bin/env bash
# Claim and hold throughput of booking-core against PostgreSQL and Redis:
# our gate next to the naive SELECT … FOR UPDATE baseline, same workload and
# concurrency, with an over-issue audit of both; then holds/s on distinct seats.
#
#   bench/booking/run.sh                       # defaults: 50k claims, 20k visitors, stock 5k, 128 clients
#   bench/booking/run.sh --concurrency 128 --claims 50000
#   DATABASE_URL=postgres://… REDIS_URL=redis://… bench/booking/run.sh
#
# A fresh database (bc_bench_<random>) is created and dropped; Redis keys live
# under a fresh prefix and are deleted. Built with optimizations (cargo bench).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target-bc}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
cargo bench -q -p booking-core --bench claims -- "$@"
