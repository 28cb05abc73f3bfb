//! Seat-map invalidations between instances over Redis pub/sub.
//!
//! Each instance caches seat maps locally ([`crate::catalogue`]). After a
//! change committed here, the instance drops its own entry and publishes
//! `<origin> <event id>` on `<prefix>:seatmap`; every other instance drops its
//! entry when the message arrives. Messages are lost while a subscriber
//! reconnects, so a reconnect clears the whole local cache, and cached maps
//! also age out after `catalogue.seat_map_ttl` as a last resort.
//!
//! Publishing is off the request path and coalesced: a change marks its event
//! pending, and one task publishes each pending event once per round trip to
//! Redis. During a burst of holds on one event that is one message per round
//! trip instead of one per hold (each was a Redis command and a task wake in
//! the hold's answer path), at the cost of other instances hearing of it
//! after that one round trip. While Redis is down (the breaker of
//! [`crate::redis_breaker`] open) invalidations are not published at all:
//! the other instances' seat maps age out within `catalogue.seat_map_ttl`,
//! and no request ever waits for a publish.
//!
//! The one import cycle left in the crate is this module and
//! [`crate::catalogue`]: the catalogue publishes its changes through the
//! [`Fanout`] it holds, and [`listen`] drops that catalogue's cached maps when
//! another instance's message arrives. Both halves are the one seat-map cache
//! kept coherent across instances; splitting them would only hide the pair
//! behind a callback.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::catalogue::Catalogue;
use crate::redis_breaker::{self, RedisLink};

/// Publishes invalidations (a no-op without Redis).
#[derive(Clone)]
pub struct Fanout {
    pending: Option<Arc<Pending>>,
}

/// Events changed here and not yet published, and the publisher's wake-up.
#[derive(Default)]
struct Pending {
    events: Mutex<BTreeSet<i64>>,
    wake: Notify,
}

impl Fanout {
    /// No other instances to tell.
    pub fn disabled() -> Fanout {
        Fanout { pending: None }
    }

    /// Publish on `channel`, tagging messages with this instance's `origin`,
    /// from a task that runs until `shutdown` flips (publishing what is
    /// pending then).
    pub fn redis(link: RedisLink, channel: String, origin: String, shutdown: watch::Receiver<bool>) -> Fanout {
        let pending = Arc::new(Pending::default());
        tokio::spawn(publisher(pending.clone(), link, channel, origin, shutdown));
        Fanout { pending: Some(pending) }
    }

    /// Tell the other instances that `event_id`'s seat map changed. Never
    /// waits; a failed publish is logged, not returned: the change is
    /// committed, and the other instances' TTL bounds how stale they can get.
    pub fn publish(&self, event_id: i64) {
        let Some(p) = &self.pending else { return };
        p.events.lock().insert(event_id);
        p.wake.notify_one();
    }
}

async fn publisher(
    pending: Arc<Pending>,
    link: RedisLink,
    channel: String,
    origin: String,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stopping = tokio::select! {
            _ = pending.wake.notified() => false,
            _ = shutdown.changed() => true,
        };
        let events = std::mem::take(&mut *pending.events.lock());
        let channel = channel.as_str();
        for event_id in events {
            let message = format!("{origin} {event_id}");
            let sent = link
                .run(|mut conn| async move {
                    redis::cmd("PUBLISH").arg(channel).arg(message).query_async::<i64>(&mut conn).await
                })
                .await;
            match sent {
                Ok(_) => {}
                Err(e) if redis_breaker::is_fail_fast(&e) => {
                    tracing::debug!(event_id, "Redis is down; seat-map invalidation skipped");
                }
                Err(e) => tracing::warn!(error = %e, event_id, "could not publish a seat-map invalidation"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Subscribe to `channel` (returning once the subscription is confirmed, so
/// nothing published after start-up is missed) and drop cached seat maps as
/// invalidations arrive, until `shutdown` flips. Connecting and subscribing
/// are bounded by `redis.connect_timeout` each time. Where it subscribes
/// follows [`RedisLink::subscribe`]: on a cluster any one node (a classic
/// `PUBLISH` is broadcast to every node), under Sentinel the primary, asked
/// of the sentinels again after each disconnect (a failover).
pub async fn listen(
    link: RedisLink,
    channel: String,
    origin: String,
    catalogue: Catalogue,
    mut shutdown: watch::Receiver<bool>,
) -> redis::RedisResult<JoinHandle<()>> {
    let mut pubsub = link.subscribe(&channel).await?;
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
            let mut backoff = shared::backoff::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
            loop {
                catalogue.invalidate_all_local();
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_pause()) => {}
                    _ = shutdown.changed() => return,
                }
                if let Ok(fresh) = link.subscribe(&channel).await {
                    pubsub = fresh;
                    // Whatever was published while we were away is lost.
                    catalogue.invalidate_all_local();
                    break;
                }
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
