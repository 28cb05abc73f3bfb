//! The coupon routes: claim a code, list the caller's codes.

use http::StatusCode;

use crate::clock::now_ms;
use crate::config::SessionEndOn;
use crate::coupons::{ClaimError, ClaimView, Coupons};
use crate::http::{Input, Success, body};
use crate::problem::Failure;
use crate::routes::openapi::errors::{
    BodyRead, Claim, Errors, Idempotency, JsonBody, Mutating, PathId, Scope, Server, Token,
};
use crate::routes::session::{self, Purchased};

/// Claim one coupon code of a campaign: first come, one per visitor, answered
/// only once committed. The body is empty or `{}`.
///
/// A 503 means every code left is reserved by claims in flight, or the
/// database is unavailable (retry after `Retry-After`). Redis trouble is not
/// a 503: without the claim gate the database alone decides (it holds
/// exactly `stock` codes and one per visitor), so a claim still answers at
/// database speed while Redis is down.
#[utoipa::path(post, path = "/api/coupons/{campaign_id}/claims", tag = "coupons",
    params(
        ("campaign_id" = i64, Path, description = "Campaign id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Retry safely: the same key and request replay the first answer"),
    ),
    responses(
        (status = 201, description = "The code is yours", body = Purchased<ClaimView>,
            headers(
                ("idempotent-replayed" = String, description = "`true` on a replayed answer"),
                ("wr-session" = String,
                    description = "`end; reason=\"claim\"` when the claim ended the session (the proxy consumes it)"),
            )),
        Errors<(BodyRead, PathId, Mutating, JsonBody, Claim, Scope, Idempotency, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn post_claim(cx: &Input, campaign_id: i64) -> Result<Success, Failure> {
    let visitor = cx.mutating_visitor()?;
    let _: body::EmptyObject = body::optional_json(&cx.headers, &cx.body)?;
    let coupons = cx.state.coupons();
    let campaign = coupons.campaign(campaign_id).await?;
    cx.state.auth().authorize(&visitor, campaign.event_id)?;
    Coupons::check_window(&campaign, now_ms())?;
    crate::routes::idempotency::guarded(cx, &visitor, || async {
        let claim = coupons.claim(&campaign, &visitor.id).await?;
        Ok(session::reply(&cx.state, &visitor, SessionEndOn::Claim, StatusCode::CREATED, claim).await)
    })
    .await
}

/// The caller's coupon codes.
#[utoipa::path(get, path = "/api/me/coupons", tag = "me",
    responses(
        (status = 200, description = "Oldest first", body = [ClaimView]),
        Errors<(BodyRead, Token, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn my_coupons(cx: &Input) -> Result<Success, Failure> {
    let visitor = cx.visitor()?;
    let claims = cx.state.store().claims_of(&visitor.id).await.map_err(ClaimError::from)?;
    let views: Vec<ClaimView> = claims.iter().map(ClaimView::from).collect();
    Ok(Success::json(StatusCode::OK, &views))
}
