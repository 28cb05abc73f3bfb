//! Fail fast on Redis trouble: every Redis call of the booking core goes
//! through one [`RedisLink`], a connection with explicit timeouts behind a
//! circuit [`Breaker`].
//!
//! - **Timeouts** (`[redis]`): each connection attempt gives up after
//!   `connect_timeout`, each reply after `response_timeout` (≤ 250 ms by
//!   default, since claims wait for the gate), and a lost connection is
//!   retried `retries` times before the next call starts over. Every call is
//!   also bounded by `response_timeout` as a whole, so a call never waits
//!   longer for a reconnect in progress either.
//! - **Breaker**: after [`breaker::FAILURES_TO_OPEN`] consecutive failures (timeouts,
//!   I/O, refused or dropped connections; not script errors) calls fail at
//!   once for [`breaker::OPEN_FOR`]; then one call is let through as a probe: success
//!   closes the breaker, failure opens it again. A probe whose future is
//!   dropped before it finished (its request was cancelled) reopens the way
//!   for the next probe at once, through a drop guard, so the breaker can
//!   never stay half-open.
//!
//! - **Deployments** ([`crate::config::RedisMode`]): one server
//!   (`redis.url`, a [`ConnectionManager`]); a Redis Cluster
//!   (`redis.cluster_nodes`, redis-rs `cluster_async`: each command goes to
//!   its key's slot, keyless ones such as `PING` and `TIME` to any one node);
//!   or a primary found through sentinels (`redis.sentinel`): a call failing
//!   with trouble (refused, dropped, timed out, `READONLY`) makes one task
//!   ask the sentinels again, and calls move to a new primary once they name
//!   one. Timeouts and breaker are the same in all three. Subscribers
//!   ([`RedisLink::subscribe`]) use the one server, any one cluster node, or
//!   the primary the sentinels name at that moment.
//!
//! What each user does while Redis is down: seat-map fan-out and view counts
//! are side effects, done off the request path and skipped while the breaker
//! is open; the claim gate answers "unguarded" and claims go to the database
//! alone (see [`crate::coupons`]); `/readyz` answers 503.

mod breaker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::sentinel::Sentinel;
use redis::{ErrorKind, FromRedisValue, RedisError, RedisFuture, RedisResult, Value};

use crate::config::{RedisConfig, RedisMode};

pub use self::breaker::{Breaker, is_fail_fast};
use self::breaker::{OPEN, is_trouble};

fn timed_out(what: &str, after: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} within {after:?}")))
}

/// `future`, given up (as a timeout error) after `after`.
async fn bounded<T>(what: &str, after: Duration, future: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(after, future).await.unwrap_or_else(|_| Err(timed_out(what, after)))
}

/// The connection one call gets: a single server's (a lone Redis, or the
/// primary the sentinels named) or a cluster's (each command goes to the
/// node serving its key's slot). Cheap to clone; use it with
/// `query_async`, `invoke_async` as any redis-rs connection.
#[derive(Clone)]
pub enum Conn {
    /// One server, reconnected by the manager.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// A command without keys (`PING`, `TIME`): on a cluster it goes to any
    /// one node (redis-rs would send `PING` to every primary), elsewhere to
    /// the one server.
    pub async fn keyless<T: FromRedisValue>(&mut self, cmd: redis::Cmd) -> RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => {
                let value = c.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random)).await?;
                T::from_redis_value(value).map_err(Into::into)
            }
        }
    }
}

/// Where the connection goes, and how a subscriber finds a server.
#[derive(Clone)]
enum Backend {
    /// `redis.url`.
    Single { client: redis::Client, conn: ConnectionManager },
    /// `redis.cluster_nodes`: a cluster connection; subscribers use any one
    /// of the configured nodes (`next` rotates through them on failure).
    Cluster { conn: ClusterConnection, nodes: Arc<[redis::Client]>, next: Arc<AtomicUsize> },
    /// `redis.sentinel`: the primary the sentinels name.
    Sentinel(Arc<Primary>),
}

/// Asks a group of sentinels which server is the primary.
struct Resolver {
    sentinel: tokio::sync::Mutex<Sentinel>,
    master_name: String,
    connect_timeout: Duration,
}

