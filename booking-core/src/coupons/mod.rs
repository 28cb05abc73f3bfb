//! First-come coupon claims: fixed stock, one per visitor, never over-issued,
//! never acknowledged unless committed, and no unit of stock lost to a crash.
//!
//! A claim passes the window check (no database work: campaigns are cached),
//! then the [`gate`] reserves a unit under a lease, then a code row is taken
//! in the database in one autocommitted statement — shared with the other
//! winners waiting at that moment on PostgreSQL ([`batch`]), alone otherwise —
//! which only succeeds before the lease's deadline. 201 is sent only after
//! that statement returned, i.e. after the commit. Every way the commit can
//! fail settles the lease; a lease nobody settles (the process died) expires
//! and the [`reconcile`]r settles it against the database.
//!
//! # When Redis is down: the database alone decides
//!
//! If the Redis gate cannot answer — Redis refuses, stalls past
//! `redis.response_timeout`, or its breaker ([`crate::redis_breaker`]) is
//! open and fails the call at once — the claim goes to the database
//! unguarded ([`gate::GateAnswer::Unguarded`]) rather than being answered 503.
//! That is safe across any number of booking cores because the gate never
//! decided a win: a claim is one statement that takes one of the campaign's
//! `stock` pre-generated code rows (nothing else to take: claims ≤ stock) and
//! `(campaign, visitor)` is unique (one per visitor), both enforced by the
//! database every instance shares, with or without the gate. What the gate
//! loses meanwhile is only its count: claims it did not see are found by the
//! reconciler's comparison with the database (or a "sold out" from the
//! database) once Redis answers again, and a lease Redis executed after the
//! claim gave up on it expires and is settled like a crashed claim's. The
//! price is load: every claimant reaches the database while Redis is down,
//! not only the would-be winners; the answer still comes at database speed,
//! never after a Redis timeout longer than `redis.response_timeout`.

pub mod batch;
pub mod gate;
pub mod reconcile;

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use shared::problem::Problem;

use self::batch::Batcher;
use self::gate::{ClaimGate, GateAnswer};
use crate::clock::{self, now_ms};
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::store::coupons::ClaimAttempt;
use crate::store::{CampaignRow, ClaimRow, Store, StoreError};

/// The unique constraint allowing one code per visitor per campaign.
pub const ONE_PER_VISITOR: &str = "coupon_codes_campaign_visitor_key";

