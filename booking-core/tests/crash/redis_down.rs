//! Redis trouble never holds a request: with the booking core's own
//! `redis-server` frozen (`kill -STOP`: connections open, no answers) or
//! gone (connections refused), seat maps, holds and confirms answer at their
//! usual speed, claims are decided by the database alone (201), `/readyz`
//! answers 503 within 500 ms and `/livez` 200. Before the Redis timeouts and
//! the breaker, each of these waited ~9 s for redis-rs to give up.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::keys::KeyDir;
use shared::token::EntryClaims;

use super::servers::{Core, Redis};

const ADMIN_TOKEN: &str = "redis-down-admin-token-0123456789";
/// Well under a second, and far under the ~9 s the old defaults took.
const PROMPT: Duration = Duration::from_secs(1);
/// Readiness answers within this whatever Redis does.
const READY_WITHIN: Duration = Duration::from_millis(500);
/// Rounds of requests while Redis is down: the first ones meet the timeouts
/// (breaker closed), the later ones the open breaker and its probes.
const ROUNDS: usize = 6;

/// A booking core on SQLite with a Redis of its own, an event and a campaign.
struct Site {
    _dir: tempfile::TempDir,
    core: Core,
    redis: Redis,
    keys: KeyDir,
    client: reqwest::Client,
    event: i64,
    seats: Vec<i64>,
    campaign: i64,
    visitors: usize,
}

/// One answer and how long it took.
struct Timed {
    status: u16,
    body: Value,
    took: Duration,
}

/// The slowest answer of each kind.
#[derive(Debug, Default)]
struct Slowest {
    seat_map: Duration,
    hold: Duration,
    confirm: Duration,
    claim: Duration,
    readyz: Duration,
}

