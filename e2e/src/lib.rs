//! Start the whole stack for end-to-end tests and benchmarks: the real
//! `booking-core` and `waiting-room` binaries, wired together with one key
//! directory, on free ports, each with its own database and Redis prefix.
//!
//! The binaries are built once per test process with `cargo build` (a no-op
//! when they are fresh), because a test of one package cannot otherwise rely
//! on another package's binaries being built.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

/// Bearer token of both admin APIs in stacks started here.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// Redis for stacks using it (`REDIS_URL`, default 127.0.0.1:6379).
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// PostgreSQL server for stacks using it (`DATABASE_URL`, default postgres@127.0.0.1).
pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Where the stack's binaries are built: a target dir of their own (under
/// the workspace's), because a `cargo build -p …` with a different package
/// selection unifies features differently and would relink
/// `target/debug/<bin>` while other tests are running it.
pub fn bins_target_dir() -> PathBuf {
    let root = workspace_root();
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target")).join("e2e-bins")
}

/// Paths of the two binaries, built on first call (a no-op when fresh;
/// `make test` builds them before the tests start).
pub fn binaries() -> Result<(PathBuf, PathBuf)> {
    static BUILT: OnceLock<std::result::Result<(PathBuf, PathBuf), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let target = bins_target_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-q", "-p", "waiting-room", "-p", "booking-core", "--bins", "--target-dir"])
                .arg(&target)
                .current_dir(&root)
                .status()
                .map_err(|e| format!("cannot run cargo: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build failed: {status}"));
            }
            Ok((target.join("debug/waiting-room"), target.join("debug/booking-core")))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Queue id (the booking core maps it to every event).
    pub queue: String,
    /// Path prefixes the queue protects.
    pub paths: Vec<String>,
    /// Visitors admitted at once while nobody waits.
    pub free_entry: u64,
    /// N.
    pub release_per_tick: u64,
    /// T, e.g. "1s".
    pub tick: String,
    /// M, e.g. "10m".
    pub session: String,
    /// Redis for the queue and the claim gate (else memory + SQLite, the embedded defaults).
    pub redis: bool,
    /// PostgreSQL (a fresh database) instead of SQLite.
    pub postgres: bool,
    /// Extra TOML appended to the waiting room's config.
    pub waiting_room_extra: String,
    /// Extra environment for both processes.
    pub env: Vec<(String, String)>,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            queue: "sale".into(),
            paths: vec!["/api/events".into(), "/api/coupons".into(), "/events".into()],
            free_entry: 0,
            release_per_tick: 10,
            tick: "1s".into(),
            session: "10m".into(),
            redis: false,
            postgres: false,
            waiting_room_extra: String::new(),
            env: Vec::new(),
        }
    }
}

/// A running stack. Processes are killed on drop.
pub struct Stack {
    /// The proxy, e.g. `http://127.0.0.1:40123` (everything visitors use).
    pub proxy: String,
    /// The proxy's Prometheus endpoint.
    pub proxy_metrics: String,
    /// The proxy's admin API.
    pub proxy_admin: String,
    /// The booking core, directly (bypassing the proxy).
    pub booking: String,
    /// The booking core's operator listener (`/admin`, `/metrics`, `/healthz`).
    pub booking_admin: String,
    /// Working directory (configs, keys, logs, SQLite file).
    pub dir: PathBuf,
    /// Redis key prefix of this stack (queue and claim gate).
    pub prefix: String,
    /// Database URL the booking core uses.
    pub database_url: String,
    children: Vec<Child>,
    _tmp: tempfile::TempDir,
}

