//! The waiting room's error replies: one typed set, [`Failure`], each kind
//! rendering its `application/problem+json` [`Reply`] (with `Retry-After`
//! where the client should come back), and the OpenAPI responses that
//! document them with those very bodies as examples.
//!
//! A 503 of the queue API, the page, the WebSocket handshake or the admin
//! API means "come back" and carries `Retry-After`: the queue store is down
//! ([`Failure::StoreDown`], the same reply on every one of those paths), this
//! instance shuts down ([`Failure::Draining`]) or the lottery is not
//! committed yet ([`Failure::NotCommitted`]).

use shared::problem::Problem;

use crate::queues::Queues;
use crate::reply::Reply;

/// Largest request body the queue API accepts (only a join carries one: the
/// answer to a challenge).
pub const MAX_BODY: usize = 4096;

/// An error the waiting room answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// 503: the queue store does not answer (`Retry-After: 2`).
    StoreDown,
    /// 503: this instance is shutting down (`Retry-After: 1`: another
    /// instance will answer).
    Draining,
    /// 503: the lottery's commitment is not made yet (`Retry-After: 1`).
    NotCommitted,
    /// 404: no queue named `queue`; the same body from the queue API, the
    /// WebSocket handshake and the admin API (built by [`unknown_queue`]):
    /// the id asked for (`queue`) and the `known` ones.
    UnknownQueue {
        /// The id asked for.
        queue: &'a str,
        /// The queues there are.
        known: &'a [&'a str],
    },
    /// 404: a path under `/wr` that is no endpoint.
    UnknownEndpoint,
    /// 405 with `Allow`.
    MethodNotAllowed(&'static str),
    /// 400: a body over [`MAX_BODY`].
    BodyTooLarge,
    /// 400: a body that could not be read.
    MalformedBody,
    /// 426: a request to the WebSocket endpoint that is no upgrade (or over
    /// HTTP/2), with `Upgrade: websocket`.
    NotAnUpgrade,
    /// 400: a WebSocket handshake without a usable key.
    BadHandshake,
}

impl Failure<'_> {
    /// The reply.
    pub fn reply(self) -> Reply {
        match self {
            Failure::StoreDown => {
                Reply::error(503, "the queue store is not answering; retry in a few seconds").header("retry-after", "2")
            }
            Failure::Draining => Reply::error(503, "this instance is shutting down; connect again to reach another")
                .header("retry-after", "1"),
            Failure::NotCommitted => Reply::error(503, "the lottery's commitment is not made yet; retry in a second")
                .header("retry-after", "1"),
            Failure::UnknownQueue { queue, known } => Reply::problem(
                Problem::new(404, format!("there is no queue named {queue:?}; known queues: {}", known.join(", ")))
                    .with("queue", queue),
            ),
            Failure::UnknownEndpoint => Reply::error(
                404,
                "no such waiting-room endpoint; use /wr/{queue}, /wr/{queue}/join, /wr/{queue}/status, /wr/{queue}/ws \
                 or /wr/{queue}/lottery",
            ),
            Failure::MethodNotAllowed(allow) => {
                Reply::error(405, format!("this endpoint accepts {allow} only")).header("allow", allow)
            }
            Failure::BodyTooLarge => Reply::error(
                400,
                format!(
                    "request body too large (limit {MAX_BODY} bytes): only a join carries a body, the answer to a \
                     challenge"
                ),
            ),
            Failure::MalformedBody => Reply::error(400, "malformed request body"),
            Failure::NotAnUpgrade => Reply::error(
                426,
                "this endpoint is a WebSocket: send GET with Upgrade: websocket and Sec-WebSocket-Version: 13",
            )
            .header("upgrade", "websocket"),
            Failure::BadHandshake => Reply::error(400, "missing or invalid Sec-WebSocket-Key header"),
        }
    }
}

/// The 404 for a queue id `queues` does not hold, naming the ones it does.
pub fn unknown_queue(queues: &Queues, queue: &str) -> Reply {
    let all = queues.all();
    let known: Vec<&str> = all.iter().map(|q| q.id()).collect();
    Failure::UnknownQueue { queue, known: &known }.reply()
}

impl From<Failure<'_>> for Reply {
    fn from(f: Failure<'_>) -> Reply {
        f.reply()
    }
}

/// The OpenAPI responses of the queue API's errors (`components.responses`),
/// their examples rendered by [`Failure`] (the join's refusals are documented
/// beside them, in [`crate::join`]).
pub mod doc {
    use serde_json::Value;
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{Object, Type};
    use utoipa::openapi::{RefOr, Response};

    use super::Failure;
    use crate::config::LimitsConfig;
    use crate::reply::Reply;

