//! First-come coupon claims: fixed stock, one per visitor, never over-issued,
//! never acknowledged unless committed.
//!
//! A claim passes the window check (no database work: campaigns are cached),
//! then the [`gate`], then takes a code row in the database in one
//! autocommitted statement — shared with the other winners waiting at that
//! moment on PostgreSQL ([`batch`]), alone otherwise. 201 is sent only after
//! that statement returned, i.e. after the commit. Every way the commit can
//! fail gives the gate its admission back.

pub mod batch;
pub mod gate;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::problem::Problem;

use self::batch::Batcher;
use self::gate::{Admission, Gate};
use crate::clock::{self, now_ms};
use crate::http::problem::{ApiError, Failure};
use crate::http::{Ctx, Reply, body};
use crate::metrics::Metrics;
use crate::openapi::{BodyRead, Claim, Errors, Idempotency, JsonBody, PathId, Scope, Server, Token};
use crate::store::coupons::ClaimAttempt;
use crate::store::{CampaignRow, ClaimRow, Store, StoreError};

/// The unique constraint allowing one code per visitor per campaign.
pub const ONE_PER_VISITOR: &str = "coupon_codes_campaign_visitor_key";

/// How often a claim retries while every free code is locked by claims in
/// flight, and how long it waits between tries.
const BUSY_RETRIES: u32 = 200;
const BUSY_BACKOFF: Duration = Duration::from_millis(2);

/// Claim errors.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// → 404: no such campaign.
    #[error("there is no coupon campaign {0}")]
    NoCampaign(i64),
    /// → 403: before `opens_at`.
    #[error("campaign {id} opens at {}; claim then", clock::rfc3339(*.opens_at))]
    NotOpen {
        /// Campaign.
        id: i64,
        /// Opening time, epoch ms.
        opens_at: i64,
    },
    /// → 403: at or after `closes_at`.
    #[error("campaign {id} closed at {}", clock::rfc3339(*.closes_at))]
    Closed {
        /// Campaign.
        id: i64,
        /// Closing time, epoch ms.
        closes_at: i64,
    },
    /// → 410: every code is taken.
    #[error("campaign {0} is sold out")]
    SoldOut(i64),
    /// → 409: the visitor already has a code (included when committed).
    #[error("you already claimed a coupon in campaign {campaign_id}")]
    Duplicate {
        /// Campaign.
        campaign_id: i64,
        /// The existing claim, when committed (absent while the first claim is in flight).
        existing: Option<ClaimView>,
    },
    /// → 503: every code left is being claimed right now and none settled in time.
    #[error("every remaining coupon is being claimed right now; retry in a moment")]
    Busy,
    /// → 500/503.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError for ClaimError {
    fn status(&self) -> StatusCode {
        match self {
            ClaimError::NoCampaign(_) => StatusCode::NOT_FOUND,
            ClaimError::NotOpen { .. } | ClaimError::Closed { .. } => StatusCode::FORBIDDEN,
            ClaimError::SoldOut(_) => StatusCode::GONE,
            ClaimError::Duplicate { .. } => StatusCode::CONFLICT,
            ClaimError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ClaimError::Store(e) => e.status(),
        }
    }

    fn extend(&self, problem: Problem) -> Problem {
        match self {
            ClaimError::Duplicate { existing: Some(claim), .. } => {
                problem.with("claim_id", claim.claim_id).with("code", claim.code.as_str())
            }
            ClaimError::NotOpen { opens_at, .. } => problem.with("opens_at", clock::rfc3339(*opens_at)),
            ClaimError::Closed { closes_at, .. } => problem.with("closes_at", clock::rfc3339(*closes_at)),
            _ => problem,
        }
    }
}

/// A committed claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClaimView {
    /// Claim id.
    pub claim_id: i64,
    /// Campaign.
    pub campaign_id: i64,
    /// The coupon code.
    pub code: String,
    /// When it was claimed (RFC 3339).
    #[serde(with = "clock::serde_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub claimed_at: i64,
}

impl From<&ClaimRow> for ClaimView {
    fn from(c: &ClaimRow) -> Self {
        ClaimView { claim_id: c.claim_id, campaign_id: c.campaign_id, code: c.code.clone(), claimed_at: c.claimed_at }
    }
}

/// Coupon claims; cheap to clone.
#[derive(Clone)]
pub struct Coupons(Arc<Inner>);

struct Inner {
    store: Store,
    gate: Gate,
    batcher: Arc<Batcher>,
    /// Campaigns never change once created, so they are cached for good: the
    /// scope and window checks then cost no database work.
    campaigns: DashMap<i64, CampaignRow>,
    metrics: Metrics,
}

impl Coupons {
    /// Claims through `gate`.
    pub fn new(store: Store, gate: Gate, metrics: Metrics) -> Coupons {
        Coupons(Arc::new(Inner {
            batcher: Arc::new(Batcher::new(store.clone())),
            store,
            gate,
            campaigns: DashMap::new(),
            metrics,
        }))
    }

    /// A campaign (cached).
    pub async fn campaign(&self, id: i64) -> Result<CampaignRow, ClaimError> {
        if let Some(c) = self.0.campaigns.get(&id) {
            return Ok(c.clone());
        }
        let campaign = self.0.store.campaign(id).await?.ok_or(ClaimError::NoCampaign(id))?;
        self.0.campaigns.insert(id, campaign.clone());
        Ok(campaign)
    }

