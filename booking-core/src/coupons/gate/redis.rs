//! The Redis gate, shared by every instance.
//!
//! Campaign `c` has a hash `<prefix>:{gate:c}` (`#total`, `#free`, `#issued`,
//! and one field per visitor: `L` while their lease runs, then `C` or the
//! committed claim's JSON) and a sorted set `<prefix>:{gate:c}:leases`
//! (visitor → lease deadline, epoch ms of Redis `TIME`, so instances with
//! skewed clocks agree). `reserved` is the sorted set's size. Each step is one
//! Lua script, so duplicate check, stock check, reservation and lease cannot
//! interleave (the retailer's SADD + INCR did, and over-issued), and each
//! keeps `#free + reserved + #issued == #total`. Admissions and commits run
//! many visitors' steps per script call when claims arrive together
//! ([`super::coalesce`]); each visitor's step is the same as alone.
//!
//! If the hash is missing — first use, Redis flushed or restarted — it is
//! built from the database into a staging key and renamed into place only if
//! no other instance got there first. Claims that were in flight across the
//! loss settle against the new gate: a commit it does not know about takes a
//! unit from `#free`, an undo it does not know about changes nothing (its
//! read already counted that unit as free).

use std::sync::Arc;

use dashmap::DashMap;
use redis::{Script, Value};

use super::coalesce::Coalescer;
use super::{GateAnswer, GateCounts, GateError, Lease, snapshot};
use crate::metrics::Metrics;
use crate::redis_breaker::{self, RedisLink};
use crate::store::{CampaignRow, Store};

/// Redis time in epoch ms, for the scripts.
const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

/// ARGV[1] the lease (ms), then one visitor per argument, each asked in
/// turn; → one answer per visitor: {-1} gate missing (build it), {1,
/// deadline} admitted, {2, deadline, now} the visitor's lease, {3, mark}
/// claimed (`C` or JSON), {4, earliest, now} nothing free but leases run,
/// {0} sold out.
const ADMIT: &str = "
local out = {}
if redis.call('HEXISTS', KEYS[1], '#total') == 0 then
  for i = 2, #ARGV do out[i - 1] = {-1} end
  return out
end
local lease = tonumber(ARGV[1])
local free = tonumber(redis.call('HGET', KEYS[1], '#free'))
local earliest = nil
local reserved = false
for i = 2, #ARGV do
  local visitor = ARGV[i]
  local mark = redis.call('HGET', KEYS[1], visitor)
  if mark == 'L' then
    out[i - 1] = {2, tonumber(redis.call('ZSCORE', KEYS[2], visitor) or '0'), now}
  elseif mark then
    out[i - 1] = {3, mark}
  elseif free <= 0 then
    if earliest == nil then
      local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
      earliest = first[2] and tonumber(first[2]) or false
    end
    if earliest then out[i - 1] = {4, earliest, now} else out[i - 1] = {0} end
  else
    free = free - 1
    local deadline = now + lease
    redis.call('HINCRBY', KEYS[1], '#free', -1)
    redis.call('HSET', KEYS[1], visitor, 'L')
    redis.call('ZADD', KEYS[2], deadline, visitor)
    earliest = nil
    reserved = true
    out[i - 1] = {1, deadline}
  end
end
if reserved then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
return out
";

/// Per pair of arguments (visitor, JSON of the claim or `C`): the visitor
/// holds that committed code. A lease becomes issued; no mark at all means
/// the gate was built after this claim was admitted from a read without it,
/// so the unit it counted free is taken. → 1 per pair (0 each: no gate).
const COMMITTED: &str = "
local out = {}
local exists = redis.call('HEXISTS', KEYS[1], '#total') == 1
for i = 1, #ARGV - 1, 2 do
  if exists then
    local visitor = ARGV[i]
    local mark = redis.call('HGET', KEYS[1], visitor)
    if mark == 'L' then
      redis.call('ZREM', KEYS[2], visitor)
      redis.call('HINCRBY', KEYS[1], '#issued', 1)
    elseif not mark then
      redis.call('HINCRBY', KEYS[1], '#free', -1)
      redis.call('HINCRBY', KEYS[1], '#issued', 1)
    end
    if not mark or mark == 'L' or mark == 'C' then redis.call('HSET', KEYS[1], visitor, ARGV[i + 1]) end
  end
  out[#out + 1] = exists and 1 or 0
end
return out
";

/// The commit failed and the visitor got nothing: the lease's unit is free again.
const UNDO: &str = "
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'L' then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[1], '#free', 1)
return 1
";

