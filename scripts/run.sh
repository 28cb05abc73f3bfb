#!/usr/bin/env bash
# `make run`: build and start the waiting room in front of the booking core,
# with the embedded defaults (memory queue, SQLite); Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p waiting-room
mkdir -p data
echo
echo "  Queue API:   http://127.0.0.1:8080/wr/concert-42/status"
echo "  Metrics:     http://127.0.0.1:9091/metrics"
echo
exec target/release/waiting-room --config configs/waiting-room.toml
