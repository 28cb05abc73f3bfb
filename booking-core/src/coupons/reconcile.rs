//! The reconciler: compares the gate with the database and settles what a
//! crash left behind.
//!
//! A lease whose deadline has passed can no longer commit (the claim statement
//! only takes a code before `deadline - margin`, by the database's clock), so
//! the database's answer for its visitor is final: holds a code → the unit is
//! issued; no code → the unit is free again and the visitor may claim anew.
//! Then the gate's own books must balance (free + reserved + issued == total)
//! and, while nothing is reserved, its `issued` must be the database's claims;
//! a gate that fails either (a Redis key lost on its own, a commit whose
//! answer was lost when the database crashed) is rebuilt from the database.
//!
//! It runs at start, every `coupons.reconcile_interval` over the campaigns
//! not closed for more than an hour (building a missing gate first, so a
//! flushed Redis or a restarted instance is ready before the next claim), and
//! on demand from the claim path (a
//! visitor finding their own expired lease, a gate whose only reserved units
//! have expired, a gate saying sold out while the database has codes). Every
//! step is idempotent, so instances reconciling the same campaign at once
//! only repeat each other's work.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Coupons;
use super::gate::{GateError, Lease};
use crate::clock::now_ms;
use crate::store::CampaignRow;

/// Expired leases settled per round trip.
const BATCH: usize = 500;
/// Campaigns closed for less than this are still reconciled (their last
/// leases expire after the close).
const AFTER_CLOSE_MS: i64 = 3_600_000;

/// What one pass over a campaign did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Expired leases whose visitor holds a code: counted as issued.
    pub claimed: u64,
    /// Expired leases whose visitor holds none: back to stock.
    pub returned: u64,
    /// The gate's books did not balance and it was rebuilt.
    pub rebuilt: bool,
}

impl Coupons {
    /// Settle one lease with the database's verdict, counting it.
    pub(super) async fn settle(&self, campaign_id: i64, lease: &Lease, claimed: bool) -> Result<bool, GateError> {
        let settled = self.0.gate.settle(campaign_id, lease, claimed).await?;
        if settled {
            let outcome = if claimed { "claimed" } else { "returned" };
            self.0.metrics.expired_leases.with_label_values(&[outcome]).inc();
        }
        Ok(settled)
    }

    /// Build the gate of `campaign` if it is missing, settle every expired
    /// lease, then check the gate's books.
    pub async fn reconcile(&self, campaign: &CampaignRow) -> Result<Reconciled, GateError> {
        let mut done = Reconciled::default();
        self.0.gate.ensure(campaign).await?;
        loop {
            let expired = self.0.gate.expired(campaign.id, BATCH).await?;
            if expired.is_empty() {
                break;
            }
            let visitors: Vec<String> = expired.iter().map(|l| l.visitor.clone()).collect();
            let holding: HashSet<String> =
                self.0.store.claimed_among(campaign.id, &visitors).await?.into_iter().collect();
            for lease in &expired {
                let claimed = holding.contains(&lease.visitor);
                if self.settle(campaign.id, lease, claimed).await? {
                    if claimed {
                        done.claimed += 1;
                    } else {
                        done.returned += 1;
                    }
                }
            }
            if expired.len() < BATCH {
                break;
            }
        }
        if self.drifted(campaign).await? {
            self.0.gate.rebuild(campaign).await?;
            done.rebuilt = true;
        }
        if done != Reconciled::default() {
            tracing::info!(campaign = campaign.id, ?done, "claim gate reconciled");
        }
        Ok(done)
    }

    /// Does the gate disagree with the database? Its books must balance; and
    /// while nothing is reserved (read before and after the database, the
    /// same both times) its `issued` must be the database's claims. That
    /// catches what no lease records: a commit whose answer was lost (the
    /// database crashed after committing) was given back to stock.
    async fn drifted(&self, campaign: &CampaignRow) -> Result<bool, GateError> {
        let Some(before) = self.0.gate.counts(campaign.id).await? else { return Ok(false) };
        if !before.conserved() {
            tracing::warn!(campaign = campaign.id, ?before, "claim gate books do not balance; rebuilding it");
            return Ok(true);
        }
        if before.reserved > 0 {
            return Ok(false);
        }
        let claimed = campaign.stock - self.0.store.free_codes(campaign.id).await?;
        let after = self.0.gate.counts(campaign.id).await?;
        let drifted = after == Some(before) && before.issued != claimed;
        if drifted {
            tracing::warn!(
                campaign = campaign.id,
                ?before,
                claimed,
                "claim gate disagrees with the database; rebuilding it"
            );
        }
        Ok(drifted)
    }

    /// Reconcile every campaign not closed for long.
    pub async fn reconcile_all(&self) -> Result<(), GateError> {
        for campaign in self.0.store.campaigns_closing_after(now_ms() - AFTER_CLOSE_MS).await? {
            self.0.campaigns.entry(campaign.id).or_insert_with(|| campaign.clone());
            self.reconcile(&campaign).await?;
        }
        Ok(())
    }

    /// Run [`Coupons::reconcile_all`] now and every `interval` until `shutdown` flips.
    pub fn spawn_reconciler(self, interval: Duration, shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        crate::tasks::every(interval, true, shutdown, move || {
            let coupons = self.clone();
            async move {
                if let Err(e) = coupons.reconcile_all().await {
                    tracing::warn!(error = %e, "claim gate reconciliation failed; retrying next tick");
                }
            }
        })
    }
}