/// The database has no free code (codes are never un-claimed): nothing is
/// free, every unit not reserved is issued.
const SOLD_OUT: &str = "
if redis.call('HEXISTS', KEYS[1], '#total') == 0 then return 0 end
if redis.call('HGET', KEYS[1], ARGV[1]) == 'L' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local total = tonumber(redis.call('HGET', KEYS[1], '#total'))
redis.call('HSET', KEYS[1], '#free', 0, '#issued', total - redis.call('ZCARD', KEYS[2]))
return 1
";

/// → {now, visitor, deadline, …}: up to ARGV[1] leases past their deadline.
const EXPIRED: &str = "
local r = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
table.insert(r, 1, now)
return r
";

/// Settle one expired lease (ARGV: visitor, its deadline, `claimed` or `free`)
/// if it is still that lease.
const SETTLE: &str = "
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'L' then return 0 end
local d = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not d or tonumber(d) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] == 'claimed' then
  redis.call('HINCRBY', KEYS[1], '#issued', 1)
  redis.call('HSET', KEYS[1], ARGV[1], 'C')
else
  redis.call('HINCRBY', KEYS[1], '#free', 1)
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return 1
";

/// → {total, free, issued, reserved}, or {} when the gate is missing.
const COUNTS: &str = "
local v = redis.call('HMGET', KEYS[1], '#total', '#free', '#issued')
if not v[1] then return {} end
return {tonumber(v[1]), tonumber(v[2]), tonumber(v[3]), redis.call('ZCARD', KEYS[2])}
";

