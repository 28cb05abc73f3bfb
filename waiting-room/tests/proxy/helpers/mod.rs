//! Test harness: a counting upstream, the real `waiting-room` binary started
//! on free ports with its own config, key directory and Redis key prefix, and
//! an HTTP client that manages cookies by hand.

mod proxy;
mod redis_server;
mod upstream;
mod visitor;

use std::time::{Duration, Instant};

#[allow(unused_imports)] // the hostile-traffic tests share this file
pub use proxy::ONE_ADDRESS_LIMITS;
pub use proxy::{Proxy, ProxySpec};
#[allow(unused_imports)] // the hostile-traffic tests share this file
pub use redis_server::RedisServer;
pub use upstream::{Upstream, raw_upstream};
pub use visitor::{Visitor, client, close_code, connect_ws, next_json};

/// Bearer token of every test proxy's admin API.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// Proxy instances sharing one upstream, Redis key prefix and key directory.
#[allow(dead_code)] // the hostile-traffic tests share this file
pub struct Shared {
    pub upstream: Upstream,
    pub prefix: String,
    pub keys: tempfile::TempDir,
}

#[allow(dead_code)]
impl Shared {
    pub async fn new(name: &str) -> Shared {
        Shared { upstream: Upstream::start().await, prefix: unique(name), keys: tempfile::tempdir().unwrap() }
    }

    /// The spec of one more instance serving `queues`.
    pub fn spec<'a>(&'a self, queues: &'a str) -> ProxySpec<'a> {
        ProxySpec::redis(queues, self.upstream.addr, &self.prefix).keys(self.keys.path())
    }
}

/// Call `check` every 100 ms until it returns `Ok`; after `limit`, fail with
/// `what` and the last `Err` (the state seen).
#[allow(dead_code)]
pub async fn eventually<T, F: Future<Output = Result<T, String>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(seen) => assert!(Instant::now() < deadline, "{what}: {seen}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A queue table for the config.
pub fn queue(id: &str, path: &str, n: u64, tick: &str, session: &str, free_entry: u64) -> String {
    format!(
        "[[queues]]\nid = \"{id}\"\npaths = [\"{path}\"]\nfree_entry = {free_entry}\nrelease_per_tick = {n}\ntick = \"{tick}\"\nsession = \"{session}\"\n"
    )
}

/// Milliseconds since the epoch of an RFC 3339 time (the API's times: they
/// leave out `.000`, so they do not compare as strings).
#[allow(dead_code)] // the hostile-traffic tests share this file
pub fn millis(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Read one counter or gauge from a Prometheus text page.
pub async fn metric(c: &reqwest::Client, proxy: &Proxy, series: &str) -> f64 {
    let text = c.get(&proxy.metrics).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
