//! View counts for `GET /api/events/popular`: a Redis sorted set shared by all
//! instances when Redis is configured, a local map otherwise.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;
use redis::aio::ConnectionManager;

/// Where views are counted.
pub enum Popular {
    /// This process only.
    Local(DashMap<i64, AtomicU64>),
    /// `ZINCRBY` on a shared sorted set.
    Redis {
        /// Connection.
        conn: ConnectionManager,
        /// The sorted set's key.
        key: String,
    },
}

impl Popular {
    /// Count one view of `event_id`. A Redis failure is logged and the view lost:
    /// popularity is a hint, not worth failing a seat-map read for.
    pub async fn record(&self, event_id: i64) {
        match self {
            Popular::Local(views) => {
                views.entry(event_id).or_default().fetch_add(1, Ordering::Relaxed);
            }
            Popular::Redis { conn, key } => {
                let mut conn = conn.clone();
                let r: redis::RedisResult<f64> =
                    redis::cmd("ZINCRBY").arg(key).arg(1).arg(event_id).query_async(&mut conn).await;
                if let Err(e) = r {
                    tracing::warn!(error = %e, "could not count a view");
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
            Popular::Redis { conn, key } => {
                let mut conn = conn.clone();
                let stop = i64::try_from(n).unwrap_or(i64::MAX).saturating_sub(1);
                let raw: Vec<(String, f64)> =
                    redis::cmd("ZREVRANGE").arg(key).arg(0).arg(stop).arg("WITHSCORES").query_async(&mut conn).await?;
                Ok(raw.into_iter().filter_map(|(id, score)| Some((id.parse().ok()?, score.max(0.0) as u64))).collect())
            }
        }
    }
}
