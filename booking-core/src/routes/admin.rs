//! The operator listener's routes (`admin.listen`, never the public one): the
//! API under `/admin` (bearer token `admin.token`), plus the unauthenticated
//! `/metrics`; the health checks next to them are in [`crate::routes::health`].
//!
//! The token check compares SHA-256 digests of the presented and the expected
//! token in constant time, so neither the position of the first wrong byte nor
//! the token's length shows in the timing. A client address that fails it
//! `admin.max_failures` times within `admin.failure_window` is answered 429
//! until the window ends, before its token is even looked at.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::catalogue::{EventView, row_label};
use crate::clock::{self, now_ms};
use crate::config::{MAX_SEATS, MAX_STOCK};
use crate::http::{Input, Success, body};
use crate::limits::RateLimited;
use crate::problem::{ApiError, Failure};
use crate::routes::openapi::errors::{BodyRead, ErrorSet, Errors, JsonBody, Server};
use crate::store::catalogue::NewEvent;
use crate::store::coupons::NewCampaign;
use crate::store::{CampaignRow, FOREIGN_KEY, StoreError};

/// Admin errors.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// → 403: `admin.token` is empty.
    #[error("the admin API is disabled; set admin.token (BC_ADMIN__TOKEN) to enable it")]
    Disabled,
    /// → 401: missing or wrong bearer token.
    #[error("the admin API needs Authorization: Bearer <admin.token>")]
    Unauthorized,
    /// → 422: a value out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The body field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// → 404: the campaign's event does not exist.
    #[error("there is no event {0} to attach the campaign to")]
    NoEvent(i64),
    /// → 500/503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError for AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::FORBIDDEN,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::NoEvent(_) => StatusCode::NOT_FOUND,
            AdminError::Store(e) => e.status(),
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AdminError {
    AdminError::Invalid { field, reason: reason.into() }
}

fn check_admin(cx: &Input) -> Result<(), Failure> {
    let expected = cx.state.config().admin.token.expose();
    if expected.is_empty() {
        return Err(AdminError::Disabled.into());
    }
    let limits = cx.state.limits();
    let peer = cx.peer.ip();
    limits.admin_attempt(peer).inspect_err(|_| {
        tracing::warn!(%peer, "admin attempt refused: too many failures from this address");
    })?;
    let presented = cx
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_some_and(|token| same_secret(token, expected)) {
        limits.admin_succeeded(peer);
        return Ok(());
    }
    tracing::warn!(%peer, "admin attempt with a missing or wrong token");
    Err(AdminError::Unauthorized.into())
}

/// Compare two secrets in time independent of their contents and lengths:
/// equal-length digests, compared without an early exit.
fn same_secret(presented: &str, expected: &str) -> bool {
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    shared::config::constant_time_eq(&a, &b)
}

/// Prometheus metrics (`booking_core_*`).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String,
            content_type = "text/plain; version=0.0.4"),
        Errors<BodyRead>,
    )
)]
pub async fn metrics(cx: &Input) -> Success {
    cx.state.store().sample_pool();
    cx.state.metrics().refresh_stock_left(|| cx.state.store().stock_left(now_ms())).await;
    Success::raw(StatusCode::OK, "text/plain; version=0.0.4", cx.state.metrics().render())
}

/// Body of `POST /admin/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEventRequest {
    /// 1 to 200 characters.
    name: String,
    /// 1 to 200 characters.
    venue: String,
    /// Start (RFC 3339).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    starts_at: i64,
    /// Rows, labelled A..ZZ (1 to 702).
    #[schema(minimum = 1, maximum = 702)]
    rows: i64,
    /// Seats per row (1 to 1000; at most 20,000 seats in all).
    #[schema(minimum = 1, maximum = 1000)]
    seats_per_row: i64,
    /// Price of every seat, in cents.
    #[schema(minimum = 0, maximum = 100_000_000)]
    price_cents: i64,
}

