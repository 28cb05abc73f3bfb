//! Integration tests against the real `waiting-room` process.
#![allow(clippy::unwrap_used)]

mod adaptive;
mod admission;
mod api;
mod browser;
mod catalog;
mod control;
mod drain;
mod fifo;
mod forgets;
mod gate;
mod helpers;
mod lane;
mod lifecycle;
mod lottery;
mod replicated;
#[path = "../support/redis_servers.rs"]
mod servers;
mod session_end;
mod sold_out;
mod store_down;
mod ws;
