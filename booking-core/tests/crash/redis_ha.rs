//! The booking core on a Redis Cluster and on Redis Sentinel, real servers
//! of the test's own (see [`super::servers`]), two booking-core binaries on
//! one PostgreSQL database:
//!
//! - **Cluster** (three primaries): a coupon sale of hundreds of visitors
//!   claiming twice each, spread over both instances, issues exactly the
//!   stock, one code per visitor, every claim decided by the gate (no gate
//!   errors: each script's keys share a slot), whose counts agree with the
//!   database; a hold on one instance invalidates the other's cached seat
//!   map through pub/sub on the cluster.
//! - **Sentinel** (primary + replica + one sentinel): the primary is killed
//!   with `kill -9` while claims are in flight. Nothing is over-issued, every
//!   201 has its row; claims keep being answered by the database meanwhile;
//!   after the failover both instances reach the new primary, the gate
//!   agrees with the database again and decides the rest of the sale; seat
//!   maps fan out on the new primary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::seq::SliceRandom;
use serde_json::{Value, json};
use shared::keys::KeyDir;
use shared::token::EntryClaims;
use tokio::sync::Notify;

use super::servers::{Core, MASTER_NAME, RedisCluster, SentinelGroup};
use super::{Answer, claim, claim_until_settled, fresh_database, shared_postgres};

const ADMIN_TOKEN: &str = "redis-ha-admin-token-0123456789";

/// Two booking cores on one database and one Redis deployment.
struct Shop {
    _dir: tempfile::TempDir,
    cores: Vec<Core>,
    database_url: String,
    prefix: String,
    client: reqwest::Client,
    visitors: Vec<String>,
    tokens: Vec<String>,
    event: i64,
    seats: Vec<i64>,
    campaign: i64,
    stock: i64,
}

