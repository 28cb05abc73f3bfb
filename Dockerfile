# syntax=docker/dockerfile:1
# One recipe for both services; pick one with --target:
#   docker build --target waiting-room -t waiting-room .
#   docker build --target booking-core -t booking-core .
# docker-compose.yml builds both (and checks are in e2e/tests/compose.rs).

# ---- build: both release binaries in one cargo invocation ----
FROM rust:1-bookworm AS builder
# cmake: pingora's compression dependencies build C code with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace (every member must be present for cargo to load it);
# .dockerignore keeps target dirs, data/ and node_modules out of the context.
COPY . .
# Cache mounts keep crates and compiled dependencies between builds. They are
# not part of the image, hence the copy of the two binaries to /out.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p waiting-room -p booking-core --bins \
 && mkdir -p /out \
 && cp target/release/waiting-room target/release/booking-core /out/

# ---- runtime base: Debian slim, an unprivileged user, the shipped configs ----
FROM debian:bookworm-slim AS runtime
# ca-certificates for rediss:// and TLS to PostgreSQL; curl for health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app /data/keys \
 && chown -R app:app /app /data
WORKDIR /app
# Configs are the same files `make run` uses; compose overrides what differs
# (addresses, Redis, PostgreSQL, key paths) with WR_… / BC_… variables.
COPY configs/ /app/configs/
# /data/keys is owned by app in the image, so a fresh named volume mounted
# there starts out writable by app.
USER app

# ---- the edge proxy ----
FROM runtime AS waiting-room
COPY --from=builder /out/waiting-room /usr/local/bin/waiting-room
EXPOSE 8080 9091 9092
ENTRYPOINT ["waiting-room", "--config", "/app/configs/waiting-room.toml"]

# ---- the booking core ----
FROM runtime AS booking-core
COPY --from=builder /out/booking-core /usr/local/bin/booking-core
EXPOSE 8081
ENTRYPOINT ["booking-core", "--config", "/app/configs/booking-core.toml"]
