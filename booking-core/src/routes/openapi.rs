//! The booking core's OpenAPI 3.1 documents, generated from the code so they
//! cannot drift: the public API at `GET /api/openapi.json` on the public
//! listener, the operator API (`/admin`, `/metrics`, `/livez`, `/readyz`, `/healthz`) at
//! `GET /admin/openapi.json` on the operator listener; no token needed for
//! either. Each listener documents exactly the routes it serves.
//!
//! - Operations come from `#[utoipa::path]` on the very handlers
//!   `routes::dispatch` calls; bodies from `ToSchema` on the request and
//!   view types those handlers (de)serialize.
//! - Error responses are rendered from the error types themselves. Each
//!   handler names the [`ErrorSet`](errors::ErrorSet)s it can fail with (`Errors<(Token, Scope,
//!   …)>`); a set holds one sample of each error, and the document groups the
//!   samples by [`ApiError::status`](crate::problem::ApiError::status)
//!   and shows each one's real `application/problem+json` body
//!   ([`Failure::render`]) as a named example. Changing an error's status or
//!   text changes the document; a new variant does not compile until it is
//!   named in `errors` (the naming matches are exhaustive).
//! - A test checks that every `/api` and `/admin` route template in the router
//!   is documented, and that each documented operation is routed to its
//!   template on its listener; `e2e/tests/openapi.rs` checks real responses
//!   against both documents.

pub mod errors;

use std::sync::LazyLock;

use bytes::Bytes;
use http::StatusCode;
use shared::problem::Problem;
use utoipa::openapi::RefOr;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::schema::{Object, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use self::errors::{BodyRead, Errors, problem_responses};
use crate::http::{Input, Success};
use crate::problem::{Failure, RequestError};

const DESCRIPTION: &str = "\
The booking core behind the waiting room: events and seat maps, 5-minute seat holds that are never \
double-booked and never outlive the session, and first-come coupon claims that never over-issue.

**Entry token.** Every `/api` route needs the entry token the waiting room issued \
(`Authorization: Bearer <jwt>` or the `wr_entry` cookie). Its queue (`aud`) must cover the event a \
route touches, else 403. The operator routes (`/admin`, `/metrics`, `/livez`, `/readyz`, `/healthz`) are served on the \
operator listener (`admin.listen`) only, and documented at `/admin/openapi.json` there.

**Limits.** A visitor may hold or have booked `holds.max_per_visitor` seats per event (409 with \
`limit` beyond), and send `rate_limit.mutations` requests that change something per \
`rate_limit.window` (429 with `Retry-After` beyond).

**Sessions end with the purchase.** A confirm (and, if configured, a claim) that leaves the visitor \
no live hold ends their waiting-room session: `session_end` in the body and \
`wr-session: end; reason=\"confirm\"` in the headers, which the waiting room consumes.

**Errors** are `application/problem+json` (RFC 9457: `type`, `title`, `status`, `detail`, plus \
extension members such as `reason`, `field`, `claim_id`); each response below lists the real bodies \
as examples. On every path: an unknown path is answered 404 (`components.responses.NoRoute`), a \
known path with another method 405 with an `Allow` header (`components.responses.MethodNotAllowed`), \
and a body over `server.body_limit_bytes` 413 on every route.

**Retries.** `Idempotency-Key` on the three `POST`s under `/api` replays the first answer byte for \
byte (`idempotent-replayed: true`, and the same `wr-session` header) for `idempotency.ttl`; \
refusals that change nothing (401, 403, 404, 422, 429) are not kept.

Every response carries `x-request-id` and `cache-control: no-store`.";

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "booking-core", description = DESCRIPTION),
    paths(
        crate::routes::catalogue::list_events,
        crate::routes::catalogue::popular_events,
        crate::routes::catalogue::get_event,
        crate::routes::catalogue::get_seats,
        crate::routes::holds::post_hold,
        crate::routes::holds::post_confirm,
        crate::routes::holds::delete_hold,
        crate::routes::holds::my_bookings,
        crate::routes::coupons::post_claim,
        crate::routes::coupons::my_coupons,
        serve,
    ),
    components(schemas(Problem)),
    modifiers(&Components),
    tags(
        (name = "events", description = "Events and live seat maps."),
        (name = "holds", description = "Seat holds, bookings and releases."),
        (name = "coupons", description = "First-come coupon claims."),
        (name = "me", description = "What the caller holds."),
        (name = "service", description = "This document."),
    )
)]
pub struct ApiDoc;