/// Install a staged build (KEYS: gate, staging, leases) unless a gate exists
/// and ARGV[2] is not `1` (replace). The leases of a replaced gate go with it.
const INSTALL: &str = "
if ARGV[2] ~= '1' and redis.call('HEXISTS', KEYS[1], '#total') == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('DEL', KEYS[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

/// The gate's hash and lease keys. Every key a script of one campaign
/// touches (these two and the staging key, `<hash>:staging:<uuid>`) starts
/// with the hash key, which holds the hash tag `{gate:c}`: they share one
/// slot on a Redis Cluster, as a script's keys must.
fn gate_keys(prefix: &str, campaign_id: i64) -> (String, String) {
    let hash = format!("{prefix}:{{gate:{campaign_id}}}");
    let leases = format!("{hash}:leases");
    (hash, leases)
}

/// Claimants written per pipeline while building a gate.
const CLAIMANTS_PER_PIPELINE: usize = 5000;

/// Gate state kept after a campaign closes, for late duplicate answers.
const KEEP_AFTER_CLOSE_MS: i64 = 24 * 3600 * 1000;

struct Scripts {
    undo: Script,
    sold_out: Script,
    expired: Script,
    settle: Script,
    counts: Script,
    install: Script,
}

/// The Redis gate.
pub struct RedisGate {
    /// Every call is bounded by `redis.response_timeout` and fails at once
    /// while the breaker is open.
    link: RedisLink,
    prefix: String,
    store: Store,
    metrics: Metrics,
    scripts: Scripts,
    /// Admissions and commits, many visitors per call (see [`Coalescer`]).
    admits: Coalescer,
    commits: Coalescer,
    /// One build at a time per campaign in this process, so a flushed Redis
    /// under load costs one database read per instance, not one per request.
    building: DashMap<i64, Arc<tokio::sync::Mutex<()>>>,
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

impl RedisGate {
    pub(super) fn new(link: RedisLink, prefix: &str, store: Store, metrics: Metrics, lease_ms: i64) -> Self {
        let with_now = |body: &str| Script::new(&format!("{NOW}{body}"));
        RedisGate {
            admits: Coalescer::new(link.clone(), with_now(ADMIT), vec![lease_ms.to_string()]),
            commits: Coalescer::new(link.clone(), Script::new(COMMITTED), Vec::new()),
            link,
            prefix: prefix.to_owned(),
            store,
            metrics,
            scripts: Scripts {
                undo: Script::new(UNDO),
                sold_out: Script::new(SOLD_OUT),
                expired: with_now(EXPIRED),
                settle: Script::new(SETTLE),
                counts: Script::new(COUNTS),
                install: Script::new(INSTALL),
            },
            building: DashMap::new(),
        }
    }

    fn keys(&self, campaign_id: i64) -> (String, String) {
        gate_keys(&self.prefix, campaign_id)
    }

    fn key_list(&self, campaign_id: i64) -> Vec<String> {
        let (hash, leases) = self.keys(campaign_id);
        vec![hash, leases]
    }

    async fn call(&self, script: &Script, campaign_id: i64, args: &[String]) -> Result<Value, GateError> {
        let (hash, leases) = self.keys(campaign_id);
        let mut invocation = script.key(hash);
        invocation.key(leases);
        for a in args {
            invocation.arg(a);
        }
        let invocation = &invocation;
        Ok(self.link.run(|mut conn| async move { invocation.invoke_async(&mut conn).await }).await?)
    }

    pub(super) async fn reserve(&self, campaign: &CampaignRow, visitor: &str) -> GateAnswer {
        // Twice: a missing gate is built once, then asked again.
        for _ in 0..2 {
            let answer = self.admits.call(campaign.id, || self.key_list(campaign.id), vec![visitor.to_owned()]).await;
            let answer = match answer.map_err(GateError::from) {
                Ok(Value::Array(items)) => items,
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected claim gate answer");
                    return GateAnswer::Unguarded;
                }
                Err(e) => {
                    if !matches!(&e, GateError::Redis(r) if redis_breaker::is_fail_fast(r)) {
                        tracing::warn!(error = %e, "claim gate unavailable; claiming unguarded");
                    }
                    self.metrics.gate_errors.inc();
                    return GateAnswer::Unguarded;
                }
            };
            let (a, b) = (int(answer.get(1)), int(answer.get(2)));
            match (int(answer.first()), a, b) {
                (Some(1), Some(deadline), _) => return GateAnswer::Reserved { deadline },
                (Some(2), Some(deadline), Some(now)) => return GateAnswer::InFlight { deadline, now },
                (Some(3), _, _) => {
                    return GateAnswer::Claimed(text(answer.get(1)).filter(|m| m != "C"));
                }
                (Some(4), Some(earliest), Some(now)) => return GateAnswer::Busy { earliest, now },
                (Some(0), _, _) => return GateAnswer::SoldOut,
                (Some(-1), _, _) => {
                    if let Err(e) = self.rebuild(campaign, false).await {
                        tracing::warn!(error = %e, campaign = campaign.id, "claim gate build failed");
                        self.metrics.gate_errors.inc();
                        return GateAnswer::Unguarded;
                    }
                }
                _ => {
                    tracing::warn!(answer = ?answer, "unexpected claim gate answer");
                    return GateAnswer::Unguarded;
                }
            }
        }
        GateAnswer::Unguarded
    }

    /// Run a correction; a failure is logged (the reconciler or the next
    /// build corrects the count).
    async fn correct(&self, script: &Script, campaign_id: i64, args: &[String]) {
        if let Err(e) = self.call(script, campaign_id, args).await {
            self.correction_failed(&e);
        }
    }

    fn correction_failed(&self, e: &GateError) {
        if !matches!(e, GateError::Redis(r) if redis_breaker::is_fail_fast(r)) {
            tracing::warn!(error = %e, "claim gate correction failed");
        }
        self.metrics.gate_errors.inc();
    }

    pub(super) async fn committed(&self, campaign_id: i64, visitor: &str, claim_json: &str) {
        let args = vec![visitor.to_owned(), claim_json.to_owned()];
        if let Err(e) = self.commits.call(campaign_id, || self.key_list(campaign_id), args).await {
            self.correction_failed(&e.into());
        }
    }

    pub(super) async fn undo(&self, campaign_id: i64, visitor: &str) {
        self.correct(&self.scripts.undo, campaign_id, &[visitor.to_owned()]).await;
    }

    pub(super) async fn sold_out(&self, campaign_id: i64, visitor: &str) {
        self.correct(&self.scripts.sold_out, campaign_id, &[visitor.to_owned()]).await;
    }

    pub(super) async fn expired(&self, campaign_id: i64, limit: usize) -> Result<Vec<Lease>, GateError> {
        let answer = self.call(&self.scripts.expired, campaign_id, &[limit.to_string()]).await?;
        let Value::Array(items) = answer else { return Err(GateError::Unexpected(format!("{answer:?}"))) };
        Ok(items[1.min(items.len())..]
            .chunks(2)
            .filter_map(|pair| Some(Lease { visitor: text(pair.first())?, deadline: int(pair.get(1))? }))
            .collect())
    }

    pub(super) async fn settle(&self, campaign_id: i64, lease: &Lease, claimed: bool) -> Result<bool, GateError> {
        let verdict = if claimed { "claimed" } else { "free" };
        let args = [lease.visitor.clone(), lease.deadline.to_string(), verdict.to_owned()];
        Ok(int(Some(&self.call(&self.scripts.settle, campaign_id, &args).await?)) == Some(1))
    }

    pub(super) async fn counts(&self, campaign_id: i64) -> Result<Option<GateCounts>, GateError> {
        let answer = self.call(&self.scripts.counts, campaign_id, &[]).await?;
        let Value::Array(v) = answer else { return Err(GateError::Unexpected(format!("{answer:?}"))) };
        if v.is_empty() {
            return Ok(None);
        }
        match (int(v.first()), int(v.get(1)), int(v.get(2)), int(v.get(3))) {
            (Some(total), Some(free), Some(issued), Some(reserved)) => {
                Ok(Some(GateCounts { total, free, reserved, issued }))
            }
            _ => Err(GateError::Unexpected(format!("{v:?}"))),
        }
    }

    /// Build the gate from the database into a staging key, then install it
    /// if there is none (or always, with `replace`).
    pub(super) async fn rebuild(&self, campaign: &CampaignRow, replace: bool) -> Result<(), GateError> {
        let lock = self.building.entry(campaign.id).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let (hash, leases) = self.keys(campaign.id);
        if !replace {
            let hash = hash.as_str();
            let exists: bool =
                self.link
                    .run(|mut conn| async move {
                        redis::cmd("HEXISTS").arg(hash).arg("#total").query_async(&mut conn).await
                    })
                    .await?;
            if exists {
                return Ok(());
            }
        }
        let (counts, claimants) = snapshot(&self.store, campaign).await?;
        let staging = format!("{hash}:staging:{}", uuid::Uuid::new_v4().simple());
        // A crashed build must not leave its staging key behind.
        let mut first = redis::pipe();
        first.cmd("HSET").arg(&staging).arg("#total").arg(counts.total).arg("#free").arg(counts.free);
        first.arg("#issued").arg(counts.issued).ignore();
        first.cmd("PEXPIRE").arg(&staging).arg(60_000).ignore();
        let mut pipes = vec![first];
        // Claimants in pipelines of a bounded size, so each one answers well
        // within `redis.response_timeout` however large the campaign.
        for group in claimants.chunks(CLAIMANTS_PER_PIPELINE) {
            let mut pipe = redis::pipe();
            for chunk in group.chunks(1000) {
                let mut hset = redis::cmd("HSET");
                hset.arg(&staging);
                for visitor in chunk {
                    hset.arg(visitor).arg("C");
                }
                pipe.add_command(hset).ignore();
            }
            pipes.push(pipe);
        }
        for pipe in &pipes {
            self.link.run(|mut conn| async move { pipe.query_async::<()>(&mut conn).await }).await?;
        }
        let keep_until = campaign.closes_at.max(crate::clock::now_ms()).saturating_add(KEEP_AFTER_CLOSE_MS);
        let mut install = self.scripts.install.key(&hash);
        install.key(&staging).key(&leases).arg(keep_until).arg(if replace { "1" } else { "0" });
        let install = &install;
        let installed: i64 = self.link.run(|mut conn| async move { install.invoke_async(&mut conn).await }).await?;
        if installed == 1 {
            self.metrics.gate_rebuilds.inc();
            tracing::info!(
                campaign = campaign.id,
                free = counts.free,
                issued = counts.issued,
                replace,
                "claim gate built"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Redis Cluster hashes: the text between the first `{` and the
    /// first `}` after it, if not empty; else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn every_key_of_a_campaigns_scripts_shares_one_hash_tag() {
        for prefix in ["bc", "{bc}", "a{b", "x}y", "bcc0123"] {
            for campaign in [1, 7, 123_456] {
                let (hash, leases) = gate_keys(prefix, campaign);
                let staging = format!("{hash}:staging:{}", uuid::Uuid::new_v4().simple());
                let tag = hash_tag(&hash);
                assert_eq!(hash_tag(&leases), tag, "{prefix} {campaign}");
                assert_eq!(hash_tag(&staging), tag, "{prefix} {campaign}");
                if !prefix.contains('{') {
                    assert_eq!(tag, format!("gate:{campaign}"), "one slot per campaign, spread over the cluster");
                }
            }
        }
        assert_ne!(hash_tag(&gate_keys("bc", 1).0), hash_tag(&gate_keys("bc", 2).0));
    }
}

/// The batched scripts on a real Redis (127.0.0.1:6379, a key prefix of its
/// own): one call answers each visitor as single calls in that order would.
#[cfg(test)]
mod batched {
    #![allow(clippy::unwrap_used)]

    use redis::{Script, Value};

    use super::{ADMIT, COMMITTED, NOW, gate_keys, int, text};

    async fn conn() -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        client.get_multiplexed_async_connection().await.unwrap()
    }

    fn items(v: Value) -> Vec<Vec<Value>> {
        let Value::Array(items) = v else { panic!("not an array: {v:?}") };
        items.into_iter().map(|i| if let Value::Array(a) = i { a } else { panic!("not an array: {i:?}") }).collect()
    }

    async fn counts(c: &mut redis::aio::MultiplexedConnection, hash: &str, leases: &str) -> (i64, i64, i64, i64) {
        let (total, free, issued): (i64, i64, i64) =
            redis::cmd("HMGET").arg(hash).arg("#total").arg("#free").arg("#issued").query_async(c).await.unwrap();
        let reserved: i64 = redis::cmd("ZCARD").arg(leases).query_async(c).await.unwrap();
        (total, free, issued, reserved)
    }

    #[tokio::test]
    async fn one_call_answers_each_visitor_as_single_calls_in_turn_would() {
        let mut c = conn().await;
        let prefix = format!("bcgate{}", uuid::Uuid::new_v4().simple());
        let (hash, leases) = gate_keys(&prefix, 1);
        let admit = Script::new(&format!("{NOW}{ADMIT}"));
        let ask = |visitors: &[&str]| {
            let mut inv = admit.key(&hash);
            inv.key(&leases).arg(30_000);
            for v in visitors {
                inv.arg(*v);
            }
            inv
        };

        // No gate yet: every visitor of the call is told to build it.
        let answer = items(ask(&["a", "b"]).invoke_async(&mut c).await.unwrap());
        assert_eq!(answer.iter().map(|a| int(a.first())).collect::<Vec<_>>(), [Some(-1), Some(-1)]);

        // Stock 3: one code held by "old", two free.
        let _: () = redis::cmd("HSET")
            .arg(&hash)
            .arg("#total")
            .arg(3)
            .arg("#free")
            .arg(2)
            .arg("#issued")
            .arg(1)
            .arg("old")
            .arg("{\"code\":\"X\"}")
            .query_async(&mut c)
            .await
            .unwrap();
        let _: () = redis::cmd("PEXPIRE").arg(&hash).arg(60_000).query_async(&mut c).await.unwrap();
        // a is admitted, asks again in the same call (its lease runs), old
        // holds a code, b takes the last unit, c finds only leases left.
        let answer = items(ask(&["a", "a", "old", "b", "c"]).invoke_async(&mut c).await.unwrap());
        let kinds: Vec<_> = answer.iter().map(|a| int(a.first())).collect();
        assert_eq!(kinds, [Some(1), Some(2), Some(3), Some(1), Some(4)], "{answer:?}");
        let deadline_a = int(answer[0].get(1)).unwrap();
        assert_eq!(int(answer[1].get(1)), Some(deadline_a), "a's second ask names its lease");
        assert_eq!(text(answer[2].get(1)).as_deref(), Some("{\"code\":\"X\"}"));
        assert_eq!(int(answer[4].get(1)), Some(deadline_a), "the earliest lease is a's");
        assert_eq!(counts(&mut c, &hash, &leases).await, (3, 0, 1, 2));
        let ttl: i64 = redis::cmd("PTTL").arg(&leases).query_async(&mut c).await.unwrap();
        assert!(ttl > 0, "the leases expire with the gate");

        // Both commit in one call: their leases become issued.
        let committed = Script::new(COMMITTED);
        let mut inv = committed.key(&hash);
        inv.key(&leases).arg("a").arg("{\"code\":\"A\"}").arg("b").arg("C");
        let answer: Value = inv.invoke_async(&mut c).await.unwrap();
        assert_eq!(answer, Value::Array(vec![Value::Int(1), Value::Int(1)]));
        assert_eq!(counts(&mut c, &hash, &leases).await, (3, 0, 3, 0));

        // Nothing free, nothing reserved: sold out, and a committed visitor
        // is answered with their claim.
        let answer = items(ask(&["c", "a"]).invoke_async(&mut c).await.unwrap());
        assert_eq!(int(answer[0].first()), Some(0));
        assert_eq!(int(answer[1].first()), Some(3));
        assert_eq!(text(answer[1].get(1)).as_deref(), Some("{\"code\":\"A\"}"));

        let _: () = redis::cmd("DEL").arg(&hash).arg(&leases).query_async(&mut c).await.unwrap();
    }
}
