//! `impl QueueStore for RedisStore`: each store call as a script or a few
//! commands; apart from the connection, script and key set-up in `redis.rs`.

use async_trait::async_trait;

use super::decode::{int, text, tick_log, visitor, window};
use super::*;

#[async_trait]
impl QueueStore for RedisStore {
    async fn join_placed(
        &self,
        queue: &str,
        visitor: VisitorId,
        p: &Params,
        checks: &JoinChecks,
    ) -> Result<Placed, StoreError> {
        self.standing_script(queue, visitor, "join", p, checks).await
    }

    async fn status(&self, queue: &str, visitor: VisitorId, p: &Params) -> Result<Standing, StoreError> {
        Ok(self.standing_script(queue, visitor, "status", p, &JoinChecks::default()).await?.standing)
    }

    async fn release(&self, queue: &str, p: &Params) -> Result<Release, StoreError> {
        let k = self.keys(queue);
        let mut call = self.scripts.release.prepare_invoke();
        call.key(k.key("line"))
            .key(k.key("seen"))
            .key(k.key("sessions"))
            .key(k.key("admitted"))
            .key(k.key("tick"))
            .key(k.key("places"))
            .key(k.key("place_of"))
            .key(k.key("seq"))
            .key(k.key("epoch"))
            .key(k.key("signals"))
            .key(k.key("inflight"))
            .key(k.key("pending"))
            .key(k.key("noshow"))
            .key(k.key("controller"))
            .key(k.key("ticklog"))
            .arg(p.release_per_tick)
            .arg(p.tick_ms)
            .arg(p.session_ms)
            .arg(p.max_active)
            .arg(p.abandon_after_ms)
            .arg(if p.paused { "1" } else { "0" })
            .arg(k.key("events"))
            .arg(epoch_id(new_epoch()));
        match p.adaptive {
            Some(a) => call.arg("adaptive").arg(a.min).arg(a.max).arg(a.pin),
            None => call.arg("fixed").arg(0).arg(0).arg(0),
        };
        call.arg(p.arrival_grace_ms).arg(p.mode.label()).arg(p.release_cap);
        let (values, acknowledged): (Vec<Value>, _) = self.acknowledged(&call).await?;
        let ticked = int(values.first()) == 1;
        // Only a tick is news; a call that found none wrote nothing to keep.
        if ticked {
            acknowledged?;
        }
        Ok(Release {
            ticked,
            tick: to_u64(int(values.get(1))),
            now_ms: int(values.get(2)),
            next_due_in_ms: to_u64(int(values.get(3))),
            abandoned: to_u64(int(values.get(4))),
            waiting: to_u64(int(values.get(5))),
            active: to_u64(int(values.get(6))),
            joined: to_u64(int(values.get(7))),
            epoch: values.get(8).and_then(text).as_deref().and_then(parse_epoch).unwrap_or(0),
            n: to_u64(int(values.get(9))),
            no_shows: to_u64(int(values.get(10))),
            window: if ticked { values.get(11).map(window) } else { None },
            decision: values.get(12).and_then(text).and_then(|j| serde_json::from_str(&j).ok()),
            released: values.iter().skip(13).filter_map(visitor).collect(),
        })
    }

    async fn standings(&self, queue: &str, visitors: &[VisitorId]) -> Result<Vec<Standing>, StoreError> {
        let k = self.keys(queue);
        let mut out = Vec::with_capacity(visitors.len());
        for chunk in visitors.chunks(BATCH) {
            let mut conn = self.conn.clone();
            let mut call = self.scripts.standings.key(k.key("line"));
            call.key(k.key("sessions")).key(k.key("admitted"));
            for v in chunk {
                call.arg(v.to_string());
            }
            let flat: Vec<i64> = call.invoke_async(&mut conn).await.map_err(err)?;
            out.extend(flat.chunks_exact(3).map(|c| match c[0] {
                2 => Standing::Ready { admitted_at_ms: c[1], expires_at_ms: c[2] },
                1 => Standing::Waiting { position: to_u64(c[1]), waiting: to_u64(c[2]) },
                _ => Standing::NotInQueue,
            }));
        }
        Ok(out)
    }

