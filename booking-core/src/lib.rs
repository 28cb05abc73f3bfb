//! The booking core: seat holds and first-come coupon claims behind the waiting
//! room, on hyper and sqlx, that never double-book and never over-issue.
//!
//! # Layout
//!
//! - [`config`]: the one config type (`configs/booking-core.toml`, then `BC_…`
//!   environment variables) and its validation step.
//! - [`startup`]: [`startup::Application`] binds the listener (port 0 in tests),
//!   connects the database and Redis, starts the background tasks and shuts
//!   everything down on request.
//! - [`state`]: [`state::AppState`], the cheap `Clone` handle every request gets.
//! - [`http`]: the hyper server, the router, body/JSON parsing and the single
//!   place that turns errors into `application/problem+json`.
//! - [`auth`]: entry-token verification and the queue → event scope check.
//! - [`catalogue`]: events, the per-event seat-map cache and popular events.
//! - [`fanout`]: seat-map invalidations between instances over Redis pub/sub.
//! - [`redis_breaker`]: the one Redis connection (explicit timeouts) behind a
//!   circuit breaker, so Redis trouble never holds a request.
//! - [`holds`]: seat holds (one conditional `UPDATE`), confirm, release, sweeper.
//! - [`coupons`]: first-come coupon claims behind an atomic gate (Redis Lua or
//!   in-process) in front of the database, which has the final word.
//! - [`idempotency`]: `Idempotency-Key` replay for holds, confirms and claims,
//!   with records that expire.
//! - [`limits`]: per-visitor rate limit on mutating requests, per-address
//!   limit on failed admin attempts.
//! - [`session`]: purchases that end the visitor's waiting-room session
//!   (`wr-session: end`).
//! - [`admin`]: the operator listener's routes: the bearer-protected API
//!   (events, campaigns, stats), `/metrics`.
//! - [`health`]: `/livez`, `/readyz` (and its alias `/healthz`) on the
//!   operator listener.
//! - [`metrics`]: the per-application Prometheus registry.
//! - [`store`]: the [`store::Store`] over PostgreSQL or SQLite, one module per
//!   concept, with migrations for both backends.
//! - [`clock`]: epoch-millisecond time, the only unit stored in the database.
//! - [`openapi`]: the OpenAPI 3.1 document of the API, generated from the
//!   handlers, their types and their errors (`GET /api/openapi.json`).
//! - [`web`]: the event page visitors land on once admitted (`GET /events/{id}`).
//! - [`demo`]: the demo event and coupon campaign `make run` seeds (`[demo]`).
//!
//! # Invariants
//!
//! - A seat is held or booked by at most one visitor: the hold is a single
//!   conditional `UPDATE` that succeeds only on an available or expired seat.
//! - Coupons issued never exceed stock: a claim takes one of `stock`
//!   pre-generated code rows, and `(campaign, visitor)` is unique. The gate in
//!   front only keeps losers away from the database; it never decides a win.
//! - No unit of stock is lost to a crash: the gate reserves under a lease and
//!   keeps free + reserved + issued == stock; the reconciler settles expired
//!   leases against the database.
//! - A visitor holds or has booked at most `holds.max_per_visitor` seats per
//!   event, and no hold outlives the session (the token's `exp`).
//! - A claim is answered 201 only after its row is committed.
//! - Every `/api` route verifies the entry token itself before any database work.

pub mod admin;
pub mod auth;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod coupons;
pub mod demo;
pub mod fanout;
pub mod health;
pub mod holds;
pub mod http;
pub mod idempotency;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod redis_breaker;
pub mod session;
pub mod startup;
pub mod state;
pub mod store;
pub mod tasks;
pub mod web;

pub use config::Config;
pub use startup::{Application, RunningApp, ShutdownHandle};
