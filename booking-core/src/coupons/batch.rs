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
use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::{mpsc, oneshot};

use crate::clock::now_ms;
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
    queues: DashMap<i64, mpsc::UnboundedSender<Job>>,
}

impl Batcher {
    /// Batching on PostgreSQL, pass-through elsewhere.
    pub fn new(store: Store) -> Batcher {
        let enabled = store.is_postgres();
        Batcher { store, enabled, queues: DashMap::new() }
    }

    /// Claim through a batch. `None`: not served by a batch; claim alone.
    pub async fn claim(self: &Arc<Self>, campaign: &CampaignRow, visitor: &str, commit_by: i64) -> Option<ClaimRow> {
        if !self.enabled {
            return None;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job { visitor: visitor.to_owned(), commit_by, reply };
        let sent = self.queues.entry(campaign.id).or_insert_with(|| self.spawn(campaign.clone())).send(job);
        if sent.is_err() {
            // The campaign's task is gone (it panicked): start over next time.
            self.queues.remove(&campaign.id);
            return None;
        }
        answer.await.ok().flatten()
    }

    fn spawn(self: &Arc<Self>, campaign: CampaignRow) -> mpsc::UnboundedSender<Job> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        let store = self.store.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let visitors: Vec<String> = jobs.iter().map(|j| j.visitor.clone()).collect();
                let deadlines: Vec<i64> = jobs.iter().map(|j| j.commit_by).collect();
                let start = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=campaign.stock.max(1));
                let mut claimed: HashMap<String, ClaimRow> =
                    match store.claim_codes_batch(campaign.id, &visitors, &deadlines, now_ms(), start).await {
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
        });
        tx
    }
}
