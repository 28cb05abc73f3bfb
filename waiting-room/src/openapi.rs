//! The OpenAPI 3.1 document of the queue API under `/wr`, generated from the
//! code so it cannot drift, and served at `GET /wr/openapi.json`.
//!
//! Operations come from `#[utoipa::path]` on the per-route functions
//! [`api::handle`] calls (and [`api::socket`], which the proxy calls for the
//! WebSocket); [`StatusMessage`](crate::api::StatusMessage) and the token fields
//! derive their schemas. Error responses show the bodies the reply functions of
//! [`api`] really send as examples. [`operation`] maps every [`Route`] to its
//! documented operation with an exhaustive match, so a new route does not
//! compile until it is documented; `e2e/tests/openapi.rs` checks real
//! responses against the document.

use std::sync::LazyLock;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use shared::problem::Problem;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::HttpMethod;
use utoipa::openapi::schema::{Object, Schema, Type};
use utoipa::openapi::{RefOr, Response};
use utoipa::{OpenApi, PartialSchema, ToResponse, ToSchema};

use crate::api::{self, Route};
use crate::challenge::Invalid;
use crate::http::Reply;
use crate::join;
use crate::tokens::Issued;

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
        api::openapi
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

/// The document as JSON, built once.
pub fn json() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| {
        // Serializing the document cannot fail; an empty object would fail the conformance test loudly.
        Bytes::from(ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
    });
    DOC.clone()
}

/// The documented (method, path template) of a route; `None` for [`Route::Unknown`].
pub fn operation(route: &Route<'_>) -> Option<(Vec<HttpMethod>, String)> {
    fn of<P: utoipa::Path>() -> Option<(Vec<HttpMethod>, String)> {
        Some((P::methods(), P::path()))
    }
    match route {
        Route::Health => of::<api::__path_healthz>(),
        Route::Live => of::<api::__path_livez>(),
        Route::Ready => of::<api::__path_readyz>(),
        Route::OpenApi => of::<api::__path_openapi>(),
        Route::Page(_) => of::<api::__path_page>(),
        Route::Join(_) => of::<api::__path_join>(),
        Route::Status(_) => of::<api::__path_status>(),
        Route::Socket(_) => of::<api::__path_socket>(),
        Route::Lottery(_) => of::<api::__path_lottery>(),
        Route::Unknown => None,
    }
}

/// A problem response with the bodies of `replies` as examples, and their
/// headers (`Allow`, `Retry-After`, `Upgrade`) as response headers.
fn problems(description: &str, replies: Vec<(&str, Reply)>) -> Response {
    let mut headers = Vec::new();
    let mut examples = Vec::new();
    for (name, reply) in replies {
        for (header, value) in &reply.headers {
            if *header != "content-type" && !headers.iter().any(|(h, _)| h == header) {
                headers.push((*header, value.clone()));
            }
        }
        examples.push((name, serde_json::from_slice(&reply.body).unwrap_or(Value::Null)));
    }
    let mut response = shared::problem::openapi_response(description, examples);
    for (header, value) in headers {
        let schema = HeaderBuilder::new()
            .schema(Some(Object::with_type(Type::String)))
            .description(Some(format!("For example `{value}`")))
            .build();
        response.headers.insert(header.to_owned(), RefOr::T(schema));
    }
    response
}

macro_rules! problem_response {
    ($(#[$doc:meta])* $name:ident, $description:expr, [$(($example:expr, $reply:expr)),+ $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), RefOr::T(problems($description, vec![$(($example, $reply)),+])))
            }
        }
    };
}

problem_response!(
    /// 404: the queue is not configured.
    UnknownQueue,
    "There is no such queue (`queue` names it):\n",
    [("unknown_queue", api::unknown_queue("nope", &["sale"]))]
);

problem_response!(
    /// 400: the queue API takes no body.
    BadBody,
    "The request carried a body (the queue API takes none) over 4 KiB, or one that could not be read:\n",
    [("body_too_large", api::body_too_large()), ("malformed_body", api::malformed_body())]
);

problem_response!(
    /// 400: a join body that is no answer to a challenge.
    BadJoinBody,
    "The body is over 4 KiB, could not be read, or is not the answer to a challenge \
     (`{\"challenge\": …, \"nonce\": …}`):\n",
    [
        ("body_too_large", api::body_too_large()),
        ("malformed_body", api::malformed_body()),
        ("not_an_answer", Reply::error(400, crate::challenge::Answer::parse(b"{}").err().unwrap_or_default())),
    ]
);

problem_response!(
    /// 428: a new place needs a solved challenge.
    ChallengeRequired,
    "A new place in this queue needs a proof of work (`challenge`, `difficulty`, `algorithm`, `expires_at`, \
     `join_url`); the same answer follows a rejected answer, saying why first:\n",
    [
        ("challenge", join::challenge_reply("sale", &example_challenge(), None)),
        ("answer_rejected", join::challenge_reply("sale", &example_challenge(), Some(Invalid::Wrong.detail()))),
    ]
);

problem_response!(
    /// 429: a per-client limit (`limit` names it; retry after `Retry-After` seconds).
    OverLimit,
    "Over a per-client limit (`limit` names the config key under `[limits]`); retry after `Retry-After` \
     seconds:\n",
    [
        ("joins", example_limit("joins", join::rate_detail(join::JOINS, limits().joins, 1))),
        ("new_visitors", example_limit("new_visitors", join::rate_detail(join::NEW_VISITORS, limits().new_visitors, 1))),
        ("max_waiting_per_client", example_limit("max_waiting_per_client", join::places_detail(limits().max_waiting_per_client, 1))),
    ]
);

