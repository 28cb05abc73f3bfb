//! The booking core: seat holds and first-come coupon claims behind the waiting
//! room, on hyper and sqlx, that never double-book and never over-issue.
//!
//! # Layout
//!
//! From the bottom up; no module imports one above it, except for the one
//! pair [`catalogue`] ↔ [`fanout`] (one seat-map cache kept coherent across
//! instances; see [`fanout`]).
//!
//! - [`config`]: the one config type (`configs/booking-core.toml`, then `BC_…`
//!   environment variables), `[demo]` included, and its validation step.
//! - [`clock`]: epoch-millisecond time, the only unit stored in the database.
//! - [`metrics`]: the per-application Prometheus registry.
//! - [`store`]: the [`store::Store`] over PostgreSQL or SQLite, one module per
//!   concept (every SQL statement is there), with migrations for both backends.
//! - [`problem`]: the error contract ([`problem::ApiError`]: each error's
//!   status) and the single place that turns errors into
//!   `application/problem+json`.
//! - [`redis_breaker`]: the one Redis connection (explicit timeouts) behind a
//!   circuit breaker, so Redis trouble never holds a request.
//! - The services, which know nothing of HTTP requests or the OpenAPI
//!   documents:
//!   - [`auth`]: entry-token verification (the visitor with their session
//!     end) and the queue → event scope check.
//!   - [`limits`]: per-visitor rate limit on mutating requests, per-address
//!     limit on failed admin attempts.
//!   - [`catalogue`]: events, the per-event seat-map cache and popular events.
//!   - [`fanout`]: seat-map invalidations between instances over Redis pub/sub.
//!   - [`holds`]: seat holds (one conditional `UPDATE`), confirm, release, sweeper.
//!   - [`coupons`]: first-come coupon claims behind an atomic gate (Redis Lua
//!     or in-process) in front of the database, which has the final word.
//!   - [`demo`]: the demo event and coupon campaign `make run` seeds (`[demo]`).
//! - [`state`]: [`state::AppState`], the cheap `Clone` handle every request gets.
//! - [`http`]: what the HTTP layer shares: the listener kinds, the router,
//!   body/JSON parsing, a handler's context and reply.
//! - [`routes`]: the handlers, one module per area, with their OpenAPI
//!   annotations: events, holds, coupons, `Idempotency-Key` replay, purchases
//!   that end the session (`wr-session: end`), the operator API
//!   (`/admin`, `/metrics`), health checks, the event page visitors land on
//!   (`GET /events/{id}`) and the OpenAPI 3.1 documents.
//! - [`server`]: the hyper accept loop of each listener, handing each request
//!   to [`routes`].
//! - [`startup`]: [`startup::Application`] binds the listener (port 0 in tests),
//!   connects the database and Redis, starts the background tasks and shuts
//!   everything down on request.
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

mod auth;
pub mod catalogue;
pub mod clock;
pub mod config;
pub mod coupons;
pub mod demo;
mod fanout;
mod group;
mod holds;
pub mod http;
mod limits;
mod metrics;
mod problem;
mod redis_breaker;
mod routes;
mod server;
mod startup;
mod state;
pub mod store;
mod tasks;

pub use config::Config;
pub use startup::{Application, RunningApp, ShutdownHandle};
