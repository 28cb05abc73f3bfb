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

use std::time::Duration;

use redis::{Script, Value};
use shared::visitor::VisitorId;

use super::connection::Conn;
use super::{
    Draw, JoinChecks, JoinKind, LotteryRecord, Params, Place, Placed, Proof, QueueStore, Release, Report,
    SPENT_GRACE_MS, SharedSettings, Standing, Stats, StoreError, TickLog,
};

mod decode;
mod events;
mod queue_store;

use decode::to_u64;
pub use events::{Event, epoch_id, events_channel};
use events::{new_epoch, parse_epoch};

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
    StoreError::Redis(e)
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
            Err(StoreError::Unreplicated(format!("{acked} of {replicas} within {timeout:?}")))
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
