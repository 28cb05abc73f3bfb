//! The in-process queue store: the embedded default for a single instance.
//!
//! Each queue is a [`QueueState`] behind a `parking_lot::Mutex`: every operation
//! is a short critical section with nothing awaited inside, so a blocking mutex
//! is cheaper than an async one. Positions come from a Fenwick tree over the
//! join sequence numbers, so a lookup costs O(log n), not O(line length).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;
use parking_lot::Mutex;
use shared::visitor::VisitorId;

use crate::config::QueueMode;

use super::{
    Draw, JoinChecks, JoinKind, LotteryRecord, Params, Place, Placed, Proof, QueueStore, Release, Report,
    SPENT_GRACE_MS, Standing, Stats, StoreError, TICK_LOG, TickLog, Window,
};

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

/// Counts of present sequence numbers, for O(log n) ranks.
#[derive(Default)]
struct Fenwick {
    /// Sequence number stored at index 1.
    base: u64,
    /// 1-based tree; `tree[0]` unused.
    tree: Vec<u32>,
}

impl Fenwick {
    fn capacity(&self) -> u64 {
        self.tree.len().saturating_sub(1) as u64
    }

    fn covers(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < self.capacity()
    }

    fn add(&mut self, seq: u64, delta: i32) {
        let mut i = (seq - self.base + 1) as usize;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Present sequence numbers `<= seq`.
    fn prefix(&self, seq: u64) -> u64 {
        if seq < self.base {
            return 0;
        }
        let mut i = ((seq - self.base + 1) as usize).min(self.tree.len().saturating_sub(1));
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i]);
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// The line: who waits, in join order, with ranks.
#[derive(Default)]
struct Line {
    by_visitor: HashMap<VisitorId, u64>,
    by_seq: BTreeMap<u64, VisitorId>,
    counts: Fenwick,
}

impl Line {
    fn len(&self) -> u64 {
        self.by_seq.len() as u64
    }

    fn push(&mut self, visitor: VisitorId, seq: u64) {
        self.by_visitor.insert(visitor, seq);
        self.by_seq.insert(seq, visitor);
        if !self.counts.covers(seq) {
            self.rebuild(seq);
        } else {
            self.counts.add(seq, 1);
        }
    }

    /// Start the tree at the current head with room to grow; O(n log n) but
    /// only when the tail outgrows the capacity, so amortized O(log n).
    fn rebuild(&mut self, newest: u64) {
        let base = self.by_seq.keys().next().copied().unwrap_or(newest);
        let span = newest - base + 1;
        let capacity = (span * 2).max(1024) as usize;
        self.counts = Fenwick { base, tree: vec![0; capacity + 1] };
        let seqs: Vec<u64> = self.by_seq.keys().copied().collect();
        for seq in seqs {
            self.counts.add(seq, 1);
        }
    }

    fn remove(&mut self, visitor: &VisitorId) -> bool {
        let Some(seq) = self.by_visitor.remove(visitor) else { return false };
        self.by_seq.remove(&seq);
        if self.counts.covers(seq) {
            self.counts.add(seq, -1);
        }
        true
    }

    fn position(&self, visitor: &VisitorId) -> Option<u64> {
        self.by_visitor.get(visitor).map(|&seq| self.counts.prefix(seq))
    }

    /// Take `k` visitors drawn uniformly from the whole line (random mode):
    /// O(line length), once per tick.
    fn take_random(&mut self, k: u64) -> Vec<VisitorId> {
        let len = self.by_seq.len();
        let k = usize::try_from(k).unwrap_or(usize::MAX).min(len);
        let mut picked = rand::seq::index::sample(&mut rand::thread_rng(), len, k).into_vec();
        picked.sort_unstable();
        let mut next = picked.into_iter().peekable();
        let chosen: Vec<VisitorId> = self
            .by_seq
            .values()
            .enumerate()
            .filter_map(|(i, v)| (next.next_if_eq(&i).is_some()).then_some(*v))
            .collect();
        for v in &chosen {
            self.remove(v);
        }
        chosen
    }

