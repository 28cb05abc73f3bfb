//! The Redis queue store, shared by any number of proxy instances.
//!
//! # Key layout (one queue; `{…}` is the hash tag, so a queue lives on one
//! Cluster slot and its scripts may touch all of its keys)
//!
//! ```text
//! {<prefix>:<queue>}:seq        counter   join sequence (INCR), the FIFO order
//! {<prefix>:<queue>}:line       zset      waiting visitor -> sequence number
//! {<prefix>:<queue>}:seen       zset      waiting visitor -> last seen (ms)
//! {<prefix>:<queue>}:sessions   zset      admitted visitor -> session end (ms)
//! {<prefix>:<queue>}:admitted   hash      admitted visitor -> admission time (ms)
//! {<prefix>:<queue>}:tick       hash      last_ms, tick, released, abandoned, seq and joined
//!                                         (the join sequence at the last tick, places added before it)
//! {<prefix>:<queue>}:places     zset      "<client>:<visitor>" (score 0) per waiting place of a client
//! {<prefix>:<queue>}:place_of   hash      waiting visitor -> client (to forget the place on leaving)
//! {<prefix>:<queue>}:proof:<s>  string    a spent challenge seed, until a minute past its expiry
//! {<prefix>:<queue>}:settings   hash      json, version: live settings shared by all instances
//! {<prefix>:<queue>}:signals    hash      samples, errors, arrived, b<i>: the reports since the last tick
//! {<prefix>:<queue>}:inflight   hash      instance -> "<requests in flight> <ms>"
//! {<prefix>:<queue>}:pending    zset      released visitor -> admission (ms), until their first request
//! {<prefix>:<queue>}:noshow     zset      no-show -> session end (ms)
//! {<prefix>:<queue>}:controller hash      n, tick, reason, epoch, record: the adaptive controller's last decision
//! {<prefix>:<queue>}:ticklog    list      "<tick> <ms> <n> <released> <waiting> <mode> <reason>", last 1000
//! {<prefix>:<queue>}:events     channel   "<tick> <now> <released> <abandoned> <waiting>" and
//!                                         "pressure <tick> <joined>" per tick,
//!                                         "settings <version>" per settings change
//! ```
//!
//! `<client>` is a keyed hash of the client address (`challenge::Keys::client_tag`),
//! never the address itself.
//!
//! # Scripts
//!
//! - `standing.lua`: join or status in one step (session check, rank, free
//!   entry, append with the next sequence number).
//! - `release.lua`: the tick. Reads Redis `TIME` and the `last_ms` marker and
//!   releases only when a full tick has passed since the last release by any
//!   instance; prunes expired sessions, drops abandoned visitors, pops up to N
//!   from the head, records their sessions and publishes a tick message.
//! - `standings.lua`: read-only standings of many visitors in one round trip.
//! - `report.lua`: an instance's measurements (latency histogram, errors,
//!   in flight, arrivals) added to the window the next tick closes; the
//!   tick hands the merged window to the one caller that ticked.
//!
//! # Deployments and acknowledged writes
//!
//! The store runs on one server, a Redis Cluster or a Sentinel-watched
//! primary ([`super::connection`]). With `store.wait_replicas = n`, every
//! write a caller reports as done (a join, a tick, an ended session, saved
//! settings) is pipelined with `WAIT n <response_timeout / 2>` and fails
//! unless n replicas hold it, so a failover to any of them keeps it. Reads
//! never wait. Other instances may read such a write (or hear its pub/sub
//! message) before the replicas hold it; only the answer to the caller
//! waits.

use async_trait::async_trait;
use std::time::Duration;

use redis::{Script, Value};
use shared::visitor::VisitorId;

use super::connection::Conn;
use super::{
    Draw, JoinChecks, JoinKind, LotteryRecord, Params, Place, Placed, Proof, QueueStore, Release, Report,
    SPENT_GRACE_MS, SharedSettings, Standing, Stats, StoreError, TickLog, Window,
};

/// Redis-backed queues.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    scripts: &'static Scripts,
    /// `store.wait_replicas` and how long `WAIT` may take; `None` = don't wait.
    wait: Option<(u32, Duration)>,
}

struct Scripts {
    standing: Script,
    release: Script,
    standings: Script,
    save_settings: Script,
    end_session: Script,
    revoked: Script,
    report: Script,
    save_decision: Script,
    draw: Script,
    lottery: Script,
    save_catalog: Script,
    purge: Script,
}

