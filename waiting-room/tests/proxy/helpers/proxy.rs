//! The real `waiting-room` process: its spec, config file, start, restart, signals and stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{ADMIN_TOKEN, free_port, redis_url};

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
            // Healthy, and the metrics listener (a service of its own,
            // which may start a moment later) answering: tests read it first.
            if let Ok(r) = client.get(format!("{}/wr/healthz", self.base)).send().await
                && r.status() == 200
                && client.get(&self.metrics).send().await.is_ok()
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