/// How often a claim retries while every free code is locked by claims in
/// flight, and how long it waits between tries.
const BUSY_RETRIES: u32 = 200;
const BUSY_BACKOFF: Duration = Duration::from_millis(2);
/// How long a claim waits for reservations in flight to settle before
/// answering "retry", and how often it looks.
const SETTLE_WAIT: Duration = Duration::from_secs(1);
const SETTLE_POLL: Duration = Duration::from_millis(5);

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
    /// → 409: the visitor already has a code (included when recorded).
    #[error("you already claimed a coupon in campaign {campaign_id}")]
    Duplicate {
        /// Campaign.
        campaign_id: i64,
        /// The existing claim, when known.
        existing: Option<ClaimView>,
    },
    /// → 409 with `Retry-After`: the visitor's own claim is still being processed.
    #[error("your claim in campaign {campaign_id} is still being processed; retry in a moment to see its result")]
    InFlight {
        /// Campaign.
        campaign_id: i64,
        /// Seconds until its reservation ends at the latest.
        retry_after: u64,
    },
    /// → 503: every code left is reserved by claims in flight (some may come
    /// back), or a claim could not commit in time.
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
            ClaimError::Duplicate { .. } | ClaimError::InFlight { .. } => StatusCode::CONFLICT,
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

    fn retry_after(&self) -> Option<u64> {
        match self {
            ClaimError::InFlight { retry_after, .. } => Some(*retry_after),
            _ => None,
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
    gate: ClaimGate,
    batcher: Arc<Batcher>,
    /// Campaigns never change once created, so they are cached for good: the
    /// scope and window checks then cost no database work.
    campaigns: DashMap<i64, CampaignRow>,
    metrics: Metrics,
    /// A claim must commit this long before its lease ends: room for clock
    /// skew between the gate's clock and the database's.
    margin_ms: i64,
    /// When this instance last asked the database whether a campaign the
    /// gate calls sold out still has codes (at most once a second each).
    sold_out_checked: Throttle,
    /// When this instance last rebuilt a gate that admitted a claim the
    /// database had no code for (at most once every five seconds each).
    sold_out_rebuilt: Throttle,
}

/// At most one go per campaign per period, in this process.
struct Throttle {
    period: Duration,
    last: DashMap<i64, std::time::Instant>,
}

impl Throttle {
    fn new(period: Duration) -> Throttle {
        Throttle { period, last: DashMap::new() }
    }

    /// True (and the clock restarts) if the period has passed for `campaign_id`.
    fn go(&self, campaign_id: i64) -> bool {
        let now = std::time::Instant::now();
        match self.last.entry(campaign_id) {
            Entry::Vacant(slot) => {
                slot.insert(now);
                true
            }
            Entry::Occupied(mut slot) if now.duration_since(*slot.get()) >= self.period => {
                slot.insert(now);
                true
            }
            Entry::Occupied(_) => false,
        }
    }
}

/// How the claim statement may run: before this database-clock deadline
/// (epoch ms), or without one when the gate could not reserve.
#[derive(Debug, Clone, Copy)]
struct CommitBy(i64);

impl Coupons {
    /// Claims through `gate`, whose leases last `lease_ms`.
    pub fn new(store: Store, gate: ClaimGate, metrics: Metrics, lease_ms: i64) -> Coupons {
        Coupons(Arc::new(Inner {
            batcher: Arc::new(Batcher::new(store.clone())),
            store,
            gate,
            campaigns: DashMap::new(),
            metrics,
            margin_ms: lease_ms / 5,
            sold_out_checked: Throttle::new(Duration::from_secs(1)),
            sold_out_rebuilt: Throttle::new(Duration::from_secs(5)),
        }))
    }

    /// The gate (for the reconciler and operator statistics).
    pub fn gate(&self) -> &ClaimGate {
        &self.0.gate
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
    ///
    /// When the only units left are reserved by claims in flight, the answer
    /// waits up to [`SETTLE_WAIT`] for them to settle — they normally commit
    /// within milliseconds — so a visitor is told "sold out" rather than
    /// "retry"; only reservations that outlive that (a crashed instance's,
    /// until the reconciler returns them) answer 503 with `Retry-After`. A
    /// visitor whose own claim is in flight is told so at once (409 with
    /// `Retry-After`: that claim's request gets its answer).
    pub async fn claim(&self, campaign: &CampaignRow, visitor: &str) -> Result<ClaimView, ClaimError> {
        let inner = &self.0;
        let patience = tokio::time::Instant::now() + SETTLE_WAIT;
        let waiting = || tokio::time::Instant::now() < patience;
        // A stale answer (an expired lease, a gate that disagrees with the
        // database) is settled and the gate asked again, once each.
        let (mut settled, mut reconciled, mut rebuilt) = (false, false, false);
        loop {
            match inner.gate.reserve(campaign, visitor).await {
                GateAnswer::Reserved { deadline } => {
                    return self.commit(campaign, visitor, Some(CommitBy(deadline - inner.margin_ms))).await;
                }
                GateAnswer::Unguarded => return self.commit(campaign, visitor, None).await,
                GateAnswer::Claimed(recorded) => {
                    inner.metrics.claim_duplicates.inc();
                    if let Some(existing) = recorded.and_then(|json| serde_json::from_str::<ClaimView>(&json).ok()) {
                        return Err(ClaimError::Duplicate { campaign_id: campaign.id, existing: Some(existing) });
                    }
                    return Err(self.duplicate(campaign.id, visitor).await);
                }
                GateAnswer::InFlight { deadline, now } if !settled && deadline <= now => {
                    // The visitor's own lease outlived its claim: settle it now.
                    settled = true;
                    let claimed = inner.store.claim_of(campaign.id, visitor).await?.is_some();
                    let lease = gate::Lease { visitor: visitor.to_owned(), deadline };
                    if let Err(e) = self.settle(campaign.id, &lease, claimed).await {
                        tracing::warn!(error = %e, "could not settle an expired lease");
                    }
                }
                GateAnswer::InFlight { deadline, now } => {
                    // Its answer goes to the request that started it; this one
                    // says so at once (waiting would only tie up the caller).
                    let retry_after = u64::try_from((deadline - now).clamp(1000, 5000) / 1000).unwrap_or(1);
                    return Err(ClaimError::InFlight { campaign_id: campaign.id, retry_after });
                }
                GateAnswer::Busy { earliest, now } if !reconciled && earliest <= now => {
                    reconciled = true;
                    if let Err(e) = self.reconcile(campaign).await {
                        tracing::warn!(error = %e, "could not reconcile the claim gate");
                    }
                }
                GateAnswer::Busy { .. } if !waiting() => return Err(ClaimError::Busy),
                GateAnswer::Busy { .. } => tokio::time::sleep(SETTLE_POLL).await,
                GateAnswer::SoldOut if !rebuilt && self.gate_sold_out_in_error(campaign).await => rebuilt = true,
                GateAnswer::SoldOut => {
                    inner.metrics.sold_out.inc();
                    return Err(ClaimError::SoldOut(campaign.id));
                }
            }
        }
    }

    /// The gate says sold out: check (at most once a second per campaign)
    /// whether the database still has free codes; if it does, the gate lost
    /// count, so rebuild it and let the caller ask again.
    async fn gate_sold_out_in_error(&self, campaign: &CampaignRow) -> bool {
        let inner = &self.0;
        if !inner.sold_out_checked.go(campaign.id) {
            return false;
        }
        match inner.store.free_codes(campaign.id).await {
            Ok(0) => false,
            Ok(free) => {
                // Nothing is reserved (else the gate would say busy), so the
                // gate simply lost count: a fresh read of the database fixes it.
                tracing::warn!(
                    campaign = campaign.id,
                    free,
                    "the claim gate said sold out with free codes; rebuilding it"
                );
                if let Err(e) = inner.gate.rebuild(campaign).await {
                    tracing::warn!(error = %e, "could not rebuild the claim gate");
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read free codes");
                false
            }
        }
    }

    /// Take a code in the database under the lease (if any), and settle the
    /// lease with the outcome.
    async fn commit(
        &self,
        campaign: &CampaignRow,
        visitor: &str,
        deadline: Option<CommitBy>,
    ) -> Result<ClaimView, ClaimError> {
        let inner = &self.0;
        let commit_by = deadline.map_or(i64::MAX, |CommitBy(at)| at);
        let attempt = match inner.batcher.claim(campaign, visitor, commit_by).await {
            Some(row) => Ok(ClaimAttempt::Claimed(row)),
            None => self.claim_alone(campaign, visitor, commit_by).await,
        };
        match attempt {
            Ok(ClaimAttempt::Claimed(row)) => {
                inner.metrics.claims.inc();
                let view = ClaimView::from(&row);
                // Settling the lease as issued (and recording the claim for
                // duplicate answers) does not delay this answer; if it never
                // happens, the lease expires and the reconciler finds the claim.
                if let Ok(json) = serde_json::to_string(&view) {
                    let (coupons, campaign, visitor) = (self.clone(), campaign.clone(), visitor.to_owned());
                    tokio::spawn(async move { coupons.0.gate.committed(&campaign, &visitor, &json).await });
                }
                Ok(view)
            }
            Ok(ClaimAttempt::SoldOut) => {
                // With no free row left the statement cannot meet the
                // one-per-visitor constraint: ask whether they already hold one
                // (the gate lost their mark, e.g. a commit whose answer was lost).
                if let Ok(Some(existing)) = inner.store.claim_of(campaign.id, visitor).await {
                    let view = ClaimView::from(&existing);
                    let json = serde_json::to_string(&view).unwrap_or_else(|_| "C".into());
                    inner.gate.committed(campaign, visitor, &json).await;
                    inner.metrics.claim_duplicates.inc();
                    return Err(ClaimError::Duplicate { campaign_id: campaign.id, existing: Some(view) });
                }
                inner.gate.sold_out(campaign, visitor).await;
                // The gate promised a code the database did not have: its counts
                // are now forced right, but the marks of visitors it lost may be
                // missing too; one fresh read restores them.
                if inner.sold_out_rebuilt.go(campaign.id)
                    && let Err(e) = inner.gate.rebuild(campaign).await
                {
                    tracing::warn!(error = %e, "could not rebuild the claim gate");
                }
                inner.metrics.sold_out.inc();
                Err(ClaimError::SoldOut(campaign.id))
            }
            Ok(ClaimAttempt::Busy | ClaimAttempt::TooLate) => {
                self.undo(campaign, visitor).await;
                Err(ClaimError::Busy)
            }
            Err(StoreError::Constraint(name)) if name == ONE_PER_VISITOR => {
                // The visitor holds a code the gate did not know about (it was
                // rebuilt, or an earlier commit's answer was lost): count it.
                inner.gate.committed(campaign, visitor, "C").await;
                inner.metrics.claim_duplicates.inc();
                Err(self.duplicate(campaign.id, visitor).await)
            }
            Err(e) => {
                self.undo(campaign, visitor).await;
                Err(e.into())
            }
        }
    }

    /// One claim in its own statement, retried while every free code is
    /// locked by claims still in flight.
    async fn claim_alone(
        &self,
        campaign: &CampaignRow,
        visitor: &str,
        commit_by: i64,
    ) -> Result<ClaimAttempt, StoreError> {
        let mut tries = 0;
        loop {
            let start = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=campaign.stock.max(1));
            match self.0.store.claim_code(campaign.id, visitor, now_ms(), start, commit_by).await {
                Ok(ClaimAttempt::Busy) if tries < BUSY_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                other => return other,
            }
        }
    }

    async fn undo(&self, campaign: &CampaignRow, visitor: &str) {
        self.0.metrics.gate_undos.inc();
        self.0.gate.undo(campaign, visitor).await;
    }

    async fn duplicate(&self, campaign_id: i64, visitor: &str) -> ClaimError {
        match self.0.store.claim_of(campaign_id, visitor).await {
            Ok(existing) => ClaimError::Duplicate { campaign_id, existing: existing.as_ref().map(ClaimView::from) },
            Err(e) => ClaimError::Store(e),
        }
    }
}