    async fn touch(&self, queue: &str, visitors: &[VisitorId]) -> Result<(), StoreError> {
        let seen = self.keys(queue).key("seen");
        for chunk in visitors.chunks(BATCH) {
            let mut conn = self.conn.clone();
            let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.map_err(err)?;
            let now = secs * 1000 + micros / 1000;
            let mut cmd = redis::cmd("ZADD");
            cmd.arg(&seen).arg("XX");
            for v in chunk {
                cmd.arg(now).arg(v.to_string());
            }
            cmd.query_async::<i64>(&mut conn).await.map_err(err)?;
        }
        Ok(())
    }

    async fn stats(&self, queue: &str) -> Result<Stats, StoreError> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await.map_err(err)?;
        let now = secs * 1000 + micros / 1000;
        let (waiting, active, tick): (u64, u64, std::collections::HashMap<String, u64>) = redis::pipe()
            .zcard(k.key("line"))
            .zcount(k.key("sessions"), format!("({now}"), "+inf")
            .hgetall(k.key("tick"))
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let get = |f: &str| tick.get(f).copied().unwrap_or(0);
        Ok(Stats {
            waiting,
            active,
            ticks: get("tick"),
            released_total: get("released"),
            abandoned_total: get("abandoned"),
        })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(err)
    }

    async fn load_settings(&self, queue: &str) -> Result<Option<SharedSettings>, StoreError> {
        let mut conn = self.conn.clone();
        let (json, version): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys(queue).key("settings"))
            .arg("json")
            .arg("version")
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        let Some(json) = json else { return Ok(None) };
        let mut settings: SharedSettings =
            serde_json::from_str(&json).map_err(StoreError::json("stored settings are unreadable"))?;
        settings.version = version.unwrap_or(0);
        Ok(Some(settings))
    }

    async fn load_catalog(&self) -> Result<Option<(u64, String)>, StoreError> {
        let mut conn = self.conn.clone();
        let (json, version): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(Self::catalog_keys(&self.prefix).0)
            .arg("json")
            .arg("version")
            .query_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(json.map(|j| (version.unwrap_or(0), j)))
    }

    async fn save_catalog(&self, expected: u64, json: &str) -> Result<Option<u64>, StoreError> {
        let (key, channel) = Self::catalog_keys(&self.prefix);
        let mut call = self.scripts.save_catalog.prepare_invoke();
        call.key(key).arg(expected).arg(json).arg(channel);
        let ((saved, version), acknowledged): ((u8, u64), _) = self.acknowledged(&call).await?;
        acknowledged?;
        Ok((saved == 1).then_some(version))
    }

    async fn purge(&self, queue: &str) -> Result<(), StoreError> {
        let k = self.keys(queue);
        let mut call = self.scripts.purge.prepare_invoke();
        for name in QUEUE_KEYS {
            call.key(k.key(name));
        }
        let mut conn = self.conn.clone();
        call.invoke_async::<u64>(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn save_settings(&self, queue: &str, settings: &SharedSettings) -> Result<SharedSettings, StoreError> {
        let k = self.keys(queue);
        let json = serde_json::to_string(settings).map_err(StoreError::json("cannot encode settings"))?;
        let mut call = self.scripts.save_settings.prepare_invoke();
        call.key(k.key("settings")).arg(json).arg(k.key("events")).arg(epoch_id(new_epoch()));
        let (version, acknowledged): (u64, _) = self.acknowledged(&call).await?;
        acknowledged?;
        Ok(SharedSettings { version, ..settings.clone() })
    }

    async fn end_session(
        &self,
        queue: &str,
        visitor: VisitorId,
        iat_s: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        let k = self.keys(queue);
        let mut call = self.scripts.end_session.prepare_invoke();
        call.key(k.key("sessions"))
            .key(k.key("admitted"))
            .key(k.key("revoked"))
            .key(k.key("revoked_until"))
            .key(k.key("pending"))
            .key(k.key("noshow"))
            .arg(visitor.to_string())
            .arg(iat_s)
            .arg(until_ms)
            .arg(k.key("events"))
            .arg(epoch_id(new_epoch()));
        let (ended, acknowledged): (i64, _) = self.acknowledged(&call).await?;
        acknowledged?;
        Ok(ended == 1)
    }

    async fn report(&self, queue: &str, r: &Report) -> Result<(), StoreError> {
        let k = self.keys(queue);
        let mut call = self.scripts.report.prepare_invoke();
        call.key(k.key("signals"))
            .key(k.key("inflight"))
            .key(k.key("pending"))
            .key(k.key("noshow"))
            .key(k.key("admitted"))
            .arg(r.instance)
            .arg(r.in_flight)
            .arg(r.samples)
            .arg(r.errors)
            .arg(r.buckets.len());
        for (b, c) in &r.buckets {
            call.arg(*b).arg(*c);
        }
        for (v, iat) in &r.arrivals {
            call.arg(v.to_string()).arg(*iat);
        }
        let mut conn = self.conn.clone();
        let _: i64 = call.invoke_async(&mut conn).await.map_err(err)?;
        Ok(())
    }

    async fn save_decision(&self, queue: &str, record: &crate::adaptive::Record) -> Result<bool, StoreError> {
        let k = self.keys(queue);
        let json = serde_json::to_string(record).map_err(StoreError::json("cannot encode a decision"))?;
        let mut call = self.scripts.save_decision.prepare_invoke();
        call.key(k.key("controller")).key(k.key("epoch")).arg(record.tick).arg(record.n).arg(&record.reason).arg(json);
        let mut conn = self.conn.clone();
        let saved: i64 = call.invoke_async(&mut conn).await.map_err(err)?;
        Ok(saved == 1)
    }

    async fn ticks(&self, queue: &str, limit: usize) -> Result<Vec<TickLog>, StoreError> {
        let key = self.keys(queue).key("ticklog");
        let last = isize::try_from(limit.clamp(1, crate::store::TICK_LOG)).unwrap_or(1) - 1;
        let mut conn = self.conn.clone();
        let lines: Vec<String> =
            redis::cmd("LRANGE").arg(key).arg(0).arg(last).query_async(&mut conn).await.map_err(err)?;
        Ok(lines.iter().filter_map(|l| tick_log(l)).collect())
    }

    async fn lottery(&self, queue: &str, new_seed: Option<&str>) -> Result<Option<LotteryRecord>, StoreError> {
        let mut call = self.scripts.lottery.prepare_invoke();
        call.key(self.keys(queue).key("lottery")).arg(new_seed.unwrap_or(""));
        let (seed, committed_at, drawn_at, order): (String, String, String, String) = if new_seed.is_some() {
            let (reply, acknowledged) = self.acknowledged(&call).await?;
            acknowledged?;
            reply
        } else {
            call.invoke_async(&mut self.conn.clone()).await.map_err(err)?
        };
        if seed.is_empty() {
            return Ok(None);
        }
        let drawn = drawn_at.parse::<i64>().ok().map(|at| (at, order));
        Ok(Some(LotteryRecord { seed, committed_at_ms: committed_at.parse().unwrap_or(0), drawn }))
    }

    async fn entrants(&self, queue: &str) -> Result<Vec<VisitorId>, StoreError> {
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.keys(queue).key("entrants"))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(err)?;
        Ok(ids.iter().filter_map(|v| v.parse().ok()).collect())
    }

    async fn draw(
        &self,
        queue: &str,
        opens_at_ms: i64,
        order: &[VisitorId],
        published: &str,
    ) -> Result<Draw, StoreError> {
        let k = self.keys(queue);
        let mut call = self.scripts.draw.prepare_invoke();
        call.key(k.key("line"))
            .key(k.key("seen"))
            .key(k.key("entrants"))
            .key(k.key("lottery"))
            .arg(opens_at_ms)
            .arg(published)
            .arg(k.key("events"));
        for v in order {
            call.arg(v.to_string());
        }
        let (outcome, acknowledged): (String, _) = self.acknowledged(&call).await?;
        acknowledged?;
        Ok(match outcome.as_str() {
            "drawn" => Draw::Drawn,
            "already" => Draw::AlreadyDrawn,
            "early" => Draw::TooEarly,
            _ => Draw::Changed,
        })
    }

    async fn revoked(&self, queue: &str, visitor: VisitorId, iat_s: i64) -> Result<bool, StoreError> {
        let k = self.keys(queue);
        let mut conn = self.conn.clone();
        let revoked: i64 = self
            .scripts
            .revoked
            .key(k.key("revoked"))
            .key(k.key("revoked_until"))
            .key(k.key("pending"))
            .key(k.key("noshow"))
            .arg(visitor.to_string())
            .invoke_async(&mut conn)
            .await
            .map_err(err)?;
        Ok(revoked >= 0 && iat_s <= revoked)
    }
}
