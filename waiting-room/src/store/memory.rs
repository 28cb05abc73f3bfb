//! The in-process queue store: the embedded default for a single instance.
//!
//! Each queue is a [`QueueState`] behind a `parking_lot::Mutex`: every operation
//! is a short critical section with nothing awaited inside, so a blocking mutex
//! is cheaper than an async one. Positions come from a Fenwick tree over the
//! join sequence numbers, so a lookup costs O(log n), not O(line length).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use shared::visitor::VisitorId;

use crate::config::QueueMode;

use super::{
    Draw, JoinChecks, JoinKind, LotteryRecord, Params, Place, Placed, Proof, QueueStore, Release, Report,
    SPENT_GRACE_MS, Standing, Stats, StoreError, TICK_LOG, TickLog, Window,
};

mod line;
mod queue_store;

use line::Line;

/// In-process queues.
///
/// Their epoch is the process's: lines live and die with it. A queue ticket
/// of another epoch is not honoured here (a restarted single instance places
/// its visitors at the back again); restoring order is for the shared store.
pub struct MemoryStore {
    queues: DashMap<String, Arc<Mutex<QueueState>>>,
    epoch: u64,
    /// The catalog of queues: (version, JSON).
    catalog: Mutex<Option<(u64, String)>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore { queues: DashMap::new(), epoch: rand::random::<u64>() | 1, catalog: Mutex::new(None) }
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The join itself, under the queue's lock.
    fn join_locked(
        &self,
        s: &mut QueueState,
        visitor: VisitorId,
        p: &Params,
        checks: &JoinChecks,
    ) -> (Standing, JoinKind) {
        let now = now_ms();
        let (standing, lost_place) = s.standing(visitor, now, Some(p));
        if standing != Standing::NotInQueue {
            return (standing, JoinKind::Existing);
        }
        let passthrough = p.mode == QueueMode::Passthrough && !p.paused;
        if (s.line.len() == 0 && !p.queue_all) || passthrough {
            let active = s.active(now);
            if (active < p.free_entry || passthrough) && (p.max_active == 0 || active < p.max_active) {
                if let Some(refused) = s.spend(&checks.proof, now) {
                    return (Standing::NotInQueue, refused);
                }
                let (admitted_at_ms, expires_at_ms) = s.admit(visitor, now, p.session_ms);
                return (Standing::Ready { admitted_at_ms, expires_at_ms }, JoinKind::FreeEntry);
            }
        }
        let client = checks.client.as_deref().filter(|_| checks.max_per_client > 0);
        if let Some(c) = client
            && s.places_of(c, checks.max_per_client) >= checks.max_per_client
        {
            return (Standing::NotInQueue, JoinKind::ClientFull);
        }
        if let Some(refused) = s.spend(&checks.proof, now) {
            return (Standing::NotInQueue, refused);
        }
        s.next_seq += 1;
        let seq = s.next_seq;
        s.line.push(visitor, seq);
        s.mark_seen(visitor, now);
        if now < p.entrants_until_ms {
            s.entrants.insert(visitor);
        }
        if let Some(c) = client {
            s.places.entry(c.to_owned()).or_default().insert(visitor);
            s.place_of.insert(visitor, c.to_owned());
        }
        let waiting = s.line.len();
        (
            Standing::Waiting { position: waiting, waiting },
            if lost_place { JoinKind::Rejoined } else { JoinKind::Joined },
        )
    }

    fn queue(&self, queue: &str) -> Arc<Mutex<QueueState>> {
        if let Some(q) = self.queues.get(queue) {
            return q.clone();
        }
        self.queues.entry(queue.to_owned()).or_default().clone()
    }
}

use crate::clock::now_ms;