    fn pop_front(&mut self) -> Option<VisitorId> {
        let (&seq, &visitor) = self.by_seq.iter().next()?;
        self.by_seq.remove(&seq);
        self.by_visitor.remove(&visitor);
        if self.counts.covers(seq) {
            self.counts.add(seq, -1);
        }
        Some(visitor)
    }
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

#[async_trait]
impl QueueStore for MemoryStore {
    async fn join_placed(
        &self,
        queue: &str,
        visitor: VisitorId,
        p: &Params,
        checks: &JoinChecks,
    ) -> Result<Placed, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let (standing, kind) = self.join_locked(&mut s, visitor, p, checks);
        let place = match standing {
            Standing::Waiting { .. } => s.line.by_visitor.get(&visitor).map(|&seq| Place { epoch: self.epoch, seq }),
            _ => None,
        };
        Ok(Placed { standing, kind, place })
    }

    async fn status(&self, queue: &str, visitor: VisitorId, p: &Params) -> Result<Standing, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        Ok(s.standing(visitor, now_ms(), Some(p)).0)
    }
    async fn release(&self, queue: &str, p: &Params) -> Result<Release, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        let tick_ms = as_i64(p.tick_ms);
        let mut out = Release { now_ms: now, tick: s.ticks, epoch: self.epoch, ..Release::default() };
        let due = match s.last_tick_ms {
            // The first call starts the first interval: visitors gather for one tick.
            None => {
                s.last_tick_ms = Some(now);
                s.seq_at_tick = s.next_seq;
                false
            }
            Some(last) => now - last >= tick_ms,
        };
        if !due {
            let last = s.last_tick_ms.unwrap_or(now);
            out.next_due_in_ms = u64::try_from(tick_ms - (now - last)).unwrap_or(0);
            out.waiting = s.line.len();
            out.active = s.active(now);
            out.joined = s.last_joined;
            out.decision = s.decision.clone();
            return Ok(out);
        }
        s.last_tick_ms = Some(now);
        s.last_joined = s.next_seq - s.seq_at_tick;
        s.seq_at_tick = s.next_seq;
        out.joined = s.last_joined;
        s.ticks += 1;
        out.ticked = true;
        out.tick = s.ticks;
        out.next_due_in_ms = p.tick_ms;
        s.expire_sessions(now);

        if p.abandon_after_ms > 0 {
            let cutoff = now - as_i64(p.abandon_after_ms);
            while let Some(&(seen, visitor)) = s.seen_order.first() {
                if seen >= cutoff {
                    break;
                }
                s.leave_line(&visitor);
                out.abandoned += 1;
            }
            s.abandoned_total += out.abandoned;
        }

        // Released visitors with no request within the grace are no-shows
        // (as in release.lua).
        if p.arrival_grace_ms > 0 {
            let cutoff = now - as_i64(p.arrival_grace_ms);
            while let Some(&(at, visitor)) = s.pending_order.first() {
                if at >= cutoff {
                    break;
                }
                s.pending_order.pop_first();
                s.pending.remove(&visitor);
                s.no_show.insert(visitor);
                out.no_shows += 1;
            }
        }

