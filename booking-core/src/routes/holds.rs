//! The holds routes: take, confirm and release a hold, list bookings.

use http::StatusCode;
use serde::Deserialize;

use crate::config::SessionEndOn;
use crate::holds::{BookingView, HoldError, HoldView, hold_event, no_hold};
use crate::http::{Input, Success, body};
use crate::problem::Failure;
use crate::routes::openapi::errors::{
    BodyRead, ConfirmHold, Errors, Idempotency, JsonBody, Mutating, PathId, ReleaseHold, Scope, Server, TakeHold, Token,
};
use crate::routes::session::{self, Purchased};

/// Body of `POST /api/events/{id}/holds`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldRequest {
    /// The seat to hold (an `id` from the seat map).
    pub seat_id: i64,
}

/// Hold a seat until `expires_at`: the hold period (5 minutes by default) or
/// the end of the caller's session, whichever comes first; confirm it to book
/// it. A visitor may hold or have booked at most `holds.max_per_visitor` seats
/// of an event (409 with `limit` beyond).
#[utoipa::path(post, path = "/api/events/{id}/holds", tag = "holds",
    params(
        ("id" = i64, Path, description = "Event id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Retry safely: the same key and request replay the first answer"),
    ),
    request_body = HoldRequest,
    responses(
        (status = 201, description = "The seat is yours until `expires_at`", body = HoldView,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer"))),
        Errors<(BodyRead, PathId, Mutating, Scope, JsonBody, TakeHold, Idempotency, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn post_hold(cx: &Input, event_id: i64) -> Result<Success, Failure> {
    let visitor = cx.mutating_visitor()?;
    cx.state.auth().authorize(&visitor, event_id)?;
    let request: HoldRequest = body::json(&cx.headers, &cx.body, r#"{"seat_id": 17}"#)?;
    crate::routes::idempotency::guarded(cx, &visitor, || async {
        let hold = cx.state.holds().hold(event_id, request.seat_id, &visitor.id, visitor.session_ends_at).await?;
        Ok(Success::json(StatusCode::CREATED, &hold))
    })
    .await
}

/// Turn a live hold into a booking; confirming again answers the same booking.
/// The body is empty or `{}`. When `end_session_on` includes `confirm` and no
/// other live hold of the caller remains, the purchase ends their session:
/// `session_end` in the body and `wr-session: end; reason="confirm"`.
#[utoipa::path(post, path = "/api/holds/{hold_id}/confirm", tag = "holds",
    params(
        ("hold_id" = String, Path, description = "Hold id (`<event id>-<32 hex>`)"),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Retry safely: the same key and request replay the first answer"),
    ),
    responses(
        (status = 200, description = "The booking", body = Purchased<BookingView>,
            headers(
                ("idempotent-replayed" = String, description = "`true` on a replayed answer"),
                ("wr-session" = String,
                    description = "`end; reason=\"confirm\"` when the purchase ended the session (the proxy consumes it)"),
            )),
        Errors<(BodyRead, Mutating, ConfirmHold, Scope, JsonBody, Idempotency, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn post_confirm(cx: &Input, hold_id: &str) -> Result<Success, Failure> {
    let visitor = cx.mutating_visitor()?;
    let event_id = hold_event(hold_id).ok_or_else(|| no_hold(hold_id))?;
    cx.state.auth().authorize(&visitor, event_id)?;
    let _: body::EmptyObject = body::optional_json(&cx.headers, &cx.body)?;
    crate::routes::idempotency::guarded(cx, &visitor, || async {
        let booking = cx.state.holds().confirm(hold_id, &visitor.id).await?;
        Ok(session::reply(&cx.state, &visitor, SessionEndOn::Confirm, StatusCode::OK, booking).await)
    })
    .await
}

/// Release a hold; releasing an expired or released hold again is a no-op.
#[utoipa::path(delete, path = "/api/holds/{hold_id}", tag = "holds",
    params(("hold_id" = String, Path, description = "Hold id (`<event id>-<32 hex>`)")),
    responses(
        (status = 204, description = "Released (the seat is available again)"),
        Errors<(BodyRead, Mutating, ReleaseHold, Scope, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn delete_hold(cx: &Input, hold_id: &str) -> Result<Success, Failure> {
    let visitor = cx.mutating_visitor()?;
    let event_id = hold_event(hold_id).ok_or_else(|| no_hold(hold_id))?;
    cx.state.auth().authorize(&visitor, event_id)?;
    cx.state.holds().release(hold_id, &visitor.id).await?;
    Ok(Success::empty(StatusCode::NO_CONTENT))
}

/// The caller's bookings.
#[utoipa::path(get, path = "/api/me/bookings", tag = "me",
    responses(
        (status = 200, description = "Oldest first", body = [BookingView]),
        Errors<(BodyRead, Token, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn my_bookings(cx: &Input) -> Result<Success, Failure> {
    let visitor = cx.visitor()?;
    let bookings = cx.state.store().bookings_of(&visitor.id).await.map_err(HoldError::from)?;
    let views: Vec<BookingView> = bookings.iter().map(BookingView::from).collect();
    Ok(Success::json(StatusCode::OK, &views))
}
