//! `[store]`: the queue store backend and the Redis deployment it talks to
//! (single, cluster, sentinel), with its checks; apart because it is the one
//! section with its own small model (`RedisTopology`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::config::{self, ConfigError};

/// Which queue store backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In-process, single instance, no external service (the embedded default).
    #[default]
    Memory,
    /// Redis, shared by any number of proxy instances.
    Redis,
}

/// `[store]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `memory` or `redis`.
    pub backend: Backend,
    /// Redis URL (used when `backend = "redis"`).
    pub redis_url: String,
    /// Prefix of every Redis key (`{<prefix>:<queue>}:line`); lets several
    /// deployments or tests share one Redis.
    pub key_prefix: String,
    /// How long connecting to Redis may take.
    #[serde(with = "config::duration")]
    pub connect_timeout: Duration,
    /// How long one Redis call may take before it counts as failed (joins
    /// and polls wait at most this, then get a 503).
    #[serde(with = "config::duration")]
    pub response_timeout: Duration,
    /// Times a failed Redis call is retried on a new connection.
    pub retries: usize,
    /// Redis Cluster seed nodes (`redis://host:port` each); when set, the
    /// store talks to the cluster and `redis_url` is not used. A queue's keys
    /// share one hash tag, so every script runs on one node.
    pub cluster_nodes: Vec<String>,
    /// Redis Sentinel: the primary is found by asking these sentinels, and
    /// found again after a failover; `redis_url` is not used.
    pub sentinel: Option<SentinelConfig>,
    /// Replicas that must hold a write before the store acknowledges it
    /// (`WAIT <n>` after every join, tick, ended session and saved
    /// settings); fewer in time is a store failure (503), so a place a
    /// visitor was told about survives a failover. 0 = don't wait.
    pub wait_replicas: u32,
}

/// `store.sentinel`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under (`sentinel monitor <name> ...`).
    pub master_name: String,
    /// The sentinels, `redis://host:port` each.
    pub nodes: Vec<String>,
}

/// Which Redis deployment the store talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTopology<'a> {
    /// One server (`redis_url`).
    Single(&'a str),
    /// A cluster, by its seed nodes.
    Cluster(&'a [String]),
    /// A primary found through sentinels.
    Sentinel {
        /// The primary's name the sentinels know it by.
        master_name: &'a str,
        /// The sentinels' addresses.
        nodes: &'a [String],
    },
}

impl StoreConfig {
    /// The Redis deployment this configuration names.
    pub fn topology(&self) -> RedisTopology<'_> {
        if let Some(s) = &self.sentinel {
            RedisTopology::Sentinel { master_name: &s.master_name, nodes: &s.nodes }
        } else if !self.cluster_nodes.is_empty() {
            RedisTopology::Cluster(&self.cluster_nodes)
        } else {
            RedisTopology::Single(&self.redis_url)
        }
    }

    /// What the logs call this deployment.
    pub fn describe(&self) -> String {
        match self.topology() {
            RedisTopology::Single(url) => url.to_owned(),
            RedisTopology::Cluster(nodes) => format!("cluster {}", nodes.join(",")),
            RedisTopology::Sentinel { master_name, nodes } => format!("sentinel {master_name}@{}", nodes.join(",")),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let url = |key: String, value: &str| {
            if value.starts_with("redis://") || value.starts_with("rediss://") {
                Ok(())
            } else {
                Err(ConfigError::new(key, format!("expected a redis:// or rediss:// URL, got {value:?}")))
            }
        };
        if self.backend != Backend::Redis {
            return Ok(());
        }
        if self.sentinel.is_some() && !self.cluster_nodes.is_empty() {
            return Err(ConfigError::new(
                "store.cluster_nodes",
                "set either store.cluster_nodes or store.sentinel, not both",
            ));
        }
        match self.topology() {
            RedisTopology::Single(u) => url("store.redis_url".into(), u)?,
            RedisTopology::Cluster(nodes) => {
                for (i, n) in nodes.iter().enumerate() {
                    url(format!("store.cluster_nodes[{i}]"), n)?;
                }
            }
            RedisTopology::Sentinel { master_name, nodes } => {
                if master_name.is_empty() {
                    return Err(ConfigError::new("store.sentinel.master_name", "must not be empty"));
                }
                if nodes.is_empty() {
                    return Err(ConfigError::new("store.sentinel.nodes", "expected at least one sentinel"));
                }
                for (i, n) in nodes.iter().enumerate() {
                    url(format!("store.sentinel.nodes[{i}]"), n)?;
                }
            }
        }
        if self.wait_replicas > 16 {
            return Err(ConfigError::new("store.wait_replicas", "expected at most 16"));
        }
        Ok(())
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Memory,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "wr".into(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_millis(250),
            retries: 1,
            cluster_nodes: Vec::new(),
            sentinel: None,
            wait_replicas: 0,
        }
    }
}
