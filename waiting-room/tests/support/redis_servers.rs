//! Redis deployments the tests start from Debian's `redis-server` (also as
//! the sentinel, `--sentinel`) and `redis-cli`: a three-node Cluster and a primary with
//! replicas under one sentinel. Every process listens on a free port, is
//! killed when its handle drops (also when a test panics), and keeps its
//! files in a tempdir. Readiness is polled, never slept for.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One Redis process, killed on drop.
pub struct Process {
    child: Child,
    pub port: u16,
}

impl Process {
    /// `program` with `args`, once it accepts connections on `port`; or why
    /// not when it exited before it accepted (its port taken between
    /// [`port`] and its bind, for one): the caller may try again on another
    /// port ([`Process::on_free_port`]).
    pub fn try_start(program: &str, args: &[String], port: u16, dir: &Path) -> Result<Process, String> {
        let log_path = dir.join(format!("{program}-{port}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} must be installed: {e}"));
        let mut p = Process { child, port };
        let exited = until(&format!("{program} on port {port} accepts connections"), Duration::from_secs(10), || {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(Some(status));
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok().then_some(None)
        });
        match exited {
            None => Ok(p),
            Some(status) => {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                let last = said.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                Err(format!("{program} on port {port} exited ({status}) before accepting: {last}"))
            }
        }
    }

    /// A `redis-server` started by `start(port)` on a fresh port from
    /// `pick`, tried again on another one (up to five times) when it exits
    /// before accepting: another test may bind a port between `pick`
    /// finding it free and the server binding it.
    pub fn on_free_port(pick: fn() -> u16, mut start: impl FnMut(u16) -> Result<Process, String>) -> Process {
        let mut why = Vec::new();
        for _ in 0..5 {
            match start(pick()) {
                Ok(p) => return p,
                Err(e) => why.push(e),
            }
        }
        panic!("no redis-server started in five tries: {}", why.join("; "))
    }

    /// `redis-server` with extra `args` on a free port ([`Process::on_free_port`]).
    pub fn server(dir: &Path, args: &[&str]) -> Process {
        Process::on_free_port(port, |p| Process::try_server(p, dir, args))
    }

    /// [`Process::server`], or why it exited before accepting.
    pub fn try_server(port: u16, dir: &Path, args: &[&str]) -> Result<Process, String> {
        let mut all: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Process::try_start("redis-server", &all, port, dir)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli -p <port> <args>`: its output, or `None` if it failed.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        cli(self.port, args)
    }

    /// SIGKILL, at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -p <port> <args>`.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Poll `check` every 20 ms until it gives a value; panic after `limit`.
pub fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Redis Cluster of three primaries (no replicas).
pub struct Cluster {
    pub nodes: Vec<Process>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Three `redis-server --cluster-enabled yes`, joined by `redis-cli
    /// --cluster create`, once every node says `cluster_state:ok`.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Process> = (0..3)
            .map(|_| {
                Process::on_free_port(port, |p| {
                    let conf = dir.path().join(format!("nodes-{p}.conf"));
                    // The bus port is named: its default, 10,000 above the
                    // client port, does not exist above 55,535 (a fifth of
                    // Linux's ephemeral range), and redis-server exits there.
                    let bus = port().to_string();
                    Process::try_server(
                        p,
                        dir.path(),
                        &[
                            "--cluster-enabled",
                            "yes",
                            "--cluster-config-file",
                            conf.to_str().unwrap(),
                            "--cluster-node-timeout",
                            "2000",
                            "--cluster-port",
                            &bus,
                        ],
                    )
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let status = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        for n in &nodes {
            until("cluster_state:ok on every node", Duration::from_secs(20), || {
                n.cli(&["CLUSTER", "INFO"]).filter(|i| i.contains("cluster_state:ok")).map(|_| ())
            });
        }
        Cluster { nodes, _dir: dir }
    }

    /// The seed URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Process::url).collect()
    }

    /// How many keys each node holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.cli(&["DBSIZE"]).and_then(|s| s.trim().parse().ok()).unwrap_or(0)).collect()
    }
}

/// A primary, its replicas and one sentinel watching them as `m`.
pub struct Sentinel {
    pub primary: Process,
    pub replicas: Vec<Process>,
    pub sentinel: Process,
    _dir: tempfile::TempDir,
}

/// The name the sentinel monitors the primary under.
pub const MASTER_NAME: &str = "m";

impl Sentinel {
    /// A primary, `replicas` replicas in sync with it, and a sentinel
    /// (`down-after-milliseconds 1000`, `failover-timeout 5000`) that knows them all.
    pub fn start(replicas: usize) -> Sentinel {
        let dir = tempfile::tempdir().unwrap();
        let primary = Process::server(dir.path(), &[]);
        let replicaof = format!("127.0.0.1 {}", primary.port);
        let replicas: Vec<Process> =
            (0..replicas).map(|_| Process::server(dir.path(), &["--replicaof", &replicaof])).collect();
        for r in &replicas {
            until("the replica is in sync", Duration::from_secs(10), || {
                r.cli(&["INFO", "replication"]).filter(|i| i.contains("master_link_status:up")).map(|_| ())
            });
        }
        let conf = dir.path().join("sentinel.conf");
        let sentinel = Process::on_free_port(port, |sentinel_port| {
            std::fs::write(
                &conf,
                format!(
                    "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {} 1\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 5000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir.path().display(),
                    primary.port
                ),
            )
            .unwrap();
            // `redis-server --sentinel` is what Debian's `redis-sentinel` links
            // to; it needs no second package.
            let args = [conf.to_str().unwrap().to_owned(), "--sentinel".to_owned()];
            Process::try_start("redis-server", &args, sentinel_port, dir.path())
        });
        let s = Sentinel { primary, replicas, sentinel, _dir: dir };
        // The sentinel learns the replicas from the primary's INFO.
        let want = s.replicas.len();
        until("the sentinel knows every replica", Duration::from_secs(20), || {
            let out = s.sentinel.cli(&["SENTINEL", "replicas", MASTER_NAME])?;
            (out.matches("\nslave\n").count() + usize::from(out.starts_with("slave\n")) >= want
                && !out.contains("disconnected"))
            .then_some(())
        });
        s
    }

    /// The sentinel's URL.
    pub fn sentinel_url(&self) -> String {
        self.sentinel.url()
    }

    /// The port of the primary the sentinel names now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = self.sentinel.cli(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])?;
        out.lines().nth(1)?.trim().parse().ok()
    }
}
