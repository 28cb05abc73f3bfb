//! Error responses rendered from the error types: each handler names the
//! [`ErrorSet`]s it can fail with, a set holds one named sample of each error,
//! and [`Errors`] groups the samples by status into problem responses whose
//! examples are the real bodies ([`Failure::render`]). The naming functions
//! match exhaustively, so a new error variant does not compile until it is
//! named (and then sampled) here — or, for the errors of the operator routes
//! (`AdminError`, `NotReady`), beside them in [`crate::routes::admin`] and
//! [`crate::routes::health`], which name their own sets (this module naming
//! them would make each of those modules and this one import the other).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use shared::token::TokenError;
use utoipa::IntoResponses;
use utoipa::openapi::RefOr;

use crate::auth::AuthError;
use crate::catalogue::CatalogueError;
use crate::coupons::{ClaimError, ClaimView};
use crate::holds::HoldError;
use crate::limits::RateLimited;
use crate::problem::{Failure, HandlerPanicked, RequestError};
use crate::routes::idempotency::IdempotencyError;
use crate::store::StoreError;

/// A set of errors a route can answer with: one named sample of each.
pub trait ErrorSet {
    /// The samples, each named (the name keys its example in the document).
    fn samples() -> Vec<(&'static str, Failure)>;
}

/// Sets combine: a tuple of sets is the union of their samples.
macro_rules! union {
    ($($set:ident),+) => {
        impl<$($set: ErrorSet),+> ErrorSet for ($($set,)+) {
            fn samples() -> Vec<(&'static str, Failure)> {
                let mut all = Vec::new();
                $(all.extend($set::samples());)+
                all
            }
        }
    };
}
union!(A, B);
union!(A, B, C);
union!(A, B, C, D);
union!(A, B, C, D, E);
union!(A, B, C, D, E, F);
union!(A, B, C, D, E, F, G);
union!(A, B, C, D, E, F, G, H);

/// The problem responses of the sets `T`, for `responses(…)` in `#[utoipa::path]`.
pub struct Errors<T>(PhantomData<T>);

impl<T: ErrorSet> IntoResponses for Errors<T> {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        problem_responses(&T::samples())
    }
}

/// Group samples by status: one response per status, every sample's real body an example.
pub(crate) fn problem_responses(
    samples: &[(&'static str, Failure)],
) -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
    let mut by_status: BTreeMap<u16, Vec<(&'static str, serde_json::Value)>> = BTreeMap::new();
    for (name, failure) in samples {
        // Rendering logs server errors; a document is not a failed request.
        let (status, body) =
            tracing::subscriber::with_default(tracing::subscriber::NoSubscriber::default(), || failure.render());
        let value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        let group = by_status.entry(status.as_u16()).or_default();
        // Server errors share one generic body; list each distinct body once.
        if !group.iter().any(|(n, v)| n == name || *v == value) {
            group.push((name, value));
        }
    }
    by_status
        .into_iter()
        .map(|(status, examples)| {
            let description = format!("{}. One of:\n", shared::problem::reason(status));
            (status.to_string(), RefOr::T(shared::problem::openapi_response(&description, examples)))
        })
        .collect()
}

// Sample values used throughout: event 7, seat 17, campaign 3, queue "sale".
pub(super) const HOLD_ID: &str = "7-0123456789abcdef0123456789abcdef";
/// 2026-05-01T10:00:00Z, in epoch milliseconds.
const SOME_TIME: i64 = 1_777_629_600_000;

fn store_samples() -> Vec<(&'static str, Failure)> {
    vec![
        ("database_unavailable", StoreError::Unavailable(sqlx::Error::PoolTimedOut).into()),
        ("internal", StoreError::Other(sqlx::Error::RowNotFound).into()),
    ]
}

/// Reading the body (every route): 413 over the limit, 400 unreadable.
pub struct BodyRead;
impl ErrorSet for BodyRead {
    fn samples() -> Vec<(&'static str, Failure)> {
        vec![
            ("body_too_large", RequestError::TooLarge { limit: 16_384 }.into()),
            ("body_unreadable", RequestError::Unreadable("connection closed before the body ended".into()).into()),
        ]
    }
}

/// Parsing a JSON body: 415, 400 malformed, 422 wrong shape (with `field`).
pub struct JsonBody;
impl ErrorSet for JsonBody {
    fn samples() -> Vec<(&'static str, Failure)> {
        vec![
            ("not_json", RequestError::NotJson("\"text/plain\"".into()).into()),
            (
                "malformed_json",
                RequestError::MalformedJson(
                    "EOF while parsing an object at line 1 column 11; expected a JSON object like {\"seat_id\": 17}"
                        .into(),
                )
                .into(),
            ),
            (
                "invalid_json",
                RequestError::InvalidJson {
                    path: "seat_id".into(),
                    message: "invalid type: string \"one\", expected i64".into(),
                }
                .into(),
            ),
        ]
    }
}

/// An integer path parameter that is not a positive integer: 400.
pub struct PathId;
impl ErrorSet for PathId {
    fn samples() -> Vec<(&'static str, Failure)> {
        vec![("bad_id", RequestError::BadId { what: "event id", value: "abc".into() }.into())]
    }
}

fn auth_name(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "token_missing",
        AuthError::Ambiguous(_) => "token_ambiguous",
        AuthError::Expired => "token_expired",
        AuthError::Invalid(_) => "token_invalid",
        AuthError::BadSubject => "token_bad_subject",
        AuthError::UnknownQueue(_) => "token_unknown_queue",
        AuthError::WrongQueue { .. } => "wrong_queue",
    }
}

fn named_auth(errors: Vec<AuthError>) -> Vec<(&'static str, Failure)> {
    errors.into_iter().map(|e| (auth_name(&e), e.into())).collect()
}

/// The entry-token check of every `/api` route: 401 (with `reason`), 403 for a queue not configured here.
pub struct Token;
impl ErrorSet for Token {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_auth(vec![
            AuthError::Missing,
            AuthError::Expired,
            AuthError::Invalid(TokenError::BadSignature),
            AuthError::BadSubject,
            AuthError::UnknownQueue("other-sale".into()),
        ])
    }
}