fn scripts() -> &'static Scripts {
    static SCRIPTS: std::sync::OnceLock<Scripts> = std::sync::OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        standing: Script::new(include_str!("lua/standing.lua")),
        release: Script::new(include_str!("lua/release.lua")),
        standings: Script::new(include_str!("lua/standings.lua")),
        end_session: Script::new(include_str!("lua/end_session.lua")),
        report: Script::new(include_str!("lua/report.lua")),
        // KEYS: controller, epoch; ARGV: tick, n, reason, record. A decision
        // of an older tick of the same line never replaces a newer one (a
        // line the store lost counts ticks from 1 again).
        save_decision: Script::new(
            "local epoch = redis.call('GET', KEYS[2]) or '' \
             local c = redis.call('HMGET', KEYS[1], 'tick', 'epoch') \
             if c[2] == epoch and tonumber(c[1] or '-1') >= tonumber(ARGV[1]) then return 0 end \
             redis.call('HSET', KEYS[1], 'tick', ARGV[1], 'epoch', epoch, 'n', ARGV[2], 'reason', ARGV[3], \
               'record', ARGV[4]) \
             return 1",
        ),
        // KEYS: revoked, revoked_until; ARGV: visitor. The last revoked iat,
        // or -1 (none, or kept no longer).
        revoked: Script::new(
            "local t = redis.call('TIME') \
             local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) \
             if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[1]) or '0') <= now then return -1 end \
             return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')",
        ),
        draw: Script::new(include_str!("lua/draw.lua")),
        // KEYS: lottery; ARGV: a seed to store if there is none ("" = just
        // read). Returns {seed, committed_at, drawn_at, order} ("" = none).
        lottery: Script::new(
            "if ARGV[1] ~= '' and redis.call('HEXISTS', KEYS[1], 'seed') == 0 then \
               local t = redis.call('TIME') \
               redis.call('HSET', KEYS[1], 'seed', ARGV[1], \
                 'committed_at', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)) \
             end \
             local l = redis.call('HMGET', KEYS[1], 'seed', 'committed_at', 'drawn_at', 'order') \
             return {l[1] or '', l[2] or '', l[3] or '', l[4] or ''}",
        ),
        // KEYS: catalog; ARGV: expected version, json, channel. Saves only
        // over the version the caller read: {1, new} or {0, stored}.
        save_catalog: Script::new(
            "local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0') \
             if v ~= tonumber(ARGV[1]) then return {0, v} end \
             v = v + 1 \
             redis.call('HSET', KEYS[1], 'json', ARGV[2], 'version', v) \
             redis.call('PUBLISH', ARGV[3], 'catalog ' .. v) \
             return {1, v}",
        ),
        // KEYS: every key of one queue (one hash slot). Spent challenge
        // seeds are left to expire on their own.
        purge: Script::new("for _, k in ipairs(KEYS) do redis.call('UNLINK', k) end return #KEYS"),
        save_settings: Script::new(
            "local v = redis.call('HINCRBY', KEYS[1], 'version', 1) \
             redis.call('HSET', KEYS[1], 'json', ARGV[1]) \
             redis.call('PUBLISH', ARGV[2], 'settings ' .. v) \
             return v",
        ),
    })
}

/// Visitors per script call when reading or touching many at once, so one call
/// never blocks Redis for long.
const BATCH: usize = 2000;

fn err(e: redis::RedisError) -> StoreError {
    if e.is_timeout() && !e.to_string().starts_with(super::TIMED_OUT) {
        return StoreError(format!("{}: {e}", super::TIMED_OUT));
    }
    StoreError(e.to_string())
}

/// Every key of one queue (spent challenge seeds aside, which expire): what
/// [`QueueStore::purge`] removes. The key table above lists them.
const QUEUE_KEYS: [&str; 21] = [
    "seq",
    "line",
    "seen",
    "sessions",
    "admitted",
    "tick",
    "places",
    "place_of",
    "settings",
    "signals",
    "inflight",
    "pending",
    "noshow",
    "controller",
    "ticklog",
    "epoch",
    "lottery",
    "entrants",
    "honoured",
    "revoked",
    "revoked_until",
];

/// The keys of one queue.
pub struct Keys {
    base: String,
}

impl Keys {
    /// Keys of `queue` under `prefix`.
    pub fn new(prefix: &str, queue: &str) -> Self {
        Keys { base: format!("{{{prefix}:{queue}}}") }
    }
    /// A key of this queue: `line`, `seen`, `sessions`, `admitted`, `seq`, `tick`, `events`.
    pub fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.base)
    }
}

