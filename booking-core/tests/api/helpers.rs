//! Spawning a booking core for a test, signing tokens, and small HTTP helpers.

use std::path::PathBuf;
use std::time::Duration;

use booking_core::config::QueueConfig;
use booking_core::{Application, Config, RunningApp};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shared::config::Secret;
use shared::keys::KeyDir;
use shared::token::EntryClaims;
use sqlx::Connection;

/// The admin token every test app uses.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// A queue admitting to every event.
pub const MAIN_QUEUE: &str = "main";
/// A configured queue that admits to no event the tests create.
pub const OTHER_QUEUE: &str = "elsewhere";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL at `DATABASE_URL`, plus Redis at `REDIS_URL`.
    Postgres,
    /// A temporary SQLite file, no Redis.
    Sqlite,
}

/// One test per backend: `on_both_backends!(name)` turns `async fn name(Backend)`
/// into `name::postgres` and `name::sqlite`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
        }
    )*};
}

pub fn postgres_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = url.split_once('?').map_or((url, None), |(h, q)| (h, Some(q)));
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    let base = match head[scheme_end..].find('/') {
        Some(i) => &head[..scheme_end + i],
        None => head,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// What a test app is built from; kept so a sibling instance can share it.
struct Resources {
    backend: Backend,
    keys_dir: tempfile::TempDir,
    _data_dir: tempfile::TempDir,
    pg_database: Option<String>,
    redis_prefix: Option<String>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        // Best-effort cleanup on a thread of its own: Drop cannot await, and
        // this runs inside the test's runtime.
        let database = self.pg_database.take();
        let prefix = self.redis_prefix.take();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Some(db) = database
                    && let Ok(mut conn) = sqlx::PgConnection::connect(&postgres_url()).await
                {
                    let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#))
                        .execute(&mut conn)
                        .await;
                }
                if let Some(prefix) = prefix {
                    delete_redis_prefix(&prefix).await;
                }
            });
        })
        .join();
    }
}

/// Delete every Redis key under `prefix` (this test's keyspace only).
pub async fn delete_redis_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url().as_str()) else { return };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return };
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap_or((0, vec![]));
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
}

/// A running booking core plus what a test needs to talk to it.
pub struct TestApp {
    pub app: RunningApp,
    pub config: Config,
    pub client: reqwest::Client,
    pub keys: KeyDir,
    resources: std::sync::Arc<Resources>,
}

impl TestApp {
    /// A fresh app with the test defaults.
    pub async fn spawn(backend: Backend) -> TestApp {
        TestApp::spawn_with(backend, |_| {}).await
    }

