//! The OpenAPI 3.1 document of the queue API under `/wr`, generated from the
//! code so it cannot drift, and served at `GET /wr/openapi.json`.
//!
//! Operations come from `#[utoipa::path]` on the per-route functions
//! [`crate::routes::handle`] calls (and [`api::socket`], which the proxy calls
//! for the WebSocket); [`StatusMessage`](crate::standing::StatusMessage) and
//! the token fields derive their schemas. Error responses
//! ([`crate::problem::doc`], the join's refusals in [`crate::join`]) show the
//! bodies the waiting room really sends as examples.
//! [`operation`](crate::routes::operation) maps every
//! [`Route`](crate::routes::Route) to its documented operation with an
//! exhaustive match, so a new route does not compile until it is documented;
//! `e2e/tests/openapi.rs` checks real responses against the document.

use std::sync::LazyLock;

use bytes::Bytes;
use pingora::prelude::Session;
use shared::problem::Problem;
use utoipa::OpenApi;

use crate::api;
use crate::join::{ChallengeRequired, OverLimit};
use crate::problem::Failure;
use crate::problem::doc::{
    BadBody, BadHandshake, BadJoinBody, Draining, HeadTooLarge, MethodNotAllowed, NoEndpoint, NotAnUpgrade, NotReady,
    StoreDown, UnknownQueue,
};
use crate::reply::{Reply, is_get};

const DESCRIPTION: &str = "\
The waiting room's own API: join a queue, watch your place (WebSocket, or polling), and receive the \
entry token when admitted. `/wr` is reserved for it on the proxy's port.

**Visitors** are identified by the signed `wr_visitor` cookie, issued on first contact (join, page \
or WebSocket) and needed to poll `status`; a missing or tampered cookie simply gets a new id. When \
READY, the entry token (an Ed25519 JWT for the queue) is in the body and set as cookie `wr_entry`.

**The gate.** Paths under a queue's protected prefixes (not under `/wr`) need that token \
(`Authorization: Bearer` or `wr_entry`). Without a valid one, browsers (`Accept: text/html`) get a \
302 to `/wr/{queue}?return_to=…` and other clients a 401 problem with `queue` and `join_url`.

**Limits.** Joins (page, join, WebSocket) are budgeted per client address (an IPv6 /64): new visitor \
ids and joins per second, and waiting places one address may hold in a line; over a limit the answer \
is a 429 problem naming the `limit`, with `Retry-After`. Status polls are not limited.

**Challenge.** A queue may ask for a proof of work before it grants a new place: `join` answers 428 \
with a `challenge`, its `difficulty` and `expires_at`; find a `nonce` (1-64 of `A-Z a-z 0-9 _ -`) such \
that SHA-256 of `<challenge>:<nonce>` starts with `difficulty` zero bits and POST it back as \
`{\"challenge\": …, \"nonce\": …}`. Each challenge buys one place; a visitor who already has a place or a \
session never needs one.

**Errors** are `application/problem+json` (RFC 9457) with a `detail` saying what to do. On every \
path: an unknown endpoint under `/wr` is 404 (`components.responses.NoEndpoint`); a known path with \
another method 405 with `Allow` (`components.responses.MethodNotAllowed`). Every response carries \
`x-request-id`; answers about a visitor carry `cache-control: no-store`.";

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "waiting-room", description = DESCRIPTION),
    paths(
        api::healthz,
        api::livez,
        api::readyz,
        api::page,
        api::join,
        api::status,
        api::socket,
        api::lottery,
        document
    ),
    components(
        schemas(Problem, crate::lottery::Published),
        responses(
            UnknownQueue,
            BadBody,
            BadJoinBody,
            StoreDown,
            NotAnUpgrade,
            BadHandshake,
            NoEndpoint,
            MethodNotAllowed,
            ChallengeRequired,
            OverLimit,
            HeadTooLarge,
            NotReady,
            Draining
        )
    ),
    tags((name = "queue", description = "The queue API of the waiting room."))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/wr/openapi.json", tag = "queue", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of the queue API", body = Object))
)]
pub fn document(session: &Session) -> Reply {
    if !is_get(session) {
        return Failure::MethodNotAllowed("GET, HEAD").reply();
    }
    Reply { status: 200, headers: vec![("content-type", "application/json".into())], body: json() }
}

/// The document as JSON, built once.
pub fn json() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| {
        // Serializing the document cannot fail; an empty object would fail the conformance test loudly.
        Bytes::from(ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
    });
    DOC.clone()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::Value;

    use super::*;

    #[test]
    fn error_examples_are_problems_with_their_status() {
        let doc: Value = serde_json::from_slice(&json()).unwrap();
        for (name, response) in doc["components"]["responses"].as_object().unwrap() {
            let content = &response["content"]["application/problem+json"];
            assert_eq!(content["schema"]["$ref"], "#/components/schemas/Problem", "{name}");
            for example in content["examples"].as_object().unwrap().values() {
                assert!(example["value"]["status"].as_u64().is_some_and(|s| s >= 400), "{name}");
            }
        }
    }
}