impl RedisStore {
    /// Connect to `url`; all keys start with `{<prefix>:`. Call this inside the
    /// runtime that will live as long as the store (a Pingora service's runtime).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, prefix, &crate::config::StoreConfig::default()).await
    }

    /// Connect to the single server at `url` with `config`'s timeouts and retries.
    pub async fn connect_with(
        url: &str,
        prefix: &str,
        config: &crate::config::StoreConfig,
    ) -> Result<Self, StoreError> {
        let config = crate::config::StoreConfig {
            redis_url: url.to_owned(),
            key_prefix: prefix.to_owned(),
            cluster_nodes: Vec::new(),
            sentinel: None,
            ..config.clone()
        };
        Self::open(&config).await
    }

    /// Connect to the deployment `config` names (one server, a cluster, or
    /// a primary found through sentinels), keys under `config.key_prefix`.
    pub async fn open(config: &crate::config::StoreConfig) -> Result<Self, StoreError> {
        let conn = Conn::connect(config).await.map_err(err)?;
        // The server answers WAIT before the client gives up on it, so a
        // slow replica reads as "too few replicas", not as a dead primary.
        let wait = (config.wait_replicas > 0).then(|| (config.wait_replicas, config.response_timeout / 2));
        Ok(RedisStore { conn, prefix: config.key_prefix.clone(), scripts: scripts(), wait })
    }

    /// Run a script whose write a visitor (or an operator) will be told
    /// about. With `wait_replicas`, `WAIT` follows it in one pipeline, so
    /// both travel on one connection to one node whatever reconnects or
    /// failovers happen around them (a `WAIT` on another connection would
    /// count none of this write). `WAIT` covers every earlier write of that
    /// connection, other callers' too (it is multiplexed): stronger than
    /// needed, never weaker. The second value says whether enough replicas
    /// acknowledged (always true without `wait_replicas`).
    async fn acknowledged<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<(T, Result<(), StoreError>), StoreError> {
        let mut conn = self.conn.clone();
        let Some((replicas, timeout)) = self.wait else {
            return Ok((call.invoke_async(&mut conn).await.map_err(err)?, Ok(())));
        };
        let mut pipe = redis::pipe();
        pipe.invoke_script(call).cmd("WAIT").arg(replicas).arg(u64::try_from(timeout.as_millis()).unwrap_or(1));
        let (value, acked): (T, i64) = match pipe.query_async(&mut conn).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                call.load_async(&mut conn).await.map_err(err)?;
                pipe.query_async(&mut conn).await.map_err(err)?
            }
            other => other.map_err(err)?,
        };
        let enough = if acked >= i64::from(replicas) {
            Ok(())
        } else {
            Err(StoreError::unreplicated(&format!("{acked} of {replicas} within {timeout:?}")))
        };
        Ok((value, enough))
    }

    /// The catalog of queues and the channel announcing its versions; a
    /// hash tag of their own, apart from every queue's.
    pub fn catalog_keys(prefix: &str) -> (String, String) {
        (format!("{{{prefix}}}:catalog"), format!("{{{prefix}}}:catalog:events"))
    }

    /// The keys of `queue`.
    pub fn keys(&self, queue: &str) -> Keys {
        Keys::new(&self.prefix, queue)
    }

    async fn standing_script(
        &self,
        queue: &str,
        visitor: VisitorId,
        mode: &str,
        p: &Params,
        checks: &JoinChecks,
    ) -> Result<Placed, StoreError> {
        let k = self.keys(queue);
        let (proof, seed, remember_ms) = match &checks.proof {
            Proof::NotRequired => ("", "-", 0),
            Proof::Missing => ("missing", "-", 0),
            // Remembered by the store's clock: until a minute past the expiry the issuing instance set.
            Proof::Solved { seed, expires_at_ms } => {
                ("solved", seed.as_str(), (expires_at_ms + SPENT_GRACE_MS - crate::clock::now_ms()).max(1))
            }
        };
        let (ticket_epoch, ticket_seq) = match checks.ticket {
            Some(t) => (epoch_id(t.epoch), t.seq.to_string()),
            None => (String::new(), String::new()),
        };
        let mut call = self.scripts.standing.prepare_invoke();
        call.key(k.key("line"))
            .key(k.key("seen"))
            .key(k.key("sessions"))
            .key(k.key("admitted"))
            .key(k.key("seq"))
            .key(k.key("places"))
            .key(k.key("place_of"))
            .key(k.key(&format!("proof:{seed}")))
            .key(k.key("epoch"))
            .key(k.key("honoured"))
            .key(k.key("entrants"))
            .arg(visitor.to_string())
            .arg(mode)
            .arg(p.free_entry)
            .arg(p.max_active)
            .arg(p.session_ms)
            .arg(p.abandon_after_ms)
            .arg(if p.queue_all { "1" } else { "0" })
            .arg(checks.client.as_deref().unwrap_or(""))
            .arg(checks.max_per_client)
            .arg(proof)
            .arg(remember_ms)
            .arg(epoch_id(new_epoch()))
            .arg(ticket_epoch)
            .arg(ticket_seq)
            .arg(p.entrants_until_ms)
            // A paused queue lets nobody in, passthrough or not.
            .arg(if p.paused { "fifo" } else { p.mode.label() });
        type Reply = (String, i64, i64, String, String, String);
        let (kind, a, b, join_kind, epoch, seq): Reply = if mode == "join" {
            let (reply, acknowledged) = self.acknowledged(&call).await?;
            acknowledged?;
            reply
        } else {
            call.invoke_async(&mut self.conn.clone()).await.map_err(err)?
        };
        let standing = match kind.as_str() {
            "READY" => Standing::Ready { admitted_at_ms: a, expires_at_ms: b },
            "WAITING" => Standing::Waiting { position: to_u64(a), waiting: to_u64(b) },
            _ => Standing::NotInQueue,
        };
        let join_kind = match join_kind.as_str() {
            "joined" => JoinKind::Joined,
            "free" => JoinKind::FreeEntry,
            "rejoined" => JoinKind::Rejoined,
            "restored" => JoinKind::Restored,
            "client_full" => JoinKind::ClientFull,
            "challenge" => JoinKind::NeedsChallenge,
            "spent" => JoinKind::ChallengeSpent,
            _ => JoinKind::Existing,
        };
        // Sequence numbers are whole (Redis prints them as such; a float
        // would be a corrupted line, and then no place is signed).
        let place = match (parse_epoch(&epoch), seq.parse::<u64>()) {
            (Some(epoch), Ok(seq)) if matches!(standing, Standing::Waiting { .. }) => Some(Place { epoch, seq }),
            _ => None,
        };
        Ok(Placed { standing, kind: join_kind, place })
    }
}

