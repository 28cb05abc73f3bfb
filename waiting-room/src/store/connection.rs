//! The connections the Redis store runs on: one server, a Redis Cluster, or a
//! primary found through Redis Sentinel.
//!
//! [`Conn`] is a cheap `Clone` handle implementing `redis::aio::ConnectionLike`,
//! so scripts, commands and pipelines run on any of them unchanged. The
//! store's timeouts (`store.connect_timeout`, `store.response_timeout`) bound
//! every call on all three.
//!
//! - **Single**: a `ConnectionManager` (reconnects to the same address).
//! - **Cluster**: redis-rs' async cluster connection. Commands with keys go to
//!   the node owning the key's slot; a queue's keys share one hash tag, so each
//!   script runs on one node. Keyless commands (`TIME`, `PING`) go to any
//!   node: the nodes' clocks are assumed to be in sync (NTP), as the tick
//!   marker is compared with the clock of whichever node owns the queue.
//! - **Sentinel**: the sentinels name the primary; the store holds one
//!   multiplexed connection to it and, after a call fails in a way that says
//!   the primary is gone or demoted (connection refused or dropped, a timeout,
//!   `READONLY`), asks the sentinels again on the next call. A call that fails
//!   is not retried (a script may have run), so a failover costs the calls in
//!   flight a store failure (503) and nothing else.
//!
//! A write and the `WAIT` covering it are sent as one pipeline
//! (`RedisStore::acknowledged`), which every kind sends on one connection to
//! one node (redis-rs routes a cluster pipeline by its keyed command; `WAIT`
//! has no key and follows it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
};

use crate::config::{RedisTopology, StoreConfig};

/// A connection to the store's Redis deployment.
#[derive(Clone)]
pub enum Conn {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
    /// Whatever primary the sentinels name.
    Sentinel(SentinelConn),
}

impl Conn {
    /// Connect to the deployment `config` names.
    pub async fn connect(config: &StoreConfig) -> RedisResult<Conn> {
        match config.topology() {
            RedisTopology::Single(url) => {
                let client = redis::Client::open(url)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.connect_timeout))
                    .set_response_timeout(Some(config.response_timeout))
                    .set_number_of_retries(config.retries);
                Ok(Conn::Single(ConnectionManager::new_with_config(client, manager).await?))
            }
            RedisTopology::Cluster(nodes) => {
                let retries = u32::try_from(config.retries).unwrap_or(u32::MAX);
                let client = redis::cluster::ClusterClientBuilder::new(nodes.to_vec())
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    .overall_response_timeout(Some(config.response_timeout * (retries + 1)))
                    .retries(retries)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
            RedisTopology::Sentinel { master_name, nodes } => {
                let conn = SentinelConn::new(master_name, nodes, config)?;
                // Fail at start like the other kinds when no primary can be found.
                conn.current().await?;
                Ok(Conn::Sentinel(conn))
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let (generation, mut c) = s.current().await?;
                s.checked(generation, c.req_packed_command(cmd).await)
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let (generation, mut c) = s.current().await?;
                s.checked(generation, c.req_packed_commands(pipeline, offset, count).await)
            }),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The primary named by the sentinels, found again after it fails.
#[derive(Clone)]
pub struct SentinelConn(Arc<SentinelShared>);

struct SentinelShared {
    /// A tokio mutex: asking the sentinels awaits while holding it, and one
    /// caller asking at a time is enough for all (the others then find the answer).
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its generation. A std mutex: only held to
    /// clone or replace it, never across an await.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    generations: AtomicU64,
    connection: AsyncConnectionConfig,
    connect_timeout: Duration,
}

impl SentinelConn {
    fn new(master_name: &str, nodes: &[String], config: &StoreConfig) -> RedisResult<Self> {
        let client = SentinelClient::build(nodes.to_vec(), master_name.to_owned(), None, SentinelServerType::Master)?;
        Ok(SentinelConn(Arc::new(SentinelShared {
            sentinel: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            connection: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout)),
            connect_timeout: config.connect_timeout,
        })))
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        self.0.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The connection to the primary, asking the sentinels if there is none.
    async fn current(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut sentinel = self.0.sentinel.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let found = async {
            let client = sentinel.async_get_client().await?;
            client.get_multiplexed_async_connection_with_config(&self.0.connection).await
        };
        // Sentinels and the primary they name are asked within the connect timeout.
        let conn = tokio::time::timeout(self.0.connect_timeout, found)
            .await
            .map_err(|_| RedisError::from((ErrorKind::Io, "no primary found through the sentinels in time")))??;
        let generation = self.0.generations.fetch_add(1, Ordering::Relaxed) + 1;
        *self.0.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, conn.clone()));
        tracing::info!(generation, "connected to the Redis primary named by the sentinels");
        Ok((generation, conn))
    }

    /// `result` of a call on connection `generation`; forget that connection
    /// if the failure says the primary is gone or no longer primary.
    fn checked<T>(&self, generation: u64, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && primary_lost(e)
        {
            let mut current = self.0.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
                tracing::warn!(error = %e, "the Redis primary failed; asking the sentinels again");
            }
        }
        result
    }
}

/// Does this failure mean the connection no longer reaches a primary?
fn primary_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_unrecoverable_error()
        || e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

/// A client for subscribing to the queues' channels; `attempt` counts the
/// failed subscriptions so far, to move on to another node.
///
/// - Single: the server.
/// - Cluster: any node, a different one per attempt (a `PUBLISH` reaches
///   subscribers on every node of the cluster).
/// - Sentinel: the current primary, asked anew each time (a subscription
///   ends when its node dies, and then the primary has changed).
pub async fn subscriber(config: &StoreConfig, attempt: usize) -> RedisResult<redis::Client> {
    match config.topology() {
        RedisTopology::Single(url) => redis::Client::open(url),
        RedisTopology::Cluster(nodes) => redis::Client::open(nodes[attempt % nodes.len()].as_str()),
        RedisTopology::Sentinel { master_name, nodes } => {
            let mut sentinel =
                SentinelClient::build(nodes.to_vec(), master_name.to_owned(), None, SentinelServerType::Master)?;
            tokio::time::timeout(config.connect_timeout, sentinel.async_get_client())
                .await
                .map_err(|_| RedisError::from((ErrorKind::Io, "no primary found through the sentinels in time")))?
        }
    }
}