        let (n, mode, reason) = match (p.adaptive, p.paused) {
            (_, true) => (0, "paused", "fixed".to_owned()),
            // Everyone waiting goes in (the line only holds those who found
            // max_active full).
            (_, false) if p.mode == QueueMode::Passthrough => (s.line.len(), "passthrough", "passthrough".to_owned()),
            (None, false) => (p.release_per_tick, "fixed", "fixed".to_owned()),
            (Some(a), false) if a.pin > 0 => (a.n(None), "pinned", "pinned".to_owned()),
            (Some(a), false) => {
                let decided = s.decision.as_ref().map(|d| d.n);
                let reason = s.decision.as_ref().map_or_else(|| "start".to_owned(), |d| d.reason.clone());
                (a.n(decided), "adaptive", reason)
            }
        };
        let n = if p.release_cap > 0 { n.min(p.release_cap) } else { n };
        out.n = n;
        let mut room = n;
        if p.max_active > 0 {
            let mut active = s.sessions.len() as u64;
            if p.adaptive.is_some() && p.arrival_grace_ms > 0 {
                active = active.saturating_sub(s.no_show.len() as u64);
            }
            room = room.min(p.max_active.saturating_sub(active));
        }
        let random = if p.mode == QueueMode::Random { s.line.take_random(room) } else { Vec::new() };
        let mut random = random.into_iter();
        while (out.released.len() as u64) < room {
            let next = if p.mode == QueueMode::Random { random.next() } else { s.line.pop_front() };
            let Some(visitor) = next else { break };
            s.left_line(&visitor);
            s.admit(visitor, now, p.session_ms);
            if p.arrival_grace_ms > 0 {
                s.pending.insert(visitor, now);
                s.pending_order.insert((now, visitor));
            }
            out.released.push(visitor);
        }
        s.released_total += out.released.len() as u64;
        out.waiting = s.line.len();
        out.active = s.sessions.len() as u64;