impl Resolver {
    /// The primary's client (redis-rs checks with `ROLE` that the server
    /// agrees it is the primary). Bounded by twice `connect_timeout`: one
    /// connection to a sentinel, one to the primary.
    async fn resolve(&self) -> RedisResult<redis::Client> {
        let mut sentinel = self.sentinel.lock().await;
        bounded("no primary from the sentinels", self.connect_timeout * 2, async {
            sentinel.async_master_for(&self.master_name, None).await
        })
        .await
    }

    /// Resolve and connect: (the primary's address, a connection to it).
    async fn connect(&self, manager: &ConnectionManagerConfig) -> RedisResult<(String, ConnectionManager)> {
        let client = self.resolve().await?;
        let conn = self.connect_to(&client, manager).await?;
        Ok((client.get_connection_info().addr().to_string(), conn))
    }

    /// A managed connection to `client`'s server.
    async fn connect_to(
        &self,
        client: &redis::Client,
        manager: &ConnectionManagerConfig,
    ) -> RedisResult<ConnectionManager> {
        bounded("no connection to the primary", self.connect_timeout * 2, async {
            client.get_connection_manager_with_config(manager.clone()).await
        })
        .await
    }
}

/// The primary the sentinels name, and a connection to it that is replaced
/// when they name another.
struct Primary {
    resolver: Resolver,
    /// The primary's address and the connection to it.
    current: Mutex<(String, ConnectionManager)>,
    /// A re-resolution is running (one at a time).
    resolving: AtomicBool,
    manager: ConnectionManagerConfig,
}

impl Primary {
    fn conn(&self) -> ConnectionManager {
        self.current.lock().1.clone()
    }

    /// A call failed with trouble: ask the sentinels again, off the caller's
    /// path, and move to the primary they name if it is another server (the
    /// connection manager already reconnects to the same one).
    fn trouble(self: &Arc<Self>) {
        if self.resolving.swap(true, Ordering::AcqRel) {
            return;
        }
        let primary = self.clone();
        tokio::spawn(async move {
            primary.reresolve().await;
            primary.resolving.store(false, Ordering::Release);
        });
    }

    async fn reresolve(&self) {
        let master = self.resolver.master_name.as_str();
        let client = match self.resolver.resolve().await {
            Ok(client) => client,
            Err(e) => {
                tracing::debug!(error = %e, master, "no reachable primary yet");
                return;
            }
        };
        let addr = client.get_connection_info().addr().to_string();
        let was = self.current.lock().0.clone();
        if addr == was {
            return;
        }
        match self.resolver.connect_to(&client, &self.manager).await {
            Ok(conn) => {
                tracing::warn!(from = %was, to = %addr, master, "Redis primary moved");
                *self.current.lock() = (addr, conn);
            }
            Err(e) => tracing::warn!(error = %e, primary = %addr, "cannot connect to the new Redis primary"),
        }
    }
}

/// A pub/sub connection subscribed to `channel` on `client`'s server.
async fn subscribe_on(client: &redis::Client, channel: &str, timeout: Duration) -> RedisResult<PubSub> {
    bounded("no subscription", timeout, async {
        let mut pubsub = client.get_async_pubsub().await?;
        pubsub.subscribe(channel).await?;
        Ok(pubsub)
    })
    .await
}

/// The booking core's Redis connection: timeouts from `[redis]`, one breaker
/// for every user (they share the connection, so they share its fate). A
/// single server, a cluster or a primary found through sentinels (see
/// [`crate::config::RedisMode`]). Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    backend: Backend,
    breaker: Arc<Breaker>,
    /// Bound on a whole call, waiting for a reconnect included.
    call_timeout: Duration,
    /// Bound on connecting (and subscribing).
    connect_timeout: Duration,
}