/// A fresh random epoch id, offered with every call that may find a line
/// without one (the store keeps the first).
fn new_epoch() -> u64 {
    rand::random::<u64>() | 1
}

/// An epoch as the store keeps it: 16 hex digits.
pub fn epoch_id(epoch: u64) -> String {
    format!("{epoch:016x}")
}

/// A message on a queue's channel (`{p:q}:events`), as the scripts and
/// instances publish them (the key table in ARCHITECTURE.md lists them).
/// The wire format is the store's; everyone else reads these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A tick happened: `<tick> <now_ms> <released> <abandoned> <waiting>`.
    Tick {
        /// The tick's number.
        tick: u64,
        /// The store's time of the tick (ms).
        now_ms: i64,
        /// Visitors it released.
        released: u64,
        /// Visitors still waiting after it.
        waiting: u64,
    },
    /// The line's epoch, just before each tick message: `epoch <id> <tick>`.
    Epoch(u64),
    /// Places added in the interval before a tick: `pressure <tick> <joined>`.
    Pressure {
        /// How many.
        joined: u64,
    },
    /// Live settings were saved: `settings <version>`.
    Settings,
    /// The lottery was drawn: `drawn`.
    Drawn,
    /// A purchase ended a session: `revoke <visitor> <iat> <until_ms>`.
    Revoke {
        /// The visitor id (as text).
        visitor: String,
        /// The `iat` (s) of the admission whose tokens are revoked.
        iat: i64,
        /// Until when the revocation is kept (ms).
        until_ms: i64,
    },
}