/// The token check of a route that changes something: [`Token`]'s answers,
/// and 429 (with `Retry-After`) past the per-visitor rate limit.
pub struct Mutating;
impl ErrorSet for Mutating {
    fn samples() -> Vec<(&'static str, Failure)> {
        let mut all = Token::samples();
        let limited = RateLimited::Mutations { limit: 60, window: "1m".into(), retry_after: 1 };
        all.push(("rate_limited", limited.into()));
        all
    }
}

/// The token's queue must cover the event touched: 403.
pub struct Scope;
impl ErrorSet for Scope {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_auth(vec![AuthError::WrongQueue { queue: "sale".into(), event_id: 7 }])
    }
}

/// The database failing: 503 unavailable, 500 anything else.
pub struct Server;
impl ErrorSet for Server {
    fn samples() -> Vec<(&'static str, Failure)> {
        let mut all = store_samples();
        all.push(("handler_failed", HandlerPanicked("panicked".into()).into()));
        all
    }
}

fn catalogue_name(e: &CatalogueError) -> &'static str {
    match e {
        CatalogueError::NoEvent(_) => "no_event",
        CatalogueError::Redis(_) => "popularity_unavailable",
        CatalogueError::Store(_) => "database",
    }
}

fn named_catalogue(errors: Vec<CatalogueError>) -> Vec<(&'static str, Failure)> {
    errors.into_iter().map(|e| (catalogue_name(&e), e.into())).collect()
}

/// An event that does not exist: 404.
pub struct NoEvent;
impl ErrorSet for NoEvent {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_catalogue(vec![CatalogueError::NoEvent(7)])
    }
}

/// Redis not answering the popularity query: 503.
pub struct Popularity;
impl ErrorSet for Popularity {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_catalogue(vec![CatalogueError::Redis(redis::RedisError::from((
            redis::ErrorKind::Io,
            "connection refused",
        )))])
    }
}

fn hold_name(e: &HoldError) -> &'static str {
    match e {
        HoldError::NoSeat { .. } => "no_seat",
        HoldError::SeatTaken { .. } => "seat_taken",
        HoldError::AlreadyYours { .. } => "already_yours",
        HoldError::NoHold(_) => "no_hold",
        HoldError::Expired(_) => "hold_expired",
        HoldError::Released(_) => "hold_released",
        HoldError::Confirmed(_) => "hold_confirmed",
        HoldError::LimitReached { .. } => "visitor_limit",
        HoldError::SessionOver => "session_over",
        HoldError::Store(StoreError::Constraint(_)) => "seat_booked",
        HoldError::Store(_) => "database",
    }
}

