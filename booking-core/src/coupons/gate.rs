//! The claim gate: an atomic "already claimed? any left? take one" step in
//! front of the database, so that only would-be winners reach it.
//!
//! The gate never decides a win — the database does ([`crate::store::coupons`]).
//! It decides who may *try*: a visitor it has seen is a duplicate, and once its
//! count reaches zero everyone else is told "sold out" without a database
//! round trip. If the commit then fails, the admission is undone.
//!
//! With Redis, the gate of campaign `c` is one hash `<prefix>:{gate:c}` holding
//! `#stock` (codes not yet promised) and one field per admitted visitor; each
//! step is one Lua script, so duplicate check, stock check, decrement and
//! marking cannot interleave (the retailer's SADD + INCR did, and over-issued).
//! If the hash is missing — first use, Redis flushed or restarted — it is
//! rebuilt from the database (codes left, visitors who hold one) into a staging
//! key and renamed into place only if nobody installed one meanwhile. A gate
//! rebuilt while claims were in flight may count a few codes as free that are
//! about to be taken; the database then refuses those extra admissions, so the
//! worst case is wasted work, never an extra coupon.
//!
//! Without Redis, an in-process gate does the same for the single instance.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use redis::Script;
use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::store::{CampaignRow, Store, StoreError};

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead and claim in the database (the gate counted one code for you).
    Admitted,
    /// You already claimed (or are claiming) in this campaign; the committed
    /// claim as the gate recorded it (JSON), when it has it.
    Duplicate(Option<String>),
    /// No codes left to promise.
    SoldOut,
    /// The gate could not answer (Redis unreachable); the database alone
    /// decides, which is slower but exactly as correct.
    Unguarded,
}

/// Returns -1 when the gate is missing (rebuild), 0 sold out, 1 admitted, and
/// for a duplicate 2 (claim in flight, or gate rebuilt) or the recorded claim.
const ADMIT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local mark = redis.call('HGET', KEYS[1], ARGV[1])
if mark then
  if mark == '1' then return 2 end
  return mark
end
local left = tonumber(redis.call('HGET', KEYS[1], '#stock') or '0')
if left <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], '#stock', -1)
redis.call('HSET', KEYS[1], ARGV[1], '1')
return 1
";

/// Give back an admission whose commit failed. ARGV[2] = '1': the visitor got
/// nothing, forget them (and only then return the code: if they are not in
/// this gate, it was rebuilt after their admission and already counts the code
/// as free). ARGV[2] = '0': they already hold a code; keep them, return the code.
const UNDO: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[2] == '1' then
  if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
end
redis.call('HINCRBY', KEYS[1], '#stock', 1)
return 1
";

/// The database has no free code left: nothing more to promise, ever (codes
/// are never un-claimed). Forget the visitor who was admitted in vain.
const SOLD_OUT: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], '#stock', 0)
return 1
";

/// Record a committed claim on the visitor's field (ARGV[2], JSON), so later
/// duplicates are answered without the database. Only an existing field is
/// written: a rebuilt gate must not get a field without its `#stock`.
const COMMITTED: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Install a staged rebuild unless a gate appeared meanwhile.
const INSTALL: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
";

/// Gate state kept after a campaign closes, for late duplicate answers.
const KEEP_AFTER_CLOSE_MS: i64 = 24 * 3600 * 1000;

/// The claim gate.
pub enum Gate {
    /// Single instance, no Redis.
    Local(Box<LocalGate>),
    /// Shared by every instance.
    Redis(Box<RedisGate>),
}

impl Gate {
    /// An in-process gate.
    pub fn local(store: Store) -> Gate {
        Gate::Local(Box::new(LocalGate { store, campaigns: DashMap::new() }))
    }

    /// A Redis gate with keys under `prefix`.
    pub fn redis(conn: ConnectionManager, prefix: &str, store: Store, metrics: Metrics) -> Gate {
        Gate::Redis(Box::new(RedisGate {
            conn,
            prefix: prefix.to_owned(),
            store,
            metrics,
            admit: Script::new(ADMIT),
            undo: Script::new(UNDO),
            sold_out: Script::new(SOLD_OUT),
            committed: Script::new(COMMITTED),
            install: Script::new(INSTALL),
            rebuilding: DashMap::new(),
        }))
    }