impl Event {
    /// Read a message; `None` for anything else (a newer instance's
    /// message this one does not know, garbage).
    pub fn parse(payload: &str) -> Option<Event> {
        let mut words = payload.split(' ');
        let first = words.next()?;
        let rest: Vec<&str> = words.collect();
        match (first, rest.as_slice()) {
            ("settings", _) => Some(Event::Settings),
            ("drawn", []) => Some(Event::Drawn),
            ("epoch", [id, ..]) => u64::from_str_radix(id, 16).ok().map(Event::Epoch),
            ("pressure", [_, joined]) => joined.parse().ok().map(|joined| Event::Pressure { joined }),
            ("revoke", [visitor, iat, until]) => Some(Event::Revoke {
                visitor: (*visitor).to_owned(),
                iat: iat.parse().ok()?,
                until_ms: until.parse().ok()?,
            }),
            (tick, [now, released, _abandoned, waiting]) => Some(Event::Tick {
                tick: tick.parse().ok()?,
                now_ms: now.parse().ok()?,
                released: released.parse().ok()?,
                waiting: waiting.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// The channel carrying `queue`'s [`Event`]s under `prefix`.
pub fn events_channel(prefix: &str, queue: &str) -> String {
    Keys::new(prefix, queue).key("events")
}

/// An epoch read back from the store.
fn parse_epoch(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok().filter(|e| *e != 0)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn int(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Int(i)) => *i,
        Some(Value::BulkString(b)) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
        _ => 0,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// The window of release.lua: {samples, errors, in_flight, arrived,
/// no_shows, bucket, count, ...}.
fn window(v: &Value) -> Window {
    let Value::Array(items) = v else { return Window::default() };
    let at = |i: usize| to_u64(int(items.get(i)));
    let mut buckets = vec![0; crate::adaptive::BUCKETS];
    for pair in items.get(5..).unwrap_or_default().chunks_exact(2) {
        let (b, c) = (to_u64(int(Some(&pair[0]))), to_u64(int(Some(&pair[1]))));
        if let Some(slot) = usize::try_from(b).ok().and_then(|b| buckets.get_mut(b)) {
            *slot += c;
        }
    }
    Window { buckets, samples: at(0), errors: at(1), in_flight: at(2), arrived: at(3), no_shows: at(4) }
}

/// One entry of the tick log: "<tick> <ms> <n> <released> <waiting> <mode> <reason>".
fn tick_log(line: &str) -> Option<TickLog> {
    let f: Vec<&str> = line.split(' ').collect();
    let [tick, at_ms, n, released, waiting, mode, reason] = f[..] else { return None };
    Some(TickLog {
        tick: tick.parse().ok()?,
        at_ms: at_ms.parse().ok()?,
        n: n.parse().ok()?,
        released: released.parse().ok()?,
        waiting: waiting.parse().ok()?,
        mode: mode.to_owned(),
        reason: reason.to_owned(),
    })
}

fn visitor(v: &Value) -> Option<VisitorId> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

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
            serde_json::from_str(&json).map_err(|e| StoreError(format!("stored settings are unreadable: {e}")))?;
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
        let json = serde_json::to_string(settings).map_err(|e| StoreError(e.to_string()))?;
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
        let json = serde_json::to_string(record).map_err(|e| StoreError(format!("cannot encode a decision: {e}")))?;
        let mut call = self.scripts.save_decision.prepare_invoke();
        call.key(k.key("controller")).key(k.key("epoch")).arg(record.tick).arg(record.n).arg(&record.reason).arg(json);
        let mut conn = self.conn.clone();
        let saved: i64 = call.invoke_async(&mut conn).await.map_err(err)?;
        Ok(saved == 1)
    }

    async fn ticks(&self, queue: &str, limit: usize) -> Result<Vec<TickLog>, StoreError> {
        let key = self.keys(queue).key("ticklog");
        let last = isize::try_from(limit.clamp(1, super::TICK_LOG)).unwrap_or(1) - 1;
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

#[cfg(test)]
mod event_tests {
    use super::Event;
    use proptest::prelude::*;

    #[test]
    fn every_message_the_scripts_publish_reads_back() {
        assert_eq!(
            Event::parse("12 1700000000123 5 1 40"),
            Some(Event::Tick { tick: 12, now_ms: 1_700_000_000_123, released: 5, waiting: 40 })
        );
        assert_eq!(Event::parse("epoch 00ff00ff00ff00ff 12"), Some(Event::Epoch(0x00ff_00ff_00ff_00ff)));
        assert_eq!(Event::parse("pressure 12 300"), Some(Event::Pressure { joined: 300 }));
        assert_eq!(Event::parse("settings 7"), Some(Event::Settings));
        assert_eq!(Event::parse("drawn"), Some(Event::Drawn));
        assert_eq!(
            Event::parse("revoke abc 1700000000 1700000600000"),
            Some(Event::Revoke { visitor: "abc".into(), iat: 1_700_000_000, until_ms: 1_700_000_600_000 })
        );
        for garbage in ["", "epoch", "epoch xyz 1", "pressure 1", "1 2 3", "revoke a b c", "-1 2 3 4 5", "hello"] {
            assert_eq!(Event::parse(garbage), None, "{garbage:?}");
        }
    }

    proptest! {
        /// A channel carries whatever anyone publishes: never a panic.
        #[test]
        fn any_payload_parses_or_is_ignored(payload in ".{0,64}") {
            let _ = Event::parse(&payload);
        }
    }
}