async fn wait_healthy(url: &str, child: &mut Child, log: &Path) -> Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("{url}: process exited with {status}: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            bail!("{url} did not become healthy: {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fresh_postgres() -> Result<String> {
    use sqlx::Connection;
    let name = format!("e2e_{:016x}", rand::random::<u64>());
    let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.context("PostgreSQL at DATABASE_URL")?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
    let base = postgres_url();
    let server = base.rsplit_once('/').map_or(base.as_str(), |(s, _)| s).to_owned();
    Ok(format!("{server}/{name}"))
}

/// The waiting room's per-client limits turned off: every client of these
/// tests comes from 127.0.0.1, standing for many visitors. The limits
/// themselves are tested at their defaults in `waiting-room/tests/hostile`.
pub const ONE_ADDRESS_LIMITS: &str = "[limits]\nmax_connections_per_client = 0\nmax_websockets_per_client = 0\n\
    new_visitors = { rate = 0.0, burst = 0.0 }\njoins = { rate = 0.0, burst = 0.0 }\nmax_waiting_per_client = 0\n";

impl Stack {
    /// Start booking core and waiting room (in that order) and wait until
    /// both answer their health checks.
    pub async fn start(o: StackOptions) -> Result<Stack> {
        let (proxy_bin, booking_bin) = binaries()?;
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path().to_path_buf();
        let keys = dir.join("keys");
        // Create the keys first: the booking core reads the public half at start.
        shared::keys::KeyDir::open_or_create(&keys)?;
        let prefix = format!("e2e{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff);
        let database_url =
            if o.postgres { fresh_postgres().await? } else { format!("sqlite://{}", dir.join("booking.db").display()) };
        let (bport, pport, mport, aport) = (free_port(), free_port(), free_port(), free_port());
        let bcport = free_port();

        let redis_line =
            if o.redis { format!("url = \"{}\"\nprefix = \"{prefix}\"", redis_url()) } else { String::new() };
        let booking_toml = format!(
            "[server]\nlisten = \"127.0.0.1:{bport}\"\n[database]\nurl = \"{database_url}\"\n[redis]\n{redis_line}\n\
             [keys]\npublic_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{bcport}\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             [[queues]]\nid = \"{}\"\nall_events = true\n",
            keys.join("public").display(),
            o.queue
        );
        std::fs::write(dir.join("booking-core.toml"), booking_toml)?;
        let store = if o.redis {
            format!("backend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"{prefix}\"", redis_url())
        } else {
            "backend = \"memory\"".to_owned()
        };
        let paths = o.paths.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
        let proxy_toml = format!(
            "[server]\nlisten = \"127.0.0.1:{pport}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\nupstream = \"127.0.0.1:{bport}\"\n\
             threads = 2\n[store]\n{store}\n[keys]\ndir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{aport}\"\ntoken = \"{ADMIN_TOKEN}\"\n\
             {ONE_ADDRESS_LIMITS}\n[[queues]]\nid = \"{}\"\npaths = [{paths}]\nfree_entry = {}\nrelease_per_tick = {}\ntick = \"{}\"\nsession = \"{}\"\n{}",
            keys.display(),
            o.queue,
            o.free_entry,
            o.release_per_tick,
            o.tick,
            o.session,
            o.waiting_room_extra
        );
        std::fs::write(dir.join("waiting-room.toml"), proxy_toml)?;

        let spawn = |bin: &Path, config: &str, log: &str| -> Result<Child> {
            let mut cmd = Command::new(bin);
            cmd.arg("--config").arg(dir.join(config)).current_dir(&dir).stdout(Stdio::null());
            cmd.stderr(std::fs::File::create(dir.join(log))?);
            for (k, _) in std::env::vars() {
                if k.starts_with("WR_") || k.starts_with("BC_") {
                    cmd.env_remove(k);
                }
            }
            cmd.envs(o.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            Ok(cmd.spawn()?)
        };
        let mut stack = Stack {
            proxy: format!("http://127.0.0.1:{pport}"),
            proxy_metrics: format!("http://127.0.0.1:{mport}/metrics"),
            proxy_admin: format!("http://127.0.0.1:{aport}"),
            booking: format!("http://127.0.0.1:{bport}"),
            booking_admin: format!("http://127.0.0.1:{bcport}"),
            dir: dir.clone(),
            prefix,
            database_url,
            children: Vec::new(),
            _tmp: tmp,
        };
        stack.children.push(spawn(&booking_bin, "booking-core.toml", "booking-core.log")?);
        let booking_log = dir.join("booking-core.log");
        wait_healthy(&format!("{}/healthz", stack.booking_admin), &mut stack.children[0], &booking_log).await?;
        stack.children.push(spawn(&proxy_bin, "waiting-room.toml", "waiting-room.log")?);
        let proxy_log = dir.join("waiting-room.log");
        wait_healthy(&format!("{}/wr/healthz", stack.proxy), &mut stack.children[1], &proxy_log).await?;
        Ok(stack)
    }

    /// Create an event (`rows` × `seats_per_row`) and a coupon campaign with
    /// `stock` codes open now for an hour; returns (event id, campaign id).
    pub async fn seed(&self, rows: i64, seats_per_row: i64, stock: i64) -> Result<(i64, i64)> {
        let c = reqwest::Client::new();
        let event: Value = c
            .post(format!("{}/admin/events", self.booking_admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"name": "E2E concert", "venue": "Test hall", "starts_at": "2030-05-01T19:30:00Z",
                          "rows": rows, "seats_per_row": seats_per_row, "price_cents": 4500}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let event_id = event["id"].as_i64().context("event id")?;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
        let at = |secs: u64| {
            let t = secs as i64;
            let (d, s) = (t.div_euclid(86_400), t.rem_euclid(86_400));
            // Civil-from-days (Howard Hinnant), to avoid a date dependency here.
            let z = d + 719_468;
            let era = z.div_euclid(146_097);
            let doe = z - era * 146_097;
            let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            let mp = (5 * doy + 2) / 153;
            let day = doy - (153 * mp + 2) / 5 + 1;
            let month = if mp < 10 { mp + 3 } else { mp - 9 };
            let year = yoe + era * 400 + i64::from(month <= 2);
            format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", s / 3600, s % 3600 / 60, s % 60)
        };
        let campaign: Value = c
            .post(format!("{}/admin/campaigns", self.booking_admin))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"event_id": event_id, "name": "E2E coupons", "stock": stock,
                          "opens_at": at(now - 60), "closes_at": at(now + 3600)}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((event_id, campaign["id"].as_i64().context("campaign id")?))
    }

    /// The two logs, for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- booking-core.log\n{}\n--- waiting-room.log\n{}",
            read("booking-core.log"),
            read("waiting-room.log")
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
