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