impl Site {
    async fn start() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(&dir.path().join("keys")).unwrap();
        let redis = Redis::start().await;
        let env: Vec<(String, String)> = [
            ("BC_DATABASE__URL", format!("sqlite://{}", dir.path().join("booking.db").display())),
            ("BC_KEYS__PUBLIC_DIR", dir.path().join("keys/public").display().to_string()),
            ("BC_ADMIN__TOKEN", ADMIN_TOKEN.into()),
            ("BC_QUEUES__0__ID", "main".into()),
            ("BC_QUEUES__0__ALL_EVENTS", "true".into()),
            ("BC_REDIS__URL", redis.url.clone()),
            ("BC_COUPONS__LEASE", "2s".into()),
            ("BC_COUPONS__RECONCILE_INTERVAL", "500ms".into()),
            ("BC_LOG__LEVEL", "warn,booking_core=info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let core = Core::start(dir.path(), &env, "booking-core.log").await;
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let mut site =
            Site { _dir: dir, core, redis, keys, client, event: 0, seats: Vec::new(), campaign: 0, visitors: 0 };
        site.seed().await;
        site
    }

    async fn seed(&mut self) {
        let admin = |path: &str, body: Value| {
            self.client.post(format!("{}{path}", self.core.admin)).bearer_auth(ADMIN_TOKEN).json(&body).send()
        };
        let event = json!({"name": "Outage", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z",
            "rows": 1, "seats_per_row": 40, "price_cents": 1});
        let event: Value = admin("/admin/events", event).await.unwrap().json().await.unwrap();
        self.event = event["id"].as_i64().unwrap();
        let campaign = json!({"event_id": self.event, "stock": 100,
            "opens_at": "2020-01-01T00:00:00Z", "closes_at": "2099-01-01T00:00:00Z"});
        let campaign: Value = admin("/admin/campaigns", campaign).await.unwrap().json().await.unwrap();
        self.campaign = campaign["id"].as_i64().unwrap();
        let token = self.visitor();
        let seats = self.call(self.get(&format!("/api/events/{}/seats", self.event), &token)).await;
        assert_eq!(seats.status, 200, "{}", seats.body);
        self.seats = seats.body["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    }

    /// A new visitor's entry token.
    fn visitor(&mut self) -> String {
        self.visitors += 1;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let sub = format!("{:032x}", self.visitors);
        let claims = EntryClaims { sub: sub.clone(), aud: "main".into(), iat: now, exp: now + 3600, jti: sub };
        self.keys.signer.sign(&claims).unwrap()
    }

    fn get(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.get(format!("{}{path}", self.core.public)).bearer_auth(token)
    }

    fn post(&self, path: &str, token: &str) -> reqwest::RequestBuilder {
        self.client.post(format!("{}{path}", self.core.public)).bearer_auth(token)
    }

    async fn call(&self, request: reqwest::RequestBuilder) -> Timed {
        let start = Instant::now();
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.json::<Value>().await.unwrap_or(Value::Null);
        Timed { status, body, took: start.elapsed() }
    }

    async fn operator(&self, path: &str) -> Timed {
        self.call(self.client.get(format!("{}{path}", self.core.admin))).await
    }

    async fn claim(&self, token: &str) -> Timed {
        self.call(self.post(&format!("/api/coupons/{}/claims", self.campaign), token)).await
    }

    /// One visitor's seat map, hold, confirm and claim, then readiness and
    /// liveness, each asserted prompt; `redis_up`: whether readiness should
    /// see Redis (without it the service is still ready, `degraded`).
    async fn round(&mut self, seat: usize, redis_up: bool, slowest: &mut Slowest) {
        let token = self.visitor();
        let map = self.call(self.get(&format!("/api/events/{}/seats", self.event), &token)).await;
        assert_eq!(map.status, 200, "seat map: {}", map.body);
        let hold = self.call(self.post(&format!("/api/events/{}/holds", self.event), &token).json(&json!({
            "seat_id": self.seats[seat]
        })));
        let hold = hold.await;
        assert_eq!(hold.status, 201, "hold: {}", hold.body);
        let hold_id = hold.body["hold_id"].as_str().unwrap().to_owned();
        let confirm = self.call(self.post(&format!("/api/holds/{hold_id}/confirm"), &token)).await;
        assert_eq!(confirm.status, 200, "confirm: {}", confirm.body);
        let claim = self.claim(&token).await;
        assert_eq!(claim.status, 201, "claim (the database decides without the gate): {}", claim.body);
        let readyz = self.operator("/readyz").await;
        // Ready either way: everything is served without Redis, and taking
        // every instance out of rotation for a shared Redis would take the
        // site down. The body says what is missing.
        assert_eq!(readyz.status, 200, "readyz: {}", readyz.body);
        assert_eq!(readyz.body["checks"]["database"], "ok", "{}", readyz.body);
        if redis_up {
            assert_eq!(readyz.body["status"], "ok", "{}", readyz.body);
            assert_eq!(readyz.body["checks"]["redis"], "ok", "{}", readyz.body);
        } else {
            assert_eq!(readyz.body["status"], "degraded", "{}", readyz.body);
            assert_ne!(readyz.body["checks"]["redis"], "ok", "{}", readyz.body);
        }
        assert_eq!(self.operator("/livez").await.status, 200);
        for (what, took, bound) in [
            ("seat map", map.took, PROMPT),
            ("hold", hold.took, PROMPT),
            ("confirm", confirm.took, PROMPT),
            ("claim", claim.took, PROMPT),
            ("readyz", readyz.took, READY_WITHIN),
        ] {
            assert!(took < bound, "{what} took {took:?} (bound {bound:?})\n{}", self.core.log());
        }
        slowest.seat_map = slowest.seat_map.max(map.took);
        slowest.hold = slowest.hold.max(hold.took);
        slowest.confirm = slowest.confirm.max(confirm.took);
        slowest.claim = slowest.claim.max(claim.took);
        slowest.readyz = slowest.readyz.max(readyz.took);
    }

    /// Poll until `/readyz` sees Redis again (an event: no fixed sleep).
    async fn await_redis(&self, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.operator("/readyz").await.body["checks"]["redis"] == "ok" {
                return start.elapsed();
            }
            assert!(start.elapsed() < within, "/readyz without Redis for {within:?}\n{}", self.core.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Poll `/admin/stats` until the gate agrees with the database: nothing
    /// reserved, every committed claim counted as issued.
    async fn await_gate_agrees(&self, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let stats: Value = self
                .client
                .get(format!("{}/admin/stats", self.core.admin))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let c = stats["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == self.campaign).unwrap().clone();
            let (gate, claimed) = (&c["gate"], c["claimed"].as_i64().unwrap());
            if gate["reserved"] == 0 && gate["issued"] == claimed && gate["free"].as_i64() == Some(100 - claimed) {
                return c;
            }
            assert!(start.elapsed() < within, "gate and database disagree: {c}\n{}", self.core.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_holds_no_request_and_readiness_recovers_when_it_thaws() {
    let mut site = Site::start().await;
    let mut before = Slowest::default();
    site.round(0, true, &mut before).await;
    site.await_gate_agrees(Duration::from_secs(10)).await;

    site.redis.freeze();
    let mut frozen = Slowest::default();
    for i in 0..ROUNDS {
        site.round(1 + i, false, &mut frozen).await;
    }
    println!("Redis frozen: slowest answers {frozen:?} (Redis up: {before:?})");

    site.redis.thaw();
    let recovered = site.await_redis(Duration::from_secs(5)).await;
    println!("Redis thawed: /readyz sees it after {recovered:?}");
    let mut after = Slowest::default();
    site.round(1 + ROUNDS, true, &mut after).await;
    // The claims the gate did not see (and the leases Redis granted after
    // their claims gave up on it) are settled against the database.
    let settled = Instant::now();
    let books = site.await_gate_agrees(Duration::from_secs(15)).await;
    println!("gate agrees with the database {:?} after the thaw: {books}", settled.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_refusing_connections_holds_no_request() {
    let mut site = Site::start().await;
    let mut before = Slowest::default();
    site.round(0, true, &mut before).await;

    site.redis.kill();
    let mut gone = Slowest::default();
    for i in 0..ROUNDS {
        site.round(1 + i, false, &mut gone).await;
    }
    println!("Redis refusing: slowest answers {gone:?} (Redis up: {before:?})");
}
