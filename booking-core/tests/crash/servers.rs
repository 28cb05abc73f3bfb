//! The processes a crash test runs: the real `booking-core` binary (killed
//! with SIGKILL and started again), and, where the test breaks them, a
//! private `redis-server` or PostgreSQL server on a free port (never the
//! shared ones other tests use). Every process is stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap()
}

/// One run of the booking-core binary.
pub struct Core {
    child: Child,
    /// `http://127.0.0.1:<public port>`.
    pub public: String,
    /// `http://127.0.0.1:<operator port>`.
    pub admin: String,
    log: PathBuf,
}

impl Core {
    /// Start the binary in `dir` (no config file there: only `env`) on fresh
    /// ports and wait until its operator listener answers `/healthz`.
    pub async fn start(dir: &Path, env: &[(String, String)], log_name: &str) -> Core {
        let (public, admin) = (free_port(), free_port());
        let log = dir.join(log_name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_booking-core"));
        cmd.current_dir(dir).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        for (k, _) in std::env::vars() {
            if k.starts_with("BC_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BC_SERVER__LISTEN", format!("127.0.0.1:{public}"))
            .env("BC_ADMIN__LISTEN", format!("127.0.0.1:{admin}"));
        let mut core = Core {
            child: cmd.spawn().unwrap(),
            public: format!("http://127.0.0.1:{public}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", core.admin)).send().await
                && r.status().is_success()
            {
                return core;
            }
            if let Some(status) = core.child.try_wait().unwrap() {
                panic!("booking-core exited with {status}: {}", core.log());
            }
            assert!(Instant::now() < deadline, "booking-core did not become healthy: {}", core.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM (a deploy), then wait for a clean exit.
    pub fn terminate(&mut self) {
        let sent = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "booking-core exited with {status} on SIGTERM: {}", self.log());
                return;
            }
            assert!(Instant::now() < deadline, "booking-core did not stop on SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `redis-server` of this test only, without persistence.
pub struct Redis {
    child: Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
}

impl Redis {
    /// Start it and wait until it answers.
    pub async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        let redis = Redis { child, url: format!("redis://127.0.0.1:{port}") };
        let client = redis::Client::open(redis.url.as_str()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.get_multiplexed_async_connection().await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        redis
    }

    /// `kill -STOP`: the server stops answering, its connections stay open.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// `kill -CONT`: it answers again (what it received meanwhile first).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    /// Stop the server for good: connections are refused from now on.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([signal, &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success(), "kill {signal}");
    }

    /// `FLUSHALL`: Redis forgets everything.
    pub async fn flush_all(&self) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped (frozen) process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A PostgreSQL server of this test only (initdb into a temp dir). PostgreSQL
/// refuses to run as root, so as root its tools run as the `postgres` user.
pub struct Postgres {
    dir: tempfile::TempDir,
    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub url: String,
    as_postgres: bool,
}

/// A PostgreSQL server tool: on PATH, else in Debian's versioned folder
/// (`/usr/lib/postgresql/<version>/bin`, the newest), which is not on PATH.
fn pg_tool(program: &str) -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).find(|f| f.is_file()))
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin").join(program)).collect())
            .unwrap_or_default();
        versions.retain(|f| f.is_file());
        versions.sort_by_key(|f| f.to_string_lossy().split('/').nth(4).and_then(|v| v.parse::<u32>().ok()));
        versions.pop().unwrap_or_else(|| panic!("{program} not found: install postgresql"))
    })
}

impl Postgres {
    fn tool(&self, program: &str) -> Command {
        let path = pg_tool(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self.tool(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// initdb and start.
    pub fn start() -> Postgres {
        let root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
        let dir = tempfile::tempdir().unwrap();
        if root {
            let owned = Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()).status().unwrap();
            assert!(owned.success(), "chown to postgres");
        }
        let port = free_port();
        let pg = Postgres { dir, url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), as_postgres: root };
        pg.run("initdb", &["-D", &pg.data(), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"]);
        let options =
            format!("-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=60", pg.dir.path().display());
        pg.run("pg_ctl", &["-D", &pg.data(), "-o", &options, "-l", &pg.log(), "-w", "start"]);
        pg
    }

    fn log(&self) -> String {
        self.dir.path().join("postgres.log").display().to_string()
    }

    /// Crash (immediate shutdown: no checkpoint, recovery from the WAL on
    /// start) and start again with the same options.
    pub fn crash_restart(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-l", &self.log(), "-m", "immediate", "-w", "restart"]);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.tool("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "-w", "stop"]).output();
    }
}

/// Start a `redis-server` with `args` (after `--bind 127.0.0.1`, no
/// persistence, files in `dir`), logging to `dir/<name>.log`.
fn spawn_redis(dir: &Path, name: &str, program: &str, args: &[&str]) -> Child {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} on PATH (apt-get install redis-server): {e}"))
}

