//! The hub of this instance's queue WebSockets: which visitors hold a socket
//! to which queue, each connection's `watch` slot (latest update wins), and
//! the registration that removes a connection when its task ends. The
//! fan-out that fills the slots is [`crate::push`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use shared::visitor::VisitorId;
use tokio::sync::watch;

use crate::metrics::METRICS;

/// A message for one visitor, ready to write.
#[derive(Debug)]
pub struct Update {
    /// The JSON text.
    pub json: String,
    /// WAITING position, if waiting.
    pub position: Option<u64>,
    /// Admitted: the connection closes after sending this.
    pub ready: bool,
    /// Store time (ms) of the tick that caused this update (push-delay metric).
    pub tick_ms: i64,
}

/// The slot a connection reads its newest update from.
pub type Slot = watch::Receiver<Option<Arc<Update>>>;

/// One connection: its visitor and the sender of its slot.
pub(crate) struct Conn {
    pub(crate) visitor: VisitorId,
    pub(crate) tx: watch::Sender<Option<Arc<Update>>>,
}

/// The connections of one queue on this instance.
#[derive(Default)]
pub(crate) struct QueueConns {
    /// A plain mutex: held only to insert, remove or snapshot, never across
    /// an await.
    pub(crate) conns: Mutex<HashMap<u64, Conn>>,
    /// Highest tick already fanned out.
    pub(crate) refreshed_tick: AtomicU64,
    /// The line's epoch as last seen here (0: none yet).
    pub(crate) epoch: AtomicU64,
    /// Serializes refreshes of this queue, so updates reach a socket in tick
    /// order. An async mutex: it is held across store calls.
    pub(crate) refreshing: tokio::sync::Mutex<()>,
}

/// All WebSocket connections of this instance.
pub struct Hub {
    /// Per queue; queues come and go with the catalog (`catalog.rs`).
    queues: parking_lot::RwLock<HashMap<String, Arc<QueueConns>>>,
    next_id: AtomicU64,
}

/// Removes the connection from the hub when dropped.
pub struct Registration {
    queue: Arc<QueueConns>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.queue.conns.lock().remove(&self.id);
        METRICS.ws_connections.dec();
    }
}

impl Hub {
    /// A hub for these queue ids.
    pub fn new<'a>(queue_ids: impl IntoIterator<Item = &'a str>) -> Self {
        Hub {
            queues: parking_lot::RwLock::new(queue_ids.into_iter().map(|q| (q.to_owned(), Arc::default())).collect()),
            next_id: AtomicU64::new(1),
        }
    }

    pub(crate) fn conns(&self, queue: &str) -> Option<Arc<QueueConns>> {
        self.queues.read().get(queue).cloned()
    }

    /// A new queue: its sockets may register.
    pub fn add(&self, queue: &str) {
        self.queues.write().entry(queue.to_owned()).or_default();
    }

    /// A deleted queue: its sockets' update senders are dropped, so each
    /// socket sends the last update it holds (the queue's `CLOSED`, pushed
    /// just before) and closes.
    pub fn remove(&self, queue: &str) {
        let gone = self.queues.write().remove(queue);
        if let Some(q) = gone {
            q.conns.lock().clear();
        }
    }

    /// Register a connection of `visitor` to `queue`.
    pub fn register(&self, queue: &str, visitor: VisitorId) -> Option<(Registration, Slot)> {
        let conns = self.conns(queue)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(None);
        conns.conns.lock().insert(id, Conn { visitor, tx });
        METRICS.ws_connections.inc();
        Some((Registration { queue: conns, id }, rx))
    }

    /// Connections open on this instance for `queue`.
    pub fn connections(&self, queue: &str) -> usize {
        self.conns(queue).map_or(0, |q| q.conns.lock().len())
    }

    pub(crate) fn visitors(&self, queue: &str) -> Vec<VisitorId> {
        let mut v: Vec<VisitorId> = self.connected(queue).into_iter().map(|(visitor, _)| visitor).collect();
        v.dedup();
        v
    }

    /// Every connection of `queue` as (visitor, connection id), sorted by visitor.
    pub(crate) fn connected(&self, queue: &str) -> Vec<(VisitorId, u64)> {
        let Some(q) = self.conns(queue) else { return Vec::new() };
        let mut v: Vec<(VisitorId, u64)> = q.conns.lock().iter().map(|(id, c)| (c.visitor, *id)).collect();
        v.sort_unstable();
        v
    }
}