    /// Ask to claim.
    pub async fn admit(&self, campaign: &CampaignRow, visitor: &str) -> Admission {
        match self {
            Gate::Local(g) => g.admit(campaign, visitor).await,
            Gate::Redis(g) => g.admit(campaign, visitor).await,
        }
    }

    /// The commit failed: give the code back. `forget`: the visitor holds no
    /// code (false when the database said they already have one).
    pub async fn undo(&self, campaign: &CampaignRow, visitor: &str, forget: bool) {
        match self {
            Gate::Local(g) => g.undo(campaign.id, visitor, forget),
            Gate::Redis(g) => g.run(&g.undo, campaign.id, visitor, if forget { "1" } else { "0" }).await,
        }
    }

    /// The claim committed: remember it for duplicate answers.
    pub async fn committed(&self, campaign: &CampaignRow, visitor: &str, claim_json: &str) {
        match self {
            Gate::Local(g) => g.with_stock(campaign.id, |s| {
                if let Some(slot) = s.claimed.get_mut(visitor) {
                    *slot = Some(claim_json.to_owned());
                }
            }),
            Gate::Redis(g) => g.run(&g.committed, campaign.id, visitor, claim_json).await,
        }
    }

    /// The database is out of codes.
    pub async fn sold_out(&self, campaign: &CampaignRow, visitor: &str) {
        match self {
            Gate::Local(g) => g.sold_out(campaign.id, visitor),
            Gate::Redis(g) => g.run(&g.sold_out, campaign.id, visitor, "").await,
        }
    }
}

/// Codes left to promise and visitors promised one (with their claim once
/// committed), for one campaign.
#[derive(Debug)]
struct Stock {
    left: i64,
    claimed: HashMap<String, Option<String>>,
}

/// The in-process gate.
pub struct LocalGate {
    store: Store,
    /// Initialized once per campaign from the database. A std-style mutex
    /// guards the counts because nothing is awaited while it is held.
    campaigns: DashMap<i64, Arc<OnceCell<Mutex<Stock>>>>,
}

impl LocalGate {
    async fn stock(&self, campaign_id: i64) -> Result<Arc<OnceCell<Mutex<Stock>>>, StoreError> {
        let cell = self.campaigns.entry(campaign_id).or_default().clone();
        cell.get_or_try_init(|| async {
            let left = self.store.free_codes(campaign_id).await?;
            let claimed = self.store.claimants(campaign_id).await?.into_iter().map(|v| (v, None)).collect();
            Ok::<_, StoreError>(Mutex::new(Stock { left, claimed }))
        })
        .await?;
        Ok(cell)
    }

    async fn admit(&self, campaign: &CampaignRow, visitor: &str) -> Admission {
        let cell = match self.stock(campaign.id).await {
            Ok(cell) => cell,
            Err(e) => {
                tracing::warn!(error = %e, "could not load the claim gate; claiming unguarded");
                return Admission::Unguarded;
            }
        };
        let Some(stock) = cell.get() else { return Admission::Unguarded };
        let mut stock = stock.lock();
        if let Some(claim) = stock.claimed.get(visitor) {
            Admission::Duplicate(claim.clone())
        } else if stock.left <= 0 {
            Admission::SoldOut
        } else {
            stock.left -= 1;
            stock.claimed.insert(visitor.to_owned(), None);
            Admission::Admitted
        }
    }

    fn with_stock(&self, campaign_id: i64, f: impl FnOnce(&mut Stock)) {
        if let Some(cell) = self.campaigns.get(&campaign_id).map(|c| c.clone())
            && let Some(stock) = cell.get()
        {
            f(&mut stock.lock());
        }
    }

    fn undo(&self, campaign_id: i64, visitor: &str, forget: bool) {
        self.with_stock(campaign_id, |s| {
            if !forget || s.claimed.remove(visitor).is_some() {
                s.left += 1;
            }
        });
    }

    fn sold_out(&self, campaign_id: i64, visitor: &str) {
        self.with_stock(campaign_id, |s| {
            s.claimed.remove(visitor);
            s.left = 0;
        });
    }
}

/// The Redis gate.
pub struct RedisGate {
    conn: ConnectionManager,
    prefix: String,
    store: Store,
    metrics: Metrics,
    admit: Script,
    undo: Script,
    sold_out: Script,
    committed: Script,
    install: Script,
    /// One rebuild at a time per campaign in this process, so a flushed Redis
    /// under load costs one database snapshot per instance, not one per request.
    rebuilding: DashMap<i64, Arc<tokio::sync::Mutex<()>>>,
}