impl RedisLink {
    /// Connect (bounded by `connect_timeout` per attempt and `retries`) to
    /// whichever deployment `config` names; `None` when it names none.
    pub async fn connect(config: &RedisConfig) -> RedisResult<Option<RedisLink>> {
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(config.retries)
            .set_max_delay(config.connect_timeout);
        let retries = u32::try_from(config.retries).unwrap_or(u32::MAX);
        let backend = match config.mode() {
            RedisMode::Off => return Ok(None),
            RedisMode::Single(url) => {
                let client = redis::Client::open(url)?;
                let conn = client.get_connection_manager_with_config(manager).await?;
                Backend::Single { client, conn }
            }
            RedisMode::Cluster(urls) => {
                let cluster = ClusterClientBuilder::new(urls.iter().map(String::as_str))
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .retries(retries)
                    .max_retry_wait(u64::try_from(config.connect_timeout.as_millis()).unwrap_or(u64::MAX))
                    .build()?;
                let attempts = config.connect_timeout * (u32::try_from(urls.len()).unwrap_or(1) + 1);
                let conn = bounded("no cluster connection", attempts, cluster.get_async_connection()).await?;
                let nodes = urls.iter().map(|u| redis::Client::open(u.as_str())).collect::<RedisResult<Vec<_>>>()?;
                Backend::Cluster { conn, nodes: nodes.into(), next: Arc::new(AtomicUsize::new(0)) }
            }
            RedisMode::Sentinel(s) => {
                let resolver = Resolver {
                    sentinel: tokio::sync::Mutex::new(Sentinel::build(s.nodes.iter().map(String::as_str).collect())?),
                    master_name: s.master_name.clone(),
                    connect_timeout: config.connect_timeout,
                };
                let current = Mutex::new(resolver.connect(&manager).await?);
                Backend::Sentinel(Arc::new(Primary { resolver, current, resolving: AtomicBool::new(false), manager }))
            }
        };
        Ok(Some(RedisLink {
            backend,
            breaker: Arc::new(Breaker::default()),
            call_timeout: config.response_timeout,
            connect_timeout: config.connect_timeout,
        }))
    }

    /// The breaker (open: calls fail at once).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    fn conn(&self) -> Conn {
        match &self.backend {
            Backend::Single { conn, .. } => Conn::Single(conn.clone()),
            Backend::Cluster { conn, .. } => Conn::Cluster(conn.clone()),
            Backend::Sentinel(primary) => Conn::Single(primary.conn()),
        }
    }

    /// Run one call on the connection, through the breaker and bounded by
    /// `response_timeout`. Under Sentinel, a call failing with trouble makes
    /// the sentinels be asked for the primary again.
    pub async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(RedisError::from((ErrorKind::Io, OPEN)));
        };
        let answer = match tokio::time::timeout(self.call_timeout, call(self.conn())).await {
            Ok(answer) => answer,
            Err(_) => Err(timed_out("Redis did not answer", self.call_timeout)),
        };
        match &answer {
            Err(e) if is_trouble(e) => {
                permit.failed();
                if let Backend::Sentinel(primary) = &self.backend {
                    primary.trouble();
                }
            }
            _ => permit.succeeded(),
        }
        answer
    }

    /// `PING` (any one node of a cluster), for readiness.
    pub async fn ping(&self) -> RedisResult<()> {
        self.run(|mut conn| async move { conn.keyless::<()>(redis::cmd("PING")).await }).await
    }

    /// A pub/sub connection subscribed to `channel`, each attempt bounded by
    /// `connect_timeout`: on the one server; on any one node of a cluster
    /// (a classic `PUBLISH` reaches every node), the next one after a
    /// failure; on the primary the sentinels name now.
    pub async fn subscribe(&self, channel: &str) -> RedisResult<PubSub> {
        let timeout = self.connect_timeout;
        match &self.backend {
            Backend::Single { client, .. } => subscribe_on(client, channel, timeout).await,
            Backend::Cluster { nodes, next, .. } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let mut last = None;
                for i in 0..nodes.len() {
                    match subscribe_on(&nodes[(start + i) % nodes.len()], channel, timeout).await {
                        Ok(pubsub) => return Ok(pubsub),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no cluster nodes"))))
            }
            Backend::Sentinel(primary) => {
                let client = primary.resolver.resolve().await?;
                subscribe_on(&client, channel, timeout).await
            }
        }
    }
}