/// A plain connection to `redis://127.0.0.1:<port>`, retried until `within`.
async fn connection(port: u16, within: Duration) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let deadline = Instant::now() + within;
    loop {
        match client.get_multiplexed_async_connection().await {
            Ok(conn) => return conn,
            Err(e) => assert!(Instant::now() < deadline, "no Redis on port {port}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll `check` every 50 ms until it is true; panic with `what` after `within`.
async fn await_true<F, Fut>(what: &str, within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

/// A Redis Cluster of this test only: `redis-server` processes in cluster
/// mode (all primaries, no replicas) on free ports, joined with `redis-cli
/// --cluster create`. Stopped on drop.
pub struct RedisCluster {
    nodes: Vec<Child>,
    /// The nodes' client ports.
    pub ports: Vec<u16>,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Start `n` nodes, create the cluster and wait until every node says `cluster_state:ok`.
    pub async fn start(n: usize) -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = RedisCluster { nodes: Vec::new(), ports: Vec::new(), dir };
        for _ in 0..n {
            // The bus port is set explicitly: the default (port + 10000) may not exist.
            let (port, bus) = (free_port(), free_port());
            let (p, b) = (port.to_string(), bus.to_string());
            let config_file = cluster.dir.path().join(format!("nodes-{port}.conf")).display().to_string();
            let args = [
                "--port",
                &p,
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &config_file,
                "--cluster-port",
                &b,
                "--save",
                "",
                "--appendonly",
                "no",
            ];
            cluster.nodes.push(spawn_redis(cluster.dir.path(), &format!("node-{port}"), "redis-server", &args));
            cluster.ports.push(port);
        }
        for &port in &cluster.ports {
            connection(port, Duration::from_secs(10)).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        let out = create.args(["--cluster-replicas", "0", "--cluster-yes"]).output().expect("redis-cli on PATH");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for &port in &cluster.ports {
            let mut conn = connection(port, Duration::from_secs(5)).await;
            await_true("cluster_state:ok", Duration::from_secs(30), || {
                let mut conn = conn.clone();
                async move {
                    let info: String =
                        redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.unwrap_or_default();
                    info.contains("cluster_state:ok")
                }
            })
            .await;
            let () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        }
        cluster
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn urls(&self) -> Vec<String> {
        self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect()
    }

    /// The port of the node serving `key`'s slot.
    pub async fn owner_of(&self, key: &str) -> u16 {
        let mut conn = connection(self.ports[0], Duration::from_secs(5)).await;
        let slot: i64 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut conn).await.unwrap();
        // [[start, end, [ip, port, id], …], …]
        let ranges: Vec<(i64, i64, (String, i64))> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Vec<redis::Value>>(&mut conn)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| match r {
                redis::Value::Array(v) if v.len() >= 3 => {
                    let int = |v: &redis::Value| if let redis::Value::Int(i) = v { Some(*i) } else { None };
                    let redis::Value::Array(node) = &v[2] else { return None };
                    let ip = match &node[0] {
                        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => return None,
                    };
                    Some((int(&v[0])?, int(&v[1])?, (ip, int(&node[1])?)))
                }
                _ => None,
            })
            .collect();
        let owner = ranges.iter().find(|(start, end, _)| (*start..=*end).contains(&slot));
        u16::try_from(owner.unwrap_or_else(|| panic!("no node serves slot {slot}: {ranges:?}")).2.1).unwrap()
    }

    /// Subscribers of `channel` on the node at `port` (`PUBSUB NUMSUB` is per node).
    pub async fn subscribers(&self, port: u16, channel: &str) -> i64 {
        let mut conn = connection(port, Duration::from_secs(5)).await;
        let (_, n): (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut conn).await.unwrap();
        n
    }

    /// `HGET key field` on the node at `port` (which must serve `key`).
    pub async fn hget(&self, port: u16, key: &str, field: &str) -> Option<String> {
        let mut conn = connection(port, Duration::from_secs(5)).await;
        redis::cmd("HGET").arg(key).arg(field).query_async(&mut conn).await.unwrap()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A primary, its replica and one sentinel monitoring them as `m` (quorum
/// 1, down after 1 s, failover timeout 5 s), all of this test only. Stopped
/// on drop.
pub struct SentinelGroup {
    primary: Child,
    replica: Child,
    sentinel: Child,
    /// The first primary's port.
    pub primary_port: u16,
    /// The replica's port (the primary after a failover).
    pub replica_port: u16,
    /// The sentinel's port.
    pub sentinel_port: u16,
    _dir: tempfile::TempDir,
}

/// The name the sentinel monitors the primary under.
pub const MASTER_NAME: &str = "m";

impl SentinelGroup {
    /// Start all three and wait until the replica is in sync and the
    /// sentinel knows both servers.
    pub async fn start() -> SentinelGroup {
        let dir = tempfile::tempdir().unwrap();
        let (primary_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
        let plain = |port: u16| {
            ["--port".to_owned(), port.to_string(), "--bind".into(), "127.0.0.1".into()]
                .into_iter()
                .chain(["--save", "", "--appendonly", "no"].map(String::from))
                .collect::<Vec<String>>()
        };
        let args = plain(primary_port);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let primary = spawn_redis(dir.path(), "primary", "redis-server", &args);
        let mut args = plain(replica_port);
        args.extend(["--replicaof".into(), "127.0.0.1".into(), primary_port.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let replica = spawn_redis(dir.path(), "replica", "redis-server", &args);
        let mut conn = connection(replica_port, Duration::from_secs(10)).await;
        await_true("the replica in sync", Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                let info: String =
                    redis::cmd("INFO").arg("replication").query_async(&mut conn).await.unwrap_or_default();
                info.contains("master_link_status:up")
            }
        })
        .await;
        let () = redis::cmd("PING").query_async(&mut conn).await.unwrap();

        // The sentinel rewrites its config file: it lives in the temp dir.
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 1\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\nsentinel failover-timeout {MASTER_NAME} 5000\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let config = config.display().to_string();
        // Debian's redis-sentinel package is a link to redis-server; without it, `--sentinel` does the same.
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("redis-sentinel").is_file()));
        let sentinel = if on_path {
            spawn_redis(dir.path(), "sentinel", "redis-sentinel", &[&config])
        } else {
            spawn_redis(dir.path(), "sentinel", "redis-server", &[&config, "--sentinel"])
        };
        let group = SentinelGroup { primary, replica, sentinel, primary_port, replica_port, sentinel_port, _dir: dir };
        let mut conn = connection(sentinel_port, Duration::from_secs(10)).await;
        await_true("the sentinel to know the replica", Duration::from_secs(20), || {
            let mut conn = conn.clone();
            async move {
                let replicas: redis::RedisResult<Vec<redis::Value>> =
                    redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME).query_async(&mut conn).await;
                replicas.is_ok_and(|r| !r.is_empty())
            }
        })
        .await;
        assert_eq!(group.primary_now().await, Some(primary_port));
        let () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
        group
    }

    /// `redis://127.0.0.1:<sentinel port>`.
    pub fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The primary's port according to the sentinel.
    pub async fn primary_now(&self) -> Option<u16> {
        let mut conn = connection(self.sentinel_port, Duration::from_secs(5)).await;
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query_async(&mut conn)
            .await
            .ok()
            .flatten();
        addr.and_then(|(_, port)| port.parse().ok())
    }

    /// `kill -9` the first primary.
    pub fn kill_primary(&mut self) {
        let _ = self.primary.kill();
        let _ = self.primary.wait();
    }

    /// A plain connection to the replica (the primary after a failover).
    pub async fn replica(&self) -> redis::aio::MultiplexedConnection {
        connection(self.replica_port, Duration::from_secs(5)).await
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        for child in [&mut self.sentinel, &mut self.replica, &mut self.primary] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
