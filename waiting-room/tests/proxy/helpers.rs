//! Test harness: a counting upstream, the real `waiting-room` binary started
//! on free ports with its own config, key directory and Redis key prefix, and
//! an HTTP client that manages cookies by hand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;

/// Bearer token of every test proxy's admin API.
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub visitor: Option<String>,
    pub authorization: Option<String>,
    pub cookie: Option<String>,
    pub request_id: Option<String>,
}

/// A raw HTTP/1.1 upstream, for answers a framework would not write: reads
/// each request of a connection (head, then a `content-length` body) and
/// writes back what `respond` makes of the head.
#[allow(dead_code)] // not every test binary sharing this file uses it
pub async fn raw_upstream<F, Fut>(respond: F) -> SocketAddr
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Vec<u8>> + Send,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { continue };
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4) else {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + length {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + length);
                    if s.write_all(&respond(head).await).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that records every request and answers 200 "ok".
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        log.lock().push(Seen {
                            path: req.uri().path().to_owned(),
                            visitor: header("x-visitor-id"),
                            authorization: header("authorization"),
                            cookie: header("cookie"),
                            request_id: header("x-request-id"),
                        });
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                                b"ok",
                            ))))
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, seen }
    }

    pub fn count(&self) -> usize {
        self.seen.lock().len()
    }

    /// Requests that carried `needle` in their Authorization or Cookie header.
    pub fn carrying(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .iter()
            .filter(|s| {
                s.authorization.as_deref().is_some_and(|a| a.contains(needle))
                    || s.cookie.as_deref().is_some_and(|c| c.contains(needle))
            })
            .count()
    }
}

/// A running `waiting-room` process.
pub struct Proxy {
    pub base: String,
    pub metrics: String,
    /// Admin API base URL (token [`ADMIN_TOKEN`]).
    pub admin: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    open_files: Option<u64>,
}

/// Options for [`Proxy::start`].
pub struct ProxySpec<'a> {
    /// `[[queues]]` tables (TOML).
    pub queues: &'a str,
    pub upstream: SocketAddr,
    /// Redis key prefix; memory backend when `None`.
    pub redis_prefix: Option<&'a str>,
    /// Redis URL when not `REDIS_URL`.
    pub redis_url: Option<&'a str>,
    /// `[store]` lines naming the Redis deployment in place of `redis_url`
    /// (`cluster_nodes = [...]`, `sentinel = {...}`, `wait_replicas`).
    pub store: Option<&'a str>,
    /// Key directory shared with other proxies (a fresh one when `None`).
    pub keys_dir: Option<&'a Path>,
    /// The `[limits]` table: [`ONE_ADDRESS_LIMITS`] unless a test sets its own.
    pub limits: &'a str,
    /// Run under this open-files limit (`prlimit --nofile`).
    pub open_files: Option<u64>,
}

/// Per-client limits off: the functional tests send everything from
/// 127.0.0.1, standing for many visitors. The limits are tested at their
/// defaults (`limits("")`) in the hostile-traffic tests.
pub const ONE_ADDRESS_LIMITS: &str = "[limits]\nmax_connections_per_client = 0\nmax_websockets_per_client = 0\n\
    new_visitors = { rate = 0.0, burst = 0.0 }\njoins = { rate = 0.0, burst = 0.0 }\nmax_waiting_per_client = 0\n";

impl<'a> ProxySpec<'a> {
    /// Memory backend, fresh keys.
    pub fn memory(queues: &'a str, upstream: SocketAddr) -> Self {
        ProxySpec {
            queues,
            upstream,
            redis_prefix: None,
            keys_dir: None,
            redis_url: None,
            store: None,
            limits: ONE_ADDRESS_LIMITS,
            open_files: None,
        }
    }

    /// Redis backend under `prefix`, fresh keys.
    pub fn redis(queues: &'a str, upstream: SocketAddr, prefix: &'a str) -> Self {
        ProxySpec {
            queues,
            upstream,
            redis_prefix: Some(prefix),
            keys_dir: None,
            redis_url: None,
            store: None,
            limits: ONE_ADDRESS_LIMITS,
            open_files: None,
        }
    }

    /// Use this `[limits]` table (`""`: the defaults).
    #[allow(dead_code)] // the hostile-traffic tests share this file
    pub fn limits(mut self, limits: &'a str) -> Self {
        self.limits = limits;
        self
    }

    /// Run the proxy with at most `n` open files.
    #[allow(dead_code)] // the hostile-traffic tests share this file
    pub fn open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    /// Share a key directory with other instances.
    pub fn keys(mut self, dir: &'a Path) -> Self {
        self.keys_dir = Some(dir);
        self
    }
}

impl Proxy {
    pub async fn start(spec: ProxySpec<'_>) -> Proxy {
        Self::start_with(spec, "").await
    }

