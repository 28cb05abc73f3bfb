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
	@# The end-to-end tests run the two binaries from a target dir of their own
	@# (see e2e::bins_target_dir); build them first so no test waits on it.
	$(CARGO) build -q -p waiting-room -p booking-core --bins --target-dir $${CARGO_TARGET_DIR:-target}/e2e-bins
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