impl RedisGate {
    /// The gate's hash key. The `{…}` hash tag keeps the staging key in the
    /// same slot on a Redis cluster.
    fn key(&self, campaign_id: i64) -> String {
        format!("{}:{{gate:{campaign_id}}}", self.prefix)
    }

    async fn admit(&self, campaign: &CampaignRow, visitor: &str) -> Admission {
        let key = self.key(campaign.id);
        // Twice: a missing gate is rebuilt once, then asked again.
        for _ in 0..2 {
            let mut conn = self.conn.clone();
            let answer: redis::RedisResult<redis::Value> =
                self.admit.key(&key).arg(visitor).invoke_async(&mut conn).await;
            match answer {
                Ok(redis::Value::Int(1)) => return Admission::Admitted,
                Ok(redis::Value::Int(2)) => return Admission::Duplicate(None),
                Ok(redis::Value::BulkString(claim)) => {
                    return Admission::Duplicate(Some(String::from_utf8_lossy(&claim).into_owned()));
                }
                Ok(redis::Value::Int(0)) => return Admission::SoldOut,
                Ok(redis::Value::Int(-1)) => {
                    if let Err(e) = self.rebuild(campaign, &key).await {
                        tracing::warn!(error = %e, campaign = campaign.id, "claim gate rebuild failed");
                        self.metrics.gate_errors.inc();
                        return Admission::Unguarded;
                    }
                }
                Ok(other) => {
                    tracing::warn!(answer = ?other, "unexpected claim gate answer");
                    return Admission::Unguarded;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claim gate unavailable; claiming unguarded");
                    self.metrics.gate_errors.inc();
                    return Admission::Unguarded;
                }
            }
        }
        Admission::Unguarded
    }

    async fn rebuild(&self, campaign: &CampaignRow, key: &str) -> Result<(), RebuildError> {
        let lock = self.rebuilding.entry(campaign.id).or_default().clone();
        let _one_at_a_time = lock.lock().await;
        let mut conn = self.conn.clone();
        let exists: bool = redis::cmd("EXISTS").arg(key).query_async(&mut conn).await?;
        if exists {
            return Ok(());
        }
        // Free codes first, claimants second: a claim committing in between is
        // then counted as free and as claimed — an over-count the database
        // corrects — rather than neither, which would let a duplicate through.
        let left = self.store.free_codes(campaign.id).await?;
        let claimants = self.store.claimants(campaign.id).await?;
        let staging = format!("{key}:staging:{}", uuid::Uuid::new_v4().simple());
        let mut pipe = redis::pipe();
        pipe.cmd("HSET").arg(&staging).arg("#stock").arg(left).ignore();
        for chunk in claimants.chunks(1000) {
            let mut hset = redis::cmd("HSET");
            hset.arg(&staging);
            for visitor in chunk {
                hset.arg(visitor).arg(1);
            }
            pipe.add_command(hset).ignore();
        }
        // A crashed rebuild must not leave its staging key behind.
        pipe.cmd("PEXPIRE").arg(&staging).arg(60_000).ignore();
        pipe.query_async::<()>(&mut conn).await?;
        let keep_until = campaign.closes_at.max(crate::clock::now_ms()).saturating_add(KEEP_AFTER_CLOSE_MS);
        let installed: i64 = self.install.key(key).key(&staging).arg(keep_until).invoke_async(&mut conn).await?;
        if installed == 1 {
            self.metrics.gate_rebuilds.inc();
            tracing::info!(campaign = campaign.id, left, claimed = claimants.len(), "claim gate rebuilt");
        }
        Ok(())
    }

    async fn run(&self, script: &Script, campaign_id: i64, visitor: &str, flag: &str) {
        let mut conn = self.conn.clone();
        let done: redis::RedisResult<i64> =
            script.key(self.key(campaign_id)).arg(visitor).arg(flag).invoke_async(&mut conn).await;
        if let Err(e) = done {
            // The next rebuild (or the database) corrects the count.
            tracing::warn!(error = %e, "claim gate correction failed");
            self.metrics.gate_errors.inc();
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum RebuildError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