const ADMIN_DESCRIPTION: &str = "\
The booking core's operator listener (`admin.listen`, 127.0.0.1:9093 by default): never the public \
listener, which answers 404 for these paths.

`/admin` routes take `Authorization: Bearer <admin.token>`; a client address that fails that check \
`admin.max_failures` times within `admin.failure_window` is answered 429 (with `Retry-After`) until \
the window ends. `/metrics`, `/livez`, `/readyz` and `/healthz` need no token. `/livez` answers 200 \
while the process runs and touches nothing; `/readyz` (and its alias `/healthz`) answers 200 when the \
database and, if configured, Redis answer, 503 otherwise or while shutting down, always within 500 ms.

Errors are `application/problem+json` (RFC 9457). Every response carries `x-request-id` and \
`cache-control: no-store`.";

/// The operator listener's document.
#[derive(OpenApi)]
#[openapi(
    info(title = "booking-core operator API", description = ADMIN_DESCRIPTION),
    paths(
        crate::routes::admin::create_event,
        crate::routes::admin::create_campaign,
        crate::routes::admin::stats,
        crate::routes::admin::stock,
        crate::routes::health::livez,
        crate::routes::health::readyz,
        crate::routes::health::healthz,
        crate::routes::admin::metrics,
        serve_admin,
    ),
    components(schemas(Problem)),
    modifiers(&Components),
    tags(
        (name = "admin", description = "Operator API (admin bearer token)."),
        (name = "operations", description = "Health, metrics and this document."),
    )
)]
pub struct AdminDoc;

/// The public document as JSON, built once.
pub fn json() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| to_json(ApiDoc::openapi()));
    DOC.clone()
}

/// The operator document as JSON, built once.
pub fn admin_json() -> Bytes {
    static DOC: LazyLock<Bytes> = LazyLock::new(|| to_json(AdminDoc::openapi()));
    DOC.clone()
}

fn to_json(doc: utoipa::openapi::OpenApi) -> Bytes {
    // Serializing a document cannot fail; an empty object would fail the conformance test loudly.
    Bytes::from(doc.to_json().unwrap_or_else(|_| "{}".to_owned()))
}

/// This document.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "service",
    operation_id = "openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json",
            body = Object),
        Errors<BodyRead>,
    )
)]
pub async fn serve(_cx: &Input) -> Result<Success, Failure> {
    Ok(Success::raw(StatusCode::OK, "application/json", json()))
}

/// This document.
#[utoipa::path(
    get,
    path = "/admin/openapi.json",
    tag = "operations",
    operation_id = "admin_openapi",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of the operator listener",
            content_type = "application/json", body = Object),
        Errors<BodyRead>,
    )
)]
pub async fn serve_admin(_cx: &Input) -> Result<Success, Failure> {
    Ok(Success::raw(StatusCode::OK, "application/json", admin_json()))
}

