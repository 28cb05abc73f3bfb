//! View counts for `GET /api/events/popular`: a Redis sorted set shared by all
//! instances when Redis is configured, a local map otherwise.
//!
//! Counting a view never makes a seat-map read wait for Redis: views are
//! added up in process and flushed by one task at a time (one pipelined
//! `ZINCRBY` per event), and dropped while the Redis breaker is open.
//! Popularity is a hint, not worth a slower seat map.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::redis_breaker::{self, RedisLink};

/// Where views are counted.
pub enum Popular {
    /// This process only.
    Local(DashMap<i64, AtomicU64>),
    /// `ZINCRBY` on a shared sorted set.
    Redis(Arc<Shared>),
}

/// Views counted in a shared sorted set.
pub struct Shared {
    link: RedisLink,
    /// The sorted set's key.
    key: String,
    /// Views not yet flushed, per event. A plain mutex: never held across an await.
    pending: Mutex<HashMap<i64, u64>>,
    /// A flush task is running.
    flushing: AtomicBool,
}

impl Popular {
    /// Views counted in the sorted set `key`.
    pub fn redis(link: RedisLink, key: String) -> Popular {
        Popular::Redis(Arc::new(Shared {
            link,
            key,
            pending: Mutex::new(HashMap::new()),
            flushing: AtomicBool::new(false),
        }))
    }

    /// Count one view of `event_id`. Never waits: with Redis, the view is
    /// flushed by a task; a failed flush is logged and its views lost.
    pub fn record(&self, event_id: i64) {
        match self {
            Popular::Local(views) => {
                views.entry(event_id).or_default().fetch_add(1, Ordering::Relaxed);
            }
            Popular::Redis(shared) => {
                *shared.pending.lock().entry(event_id).or_default() += 1;
                if !shared.flushing.swap(true, Ordering::AcqRel) {
                    tokio::spawn(flush(shared.clone()));
                }
            }
        }
    }

    /// The `n` most viewed events as (event id, views), most viewed first.
    pub async fn top(&self, n: usize) -> redis::RedisResult<Vec<(i64, u64)>> {
        match self {
            Popular::Local(views) => {
                let mut all: Vec<(i64, u64)> =
                    views.iter().map(|e| (*e.key(), e.value().load(Ordering::Relaxed))).collect();
                all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                all.truncate(n);
                Ok(all)
            }
            Popular::Redis(shared) => {
                let stop = i64::try_from(n).unwrap_or(i64::MAX).saturating_sub(1);
                let key = shared.key.as_str();
                let raw: Vec<(String, f64)> = shared
                    .link
                    .run(|mut conn| async move {
                        redis::cmd("ZREVRANGE").arg(key).arg(0).arg(stop).arg("WITHSCORES").query_async(&mut conn).await
                    })
                    .await?;
                Ok(raw.into_iter().filter_map(|(id, score)| Some((id.parse().ok()?, score.max(0.0) as u64))).collect())
            }
        }
    }
}

/// Flush pending views until there are none, then stop (checking again after
/// clearing `flushing`, so a view recorded meanwhile is never stranded).
async fn flush(shared: Arc<Shared>) {
    loop {
        let batch = std::mem::take(&mut *shared.pending.lock());
        if batch.is_empty() {
            shared.flushing.store(false, Ordering::Release);
            if shared.pending.lock().is_empty() || shared.flushing.swap(true, Ordering::AcqRel) {
                return;
            }
            continue;
        }
        if shared.link.breaker().is_open() {
            tracing::debug!(events = batch.len(), "Redis is down; views not counted");
            continue;
        }
        let mut pipe = redis::pipe();
        for (event_id, views) in &batch {
            pipe.cmd("ZINCRBY").arg(&shared.key).arg(*views).arg(*event_id).ignore();
        }
        let pipe = &pipe;
        let sent = shared.link.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await;
        match sent {
            Ok(()) => {}
            Err(e) if redis_breaker::is_fail_fast(&e) => {}
            Err(e) => tracing::warn!(error = %e, "could not count views"),
        }
    }
}
