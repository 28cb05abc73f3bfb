//! The edge waiting room: a Pingora proxy that holds visitors in a fair queue,
//! releases N of them every tick with a signed entry token, and lets only
//! requests carrying a valid token through to the protected upstream.
//!
//! # Layout
//!
//! - [`config`]: the TOML + environment configuration and its validation.
//! - [`store`]: the queue store trait and its two backends (memory, Redis).
//! - [`admission`]: the background service running one ticker per queue.
//! - [`adaptive`]: the controller that sets N from the upstream's health.
//! - [`signals`]: what this instance measures of admitted traffic for it (both lanes).
//! - [`control`]: live settings shared across instances.
//! - [`reload`]: re-reading the config file (SIGHUP, `POST /admin/reload`).
//! - [`catalog`]: which queues run, created, redefined and deleted at runtime
//!   through the store.
//! - [`admin`]: the operator API on its own listener.
//! - [`estimate`]: wait estimates from the measured release rate.
//! - [`queues`]: queues at runtime, with live admission settings.
//! - [`gate`]: entry-token checks with a bounded verification cache.
//! - [`session`]: sessions that end with the purchase (`wr-session: end`).
//! - [`tokens`]: signing the entry token of an admitted visitor (from its
//!   standing).
//! - [`identity`]: the signed visitor cookie.
//! - [`client`]: who the client is (peer address, trusted proxies).
//! - [`limits`]: per-client budgets and the refusal counter.
//! - [`edge`]: what the public listener passes (methods, paths, origins).
//! - [`drain`]: graceful shutdown (stop accepting, finish, close sockets 1001).
//! - [`routes`]: the routes under `/wr` and the dispatch to their functions.
//! - [`api`]: the queue API under `/wr`.
//! - [`standing`]: the status message a visitor hears (API, WebSocket, push,
//!   page).
//! - [`problem`]: the waiting room's error replies, one typed set, and their
//!   OpenAPI responses.
//! - [`join`]: joining a queue, the one path the page, the join call and the
//!   WebSocket share (per-client budgets, places cap, challenge).
//! - [`challenge`]: the proof-of-work challenge before a new place.
//! - [`openapi`]: its OpenAPI 3.1 document, generated from the route functions.
//! - [`page`]: the queue page.
//! - [`ws`]: the WebSocket endpoint and its connection tasks.
//! - [`sockets`]: the hub of this instance's WebSockets.
//! - [`push`]: the fan-out of every tick to those sockets.
//! - [`proxy`]: the `ProxyHttp` implementation tying it together.
//! - [`forward`]: the request rewrite both lanes apply (headers dropped, set).
//! - [`upstreams`]: the protected service's instances and their health.
//! - [`lane`]: the fast lane serving plain admitted and pass-through requests
//!   in front of it.
//! - [`sched`]: the proxy workers' CPU scheduling policy.
//! - [`http`]: replies the proxy writes itself.
//! - [`metrics`]: Prometheus metrics.
//! - [`app`]: assembling the Pingora server.
//! - [`state`]: what all services share.
//! - [`clock`]: the wall clock and its RFC 3339 text.

pub mod adaptive;
mod admin;
mod admission;
mod api;
pub mod app;
mod catalog;
pub mod challenge;
mod client;
pub mod clock;
pub mod config;
mod control;
mod degraded;
pub mod drain;
pub mod edge;
mod estimate;
mod forward;
mod gate;
mod identity;
mod join;
mod lane;
mod limits;
pub mod lottery;
mod metrics;
mod openapi;
pub mod page;
mod problem;
mod proxy;
mod push;
pub mod queues;
mod reload;
mod reply;
mod routes;
pub mod sched;
pub mod schedule;
mod session;
mod signals;
mod sockets;
pub mod standing;
mod state;
mod stock;
pub mod store;
mod ticket;
pub mod tokens;
mod upstreams;
pub mod verify;
mod ws;

/// Set up logging as configured. Pingora logs through the `log` crate, which
/// the subscriber picks up too.
pub fn init_logging(log: &config::LogConfig) {
    log.init(&[]);
}