fn as_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One queue.
#[derive(Default)]
struct QueueState {
    next_seq: u64,
    line: Line,
    /// Last time each waiting visitor was seen, and the same ordered by time so
    /// the abandoned are found without scanning the line.
    seen: HashMap<VisitorId, i64>,
    seen_order: BTreeSet<(i64, VisitorId)>,
    /// Live sessions (admitted, expires) and the same ordered by expiry.
    sessions: HashMap<VisitorId, (i64, i64)>,
    /// Revoked admissions: the last revoked token `iat` (s) and until when.
    revoked: HashMap<VisitorId, (i64, i64)>,
    session_order: BTreeSet<(i64, VisitorId)>,
    last_tick_ms: Option<i64>,
    /// `next_seq` at the last tick, and the places added in the interval before it.
    seq_at_tick: u64,
    last_joined: u64,
    /// Waiting places per client, and each waiting place's client.
    places: HashMap<String, HashSet<VisitorId>>,
    place_of: HashMap<VisitorId, String>,
    /// Spent challenge seeds until they may be forgotten, and the same by time.
    spent: HashMap<String, i64>,
    spent_order: BTreeSet<(i64, String)>,
    settings: Option<super::SharedSettings>,
    ticks: u64,
    released_total: u64,
    abandoned_total: u64,
    /// Reports since the last tick (see `report.lua` for the shared store).
    window: Window,
    /// Requests in flight per reporting instance, and when it reported.
    in_flight: HashMap<u64, (u64, i64)>,
    /// Released visitors not yet arrived: admission time, and the same by time.
    pending: HashMap<VisitorId, i64>,
    pending_order: BTreeSet<(i64, VisitorId)>,
    /// Live sessions of no-shows.
    no_show: HashSet<VisitorId>,
    /// The controller's last decision saved.
    decision: Option<crate::adaptive::Record>,
    /// Newest first.
    tick_log: std::collections::VecDeque<TickLog>,
    /// The lottery's entrants (see `draw`), and the lottery.
    entrants: HashSet<VisitorId>,
    lottery: Option<LotteryRecord>,
}

impl QueueState {
    fn mark_seen(&mut self, visitor: VisitorId, now: i64) {
        if let Some(old) = self.seen.insert(visitor, now) {
            self.seen_order.remove(&(old, visitor));
        }
        self.seen_order.insert((now, visitor));
    }

    fn forget_seen(&mut self, visitor: &VisitorId) {
        if let Some(old) = self.seen.remove(visitor) {
            self.seen_order.remove(&(old, *visitor));
        }
    }

    fn leave_line(&mut self, visitor: &VisitorId) {
        self.line.remove(visitor);
        self.left_line(visitor);
    }

    /// What a visitor who left the line (any way) no longer holds.
    fn left_line(&mut self, visitor: &VisitorId) {
        self.forget_seen(visitor);
        if let Some(client) = self.place_of.remove(visitor)
            && let Some(set) = self.places.get_mut(&client)
        {
            set.remove(visitor);
            if set.is_empty() {
                self.places.remove(&client);
            }
        }
    }

    /// Places `client` holds in the line; at `max` or more, its places are
    /// first checked against the line (as the Redis backend does).
    fn places_of(&mut self, client: &str, max: u64) -> u64 {
        let Some(set) = self.places.get_mut(client) else { return 0 };
        if set.len() as u64 >= max {
            let line = &self.line.by_visitor;
            set.retain(|v| line.contains_key(v));
        }
        set.len() as u64
    }

    /// Spend the proof of a join that would add a place or admit: `Some`
    /// refusal when it is missing or already spent.
    fn spend(&mut self, proof: &Proof, now: i64) -> Option<JoinKind> {
        match proof {
            Proof::NotRequired => None,
            Proof::Missing => Some(JoinKind::NeedsChallenge),
            Proof::Solved { seed, expires_at_ms } => {
                while let Some((until, _)) = self.spent_order.first() {
                    if *until > now {
                        break;
                    }
                    if let Some((_, old)) = self.spent_order.pop_first() {
                        self.spent.remove(&old);
                    }
                }
                if self.spent.contains_key(seed) {
                    return Some(JoinKind::ChallengeSpent);
                }
                let until = expires_at_ms.saturating_add(SPENT_GRACE_MS);
                self.spent.insert(seed.clone(), until);
                self.spent_order.insert((until, seed.clone()));
                None
            }
        }
    }

