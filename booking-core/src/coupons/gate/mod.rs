//! The claim gate: an atomic "already claimed? any left? reserve one" step in
//! front of the database, so that only would-be winners reach it.
//!
//! The gate never decides a win — the database does ([`crate::store::coupons`]).
//! It decides who may *try*: a visitor it has seen is a duplicate, and once
//! nothing is free everyone else is told so without a database round trip.
//!
//! Per campaign the gate counts `total` (the stock), `free`, `reserved` and
//! `issued`, and every step keeps **free + reserved + issued == total**:
//!
//! - a reservation is a **lease** (visitor, campaign, deadline): admitting a
//!   visitor moves one unit from free to reserved and records the deadline;
//! - the database commit turns it into a claim (reserved → issued, and the
//!   committed claim is kept for duplicate answers);
//! - a failed commit gives it back (reserved → free), or, when the database
//!   says the visitor already holds a code, counts that code (reserved → issued);
//! - a lease whose process died with it expires: the reconciler
//!   ([`super::reconcile`]) asks the database whether the visitor holds a code
//!   and settles the lease either way. A claim must commit before its
//!   deadline (less a margin for clock skew, checked by the database itself),
//!   so a settled lease can no longer turn into a claim behind the gate's back.
//!
//! Two implementations with the same semantics: [`redis::RedisGate`] (shared
//! by every instance; Lua scripts, Redis time) and [`local::LocalGate`] (one
//! instance without Redis; the process clock). Both are (re)built from one
//! database read of the campaign's claimants.

mod coalesce;
pub mod local;
pub mod redis;

use crate::metrics::Metrics;
use crate::redis_breaker::RedisLink;
use crate::store::{CampaignRow, Store, StoreError};

pub use self::local::LocalGate;
pub use self::redis::RedisGate;
// Defined with the stats that report it, so the store needs nothing of the gate.
pub use crate::store::admin::GateCounts;

/// The gate's answer to "may this visitor try to claim?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateAnswer {
    /// Go ahead: one unit is reserved for you until `deadline` (epoch ms, gate clock).
    Reserved {
        /// When the lease ends.
        deadline: i64,
    },
    /// You already hold a code; the committed claim as the gate recorded it
    /// (JSON), when it has it.
    Claimed(Option<String>),
    /// A claim of yours holds a lease right now.
    InFlight {
        /// When that lease ends.
        deadline: i64,
        /// The gate's clock.
        now: i64,
    },
    /// Nothing is free, but claims in flight hold reservations; some may come back.
    Busy {
        /// The earliest lease deadline.
        earliest: i64,
        /// The gate's clock.
        now: i64,
    },
    /// Nothing is free and nothing is reserved.
    SoldOut,
    /// The gate could not answer (Redis unreachable, slow, or its breaker
    /// open); the database alone decides, which costs it more work but is
    /// exactly as correct (see [`crate::coupons`]).
    Unguarded,
}

/// A lease as the gate recorded it: whose, and until when (epoch ms, gate clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The visitor whose claim holds it.
    pub visitor: String,
    /// When it ends.
    pub deadline: i64,
}

/// A gate operation that could not run (Redis, or the database while building).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] ::redis::RedisError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis answered something the scripts never return.
    #[error("unexpected claim gate answer: {0}")]
    Unexpected(String),
}

/// The claim gate.
pub enum ClaimGate {
    /// Single instance, no Redis.
    Local(Box<LocalGate>),
    /// Shared by every instance.
    Redis(Box<RedisGate>),
}

impl ClaimGate {
    /// An in-process gate with leases of `lease_ms`.
    pub fn local(store: Store, metrics: Metrics, lease_ms: i64) -> ClaimGate {
        ClaimGate::Local(Box::new(LocalGate::new(store, metrics, lease_ms)))
    }

    /// A Redis gate with keys under `prefix` and leases of `lease_ms`.
    pub fn redis(link: RedisLink, prefix: &str, store: Store, metrics: Metrics, lease_ms: i64) -> ClaimGate {
        ClaimGate::Redis(Box::new(RedisGate::new(link, prefix, store, metrics, lease_ms)))
    }

