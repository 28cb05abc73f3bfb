//! The fan-out after every tick to the sockets of this instance's hub
//! ([`crate::sockets`]).
//!
//! ```text
//! tick (this instance's ticker, or another's via Redis pub/sub, or a tick
//!   number seen to move on the next release call)
//!   -> refresh(queue, tick): the connected visitors in chunks of 1,000;
//!      per chunk one `standings` call, then one message per visitor into
//!      each of their connections' watch slot, before the next chunk's call
//!   -> each connection task writes the newest message to its socket
//! ```
//!
//! Chunks pipeline the fan-out: sockets of the first chunk are being written
//! while the store answers for the next, so the last update of a tick leaves
//! sooner than if every standing were read first.
//!
//! The cost of a tick on an instance is proportional to the connections it
//! holds, never to the length of the line. Each connection has a `watch`
//! slot (latest value wins), so a slow client never makes the hub wait or
//! queue stale positions.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shared::visitor::VisitorId;

use crate::clock::now_ms;
use crate::metrics::METRICS;
use crate::queues::Queue;
use crate::sockets::{QueueConns, Update};
use crate::standing;
use crate::state::State;
use crate::store::Standing;

/// The line's epoch, as a store answer or a tick message tells it. A new one
/// means the store lost the line and counts ticks from 1 again: forget the
/// ticks fanned out so far (or the sockets would hear nothing until the new
/// count passes the old) and push every socket its standing now — a visitor
/// whose place was lost learns it at once and joins again with their queue
/// ticket. Returns whether the epoch changed.
pub fn on_epoch(state: &Arc<State>, queue: &Arc<Queue>, epoch: u64) -> bool {
    let Some(conns) = state.hub.conns(queue.id()) else { return false };
    if epoch == 0 {
        return false;
    }
    let seen = conns.epoch.swap(epoch, Ordering::AcqRel);
    if seen == epoch || seen == 0 {
        return false;
    }
    conns.refreshed_tick.store(0, Ordering::Release);
    let (state, queue) = (state.clone(), queue.clone());
    tokio::spawn(async move {
        let _serial = conns.refreshing.lock().await;
        refresh(&state, &queue, &conns, now_ms()).await;
    });
    true
}

/// A tick happened (here or elsewhere): fan out new standings, once per tick.
pub fn on_tick(state: &Arc<State>, queue: &Arc<Queue>, tick: u64, tick_ms: i64) {
    let Some(conns) = state.hub.conns(queue.id()) else { return };
    if conns.refreshed_tick.fetch_max(tick, Ordering::AcqRel) >= tick {
        return;
    }
    let (state, queue) = (state.clone(), queue.clone());
    tokio::spawn(async move {
        let _serial = conns.refreshing.lock().await;
        refresh(&state, &queue, &conns, tick_ms).await;
    });
}

/// Push fresh standings to every connection of `queue` (also used after an
/// operator changes settings, which moves estimates).
pub async fn refresh_all(state: &Arc<State>, queue: &Arc<Queue>) {
    if let Some(conns) = state.hub.conns(queue.id()) {
        let _serial = conns.refreshing.lock().await;
        refresh(state, queue, &conns, now_ms()).await;
    }
}

/// Visitors per `standings` call and delivery round of a refresh.
const PUSH_CHUNK: usize = 1_000;

/// A connection of the hub: (visitor, connection id).
type Connected = (VisitorId, u64);

/// Splits off the connections of the first `max` distinct visitors of
/// `connected` (sorted by visitor, so all connections of one visitor are
/// adjacent and never split across chunks): (those visitors, their
/// connections, the rest).
fn next_chunk(connected: &[Connected], max: usize) -> (Vec<VisitorId>, &[Connected], &[Connected]) {
    let mut visitors: Vec<VisitorId> = Vec::with_capacity(max.min(connected.len()));
    let mut end = 0;
    while let Some((visitor, _)) = connected.get(end) {
        if visitors.last() != Some(visitor) {
            if visitors.len() == max {
                break;
            }
            visitors.push(*visitor);
        }
        end += 1;
    }
    let (chunk, rest) = connected.split_at(end);
    (visitors, chunk, rest)
}

async fn refresh(state: &State, queue: &Queue, conns: &QueueConns, tick_ms: i64) {
    let Some(store) = state.store() else { return };
    let connected = state.hub.connected(queue.id());
    let mut rest = connected.as_slice();
    while !rest.is_empty() {
        let (visitors, chunk, tail) = next_chunk(rest, PUSH_CHUNK);
        rest = tail;
        let standings = match store.standings(queue.id(), &visitors).await {
            Ok(s) => s,
            Err(e) => {
                METRICS.store_errors.with_label_values(&["standings"]).inc();
                tracing::warn!(queue = queue.id(), error = %e, "push refresh failed");
                return;
            }
        };
        let now = now_ms();
        let updates: HashMap<VisitorId, Arc<Update>> = visitors
            .into_iter()
            .zip(standings)
            .map(|(visitor, standing)| {
                let m = standing::message(&state.keys.signer, queue, visitor, standing, now);
                let update = Update {
                    json: serde_json::to_string(&m).unwrap_or_default(),
                    position: m.position,
                    ready: matches!(standing, Standing::Ready { .. }) && m.entry.is_some(),
                    tick_ms,
                };
                (visitor, Arc::new(update))
            })
            .collect();
        let open = conns.conns.lock();
        for (visitor, id) in chunk {
            if let (Some(conn), Some(u)) = (open.get(id), updates.get(visitor)) {
                conn.tx.send_replace(Some(u.clone()));
            }
        }
    }
}

/// Keep connected waiting visitors from being taken for abandoned: every
/// instance marks the visitors whose sockets it holds as seen, a third of the
/// abandonment window apart.
pub async fn mark_seen(state: Arc<State>, queue: Arc<Queue>) {
    loop {
        let window = queue.admission().abandon_after;
        let every = if window.is_zero() {
            Duration::from_secs(10)
        } else {
            (window / 3).clamp(Duration::from_millis(250), Duration::from_secs(15))
        };
        tokio::time::sleep(every).await;
        if window.is_zero() {
            continue;
        }
        let visitors = state.hub.visitors(queue.id());
        if visitors.is_empty() {
            continue;
        }
        if let Some(store) = state.store()
            && let Err(e) = store.touch(queue.id(), &visitors).await
        {
            METRICS.store_errors.with_label_values(&["touch"]).inc();
            tracing::warn!(queue = queue.id(), error = %e, "touch failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_hold_whole_visitors_and_cover_every_connection() {
        let ids: Vec<VisitorId> = (0..5).map(|_| VisitorId::random()).collect();
        let mut connected: Vec<(VisitorId, u64)> = Vec::new();
        for (i, v) in ids.iter().enumerate() {
            // Visitor i holds i + 1 connections.
            connected.extend((0..=i as u64).map(|c| (*v, i as u64 * 10 + c)));
        }
        connected.sort_unstable();
        let mut rest = connected.as_slice();
        let mut seen = Vec::new();
        let mut rounds = 0;
        while !rest.is_empty() {
            let (visitors, chunk, tail) = next_chunk(rest, 2);
            assert!(!visitors.is_empty() && visitors.len() <= 2);
            assert!(chunk.iter().all(|(v, _)| visitors.contains(v)), "a chunk holds only its visitors");
            assert!(tail.first().is_none_or(|(v, _)| !visitors.contains(v)), "a visitor is never split");
            seen.extend_from_slice(chunk);
            rest = tail;
            rounds += 1;
        }
        assert_eq!(rounds, 3);
        assert_eq!(seen, connected);
    }
}