/// Security schemes and the responses every path shares.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "entry_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The entry token from the waiting room (READY answer of /wr/{queue}/status)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "entry_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                shared::ENTRY_COOKIE,
                "The same token as the cookie the waiting room sets when the visitor is admitted.",
            ))),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("`admin.token` from the configuration (BC_ADMIN__TOKEN)."))
                    .build(),
            ),
        );
        let no_route = [("no_route", Failure::from(RequestError::NoRoute("/api/nope".into())))];
        let not_allowed = [(
            "method_not_allowed",
            Failure::from(RequestError::MethodNotAllowed { method: "PUT".into(), allow: "POST" }),
        )];
        if let Some(response) = problem_responses(&no_route).into_values().next() {
            components.responses.insert("NoRoute".to_owned(), response);
        }
        if let Some(RefOr::T(mut response)) = problem_responses(&not_allowed).into_values().next() {
            let allow = HeaderBuilder::new()
                .schema(Some(Object::with_type(Type::String)))
                .description(Some("The methods the path accepts, e.g. `POST`"))
                .build();
            response.headers.insert("Allow".to_owned(), RefOr::T(allow));
            components.responses.insert("MethodNotAllowed".to_owned(), RefOr::T(response));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::Method;
    use serde_json::Value;

    use super::*;
    use crate::http::{Listener, router};

    fn doc() -> Value {
        serde_json::from_slice(&json()).unwrap()
    }

    fn admin_doc() -> Value {
        serde_json::from_slice(&admin_json()).unwrap()
    }

    fn both() -> [(Listener, Value); 2] {
        [(Listener::Public, doc()), (Listener::Operator, admin_doc())]
    }

    /// A concrete path for a template: sample values for its parameters.
    fn concrete(template: &str) -> String {
        template.replace("{hold_id}", errors::HOLD_ID).replace("{campaign_id}", "3").replace("{id}", "7")
    }

    #[test]
    fn the_documents_are_openapi_3_1_with_problem_bodies_for_every_error() {
        for (_, doc) in both() {
            one_document_is_openapi_3_1_with_problem_bodies(&doc);
        }
    }

    fn one_document_is_openapi_3_1_with_problem_bodies(doc: &Value) {
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, response) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        let content = response["content"].as_object().unwrap();
                        assert_eq!(content.keys().collect::<Vec<_>>(), ["application/problem+json"], "{method} {path}");
                        for (name, example) in content["application/problem+json"]["examples"].as_object().unwrap() {
                            assert_eq!(example["value"]["status"].as_u64(), status.parse().ok(), "{name}");
                        }
                    }
                }
            }
        }
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert!(doc["components"]["responses"]["MethodNotAllowed"].is_object());
    }

    #[test]
    fn every_documented_operation_is_routed_to_its_template_on_its_listener_only() {
        for (listener, doc) in both() {
            let other = if listener == Listener::Public { Listener::Operator } else { Listener::Public };
            for (path, item) in doc["paths"].as_object().unwrap() {
                let documented: Vec<String> = item.as_object().unwrap().keys().map(|m| m.to_uppercase()).collect();
                for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
                    let method = Method::from_bytes(method.as_bytes()).unwrap();
                    let routed = router::route(listener, &method, &concrete(path));
                    if documented.iter().any(|m| *m == method.as_str()) {
                        assert_eq!(routed.map(|(_, t)| t).ok(), Some(path.as_str()), "{method} {path}");
                    } else {
                        assert!(
                            matches!(routed, Err(RequestError::MethodNotAllowed { .. })),
                            "{method} {path} is routed but not documented"
                        );
                    }
                    let elsewhere = router::route(other, &method, &concrete(path));
                    assert!(matches!(elsewhere, Err(RequestError::NoRoute(_))), "{method} {path} on {other:?}");
                }
            }
        }
    }

    #[test]
    fn every_api_and_admin_route_of_the_router_is_documented() {
        let (doc, admin) = (doc(), admin_doc());
        let source = include_str!("../http/router.rs");
        // The route templates are string literals of the matcher; its own tests come after `cfg(test)`.
        let matcher = source.split("#[cfg(test)]").next().unwrap();
        let templates: Vec<&str> = matcher
            .split('"')
            .filter(|s| (s.starts_with("/api/") || s.starts_with("/admin/")) && !s.contains(' '))
            .collect();
        assert!(templates.len() >= 14, "{templates:?}");
        for template in templates {
            let doc = if template.starts_with("/admin") { &admin } else { &doc };
            assert!(doc["paths"].get(template).is_some(), "{template} is routed but not in the OpenAPI document");
        }
    }
}