fn named_holds(errors: Vec<HoldError>) -> Vec<(&'static str, Failure)> {
    errors.into_iter().map(|e| (hold_name(&e), e.into())).collect()
}

/// Taking a hold: 404 no such seat, 409 taken (or already yours, with
/// `hold_id`; or the per-visitor limit reached, with `limit`), 401 when the
/// session ends before a hold could start.
pub struct TakeHold;
impl ErrorSet for TakeHold {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_holds(vec![
            HoldError::NoSeat { event_id: 7, seat_id: 17 },
            HoldError::SeatTaken { seat_id: 17, state: "held by another visitor" },
            HoldError::AlreadyYours { seat_id: 17, hold_id: HOLD_ID.into() },
            HoldError::LimitReached { event_id: 7, limit: 4 },
            HoldError::SessionOver,
        ])
    }
}

/// Confirming a hold: 404 not yours, 410 expired or released, 409 seat booked meanwhile.
pub struct ConfirmHold;
impl ErrorSet for ConfirmHold {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_holds(vec![
            HoldError::NoHold(HOLD_ID.into()),
            HoldError::Expired(HOLD_ID.into()),
            HoldError::Released(HOLD_ID.into()),
            HoldError::Store(StoreError::Constraint("bookings_seat_key".into())),
        ])
    }
}

/// Releasing a hold: 404 not yours, 409 already confirmed.
pub struct ReleaseHold;
impl ErrorSet for ReleaseHold {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_holds(vec![HoldError::NoHold(HOLD_ID.into()), HoldError::Confirmed(HOLD_ID.into())])
    }
}

fn claim_name(e: &ClaimError) -> &'static str {
    match e {
        ClaimError::NoCampaign(_) => "no_campaign",
        ClaimError::NotOpen { .. } => "not_open",
        ClaimError::Closed { .. } => "closed",
        ClaimError::SoldOut(_) => "sold_out",
        ClaimError::Duplicate { existing: Some(_), .. } => "already_claimed",
        ClaimError::Duplicate { existing: None, .. } => "already_claiming",
        ClaimError::InFlight { .. } => "claim_in_flight",
        ClaimError::Busy => "busy",
        ClaimError::Store(_) => "database",
    }
}

/// Claiming a coupon: 404, 403 outside the window (`opens_at`/`closes_at`),
/// 409 one per visitor (with `claim_id` and `code` when known) or the
/// visitor's own claim still in flight (`Retry-After`), 410 sold out, 503 busy.
pub struct Claim;
impl ErrorSet for Claim {
    fn samples() -> Vec<(&'static str, Failure)> {
        let existing = ClaimView { claim_id: 41, campaign_id: 3, code: "C3-7F2K9Q".into(), claimed_at: SOME_TIME };
        vec![
            ClaimError::NoCampaign(3),
            ClaimError::NotOpen { id: 3, opens_at: SOME_TIME },
            ClaimError::Closed { id: 3, closes_at: SOME_TIME },
            ClaimError::SoldOut(3),
            ClaimError::Duplicate { campaign_id: 3, existing: Some(existing) },
            ClaimError::Duplicate { campaign_id: 3, existing: None },
            ClaimError::InFlight { campaign_id: 3, retry_after: 8 },
            ClaimError::Busy,
        ]
        .into_iter()
        .map(|e| (claim_name(&e), e.into()))
        .collect()
    }
}

fn idempotency_name(e: &IdempotencyError) -> &'static str {
    match e {
        IdempotencyError::BadKey => "bad_idempotency_key",
        IdempotencyError::InProgress => "idempotency_in_progress",
        IdempotencyError::Mismatch => "idempotency_key_reused",
    }
}

/// `Idempotency-Key`: 400 malformed key, 409 first request still running, 422 key reused for another request.
pub struct Idempotency;
impl ErrorSet for Idempotency {
    fn samples() -> Vec<(&'static str, Failure)> {
        [IdempotencyError::BadKey, IdempotencyError::InProgress, IdempotencyError::Mismatch]
            .into_iter()
            .map(|e| (idempotency_name(&e), e.into()))
            .collect()
    }
}
