# The two commands a newcomer needs: `make run` and `make test`.
.PHONY: run test lint bench build fmt

CARGO ?= cargo

## Build and start the whole product with embedded defaults (no Redis/PostgreSQL needed).
run:
	@scripts/ensure-deps.sh build
	@scripts/run.sh

## Run the whole test suite against real Redis and PostgreSQL (installed/started if missing).
test:
	@scripts/ensure-deps.sh test
	$(CARGO) nextest run --workspace --no-fail-fast

## fmt + clippy, as CI checks them.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Benchmarks against locally started services; writes BENCHMARKS.md.
bench:
	@scripts/ensure-deps.sh bench
	@bench/run-all.sh

build:
	$(CARGO) build --release --workspace

fmt:
	$(CARGO) fmt --all
