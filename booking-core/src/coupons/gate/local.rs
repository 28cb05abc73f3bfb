//! The in-process gate: the same state and steps as the Redis scripts, under
//! a mutex per campaign, for one instance without Redis. Its state dies with
//! the process and is built again from the database on first use, so a crash
//! cannot leak a reservation; leases still matter while it runs (a handler
//! that panicked between admission and commit).

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::{GateAnswer, GateCounts, GateError, Lease, snapshot};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::store::{CampaignRow, Store};

/// One campaign's gate.
#[derive(Debug)]
struct Stock {
    counts: GateCounts,
    /// Visitor → lease deadline (epoch ms).
    leases: HashMap<String, i64>,
    /// Visitors holding a code → the claim's JSON, when recorded.
    claimed: HashMap<String, Option<String>>,
}

impl Stock {
    fn built(counts: GateCounts, claimants: Vec<String>) -> Stock {
        Stock { counts, leases: HashMap::new(), claimed: claimants.into_iter().map(|v| (v, None)).collect() }
    }
}

/// The in-process gate.
pub struct LocalGate {
    store: Store,
    metrics: Metrics,
    lease_ms: i64,
    /// Built once per campaign from the database. A std-style mutex guards
    /// the counts because nothing is awaited while it is held.
    campaigns: DashMap<i64, Arc<OnceCell<Mutex<Stock>>>>,
}

impl LocalGate {
    pub(super) fn new(store: Store, metrics: Metrics, lease_ms: i64) -> LocalGate {
        LocalGate { store, metrics, lease_ms, campaigns: DashMap::new() }
    }

    async fn built(&self, campaign: &CampaignRow) -> Result<Arc<OnceCell<Mutex<Stock>>>, GateError> {
        let cell = self.campaigns.entry(campaign.id).or_default().clone();
        cell.get_or_try_init(|| async {
            let (counts, claimants) = snapshot(&self.store, campaign).await?;
            self.metrics.gate_rebuilds.inc();
            Ok::<_, GateError>(Mutex::new(Stock::built(counts, claimants)))
        })
        .await?;
        Ok(cell)
    }

    pub(super) async fn ensure(&self, campaign: &CampaignRow) -> Result<(), GateError> {
        self.built(campaign).await.map(|_| ())
    }

    pub(super) async fn reserve(&self, campaign: &CampaignRow, visitor: &str) -> GateAnswer {
        let cell = match self.built(campaign).await {
            Ok(cell) => cell,
            Err(e) => {
                tracing::warn!(error = %e, "could not load the claim gate; claiming unguarded");
                return GateAnswer::Unguarded;
            }
        };
        let Some(stock) = cell.get() else { return GateAnswer::Unguarded };
        let now = now_ms();
        let mut s = stock.lock();
        if let Some(deadline) = s.leases.get(visitor) {
            return GateAnswer::InFlight { deadline: *deadline, now };
        }
        if let Some(claim) = s.claimed.get(visitor) {
            return GateAnswer::Claimed(claim.clone());
        }
        if s.counts.free <= 0 {
            return match s.leases.values().min() {
                Some(earliest) => GateAnswer::Busy { earliest: *earliest, now },
                None => GateAnswer::SoldOut,
            };
        }
        let deadline = now.saturating_add(self.lease_ms);
        s.counts.free -= 1;
        s.counts.reserved += 1;
        s.leases.insert(visitor.to_owned(), deadline);
        GateAnswer::Reserved { deadline }
    }

    fn with_stock<T>(&self, campaign_id: i64, f: impl FnOnce(&mut Stock) -> T) -> Option<T> {
        let cell = self.campaigns.get(&campaign_id).map(|c| c.clone())?;
        let stock = cell.get()?;
        Some(f(&mut stock.lock()))
    }

    pub(super) fn committed(&self, campaign_id: i64, visitor: &str, claim_json: &str) {
        self.with_stock(campaign_id, |s| {
            if s.leases.remove(visitor).is_some() {
                s.counts.reserved -= 1;
                s.counts.issued += 1;
            } else if !s.claimed.contains_key(visitor) {
                // The gate was built after this claim was admitted, from a
                // read without it: the unit it counted as free is taken.
                s.counts.free -= 1;
                s.counts.issued += 1;
            }
            let json = (claim_json != "C").then(|| claim_json.to_owned());
            let slot = s.claimed.entry(visitor.to_owned()).or_default();
            if json.is_some() {
                *slot = json;
            }
        });
    }

    pub(super) fn undo(&self, campaign_id: i64, visitor: &str) {
        self.with_stock(campaign_id, |s| {
            if s.leases.remove(visitor).is_some() {
                s.counts.reserved -= 1;
                s.counts.free += 1;
            }
        });
    }

    pub(super) fn sold_out(&self, campaign_id: i64, visitor: &str) {
        self.with_stock(campaign_id, |s| {
            if s.leases.remove(visitor).is_some() {
                s.counts.reserved -= 1;
            }
            s.counts.free = 0;
            s.counts.issued = s.counts.total - s.counts.reserved;
        });
    }

    pub(super) fn expired(&self, campaign_id: i64, limit: usize) -> Vec<Lease> {
        let now = now_ms();
        self.with_stock(campaign_id, |s| {
            let expired = s.leases.iter().filter(|(_, d)| **d <= now).take(limit);
            expired.map(|(v, d)| Lease { visitor: v.clone(), deadline: *d }).collect()
        })
        .unwrap_or_default()
    }

    pub(super) fn settle(&self, campaign_id: i64, lease: &Lease, claimed: bool) -> bool {
        self.with_stock(campaign_id, |s| {
            if s.leases.get(&lease.visitor) != Some(&lease.deadline) {
                return false;
            }
            s.leases.remove(&lease.visitor);
            s.counts.reserved -= 1;
            if claimed {
                s.counts.issued += 1;
                s.claimed.entry(lease.visitor.clone()).or_default();
            } else {
                s.counts.free += 1;
            }
            true
        })
        .unwrap_or(false)
    }

    pub(super) fn counts(&self, campaign_id: i64) -> Option<GateCounts> {
        self.with_stock(campaign_id, |s| s.counts)
    }

    pub(super) async fn rebuild(&self, campaign: &CampaignRow) -> Result<(), GateError> {
        let (counts, claimants) = snapshot(&self.store, campaign).await?;
        let cell = self.campaigns.entry(campaign.id).or_default().clone();
        let fresh = Stock::built(counts, claimants);
        match cell.get() {
            Some(stock) => *stock.lock() = fresh,
            // Racing a first build is harmless: either result is a fresh read.
            None => {
                let _ = cell.set(Mutex::new(fresh));
            }
        }
        self.metrics.gate_rebuilds.inc();
        Ok(())
    }
}
