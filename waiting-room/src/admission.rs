//! The admission service: connects the queue store, then runs one ticker per
//! queue that asks the store to release the next batch whenever a tick is due.
//!
//! Every instance runs tickers for every queue; the store decides (atomically,
//! on its own clock) whether a tick is due, so instances need no coordination
//! and a dead instance costs nothing. Each call returns how long until the next
//! tick, so tickers sleep exactly that long (capped at a second, so settings
//! changed by an operator apply promptly and gauges stay fresh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{Backend, StoreConfig};
use crate::metrics::METRICS;
use crate::queues::Queue;
use crate::state::State;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use crate::store::{QueueStore, Release};

/// Background service running the tickers.
pub struct AdmissionService {
    state: Arc<State>,
    store: StoreConfig,
}

impl AdmissionService {
    /// The service for `state`, using the store described by `store`.
    pub fn new(state: Arc<State>, store: StoreConfig) -> Self {
        AdmissionService { state, store }
    }

    async fn connect(&self, shutdown: &mut ShutdownWatch) -> Option<Arc<dyn QueueStore>> {
        match self.store.backend {
            Backend::Memory => Some(Arc::new(MemoryStore::new())),
            Backend::Redis => {
                let mut backoff = Duration::from_millis(100);
                loop {
                    match RedisStore::connect(&self.store.redis_url, &self.store.key_prefix).await {
                        Ok(store) => {
                            tracing::info!(url = %self.store.redis_url, "connected to Redis");
                            return Some(Arc::new(store));
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot connect to Redis yet; retrying"),
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return None,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for AdmissionService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(store) = self.connect(&mut shutdown).await else { return };
        self.state.set_store(store.clone());
        let tickers: Vec<_> =
            self.state.queues.all().iter().map(|q| tokio::spawn(ticker(q.clone(), store.clone()))).collect();
        let _ = shutdown.changed().await;
        for t in tickers {
            t.abort();
        }
    }
}

/// What to do with a tick's result on this instance.
pub fn observe(queue: &Queue, r: &Release) {
    let id = queue.id();
    METRICS.waiting.with_label_values(&[id]).set(i64::try_from(r.waiting).unwrap_or(i64::MAX));
    METRICS.active.with_label_values(&[id]).set(i64::try_from(r.active).unwrap_or(i64::MAX));
    METRICS.configured_rate.with_label_values(&[id]).set(queue.configured_rate());
    if r.ticked {
        queue.estimate.record(r.tick, r.now_ms, r.released.len() as u64, r.waiting);
        METRICS.ticks.with_label_values(&[id]).inc();
        METRICS.admissions.with_label_values(&[id, "tick"]).inc_by(r.released.len() as u64);
        METRICS.abandoned.with_label_values(&[id]).inc_by(r.abandoned);
    }
    if let Some(rate) = queue.estimate.rate() {
        METRICS.release_rate.with_label_values(&[id]).set(rate);
    }
}

async fn ticker(queue: Arc<Queue>, store: Arc<dyn QueueStore>) {
    loop {
        let params = queue.params();
        let started = Instant::now();
        let pause = match store.release(queue.id(), &params).await {
            Ok(r) => {
                if r.ticked {
                    METRICS.tick_duration.with_label_values(&[queue.id()]).observe(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        queue = queue.id(),
                        tick = r.tick,
                        released = r.released.len(),
                        abandoned = r.abandoned,
                        waiting = r.waiting,
                        "tick"
                    );
                }
                observe(&queue, &r);
                Duration::from_millis(r.next_due_in_ms.clamp(1, 1000))
            }
            Err(e) => {
                METRICS.store_errors.with_label_values(&["release"]).inc();
                tracing::warn!(queue = queue.id(), error = %e, "release failed");
                Duration::from_millis(500)
            }
        };
        tokio::time::sleep(pause).await;
    }
}