    /// A fresh app; `tweak` adjusts the config first.
    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
        let keys_dir = tempfile::tempdir().unwrap();
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".into();
        config.admin.listen = "127.0.0.1:0".into();
        config.keys.public_dir = keys_dir.path().join("public");
        config.admin.token = Secret::new(ADMIN_TOKEN);
        config.holds.sweep_interval = Duration::from_secs(3600);
        config.queues = vec![
            QueueConfig { id: MAIN_QUEUE.into(), events: vec![], all_events: true },
            QueueConfig { id: OTHER_QUEUE.into(), events: vec![424_242], all_events: false },
        ];
        let (pg_database, redis_prefix) = match backend {
            Backend::Postgres => {
                let name = format!("bc_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(&postgres_url()).await.expect("PostgreSQL at DATABASE_URL");
                sqlx::query(&format!(r#"CREATE DATABASE "{name}""#)).execute(&mut conn).await.unwrap();
                config.database.url = with_database(&postgres_url(), &name);
                let prefix = format!("bct{}", uuid::Uuid::new_v4().simple());
                config.redis.url = redis_url();
                config.redis.prefix = prefix.clone();
                (Some(name), Some(prefix))
            }
            Backend::Sqlite => {
                config.database.url = format!("sqlite://{}", data_dir.path().join("bc.db").display());
                (None, None)
            }
        };
        let keys = KeyDir::open_or_create(keys_dir.path()).unwrap();
        tweak(&mut config);
        config.validate().unwrap();
        let resources =
            std::sync::Arc::new(Resources { backend, keys_dir, _data_dir: data_dir, pg_database, redis_prefix });
        let app = Application::build(config.clone()).await.unwrap().spawn();
        TestApp { app, config, client: client(), keys, resources }
    }

    /// A second instance on the same database, Redis prefix and keys.
    pub async fn spawn_sibling(&self) -> TestApp {
        let app = Application::build(self.config.clone()).await.unwrap().spawn();
        let keys = KeyDir::open_or_create(self.resources.keys_dir.path()).unwrap();
        TestApp { app, config: self.config.clone(), client: client(), keys, resources: self.resources.clone() }
    }

    pub fn backend(&self) -> Backend {
        self.resources.backend
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.resources.keys_dir.path().to_path_buf()
    }

    pub fn redis_prefix(&self) -> Option<&str> {
        self.resources.redis_prefix.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        self.app.url(path)
    }

    /// A token for `visitor` in `queue`, valid for ten minutes.
    pub fn token_for(&self, visitor: &str, queue: &str) -> String {
        self.token_until(visitor, queue, now_secs() + 600)
    }

    /// A token for `visitor` in `queue` whose session ends at `exp` (epoch seconds).
    pub fn token_until(&self, visitor: &str, queue: &str, exp: i64) -> String {
        let claims = EntryClaims {
            sub: visitor.into(),
            aud: queue.into(),
            iat: now_secs(),
            exp,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        self.keys.signer.sign(&claims).unwrap()
    }

    /// `http://<operator listener><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        self.app.admin_url(path)
    }

    /// A new visitor admitted through the main queue: (visitor id, token).
    pub fn visitor(&self) -> (String, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let token = self.token_for(&id, MAIN_QUEUE);
        (id, token)
    }

    pub async fn request(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        self.request_to(self.url(path), method, token, body).await
    }

    /// A request to the operator listener.
    pub async fn operator(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Response {
        self.request_to(self.admin_url(path), method, token, body).await
    }

    async fn request_to(&self, url: String, method: Method, token: Option<&str>, body: Option<Value>) -> Response {
        let mut req = self.client.request(method, url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Response::from(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn post_with_key(&self, path: &str, token: &str, key: &str, body: Value) -> Response {
        let req = self.client.post(self.url(path)).bearer_auth(token).header("idempotency-key", key).json(&body);
        Response::from(req.send().await.unwrap()).await
    }

    pub async fn hold(&self, event_id: i64, seat_id: i64, token: &str) -> Response {
        self.post(&format!("/api/events/{event_id}/holds"), token, json!({ "seat_id": seat_id })).await
    }

    pub async fn confirm(&self, hold_id: &str, token: &str) -> Response {
        self.request(Method::POST, &format!("/api/holds/{hold_id}/confirm"), Some(token), None).await
    }

    pub async fn release(&self, hold_id: &str, token: &str) -> Response {
        self.request(Method::DELETE, &format!("/api/holds/{hold_id}"), Some(token), None).await
    }

    pub async fn claim(&self, campaign_id: i64, token: &str) -> Response {
        self.request(Method::POST, &format!("/api/coupons/{campaign_id}/claims"), Some(token), None).await
    }

    pub async fn seat_map(&self, event_id: i64, token: &str) -> Value {
        let r = self.get(&format!("/api/events/{event_id}/seats"), token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
    }

    /// An admin API call (operator listener, admin token).
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        self.operator(method, path, Some(ADMIN_TOKEN), body).await
    }

    /// The claim gate's counts of `campaign` from `/admin/stats`, and the
    /// database's claimed count (read before the gate).
    pub async fn gate_and_claimed(&self, campaign: i64) -> (Option<Value>, i64) {
        let stats = self.admin(Method::GET, "/admin/stats", None).await;
        assert_eq!(stats.status, StatusCode::OK, "{}", stats.text);
        let c = stats.json["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == campaign).unwrap().clone();
        let gate = Some(c["gate"].clone()).filter(|g| !g.is_null());
        (gate, c["claimed"].as_i64().unwrap())
    }

    /// Create an event with `rows × per_row` seats; returns (event id, seat ids).
    pub async fn create_event(&self, rows: i64, per_row: i64) -> (i64, Vec<i64>) {
        let r = self
            .admin(
                Method::POST,
                "/admin/events",
                Some(json!({
                    "name": "Test concert", "venue": "Hall", "starts_at": "2030-01-01T19:30:00Z",
                    "rows": rows, "seats_per_row": per_row, "price_cents": 4500
                })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let event_id = r.json["id"].as_i64().unwrap();
        let (_, token) = self.visitor();
        let map = self.seat_map(event_id, &token).await;
        let seats = map["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
        (event_id, seats)
    }

    /// Create a campaign open now for an hour; returns its id.
    pub async fn create_campaign(&self, event_id: i64, stock: i64) -> i64 {
        let now = now_secs();
        self.create_campaign_window(event_id, stock, now - 60, now + 3600).await
    }

    pub async fn create_campaign_window(&self, event_id: i64, stock: i64, opens: i64, closes: i64) -> i64 {
        let body =
            json!({ "event_id": event_id, "stock": stock, "opens_at": rfc3339(opens), "closes_at": rfc3339(closes) });
        let r = self.admin(Method::POST, "/admin/campaigns", Some(body)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json["id"].as_i64().unwrap()
    }

    /// Rows of `sql` (one text/integer column pair at most) straight from the database.
    pub async fn query_pairs(&self, sql: &str) -> Vec<(String, i64)> {
        match self.backend() {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.config.database.url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.config.database.url).await.unwrap();
                sqlx::query_as(sql).fetch_all(&mut conn).await.unwrap()
            }
        }
    }

    /// Run a statement straight on the database.
    pub async fn execute(&self, sql: &str) {
        match self.backend() {
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.config.database.url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.config.database.url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// The `/metrics` page (operator listener).
    pub async fn metrics(&self) -> String {
        self.client.get(self.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
    }
}

/// Sum of the samples of `name` whose label set contains none of `excluded`.
pub fn metric_sum(page: &str, name: &str, excluded: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| !excluded.iter().any(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Response {
    async fn from(r: reqwest::Response) -> Response {
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Response { status, headers, text, json }
    }

    pub fn content_type(&self) -> &str {
        self.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    /// Assert a problem+json answer with `status` and a detail.
    pub fn assert_problem(&self, status: StatusCode) -> &Self {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.content_type(), "application/problem+json", "{}", self.text);
        assert_eq!(self.json["status"].as_u64(), Some(u64::from(status.as_u16())), "{}", self.text);
        assert!(self.json["detail"].as_str().is_some_and(|d| d.len() > 10), "{}", self.text);
        self
    }
}