        let mut window = std::mem::take(&mut s.window);
        s.in_flight.retain(|_, (_, at)| *at >= now - 5000);
        window.in_flight = s.in_flight.values().map(|(n, _)| n).sum();
        window.no_shows = out.no_shows;
        window.buckets.resize(crate::adaptive::BUCKETS, 0);
        out.window = Some(window);
        let entry = TickLog {
            tick: out.tick,
            at_ms: now,
            n,
            released: out.released.len() as u64,
            waiting: out.waiting,
            mode: mode.to_owned(),
            reason,
        };
        s.tick_log.push_front(entry);
        s.tick_log.truncate(TICK_LOG);
        out.decision = s.decision.clone();
        Ok(out)
    }

    async fn standings(&self, queue: &str, visitors: &[VisitorId]) -> Result<Vec<Standing>, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        Ok(visitors.iter().map(|v| s.standing(*v, now, None).0).collect())
    }

    async fn touch(&self, queue: &str, visitors: &[VisitorId]) -> Result<(), StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        for v in visitors {
            if s.seen.contains_key(v) {
                s.mark_seen(*v, now);
            }
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<Stats, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        Ok(Stats {
            waiting: s.line.len(),
            active: s.active(now),
            ticks: s.ticks,
            released_total: s.released_total,
            abandoned_total: s.abandoned_total,
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn load_catalog(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.catalog.lock().clone())
    }

    async fn save_catalog(&self, expected: u64, json: &str) -> Result<Option<u64>, StoreError> {
        let mut catalog = self.catalog.lock();
        let stored = catalog.as_ref().map_or(0, |(v, _)| *v);
        if stored != expected {
            return Ok(None);
        }
        *catalog = Some((stored + 1, json.to_owned()));
        Ok(Some(stored + 1))
    }

    async fn purge(&self, queue: &str) -> Result<(), StoreError> {
        self.queues.remove(queue);
        Ok(())
    }

    async fn load_settings(&self, queue: &str) -> Result<Option<super::SharedSettings>, StoreError> {
        Ok(self.queue(queue).lock().settings.clone())
    }

    async fn save_settings(
        &self,
        queue: &str,
        settings: &super::SharedSettings,
    ) -> Result<super::SharedSettings, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let version = s.settings.as_ref().map_or(0, |old| old.version) + 1;
        let saved = super::SharedSettings { version, ..settings.clone() };
        s.settings = Some(saved.clone());
        Ok(saved)
    }

    async fn end_session(
        &self,
        queue: &str,
        visitor: VisitorId,
        iat_s: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        s.revoked.retain(|_, (_, until)| *until > now);
        let mut ended = false;
        if let Some(&(admitted, expires)) = s.sessions.get(&visitor)
            && admitted.div_euclid(1000) <= iat_s
        {
            s.sessions.remove(&visitor);
            s.session_order.remove(&(expires, visitor));
            s.forget_arrival(&visitor);
            ended = expires > now;
        }
        let entry = s.revoked.entry(visitor).or_insert((iat_s, until_ms));
        *entry = (entry.0.max(iat_s), entry.1.max(until_ms));
        Ok(ended)
    }

    async fn report(&self, queue: &str, r: &Report) -> Result<(), StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let now = now_ms();
        s.in_flight.insert(r.instance, (r.in_flight, now));
        let w = &mut s.window;
        w.samples += r.samples;
        w.errors += r.errors;
        w.buckets.resize(crate::adaptive::BUCKETS, 0);
        for &(b, c) in &r.buckets {
            if let Some(slot) = w.buckets.get_mut(b) {
                *slot += c;
            }
        }
        for (visitor, iat) in &r.arrivals {
            // Only an arrival with a token of the visitor's current admission.
            let current = s.sessions.get(visitor).is_some_and(|&(at, _)| iat.saturating_mul(1000) >= at - 1000);
            if current && s.forget_arrival(visitor) {
                s.window.arrived += 1;
            }
        }
        Ok(())
    }

    async fn save_decision(&self, queue: &str, record: &crate::adaptive::Record) -> Result<bool, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        if s.decision.as_ref().is_some_and(|d| d.tick >= record.tick) {
            return Ok(false);
        }
        s.decision = Some(record.clone());
        Ok(true)
    }

    async fn lottery(&self, queue: &str, new_seed: Option<&str>) -> Result<Option<LotteryRecord>, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        if let (None, Some(seed)) = (&s.lottery, new_seed) {
            s.lottery = Some(LotteryRecord { seed: seed.to_owned(), committed_at_ms: now_ms(), drawn: None });
        }
        Ok(s.lottery.clone())
    }

    async fn entrants(&self, queue: &str) -> Result<Vec<VisitorId>, StoreError> {
        Ok(self.queue(queue).lock().entrants.iter().copied().collect())
    }

    async fn draw(
        &self,
        queue: &str,
        opens_at_ms: i64,
        order: &[VisitorId],
        published: &str,
    ) -> Result<Draw, StoreError> {
        Ok(self.queue(queue).lock().draw(now_ms(), opens_at_ms, order, published))
    }

    async fn ticks(&self, queue: &str, limit: usize) -> Result<Vec<TickLog>, StoreError> {
        let q = self.queue(queue);
        let s = q.lock();
        Ok(s.tick_log.iter().take(limit).cloned().collect())
    }

    async fn revoked(&self, queue: &str, visitor: VisitorId, iat_s: i64) -> Result<bool, StoreError> {
        let q = self.queue(queue);
        let s = q.lock();
        Ok(s.revoked.get(&visitor).is_some_and(|&(iat, until)| iat_s <= iat && until > now_ms()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_ranks_follow_removals_and_growth() {
        let mut line = Line::default();
        let ids: Vec<VisitorId> = (0..5000).map(|_| VisitorId::random()).collect();
        for (i, v) in ids.iter().enumerate() {
            line.push(*v, i as u64 + 1);
        }
        assert_eq!(line.position(&ids[0]), Some(1));
        assert_eq!(line.position(&ids[4999]), Some(5000));
        line.remove(&ids[10]);
        assert_eq!(line.position(&ids[11]), Some(11));
        for _ in 0..100 {
            line.pop_front();
        }
        assert_eq!(line.position(&ids[200]), Some(200 - 100));
        // keep appending far beyond the original capacity
        let more: Vec<VisitorId> = (0..20000).map(|_| VisitorId::random()).collect();
        for (i, v) in more.iter().enumerate() {
            line.push(*v, 5001 + i as u64);
        }
        assert_eq!(line.position(&more[0]), Some(5000 - 101 + 1));
        assert_eq!(line.position(&ids[200]), Some(100));
    }
}