    /// Start with extra `[server]` keys (TOML lines).
    pub async fn start_with(spec: ProxySpec<'_>, server_extra: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap().keep();
        let port = free_port();
        let metrics_port = free_port();
        let admin_port = free_port();
        let keys = spec.keys_dir.map(Path::to_path_buf).unwrap_or_else(|| dir.join("keys"));
        let store = match spec.redis_prefix {
            Some(prefix) if spec.store.is_some() => {
                format!("backend = \"redis\"\nkey_prefix = \"{prefix}\"\n{}", spec.store.unwrap_or_default())
            }
            Some(prefix) => format!(
                "backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"",
                spec.redis_url.map(str::to_owned).unwrap_or_else(redis_url)
            ),
            None => "backend = \"memory\"".to_owned(),
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\nupstream = \"{}\"\nthreads = 2\n{server_extra}\n\
             [store]\n{store}\n[keys]\ndir = \"{}\"\n[log]\nlevel = \"info\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{ADMIN_TOKEN}\"\n{}\n{}",
            spec.upstream,
            keys.display(),
            spec.limits,
            spec.queues
        );
        let config = dir.join("waiting-room.toml");
        std::fs::write(&config, text).unwrap();
        let mut proxy = Proxy {
            base: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
            admin: format!("http://127.0.0.1:{admin_port}"),
            dir,
            config,
            child: None,
            env: Vec::new(),
            open_files: spec.open_files,
        };
        proxy.spawn().await;
        proxy
    }

    async fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.join("proxy.log")).unwrap();
        let mut cmd = match self.open_files {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(env!("CARGO_BIN_EXE_waiting-room"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_waiting-room")),
        };
        cmd.arg("--config").arg(&self.config).stdout(Stdio::null()).stderr(log);
        // The process environment must not leak WR_* overrides into the test.
        for (k, _) in std::env::vars() {
            if k.starts_with("WR_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().unwrap());
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/wr/healthz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("proxy exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "proxy did not become healthy: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("proxy running")
    }

    /// `(thread name, scheduling policy number)` of each thread of the process.
    pub fn thread_policies(&self) -> Vec<(String, i32)> {
        use waiting_room::sched::{POLICY, stat_field};
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap();
        tasks
            .filter_map(|t| {
                let dir = t.ok()?.path();
                let name = std::fs::read_to_string(dir.join("comm")).ok()?.trim_end().to_owned();
                Some((name, stat_field(&std::fs::read_to_string(dir.join("stat")).ok()?, POLICY)?))
            })
            .collect()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("proxy.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop and start again with the same config and key directory.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// Wait up to `limit` for the process to exit; its status, if it did.
    #[allow(dead_code)] // the hostile-traffic tests share this file
    pub async fn exited(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send a signal to the process (e.g. "HUP").
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().map(Child::id).expect("running");
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// Rewrite the config file with `edit` applied to its text.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A client without redirects or a cookie jar: tests see every 302 and
/// decide which cookies to send.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A visitor: the cookies the proxy gave them.
#[derive(Debug, Default, Clone)]
pub struct Visitor {
    pub cookies: Vec<(String, String)>,
}

impl Visitor {
    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn absorb(&mut self, r: &reqwest::Response) {
        for h in r.headers().get_all("set-cookie") {
            let Some((pair, _)) = h.to_str().unwrap().split_once(';') else { continue };
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            self.cookies.push((k.to_owned(), v.to_owned()));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub async fn join(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str) -> Value {
        let r = c
            .post(proxy.url(&format!("/wr/{queue}/join")))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "join failed");
        self.absorb(&r);
        r.json().await.unwrap()
    }

    pub async fn status(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str) -> Value {
        let r = c
            .get(proxy.url(&format!("/wr/{queue}/status")))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "status failed");
        self.absorb(&r);
        r.json().await.unwrap()
    }

    /// Poll status until READY (or panic after `limit`).
    pub async fn until_ready(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status(c, proxy, queue).await;
            if s["status"] == "READY" {
                return s;
            }
            assert!(Instant::now() < deadline, "not admitted in time: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
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

pub type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `/wr/{queue}/ws` with the visitor's cookies; the visitor absorbs any
/// cookie set on the 101.
pub async fn connect_ws(proxy: &Proxy, queue: &str, visitor: &mut Visitor) -> WsStream {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/wr/{queue}/ws", proxy.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if !visitor.cookies.is_empty() {
        req.headers_mut().insert("cookie", visitor.cookie_header().parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket handshake");
    for h in resp.headers().get_all("set-cookie") {
        let Some((pair, _)) = h.to_str().unwrap().split_once(';') else { continue };
        let (k, v) = pair.split_once('=').unwrap();
        visitor.cookies.retain(|(name, _)| name != k);
        visitor.cookies.push((k.to_owned(), v.to_owned()));
    }
    ws
}

/// The next JSON message (skipping pings), or `None` when the socket closed
/// or nothing came within `wait`.
pub async fn next_json(ws: &mut WsStream, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match frame {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The close code the server sends next (skipping data frames).
pub async fn close_code(ws: &mut WsStream, wait: Duration) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// A redis-server of the test's own (no persistence), stopped when dropped.
#[allow(dead_code)] // the hostile-traffic tests share this file
pub struct RedisServer {
    pub child: std::process::Child,
    pub port: u16,
}

#[allow(dead_code)]
impl RedisServer {
    pub fn start(port: u16) -> RedisServer {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Send it a signal (`-STOP`, `-CONT`, `-KILL`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill {sig}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