    /// Ask to claim.
    pub async fn reserve(&self, campaign: &CampaignRow, visitor: &str) -> GateAnswer {
        match self {
            ClaimGate::Local(g) => g.reserve(campaign, visitor).await,
            ClaimGate::Redis(g) => g.reserve(campaign, visitor).await,
        }
    }

    /// The visitor holds a committed code (`claim_json`, or `"C"` when only
    /// the fact is known): settle their lease as issued.
    pub async fn committed(&self, campaign: &CampaignRow, visitor: &str, claim_json: &str) {
        match self {
            ClaimGate::Local(g) => g.committed(campaign.id, visitor, claim_json),
            ClaimGate::Redis(g) => g.committed(campaign.id, visitor, claim_json).await,
        }
    }

    /// The commit failed and the visitor got nothing: give the unit back.
    pub async fn undo(&self, campaign: &CampaignRow, visitor: &str) {
        match self {
            ClaimGate::Local(g) => g.undo(campaign.id, visitor),
            ClaimGate::Redis(g) => g.undo(campaign.id, visitor).await,
        }
    }

    /// The database has no free code left (committed state).
    pub async fn sold_out(&self, campaign: &CampaignRow, visitor: &str) {
        match self {
            ClaimGate::Local(g) => g.sold_out(campaign.id, visitor),
            ClaimGate::Redis(g) => g.sold_out(campaign.id, visitor).await,
        }
    }

    /// Up to `limit` leases whose deadline has passed.
    pub async fn expired(&self, campaign_id: i64, limit: usize) -> Result<Vec<Lease>, GateError> {
        match self {
            ClaimGate::Local(g) => Ok(g.expired(campaign_id, limit)),
            ClaimGate::Redis(g) => g.expired(campaign_id, limit).await,
        }
    }

    /// Settle `lease` as issued (`claimed`) or return its unit to stock;
    /// false if that lease is no longer there.
    pub async fn settle(&self, campaign_id: i64, lease: &Lease, claimed: bool) -> Result<bool, GateError> {
        match self {
            ClaimGate::Local(g) => Ok(g.settle(campaign_id, lease, claimed)),
            ClaimGate::Redis(g) => g.settle(campaign_id, lease, claimed).await,
        }
    }

    /// The counts, if the gate of this campaign exists.
    pub async fn counts(&self, campaign_id: i64) -> Result<Option<GateCounts>, GateError> {
        match self {
            ClaimGate::Local(g) => Ok(g.counts(campaign_id)),
            ClaimGate::Redis(g) => g.counts(campaign_id).await,
        }
    }

    /// Build the gate from the database if it does not exist (first use,
    /// Redis flushed, a restart of an in-process gate).
    pub async fn ensure(&self, campaign: &CampaignRow) -> Result<(), GateError> {
        match self {
            ClaimGate::Local(g) => g.ensure(campaign).await,
            ClaimGate::Redis(g) => g.rebuild(campaign, false).await,
        }
    }

    /// Build the gate from the database, replacing whatever is there (the
    /// reconciler's answer to counts that disagree with the database).
    pub async fn rebuild(&self, campaign: &CampaignRow) -> Result<(), GateError> {
        match self {
            ClaimGate::Local(g) => g.rebuild(campaign).await,
            ClaimGate::Redis(g) => g.rebuild(campaign, true).await,
        }
    }
}

/// A gate built from the database: every claimant counted as issued, the
/// rest free, nothing reserved. One read, so the counts are consistent.
pub(crate) async fn snapshot(store: &Store, campaign: &CampaignRow) -> Result<(GateCounts, Vec<String>), StoreError> {
    let claimants = store.claimants(campaign.id).await?;
    let issued = i64::try_from(claimants.len()).unwrap_or(i64::MAX);
    let counts = GateCounts { total: campaign.stock, free: campaign.stock - issued, reserved: 0, issued };
    Ok((counts, claimants))
}
