//! `impl QueueStore for MemoryStore`: each store call under the queue's lock;
//! apart from the queue state in `memory.rs` that the calls work on.

use async_trait::async_trait;

use super::*;

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

    async fn load_settings(&self, queue: &str) -> Result<Option<crate::store::SharedSettings>, StoreError> {
        Ok(self.queue(queue).lock().settings.clone())
    }

    async fn save_settings(
        &self,
        queue: &str,
        settings: &crate::store::SharedSettings,
    ) -> Result<crate::store::SharedSettings, StoreError> {
        let q = self.queue(queue);
        let mut s = q.lock();
        let version = s.settings.as_ref().map_or(0, |old| old.version) + 1;
        let saved = crate::store::SharedSettings { version, ..settings.clone() };
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
