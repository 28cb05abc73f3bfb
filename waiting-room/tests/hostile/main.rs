//! The proxy under hostile traffic: raw sockets from several source
//! addresses in 127.0.0.0/8, each standing for a different client, against
//! the real `waiting-room` process with its limits at their defaults.
#![allow(clippy::unwrap_used)]

#[path = "../proxy/helpers/mod.rs"]
#[allow(dead_code)]
mod helpers;
mod joiners;
mod net;

mod challenge;
mod connections;
mod places;
mod requests;
mod websockets;