fn limits() -> crate::config::LimitsConfig {
    crate::config::LimitsConfig::default()
}

fn example_limit(limit: &'static str, detail: String) -> Reply {
    join::limited_reply(limit, &detail, 1)
}

/// A challenge as the examples show it.
fn example_challenge() -> crate::challenge::Challenge {
    let keys = crate::challenge::Keys::new(&shared::visitor::CookieSigner::new(b"openapi example, not a real key"));
    keys.issue("sale", 14, 1_767_225_600_000, 300_000)
}

problem_response!(
    /// 431: the request head is over `limits.max_head_bytes` or `max_headers` (any path).
    HeadTooLarge,
    "The request head is larger than `[limits] max_head_bytes`, or has more header fields than `max_headers`; \
     the connection is closed after this answer:\n",
    [
        ("head_too_large", Reply::head_too_large(limits().max_head_bytes)),
        ("too_many_headers", Reply::too_many_headers(limits().max_headers)),
    ]
);

problem_response!(
    /// 503: the queue store does not answer (retry after `Retry-After` seconds).
    StoreDown,
    "The queue store (Redis) is not answering; retry after `Retry-After` seconds:\n",
    [("store_down", api::store_down())]
);

problem_response!(
    /// 503: this instance is shutting down.
    Draining,
    "This instance is shutting down (a deploy); connect again to reach another:\n",
    [("draining", api::draining())]
);

problem_response!(
    /// 503: not ready: the queue store does not answer, or the instance is shutting down.
    NotReady,
    "Not ready: the queue store (Redis) is not answering, or this instance is shutting down; retry after \
     `Retry-After` seconds (another instance may answer at once):\n",
    [("store_down", api::store_down()), ("draining", api::draining())]
);

problem_response!(
    /// 426: a plain request to the WebSocket endpoint.
    NotAnUpgrade,
    "Not a WebSocket upgrade (or over HTTP/2); the answer carries `Upgrade: websocket`:\n",
    [(
        "not_an_upgrade",
        Reply::error(
            426,
            "this endpoint is a WebSocket: send GET with Upgrade: websocket and Sec-WebSocket-Version: 13"
        )
        .header("upgrade", "websocket")
    )]
);

problem_response!(
    /// 400: a WebSocket handshake without a usable key.
    BadHandshake,
    "The WebSocket handshake is missing a valid `Sec-WebSocket-Key`:\n",
    [("bad_key", Reply::error(400, "missing or invalid Sec-WebSocket-Key header"))]
);

problem_response!(
    /// 404: no endpoint at this path under `/wr`.
    NoEndpoint,
    "No such endpoint under `/wr`:\n",
    [("no_endpoint", api::unknown_endpoint())]
);

problem_response!(
    /// 405: the path exists, the method does not (see `Allow`).
    MethodNotAllowed,
    "The path accepts other methods, listed in `Allow`:\n",
    [("method_not_allowed", api::method_not_allowed("POST"))]
);

/// The token fields a READY [`StatusMessage`](crate::api::StatusMessage)
/// flattens in: [`Issued`]'s derived schema, none required (other statuses
/// have none of them).
pub fn entry_fields() -> RefOr<Schema> {
    let mut schema = Issued::schema();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        object.required.clear();
        object.description = Some("READY only: the entry token (also set as cookie `wr_entry`) and its times.".into());
    }
    schema
}

/// Where a visitor stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueStatus {
    /// In line: `position`, `queue_length`, `eta_seconds`, `retry_after_seconds`.
    Waiting,
    /// Admitted: `token`, `expires_at`, `admitted_at` (and cookie `wr_entry`).
    Ready,
    /// Not in line (never joined, or lost the place): `join_url`.
    NotInQueue,
    /// The queue opens later (`opens_at`; a pre-queue from `prequeue_from`):
    /// nobody joins yet; ask again after `retry_after_seconds`.
    Scheduled,
    /// In the pre-queue: `public_id`, `queue_length` (entrants so far),
    /// `opens_at`. Places are drawn by lottery at `opens_at` (`lottery_url`).
    Prequeue,
    /// The sale is closed (`closes_at`): nobody new joins.
    Closed,
    /// The queue is not available (operator's `reject` mode): nobody joins
    /// or is let in; places already held are kept. Ask again after
    /// `retry_after_seconds`.
    Unavailable,
    /// Sold out (`stop_when_sold_out`): nobody new joins, nobody is let in;
    /// places are kept in case stock comes back (the socket says so).
    SoldOut,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_route_is_documented_at_the_path_it_is_routed_from() {
        let doc: Value = serde_json::from_slice(&json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        let mut seen = Vec::new();
        for (concrete, route) in [
            ("/wr/healthz", Route::Health),
            ("/wr/livez", Route::Live),
            ("/wr/readyz", Route::Ready),
            ("/wr/openapi.json", Route::OpenApi),
            ("/wr/sale", Route::Page("sale")),
            ("/wr/sale/join", Route::Join("sale")),
            ("/wr/sale/status", Route::Status("sale")),
            ("/wr/sale/ws", Route::Socket("sale")),
            ("/wr/sale/lottery", Route::Lottery("sale")),
        ] {
            assert_eq!(api::route(concrete), route);
            let (methods, template) = operation(&route).unwrap();
            assert_eq!(template.replace("{queue}", "sale"), concrete);
            let item = paths.get(&template).unwrap_or_else(|| panic!("{template} is not in the document"));
            assert_eq!(item.as_object().unwrap().len(), methods.len(), "{template}");
            seen.push(template);
        }
        assert_eq!(seen.len(), paths.len(), "documented but not routed: {:?}", paths.keys());
        assert!(operation(&Route::Unknown).is_none());
    }

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