impl Shop {
    async fn open(redis_env: &[(&str, String)], prefix: String, visitors: usize, stock: i64) -> Shop {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open_or_create(&dir.path().join("keys")).unwrap();
        let database_url = fresh_database(&shared_postgres()).await;
        let mut env: Vec<(String, String)> = [
            ("BC_DATABASE__URL", database_url.clone()),
            ("BC_KEYS__PUBLIC_DIR", dir.path().join("keys/public").display().to_string()),
            ("BC_ADMIN__TOKEN", ADMIN_TOKEN.into()),
            ("BC_QUEUES__0__ID", "main".into()),
            ("BC_QUEUES__0__ALL_EVENTS", "true".into()),
            ("BC_COUPONS__LEASE", "3s".into()),
            ("BC_COUPONS__RECONCILE_INTERVAL", "500ms".into()),
            ("BC_RATE_LIMIT__MUTATIONS", "100000".into()),
            ("BC_DATABASE__ACQUIRE_TIMEOUT", "2s".into()),
            // Only an invalidation can refresh a cached seat map within the test.
            ("BC_CATALOGUE__SEAT_MAP_TTL", "1h".into()),
            ("BC_REDIS__PREFIX", prefix.clone()),
            ("BC_LOG__LEVEL", "warn,booking_core=info".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(redis_env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let mut cores = Vec::new();
        for i in 0..2 {
            cores.push(Core::start(dir.path(), &env, &format!("booking-core-{i}.log")).await);
        }
        let visitors: Vec<String> = (0..visitors).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let tokens = visitors
            .iter()
            .map(|v| {
                let claims =
                    EntryClaims { sub: v.clone(), aud: "main".into(), iat: now, exp: now + 3600, jti: v.clone() };
                keys.signer.sign(&claims).unwrap()
            })
            .collect();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
        let mut shop = Shop {
            _dir: dir,
            cores,
            database_url,
            prefix,
            client,
            visitors,
            tokens,
            event: 0,
            seats: Vec::new(),
            campaign: 0,
            stock,
        };
        shop.seed().await;
        shop
    }

    /// An event of four seats and a campaign of `stock` codes.
    async fn seed(&mut self) {
        let admin = |path: &str, body: Value| {
            self.client.post(format!("{}{path}", self.cores[0].admin)).bearer_auth(ADMIN_TOKEN).json(&body).send()
        };
        let event = json!({"name": "HA", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z",
            "rows": 1, "seats_per_row": 4, "price_cents": 1});
        let event: Value = admin("/admin/events", event).await.unwrap().json().await.unwrap();
        let campaign = json!({"event_id": event["id"], "stock": self.stock,
            "opens_at": "2020-01-01T00:00:00Z", "closes_at": "2099-01-01T00:00:00Z"});
        let campaign: Value = admin("/admin/campaigns", campaign).await.unwrap().json().await.unwrap();
        self.event = event["id"].as_i64().unwrap();
        self.campaign = campaign["id"].as_i64().unwrap();
        let map = self.seat_map(0, 0).await;
        self.seats = map["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
    }

    fn logs(&self) -> String {
        self.cores.iter().map(Core::log).collect::<Vec<_>>().join("\n---\n")
    }

    /// Visitor `v`'s seat map on core `core`.
    async fn seat_map(&self, core: usize, v: usize) -> Value {
        let url = format!("{}/api/events/{}/seats", self.cores[core].public, self.event);
        let r = self.client.get(url).bearer_auth(&self.tokens[v]).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Visitor `v` holds seat `seat` on core `core`.
    async fn hold(&self, core: usize, v: usize, seat: usize) {
        let url = format!("{}/api/events/{}/holds", self.cores[core].public, self.event);
        let r = self.client.post(url).bearer_auth(&self.tokens[v]).json(&json!({"seat_id": self.seats[seat]}));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 201, "hold: {}", r.text().await.unwrap_or_default());
    }

    /// Core `reader` caches a seat map, core `writer` holds a seat, and the
    /// reader's map shows it: the invalidation travelled through Redis.
    /// Returns how long it took.
    async fn hold_reaches_the_other_instance(&self, writer: usize, reader: usize, v: usize, seat: usize) -> Duration {
        let before = self.seat_map(reader, v).await["available"].as_i64().unwrap();
        assert_eq!(self.seat_map(reader, v).await["available"].as_i64().unwrap(), before, "cached");
        self.hold(writer, v, seat).await;
        let start = Instant::now();
        loop {
            if self.seat_map(reader, v).await["available"].as_i64().unwrap() == before - 1 {
                return start.elapsed();
            }
            assert!(start.elapsed() < Duration::from_secs(10), "the other instance still shows the stale map");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The campaign's gate counts (null before it is built) and the database's claims.
    async fn gate_and_claimed(&self, core: usize) -> (Value, i64) {
        let url = format!("{}/admin/stats", self.cores[core].admin);
        let stats: Value = self.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
        let c = stats["campaigns"].as_array().unwrap().iter().find(|c| c["id"] == self.campaign).unwrap().clone();
        (c["gate"].clone(), c["claimed"].as_i64().unwrap())
    }

    /// The gate, read through each core, agrees with the database: nothing
    /// reserved, issued == claimed, free + claimed == stock.
    async fn gate_agrees(&self) -> bool {
        for core in 0..self.cores.len() {
            let (g, claimed) = self.gate_and_claimed(core).await;
            let n = |k: &str| g[k].as_i64();
            if n("reserved") != Some(0) || n("issued") != Some(claimed) || n("free") != Some(self.stock - claimed) {
                return false;
            }
        }
        true
    }

    /// A counter of core `core`'s `/metrics`.
    async fn metric(&self, core: usize, name: &str) -> f64 {
        let url = format!("{}/metrics", self.cores[core].admin);
        let text = self.client.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    async fn gate_errors(&self) -> f64 {
        let mut sum = 0.0;
        for core in 0..self.cores.len() {
            sum += self.metric(core, "booking_core_gate_errors_total").await;
        }
        sum
    }

    /// Every 201 names the row the database holds for that visitor, no
    /// visitor was told 201 twice, nothing is over-issued. Returns the codes.
    async fn audit(&self, answers: &[(usize, Answer)]) -> HashMap<String, (i64, String)> {
        let codes = crate::issued_codes(&self.database_url).await;
        assert!(codes.len() as i64 <= self.stock, "over-issued: {} codes of {}", codes.len(), self.stock);
        crate::check_answers(&self.visitors, &codes, answers.iter());
        codes
    }

    /// Visitors `plan` claim, `concurrency` at a time, alternating between
    /// the cores; `on_grant` sees the running count of 201s.
    async fn storm(
        self: &Arc<Self>,
        plan: Vec<usize>,
        concurrency: usize,
        until_settled: bool,
        on_grant: Arc<dyn Fn(usize) + Send + Sync>,
    ) -> Vec<(usize, Answer, Instant)> {
        let granted = Arc::new(AtomicUsize::new(0));
        futures_util::stream::iter(plan.into_iter().enumerate())
            .map(|(n, i)| {
                let (shop, granted, on_grant) = (self.clone(), granted.clone(), on_grant.clone());
                async move {
                    let base = &shop.cores[n % shop.cores.len()].public;
                    let token = &shop.tokens[i];
                    let answer = if until_settled {
                        claim_until_settled(&shop.client, base, shop.campaign, token).await
                    } else {
                        claim(&shop.client, base, shop.campaign, token).await
                    };
                    if matches!(answer, Some((201, _))) {
                        on_grant(granted.fetch_add(1, Ordering::SeqCst) + 1);
                    }
                    (i, answer, Instant::now())
                }
            })
            .buffer_unordered(concurrency)
            .collect()
            .await
    }
}

/// A fresh key prefix.
fn prefix() -> String {
    format!("bcha{}", uuid::Uuid::new_v4().simple())
}

/// How many answers of each status (0: none).
fn histogram<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> BTreeMap<u16, usize> {
    let mut h = BTreeMap::new();
    for a in answers {
        *h.entry(a.as_ref().map_or(0, |(s, _)| *s)).or_default() += 1;
    }
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_on_a_redis_cluster_issues_exactly_the_stock_and_seat_maps_fan_out() {
    const STOCK: i64 = 150;
    const VISITORS: usize = 600;
    let started = Instant::now();
    let cluster = RedisCluster::start(3).await;
    // The subscribers listen on the first configured node; list the node
    // serving the channel's slot (where PUBLISH goes) last, so invalidations
    // must cross the cluster bus.
    let prefix = prefix();
    let channel = format!("{prefix}:seatmap");
    let publisher = cluster.owner_of(&channel).await;
    let mut urls = cluster.urls();
    urls.sort_by_key(|u| u.ends_with(&format!(":{publisher}")));
    let nodes = serde_json::to_string(&urls).unwrap();
    let shop = Arc::new(Shop::open(&[("BC_REDIS__CLUSTER_NODES", nodes)], prefix, VISITORS, STOCK).await);
    println!("cluster of 3 and two booking cores up in {:?}", started.elapsed());

    // Every visitor claims twice, in random order, on either instance.
    let mut plan: Vec<usize> = (0..2 * VISITORS).map(|i| i % VISITORS).collect();
    plan.shuffle(&mut rand::thread_rng());
    let sale = Instant::now();
    let answers = shop.storm(plan, 200, false, Arc::new(|_| {})).await;
    let sale = sale.elapsed();
    let answers: Vec<(usize, Answer)> = answers.into_iter().map(|(i, a, _)| (i, a)).collect();
    let statuses = histogram(answers.iter().map(|(_, a)| a));
    println!("{} claims by {VISITORS} visitors in {sale:?}: {statuses:?}", answers.len());

    let codes = shop.audit(&answers).await;
    assert_eq!(codes.len() as i64, STOCK, "exactly the stock is issued");
    assert_eq!(statuses.get(&201).copied().unwrap_or(0) as i64, STOCK, "one 201 per code: {statuses:?}");
    assert!(
        statuses.keys().all(|s| [201, 409, 410].contains(s)),
        "only claimed, already held / in flight, sold out: {statuses:?}\n{}",
        shop.logs()
    );
    // The gate decided every claim: no script failed (one slot per campaign).
    assert_eq!(shop.gate_errors().await, 0.0, "gate errors on the cluster\n{}", shop.logs());
    let settled = await_gate_agrees(&shop, Duration::from_secs(10)).await;
    let (gate, claimed) = shop.gate_and_claimed(1).await;
    println!("gate {gate} ({claimed} claimed) agrees with the database {settled:?} after the sale");
    assert_eq!((gate["free"].as_i64(), gate["issued"].as_i64()), (Some(0), Some(STOCK)));

    let fanout = shop.hold_reaches_the_other_instance(0, 1, 0, 0).await;
    let back = shop.hold_reaches_the_other_instance(1, 0, 1, 1).await;
    println!("seat-map invalidation reached the other instance in {fanout:?} and {back:?}");
    let subscribed_on = urls[0].rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert_ne!(subscribed_on, publisher);
    assert_eq!(cluster.subscribers(subscribed_on, &channel).await, 2, "both subscribe on the first node");
    assert_eq!(cluster.subscribers(publisher, &channel).await, 0, "the publishing node has no subscriber");

    // The gate lives on the node serving its hash tag's slot.
    let gate = format!("{}:{{gate:{}}}", shop.prefix, shop.campaign);
    let owner = cluster.owner_of(&gate).await;
    assert_eq!(owner, cluster.owner_of(&format!("gate:{}", shop.campaign)).await);
    assert_eq!(cluster.hget(owner, &gate, "#issued").await, Some(STOCK.to_string()));
    println!("whole test {:?}", started.elapsed());
}

/// Poll until the gate agrees with the database through every core.
async fn await_gate_agrees(shop: &Shop, within: Duration) -> Duration {
    let start = Instant::now();
    while !shop.gate_agrees().await {
        assert!(start.elapsed() < within, "the gate disagrees with the database\n{}", shop.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_mid_sale_loses_no_acknowledged_claim_and_the_gate_comes_back() {
    const STOCK: i64 = 300;
    const VISITORS: usize = 1000;
    /// Visitors claiming while the primary dies: fewer than the stock, so
    /// the rest of the sale is left for after the failover.
    const STORM: usize = 250;
    /// The primary dies once this many claims were granted, with claims in flight.
    const KILL_AT: usize = 40;
    let started = Instant::now();
    let mut group = SentinelGroup::start().await;
    let env = [
        ("BC_REDIS__SENTINEL__MASTER_NAME", MASTER_NAME.to_owned()),
        ("BC_REDIS__SENTINEL__NODES", format!("[\"{}\"]", group.sentinel_url())),
    ];
    let shop = Arc::new(Shop::open(&env, prefix(), VISITORS, STOCK).await);
    println!("primary + replica + sentinel and two booking cores up in {:?}", started.elapsed());
    let fanout = shop.hold_reaches_the_other_instance(0, 1, 0, 0).await;
    println!("seat-map invalidation before the failover: {fanout:?}");

    // The storm: every visitor claims once; the primary is killed mid-storm.
    let strike = Arc::new(Notify::new());
    let on_grant: Arc<dyn Fn(usize) + Send + Sync> = {
        let strike = strike.clone();
        Arc::new(move |n| {
            if n == KILL_AT {
                strike.notify_one();
            }
        })
    };
    let mut plan: Vec<usize> = (0..STORM).collect();
    plan.shuffle(&mut rand::thread_rng());
    let storm = tokio::spawn({
        let shop = shop.clone();
        async move { shop.storm(plan, 100, false, on_grant).await }
    });
    tokio::time::timeout(Duration::from_secs(60), strike.notified()).await.expect("the storm stalled");
    group.kill_primary();
    let killed = Instant::now();
    println!("primary :{} killed; the replica is :{}", group.primary_port, group.replica_port);
    let first = storm.await.unwrap();
    let after_kill: Vec<&(usize, Answer, Instant)> = first.iter().filter(|(_, _, at)| *at > killed).collect();
    let first_grant_after =
        after_kill.iter().filter(|(_, a, _)| matches!(a, Some((201, _)))).map(|(_, _, at)| *at).min();
    println!(
        "storm: {:?} overall; answered after the kill: {:?}; first 201 after the kill: {:?} later",
        histogram(first.iter().map(|(_, a, _)| a)),
        histogram(after_kill.iter().map(|(_, a, _)| a)),
        first_grant_after.map(|at| at - killed),
    );
    assert!(!after_kill.is_empty(), "the kill struck no claim in flight");
    // Claims go on meanwhile: the database decides them without the gate.
    assert!(first_grant_after.is_some(), "no claim granted while the primary was down");
    let first: Vec<(usize, Answer)> = first.into_iter().map(|(i, a, _)| (i, a)).collect();
    let codes = shop.audit(&first).await;
    println!("{} codes issued during the storm", codes.len());
    assert!(
        first.iter().all(|(_, a)| a.as_ref().is_some_and(|(s, _)| [201, 409, 410, 503].contains(s))),
        "every claim was answered, with a status that says what happened\n{}",
        shop.logs()
    );

    // The failover, as the sentinel sees it, then as the booking cores do.
    let mut switched = None;
    let mut ready = [None, None];
    let deadline = killed + Duration::from_secs(20);
    while switched.is_none() || ready.iter().any(Option::is_none) {
        if switched.is_none() && group.primary_now().await == Some(group.replica_port) {
            switched = Some(killed.elapsed());
        }
        for (core, at) in ready.iter_mut().enumerate() {
            if at.is_none() {
                let url = format!("{}/readyz", shop.cores[core].admin);
                let r: Value = shop.client.get(url).send().await.unwrap().json().await.unwrap();
                if r["checks"]["redis"] == "ok" && switched.is_some() {
                    *at = Some(killed.elapsed());
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no failover within 20 s: sentinel switched {switched:?}, cores ready {ready:?}\n{}",
            shop.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    await_gate_agrees(&shop, Duration::from_secs(20)).await;
    let gate_back = killed.elapsed();
    println!(
        "kill -9 → sentinel names the replica: {switched:?}; → both cores reach it: {ready:?}; \
         → gate agrees with the database: {gate_back:?}"
    );
    assert!(gate_back < Duration::from_secs(30), "recovery took {gate_back:?}");

    // The rest of the sale goes through the gate on the new primary.
    let errors = shop.gate_errors().await;
    let second = shop.storm((0..VISITORS).collect(), 100, true, Arc::new(|_| {})).await;
    let second: Vec<(usize, Answer)> = second.into_iter().map(|(i, a, _)| (i, a)).collect();
    let statuses = histogram(second.iter().map(|(_, a)| a));
    println!("after the failover: {statuses:?}");
    let sold_before = first.iter().filter(|(_, a)| matches!(a, Some((201, _)))).count();
    assert_eq!(
        statuses.get(&201).copied().unwrap_or(0) as i64,
        STOCK - sold_before as i64,
        "the rest of the stock is sold after the failover"
    );
    assert_eq!(shop.gate_errors().await, errors, "claims after the failover were decided by the gate");
    let all: Vec<(usize, Answer)> = first.iter().chain(&second).cloned().collect();
    let codes = shop.audit(&all).await;
    assert_eq!(codes.len() as i64, STOCK, "the whole stock is issued, exactly");
    for (i, answer) in &second {
        match (answer, codes.get(&shop.visitors[*i])) {
            (Some((201 | 409, body)), Some((_, code))) => assert_eq!(body["code"].as_str(), Some(code.as_str())),
            (Some((410, _)), None) => {}
            (other, held) => panic!("visitor {i} holds {held:?} but was answered {other:?}"),
        }
    }
    await_gate_agrees(&shop, Duration::from_secs(10)).await;

    // Seat maps fan out on the new primary once both subscribers are back on it.
    let channel = format!("{}:seatmap", shop.prefix);
    let mut conn = group.replica().await;
    let resubscribed = Instant::now();
    loop {
        let numsub: (String, i64) =
            redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel).query_async(&mut conn).await.unwrap();
        if numsub.1 == 2 {
            break;
        }
        assert!(resubscribed.elapsed() < Duration::from_secs(10), "subscribers on the new primary: {}", numsub.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fanout = shop.hold_reaches_the_other_instance(1, 0, 2, 2).await;
    println!("seat-map invalidation after the failover: {fanout:?}; whole test {:?}", started.elapsed());
}