/// Create an event with `rows × seats_per_row` seats, all available.
#[utoipa::path(post, path = "/admin/events", tag = "admin",
    request_body = NewEventRequest,
    responses(
        (status = 201, description = "The event", body = EventView),
        Errors<(BodyRead, AdminAuth, JsonBody, AdminEvent, Server)>,
    ),
    security(("admin_token" = [])),
)]
pub async fn create_event(cx: &Input) -> Result<Success, Failure> {
    check_admin(cx)?;
    let r: NewEventRequest = body::json(
        &cx.headers,
        &cx.body,
        r#"{"name": "…", "venue": "…", "starts_at": "2026-05-01T19:30:00Z", "rows": 10, "seats_per_row": 20, "price_cents": 4500}"#,
    )?;
    check_text("name", &r.name)?;
    check_text("venue", &r.venue)?;
    if !(1..=702).contains(&r.rows) {
        return Err(invalid("rows", "must be 1..=702 (rows are labelled A..ZZ)").into());
    }
    if !(1..=1000).contains(&r.seats_per_row) {
        return Err(invalid("seats_per_row", "must be 1..=1000").into());
    }
    if r.rows * r.seats_per_row > MAX_SEATS {
        return Err(invalid("rows", format!("rows × seats_per_row must be at most {MAX_SEATS}")).into());
    }
    if !(0..=100_000_000).contains(&r.price_cents) {
        return Err(invalid("price_cents", "must be 0..=100000000").into());
    }
    let event = NewEvent {
        name: r.name,
        venue: r.venue,
        starts_at: r.starts_at,
        rows: (0..r.rows).map(row_label).collect(),
        seats_per_row: r.seats_per_row,
        price_cents: r.price_cents,
    };
    let created = cx.state.store().create_event(&event, now_ms()).await.map_err(AdminError::from)?;
    Ok(Success::json(StatusCode::CREATED, &EventView::from(&created)))
}

fn check_text(field: &'static str, text: &str) -> Result<(), AdminError> {
    if text.trim().is_empty() || text.chars().count() > 200 {
        return Err(invalid(field, "must be 1..=200 characters"));
    }
    Ok(())
}

/// Body of `POST /admin/campaigns`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewCampaignRequest {
    /// The event the coupons belong to.
    event_id: i64,
    /// Defaults to `Event <id> coupons`.
    #[serde(default)]
    name: Option<String>,
    /// Codes created (1 to 1,000,000).
    #[schema(minimum = 1, maximum = 1_000_000)]
    stock: i64,
    /// Claims open (RFC 3339).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    opens_at: i64,
    /// Claims close (RFC 3339, exclusive; after `opens_at`).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    closes_at: i64,
}

/// A campaign as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignView {
    /// Campaign id.
    pub id: i64,
    /// Its event.
    pub event_id: i64,
    /// Name.
    pub name: String,
    /// Codes in total.
    pub stock: i64,
    /// Window start.
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub opens_at: i64,
    /// Window end (exclusive).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub closes_at: i64,
}

impl From<&CampaignRow> for CampaignView {
    fn from(c: &CampaignRow) -> Self {
        CampaignView {
            id: c.id,
            event_id: c.event_id,
            name: c.name.clone(),
            stock: c.stock,
            opens_at: c.opens_at,
            closes_at: c.closes_at,
        }
    }
}

/// Create a coupon campaign with `stock` codes.
#[utoipa::path(post, path = "/admin/campaigns", tag = "admin",
    request_body = NewCampaignRequest,
    responses(
        (status = 201, description = "The campaign", body = CampaignView),
        Errors<(BodyRead, AdminAuth, JsonBody, AdminCampaign, Server)>,
    ),
    security(("admin_token" = [])),
)]
pub async fn create_campaign(cx: &Input) -> Result<Success, Failure> {
    check_admin(cx)?;
    let r: NewCampaignRequest = body::json(
        &cx.headers,
        &cx.body,
        r#"{"event_id": 1, "stock": 500, "opens_at": "2026-05-01T10:00:00Z", "closes_at": "2026-05-02T10:00:00Z"}"#,
    )?;
    if !(1..=MAX_STOCK).contains(&r.stock) {
        return Err(invalid("stock", format!("must be 1..={MAX_STOCK}")).into());
    }
    if r.opens_at >= r.closes_at {
        return Err(invalid("closes_at", "must be after opens_at").into());
    }
    let name = r.name.unwrap_or_else(|| format!("Event {} coupons", r.event_id));
    check_text("name", &name)?;
    let campaign =
        NewCampaign { event_id: r.event_id, name, stock: r.stock, opens_at: r.opens_at, closes_at: r.closes_at };
    let created = cx.state.store().create_campaign(&campaign, now_ms()).await.map_err(|e| match e {
        StoreError::Constraint(c) if c == "coupon_campaigns_event_fk" || c == FOREIGN_KEY => {
            AdminError::NoEvent(r.event_id)
        }
        other => AdminError::Store(other),
    })?;
    Ok(Success::json(StatusCode::CREATED, &CampaignView::from(&created)))
}