    /// A problem response with the bodies of `replies` as examples, and their
    /// headers (`Allow`, `Retry-After`, `Upgrade`) as response headers.
    pub(crate) fn problems(description: &str, replies: Vec<(&str, Reply)>) -> Response {
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

    /// A documented problem response: a unit struct named as the component
    /// (`components.responses.<name>`), the description and its examples.
    macro_rules! problem_response {
        ($(#[$doc:meta])* $name:ident, $description:expr, [$(($example:expr, $reply:expr)),+ $(,)?]) => {
            $(#[$doc])*
            pub struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, utoipa::openapi::RefOr<utoipa::openapi::Response>) {
                    (
                        stringify!($name),
                        utoipa::openapi::RefOr::T($crate::problem::doc::problems(
                            $description,
                            vec![$(($example, $reply)),+],
                        )),
                    )
                }
            }
        };
    }
    pub(crate) use problem_response;

    problem_response!(
        /// 404: the queue is not configured.
        UnknownQueue,
        "There is no such queue (`queue` names it):\n",
        [("unknown_queue", Failure::UnknownQueue { queue: "nope", known: &["sale"] }.reply())]
    );

    problem_response!(
        /// 400: the queue API takes no body.
        BadBody,
        "The request carried a body (the queue API takes none) over 4 KiB, or one that could not be read:\n",
        [("body_too_large", Failure::BodyTooLarge.reply()), ("malformed_body", Failure::MalformedBody.reply())]
    );

    problem_response!(
        /// 400: a join body that is no answer to a challenge.
        BadJoinBody,
        "The body is over 4 KiB, could not be read, or is not the answer to a challenge \
         (`{\"challenge\": …, \"nonce\": …}`):\n",
        [
            ("body_too_large", Failure::BodyTooLarge.reply()),
            ("malformed_body", Failure::MalformedBody.reply()),
            ("not_an_answer", Reply::error(400, crate::challenge::Answer::parse(b"{}").err().unwrap_or_default())),
        ]
    );

    problem_response!(
        /// 431: the request head is over `limits.max_head_bytes` or `max_headers` (any path).
        HeadTooLarge,
        "The request head is larger than `[limits] max_head_bytes`, or has more header fields than `max_headers`; \
         the connection is closed after this answer:\n",
        [
            ("head_too_large", Reply::head_too_large(LimitsConfig::default().max_head_bytes)),
            ("too_many_headers", Reply::too_many_headers(LimitsConfig::default().max_headers)),
        ]
    );

    problem_response!(
        /// 503: the queue store does not answer (retry after `Retry-After` seconds).
        StoreDown,
        "The queue store (Redis) is not answering; retry after `Retry-After` seconds:\n",
        [("store_down", Failure::StoreDown.reply())]
    );

    problem_response!(
        /// 503: this instance is shutting down.
        Draining,
        "This instance is shutting down (a deploy); connect again to reach another:\n",
        [("draining", Failure::Draining.reply())]
    );

    problem_response!(
        /// 503: not ready: the queue store does not answer, or the instance is shutting down.
        NotReady,
        "Not ready: the queue store (Redis) is not answering, or this instance is shutting down; retry after \
         `Retry-After` seconds (another instance may answer at once):\n",
        [("store_down", Failure::StoreDown.reply()), ("draining", Failure::Draining.reply())]
    );

    problem_response!(
        /// 426: a plain request to the WebSocket endpoint.
        NotAnUpgrade,
        "Not a WebSocket upgrade (or over HTTP/2); the answer carries `Upgrade: websocket`:\n",
        [(
            "not_an_upgrade",
            Failure::NotAnUpgrade.reply()
        )]
    );

    problem_response!(
        /// 400: a WebSocket handshake without a usable key.
        BadHandshake,
        "The WebSocket handshake is missing a valid `Sec-WebSocket-Key`:\n",
        [("bad_key", Failure::BadHandshake.reply())]
    );

    problem_response!(
        /// 404: no endpoint at this path under `/wr`.
        NoEndpoint,
        "No such endpoint under `/wr`:\n",
        [("no_endpoint", Failure::UnknownEndpoint.reply())]
    );

    problem_response!(
        /// 405: the path exists, the method does not (see `Allow`).
        MethodNotAllowed,
        "The path accepts other methods, listed in `Allow`:\n",
        [("method_not_allowed", Failure::MethodNotAllowed("POST").reply())]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_outage_is_a_503_that_says_when_to_come_back() {
        for f in [Failure::StoreDown, Failure::Draining, Failure::NotCommitted] {
            let reply = f.reply();
            assert_eq!(reply.status, 503, "{f:?}");
            assert!(reply.headers.iter().any(|(h, _)| *h == "retry-after"), "{f:?}");
        }
        let known = ["a", "b"];
        for f in [
            Failure::UnknownQueue { queue: "x", known: &known },
            Failure::UnknownEndpoint,
            Failure::MethodNotAllowed("GET"),
            Failure::BodyTooLarge,
            Failure::MalformedBody,
            Failure::NotAnUpgrade,
            Failure::BadHandshake,
        ] {
            let reply = f.reply();
            assert!((400..500).contains(&reply.status), "{f:?}");
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
            assert_eq!(body["status"], reply.status, "{f:?}");
        }
    }
}