    /// Is the campaign open at `now`?
    pub fn check_window(campaign: &CampaignRow, now: i64) -> Result<(), ClaimError> {
        if now < campaign.opens_at {
            return Err(ClaimError::NotOpen { id: campaign.id, opens_at: campaign.opens_at });
        }
        if now >= campaign.closes_at {
            return Err(ClaimError::Closed { id: campaign.id, closes_at: campaign.closes_at });
        }
        Ok(())
    }

    /// Claim a code of `campaign` for `visitor`. `Ok` means committed.
    pub async fn claim(&self, campaign: &CampaignRow, visitor: &str) -> Result<ClaimView, ClaimError> {
        let inner = &self.0;
        match inner.gate.admit(campaign, visitor).await {
            Admission::Admitted | Admission::Unguarded => {}
            Admission::Duplicate(recorded) => {
                inner.metrics.claim_duplicates.inc();
                if let Some(existing) = recorded.and_then(|json| serde_json::from_str::<ClaimView>(&json).ok()) {
                    return Err(ClaimError::Duplicate { campaign_id: campaign.id, existing: Some(existing) });
                }
                return Err(self.duplicate(campaign.id, visitor).await);
            }
            Admission::SoldOut => {
                inner.metrics.sold_out.inc();
                return Err(ClaimError::SoldOut(campaign.id));
            }
        }
        let attempt = match inner.batcher.claim(campaign, visitor).await {
            Some(row) => Ok(ClaimAttempt::Claimed(row)),
            None => self.claim_alone(campaign, visitor).await,
        };
        match attempt {
            Ok(ClaimAttempt::Claimed(row)) => {
                inner.metrics.claims.inc();
                let view = ClaimView::from(&row);
                // Recording the claim in the gate only spares later duplicates a
                // database lookup, so it does not delay this answer.
                if let Ok(json) = serde_json::to_string(&view) {
                    let (coupons, campaign, visitor) = (self.clone(), campaign.clone(), visitor.to_owned());
                    tokio::spawn(async move { coupons.0.gate.committed(&campaign, &visitor, &json).await });
                }
                Ok(view)
            }
            Ok(ClaimAttempt::SoldOut) => {
                inner.gate.sold_out(campaign, visitor).await;
                inner.metrics.sold_out.inc();
                Err(ClaimError::SoldOut(campaign.id))
            }
            Ok(ClaimAttempt::Busy) => {
                self.undo(campaign, visitor, true).await;
                Err(ClaimError::Busy)
            }
            Err(StoreError::Constraint(name)) if name == ONE_PER_VISITOR => {
                // Possible only when the gate was rebuilt while this visitor's
                // first claim was in flight. They keep their place in the gate.
                self.undo(campaign, visitor, false).await;
                inner.metrics.claim_duplicates.inc();
                Err(self.duplicate(campaign.id, visitor).await)
            }
            Err(e) => {
                self.undo(campaign, visitor, true).await;
                Err(e.into())
            }
        }
    }

    /// One claim in its own statement, retried while every free code is
    /// locked by claims still in flight.
    async fn claim_alone(&self, campaign: &CampaignRow, visitor: &str) -> Result<ClaimAttempt, StoreError> {
        let mut tries = 0;
        loop {
            let start = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=campaign.stock.max(1));
            match self.0.store.claim_code(campaign.id, visitor, now_ms(), start).await {
                Ok(ClaimAttempt::Busy) if tries < BUSY_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    async fn undo(&self, campaign: &CampaignRow, visitor: &str, forget: bool) {
        self.0.metrics.gate_undos.inc();
        self.0.gate.undo(campaign, visitor, forget).await;
    }

    async fn duplicate(&self, campaign_id: i64, visitor: &str) -> ClaimError {
        match self.0.store.claim_of(campaign_id, visitor).await {
            Ok(existing) => ClaimError::Duplicate { campaign_id, existing: existing.as_ref().map(ClaimView::from) },
            Err(e) => ClaimError::Store(e),
        }
    }
}

/// Claim one coupon code of a campaign: first come, one per visitor, answered
/// only once committed. The body is empty or `{}`.
#[utoipa::path(post, path = "/api/coupons/{campaign_id}/claims", tag = "coupons",
    params(
        ("campaign_id" = i64, Path, description = "Campaign id", minimum = 1),
        ("Idempotency-Key" = Option<String>, Header,
            description = "Retry safely: the same key and request replay the first answer"),
    ),
    responses(
        (status = 201, description = "The code is yours", body = ClaimView,
            headers(("idempotent-replayed" = String, description = "`true` on a replayed answer"))),
        Errors<(BodyRead, PathId, Token, JsonBody, Claim, Scope, Idempotency, Server)>,
    ),
    security(("entry_token" = []), ("entry_cookie" = [])),
)]
pub async fn post_claim(cx: &Ctx, campaign_id: i64) -> Result<Reply, Failure> {
    let visitor = cx.visitor()?;
    let _: body::EmptyObject = body::optional_json(&cx.headers, &cx.body)?;
    let coupons = cx.state.coupons();
    let campaign = coupons.campaign(campaign_id).await?;
    cx.state.auth().authorize(&visitor, campaign.event_id)?;
    Coupons::check_window(&campaign, now_ms())?;
    crate::idempotency::guarded(cx, &visitor, || async {
        let claim = coupons.claim(&campaign, &visitor.id).await?;
        Ok(Reply::json(StatusCode::CREATED, &claim))
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
pub async fn my_coupons(cx: &Ctx) -> Result<Reply, Failure> {
    let visitor = cx.visitor()?;
    let claims = cx.state.store().claims_of(&visitor.id).await.map_err(ClaimError::from)?;
    let views: Vec<ClaimView> = claims.iter().map(ClaimView::from).collect();
    Ok(Reply::json(StatusCode::OK, &views))
}