/// Counts of events, seats, live holds, bookings, claims and stock left per campaign.
#[utoipa::path(get, path = "/admin/stats", tag = "admin",
    responses(
        (status = 200, description = "The counts", body = crate::store::Stats),
        Errors<(BodyRead, AdminAuth, Server)>,
    ),
    security(("admin_token" = [])),
)]
pub async fn stats(cx: &Input) -> Result<Success, Failure> {
    check_admin(cx)?;
    let mut stats = cx.state.store().stats(now_ms()).await.map_err(AdminError::from)?;
    // Read after the database, so every claim counted there is already the
    // gate's `issued` or `reserved`.
    for campaign in &mut stats.campaigns {
        match cx.state.coupons().gate().counts(campaign.id).await {
            Ok(counts) => campaign.gate = counts,
            Err(e) => tracing::warn!(error = %e, campaign = campaign.id, "cannot read the claim gate"),
        }
    }
    Ok(Success::json(StatusCode::OK, &stats))
}

/// What is left to sell: free seats per event, codes left per open
/// campaign. The waiting room polls this to tell its line when the sale has
/// sold out (`stop_when_sold_out`).
#[utoipa::path(get, path = "/admin/stock", tag = "admin",
    responses(
        (status = 200, description = "Stock left", body = crate::store::admin::Stock),
        Errors<(BodyRead, AdminAuth, Server)>,
    ),
    security(("admin_token" = [])),
)]
pub async fn stock(cx: &Input) -> Result<Success, Failure> {
    check_admin(cx)?;
    let stock = cx.state.store().stock(now_ms()).await.map_err(AdminError::from)?;
    Ok(Success::json(StatusCode::OK, &stock))
}

// The admin routes' error sets (see `routes::openapi::errors`): beside the
// error type they sample, so the naming match stays exhaustive.

fn admin_name(e: &AdminError) -> &'static str {
    match e {
        AdminError::Disabled => "admin_disabled",
        AdminError::Unauthorized => "admin_unauthorized",
        AdminError::Invalid { .. } => "invalid_value",
        AdminError::NoEvent(_) => "no_event",
        AdminError::Store(_) => "database",
    }
}

fn named_admin(errors: Vec<AdminError>) -> Vec<(&'static str, Failure)> {
    errors.into_iter().map(|e| (admin_name(&e), e.into())).collect()
}

/// The admin bearer token: 401 wrong or missing, 403 admin API disabled, 429
/// (with `Retry-After`) after too many failures from the client's address.
pub struct AdminAuth;
impl ErrorSet for AdminAuth {
    fn samples() -> Vec<(&'static str, Failure)> {
        let mut all = named_admin(vec![AdminError::Unauthorized, AdminError::Disabled]);
        all.push(("admin_rate_limited", RateLimited::AdminFailures { retry_after: 42 }.into()));
        all
    }
}

/// Creating an event: 422 a value out of range.
pub struct AdminEvent;
impl ErrorSet for AdminEvent {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_admin(vec![AdminError::Invalid {
            field: "rows",
            reason: "must be 1..=702 (rows are labelled A..ZZ)".into(),
        }])
    }
}

/// Creating a campaign: 422 a value out of range, 404 no such event.
pub struct AdminCampaign;
impl ErrorSet for AdminCampaign {
    fn samples() -> Vec<(&'static str, Failure)> {
        named_admin(vec![
            AdminError::Invalid { field: "closes_at", reason: "must be after opens_at".into() },
            AdminError::NoEvent(7),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_match_only_when_equal_whatever_their_lengths() {
        assert!(same_secret("0123456789abcdef", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcdeF", "0123456789abcdef"));
        assert!(!same_secret("0123456789abcdef0", "0123456789abcdef"));
        assert!(!same_secret("", "0123456789abcdef"));
    }
}
