//! Group commit for claims on PostgreSQL.
//!
//! Gate winners of one campaign queue here; a task per campaign takes every
//! claim waiting (up to [`MAX_BATCH`]) and claims a code for each in one
//! statement, so a burst of winners costs one commit instead of one each.
//! Nothing waits for a batch to fill: under light load a batch is one claim.
//! Each claimer is answered only after the statement has committed, so the
//! "201 only when durable" rule holds. Any visitor the batch could not serve
//! (a duplicate aborting the statement, fewer free codes than claimers past
//! the random start, an error) falls back to claiming alone, where the exact
//! outcome — duplicate, sold out, busy, too late, error — is decided. Each
//! visitor's lease deadline goes into the statement, which skips a visitor
//! whose deadline the database's clock has passed.

use std::collections::HashMap;

use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::group::Groups;
use crate::store::{CampaignRow, ClaimRow, Store};

/// Most claims one statement takes.
pub const MAX_BATCH: usize = 128;

struct Job {
    visitor: String,
    commit_by: i64,
    reply: oneshot::Sender<Option<ClaimRow>>,
}

/// Per-campaign claim queues; disabled on SQLite (one writer already).
pub struct Batcher {
    store: Store,
    enabled: bool,
    /// One statement at a time per campaign: its codes are taken from a
    /// random start in slot order, so two at once would fight over rows.
    groups: Groups<i64, Job>,
}

impl Batcher {
    /// Batching on PostgreSQL, pass-through elsewhere.
    pub fn new(store: Store) -> Batcher {
        let enabled = store.is_postgres();
        Batcher { store, enabled, groups: Groups::new(MAX_BATCH, 1) }
    }

    /// Claim through a batch. `None`: not served by a batch; claim alone.
    pub async fn claim(&self, campaign: &CampaignRow, visitor: &str, commit_by: i64) -> Option<ClaimRow> {
        if !self.enabled {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { visitor: visitor.to_owned(), commit_by, reply };
        let (store, campaign_id, stock) = (self.store.clone(), campaign.id, campaign.stock);
        self.groups.submit(&campaign.id, job, move || move |jobs| run(store.clone(), campaign_id, stock, jobs)).ok()?;
        answer.await.ok().flatten()
    }
}

/// One statement for `jobs`; each hears its claim, or `None` to claim alone.
async fn run(store: Store, campaign_id: i64, stock: i64, jobs: Vec<Job>) {
    let visitors: Vec<String> = jobs.iter().map(|j| j.visitor.clone()).collect();
    let deadlines: Vec<i64> = jobs.iter().map(|j| j.commit_by).collect();
    let start = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=stock.max(1));
    let mut claimed: HashMap<String, ClaimRow> =
        match store.claim_codes_batch(campaign_id, &visitors, &deadlines, now_ms(), start).await {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::debug!(error = %e, size = jobs.len(), "claim batch failed; claiming one by one");
                HashMap::new()
            }
        };
    for job in jobs {
        let _ = job.reply.send(claimed.remove(&job.visitor));
    }
}
