//! Seat-map invalidations between instances over Redis pub/sub.
//!
//! Each instance caches seat maps locally ([`crate::catalogue`]). After a
//! change committed here, the instance drops its own entry and publishes
//! `<origin> <event id>` on `<prefix>:seatmap`; every other instance drops its
//! entry when the message arrives. Messages are lost while a subscriber
//! reconnects, so a reconnect clears the whole local cache, and cached maps
//! also age out after `catalogue.seat_map_ttl` as a last resort.

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::catalogue::Catalogue;

/// Publishes invalidations (a no-op without Redis).
#[derive(Clone)]
pub struct Fanout {
    redis: Option<RedisFanout>,
}

#[derive(Clone)]
struct RedisFanout {
    conn: ConnectionManager,
    channel: String,
    origin: String,
}

impl Fanout {
    /// No other instances to tell.
    pub fn disabled() -> Fanout {
        Fanout { redis: None }
    }

    /// Publish on `channel`, tagging messages with this instance's `origin`.
    pub fn redis(conn: ConnectionManager, channel: String, origin: String) -> Fanout {
        Fanout { redis: Some(RedisFanout { conn, channel, origin }) }
    }

    /// Tell the other instances that `event_id`'s seat map changed. Failure is
    /// logged, not returned: the change is committed, and the other instances'
    /// TTL bounds how stale they can get.
    pub async fn publish(&self, event_id: i64) {
        let Some(r) = &self.redis else { return };
        let mut conn = r.conn.clone();
        let message = format!("{} {event_id}", r.origin);
        let sent: Result<i64, _> = redis::cmd("PUBLISH").arg(&r.channel).arg(message).query_async(&mut conn).await;
        if let Err(e) = sent {
            tracing::warn!(error = %e, event_id, "could not publish a seat-map invalidation");
        }
    }
}

/// Subscribe to `channel` (returning once the subscription is confirmed, so
/// nothing published after start-up is missed) and drop cached seat maps as
/// invalidations arrive, until `shutdown` flips.
pub async fn listen(
    client: redis::Client,
    channel: String,
    origin: String,
    catalogue: Catalogue,
    mut shutdown: watch::Receiver<bool>,
) -> redis::RedisResult<JoinHandle<()>> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(&channel).await?;
    Ok(tokio::spawn(async move {
        loop {
            {
                let mut messages = pubsub.on_message();
                loop {
                    tokio::select! {
                        message = messages.next() => match message {
                            Some(m) => handle(&catalogue, &origin, m.get_payload_bytes()),
                            None => break,
                        },
                        _ = shutdown.changed() => return,
                    }
                }
            }
            tracing::warn!("seat-map invalidation subscription lost; reconnecting");
            let mut backoff = Duration::from_millis(100);
            loop {
                catalogue.invalidate_all_local();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                if let Ok(mut fresh) = client.get_async_pubsub().await
                    && fresh.subscribe(&channel).await.is_ok()
                {
                    pubsub = fresh;
                    // Whatever was published while we were away is lost.
                    catalogue.invalidate_all_local();
                    break;
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }))
}

fn handle(catalogue: &Catalogue, origin: &str, payload: &[u8]) {
    let text = String::from_utf8_lossy(payload);
    let Some((from, event)) = text.split_once(' ') else { return };
    if from == origin {
        return;
    }
    if let Ok(event_id) = event.parse::<i64>() {
        catalogue.invalidate_local(event_id);
    }
}