    fn expire_sessions(&mut self, now: i64) {
        while let Some(&(expires, visitor)) = self.session_order.first() {
            if expires > now {
                break;
            }
            self.session_order.pop_first();
            self.sessions.remove(&visitor);
            self.forget_arrival(&visitor);
        }
    }

    /// The visitor's session ended or they arrived: no longer a pending
    /// arrival or a no-show. Whether they were either.
    fn forget_arrival(&mut self, visitor: &VisitorId) -> bool {
        let pending = self.pending.remove(visitor).is_some_and(|at| self.pending_order.remove(&(at, *visitor)));
        self.no_show.remove(visitor) || pending
    }

    fn active(&mut self, now: i64) -> u64 {
        self.expire_sessions(now);
        self.sessions.len() as u64
    }

    fn admit(&mut self, visitor: VisitorId, now: i64, session_ms: u64) -> (i64, i64) {
        let expires = now.saturating_add(as_i64(session_ms));
        self.sessions.insert(visitor, (now, expires));
        self.session_order.insert((expires, visitor));
        (now, expires)
    }

    fn stale(&self, visitor: &VisitorId, now: i64, p: &Params) -> bool {
        p.abandon_after_ms > 0 && self.seen.get(visitor).is_none_or(|&s| s < now - as_i64(p.abandon_after_ms))
    }

    /// Where `visitor` stands. With `visit` (the visitor's own join or poll) the
    /// visit keeps the place, or loses it if they were away too long; without,
    /// a read-only look. The flag returned says the place was just lost.
    fn standing(&mut self, visitor: VisitorId, now: i64, visit: Option<&Params>) -> (Standing, bool) {
        self.expire_sessions(now);
        if let Some(&(admitted_at_ms, expires_at_ms)) = self.sessions.get(&visitor) {
            return (Standing::Ready { admitted_at_ms, expires_at_ms }, false);
        }
        if let Some(position) = self.line.position(&visitor) {
            let Some(p) = visit else {
                return (Standing::Waiting { position, waiting: self.line.len() }, false);
            };
            if self.stale(&visitor, now, p) {
                self.leave_line(&visitor);
                return (Standing::NotInQueue, true);
            }
            self.mark_seen(visitor, now);
            return (Standing::Waiting { position, waiting: self.line.len() }, false);
        }
        (Standing::NotInQueue, false)
    }
}

impl QueueState {
    /// The draw (see [`QueueStore::draw`]), under the queue's lock.
    fn draw(&mut self, now: i64, opens_at_ms: i64, order: &[VisitorId], published: &str) -> Draw {
        let Some(lottery) = &mut self.lottery else { return Draw::Changed };
        if lottery.drawn.is_some() {
            return Draw::AlreadyDrawn;
        }
        if now < opens_at_ms {
            return Draw::TooEarly;
        }
        if order.len() != self.entrants.len() || !order.iter().all(|v| self.entrants.contains(v)) {
            return Draw::Changed;
        }
        lottery.drawn = Some((now, published.to_owned()));
        // The entrants still in line keep the set of sequence numbers they
        // hold, handed out again in drawn order.
        let placed: Vec<VisitorId> = order.iter().copied().filter(|v| self.line.by_visitor.contains_key(v)).collect();
        let mut seqs: Vec<u64> = placed.iter().filter_map(|v| self.line.by_visitor.get(v).copied()).collect();
        seqs.sort_unstable();
        for v in &placed {
            self.line.remove(v);
        }
        for (v, seq) in placed.into_iter().zip(seqs) {
            self.line.push(v, seq);
            self.mark_seen(v, now);
        }
        Draw::Drawn
    }
}
