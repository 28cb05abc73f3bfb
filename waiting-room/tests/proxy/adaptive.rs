//! Adaptive admission over three instances on one Redis: every instance
//! measures the admitted requests it forwards, the store merges them, and
//! each tick is judged exactly once, by the instance that performed it.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

const VISITORS: usize = 60;
const REQUESTS: usize = 5;

async fn admin(c: &reqwest::Client, proxy: &Proxy, path: &str) -> Value {
    c.get(format!("{}{path}", proxy.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap()
}

/// Sum of a counter over every reason label of `metric` for queue `q`.
async fn all_reasons(c: &reqwest::Client, proxy: &Proxy, metric: &str) -> f64 {
    let mut sum = 0.0;
    for reason in ["headroom", "overload", "hold", "draining", "pinned", "fixed"] {
        sum += self::metric(c, proxy, &format!("{metric}{{queue=\"q\",reason=\"{reason}\"}}")).await;
    }
    sum
}

/// [`VISITORS`] visitors at once, each joining and served on one of `bases`
/// in turn; returns once every one was admitted and served.
async fn wave(c: &reqwest::Client, bases: &[&String]) {
    let visitors: Vec<_> = (0..VISITORS)
        .map(|i| {
            let (c, base) = (c.clone(), bases[i % bases.len()].clone());
            tokio::spawn(async move { visit(&c, &base, &vec![base.clone(); REQUESTS]).await })
        })
        .collect();
    for v in visitors {
        v.await.unwrap();
    }
}

/// Every logged tick released at most its N, and N stayed within the
/// queue's bounds (4..=50); the visitors released in all.
fn released_within_bounds(ticks: &[Value]) -> u64 {
    ticks
        .iter()
        .map(|t| {
            let (n, r) = (t["n"].as_u64().unwrap(), t["released"].as_u64().unwrap());
            assert!(r <= n && (4..=50).contains(&n), "{t}");
            r
        })
        .sum()
}

/// A visitor joins at `join_at`, polls there until admitted, then sends one
/// admitted request to each base of `serve` in turn.
async fn visit(c: &reqwest::Client, join_at: &str, serve: &[String]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    // A store that just came back may answer a join 503 (Retry-After): again.
    let r = loop {
        let r = c.post(format!("{join_at}/wr/q/join")).send().await.unwrap();
        if r.status() == 200 {
            break r;
        }
        assert!(r.status() == 503 && std::time::Instant::now() < deadline, "join answered {}", r.status());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let mut status: Value = r.json().await.unwrap();
    while status["status"] != "READY" {
        assert!(std::time::Instant::now() < deadline, "never admitted: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = c.get(format!("{join_at}/wr/q/status")).header("cookie", &cookie).send().await.unwrap();
        status = r.json().await.unwrap();
    }
    let token = status["token"].as_str().unwrap().to_owned();
    for serve_at in serve {
        let r = c.get(format!("{serve_at}/p/x")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_merge_their_signals_and_each_tick_is_decided_once() {
    let shared = Shared::new("adaptive").await;
    let queue = format!(
        "{}admission = \"adaptive\"\nmin_per_tick = 4\nmax_per_tick = 50\narrival_grace = \"30s\"\n",
        queue("q", "/p", 1, "200ms", "10m", 0)
    );
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(shared.spec(&queue)).await);
    }
    let c = client();
    // Each visitor joins on one instance and sends its admitted requests
    // through all three in turn: each instance sees the token for the first
    // time and reports an arrival, which must count once.
    let bases: Vec<String> = proxies.iter().map(|p| p.base.clone()).collect();
    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let (c, bases) = (c.clone(), bases.clone());
        let join_at = bases[i % 3].clone();
        let serve: Vec<String> = (0..REQUESTS).map(|j| bases[(i + 1 + j) % 3].clone()).collect();
        tasks.push(tokio::spawn(async move { visit(&c, &join_at, &serve).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(shared.upstream.count(), VISITORS * REQUESTS);

    // Every arrival is counted once, by whichever instance judged the
    // window it landed in, although three instances reported them (all of
    // them unless a tick's answer was lost to a store timeout, which loses
    // that window's counts).
    let mut arrivals = 0.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while arrivals < VISITORS as f64 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        arrivals = 0.0;
        for p in &proxies {
            arrivals += metric(&c, p, "waiting_room_arrivals_total{queue=\"q\"}").await;
        }
    }
    assert!((VISITORS as f64 * 0.95..=VISITORS as f64).contains(&arrivals), "{arrivals} arrivals");

    // Exactly one decision per tick: each instance decided the ticks it
    // performed (the decision comes just before the tick is counted). The
    // log is read first: ticks go on while the metrics are read.
    let log = admin(&c, &proxies[0], "/admin/queues/q/ticks?limit=1000").await;
    let ticks = log["ticks"].as_array().unwrap();
    let mut decisions = 0.0;
    for p in &proxies {
        let ticks = metric(&c, p, "waiting_room_ticks_total{queue=\"q\"}").await;
        let decided = all_reasons(&c, p, "waiting_room_adaptive_decisions_total").await;
        assert!(decided >= ticks && decided <= ticks + 1.0, "{decided} decisions for {ticks} ticks");
        decisions += decided;
    }
    assert!(decisions >= ticks.len() as f64 - 1.0 && decisions <= ticks.len() as f64 + 10.0, "{decisions} {log}");
    // Every tick released at most the N decided before it, within the bounds;
    // requests of the visitors let N grow from the minimum.
    assert_eq!(released_within_bounds(ticks), VISITORS as u64, "{log}");
    // Every instance shows the same decision (the one saved in the store).
    let shown = eventually("the same decision everywhere", Duration::from_secs(5), || async {
        let mut seen = Vec::new();
        for p in &proxies {
            let s = admin(&c, p, "/admin/queues/q").await;
            seen.push((s["controller"]["mode"].clone(), s["controller"]["n"].clone()));
        }
        if seen.iter().all(|s| *s == seen[0]) { Ok(seen[0].clone()) } else { Err(format!("{seen:?}")) }
    })
    .await;
    assert_eq!(shown.0, "adaptive");
    assert!(shown.1.as_u64().is_some_and(|n| (4..=50).contains(&n)), "{shown:?}");
}

/// kill -9 of an instance that ticks and decides, again and again under
/// load: the other instance goes on ticking and deciding from the last
/// saved decision (a tick whose decision died with its instance is judged
/// by nobody: the next tick holds N), no tick releases more than its N, and
/// every visitor gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_deciding_instance_leaves_the_controller_to_the_others() {
    let shared = Shared::new("adaptive-kill").await;
    let queue = format!(
        "{}admission = \"adaptive\"\nmin_per_tick = 4\nmax_per_tick = 50\narrival_grace = \"30s\"\n",
        queue("q", "/p", 1, "200ms", "10m", 0)
    );
    let mut a = Proxy::start(shared.spec(&queue)).await;
    let b = Proxy::start(shared.spec(&queue)).await;
    let c = client();
    eventually("the admin API answers", Duration::from_secs(10), || async {
        let r = c.get(format!("{}/admin/queues/q", b.admin)).bearer_auth(ADMIN_TOKEN).send().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    let base = b.base.clone();
    let visitors: Vec<_> = (0..VISITORS)
        .map(|_| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move { visit(&c, &base, &vec![base.clone(); REQUESTS]).await })
        })
        .collect();
    // While the line moves: kill -9 the other instance three times, each
    // time after it has ticked (and so decided) at least once.
    for _ in 0..3 {
        let before = metric(&c, &a, "waiting_room_ticks_total{queue=\"q\"}").await;
        eventually("a ticks", Duration::from_secs(10), || async {
            let now = metric(&c, &a, "waiting_room_ticks_total{queue=\"q\"}").await;
            if now > before { Ok(()) } else { Err(format!("{now} ticks")) }
        })
        .await;
        a.stop();
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.restart().await;
    }
    for v in visitors {
        v.await.unwrap();
    }
    let log = admin(&c, &b, "/admin/queues/q/ticks?limit=1000").await;
    let ticks = log["ticks"].as_array().unwrap();
    assert_eq!(released_within_bounds(ticks), VISITORS as u64, "{log}");
    // Decisions went on after the last kill: the one saved judged a tick
    // within a few of the latest.
    let latest = ticks.iter().map(|t| t["tick"].as_u64().unwrap()).max().unwrap();
    let decided = eventually("a recent decision", Duration::from_secs(5), || async {
        let s = admin(&c, &b, "/admin/queues/q").await;
        let tick = s["controller"]["tick"].as_u64().unwrap_or(0);
        if tick + 5 >= latest { Ok(tick) } else { Err(format!("decision of tick {tick}, latest {latest}: {s}")) }
    })
    .await;
    assert!(decided > 0);
}

/// The store forgets mid-sale (Redis restarted empty under two instances):
/// the controller's state went with it, so N starts again from the minimum
/// (slow start, as for a new queue) and never leaves the bounds; decisions
/// resume on the new line; visitors rejoin (their tickets restore their
/// order) and all get in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_adaptive_queue_starts_over_from_the_minimum_when_redis_forgets() {
    let port = free_port();
    let redis = RedisServer::start(port);
    let url = redis.url();
    let shared = Shared::new("adaptive-forgets").await;
    let queue = format!(
        "{}admission = \"adaptive\"\nmin_per_tick = 4\nmax_per_tick = 50\narrival_grace = \"30s\"\n",
        queue("q", "/p", 1, "200ms", "10m", 0)
    );
    let spec = || ProxySpec { redis_url: Some(&url), ..shared.spec(&queue) };
    let (a, b) = (Proxy::start(spec()).await, Proxy::start(spec()).await);
    let c = client();
    eventually("the admin API answers", Duration::from_secs(10), || async {
        let r = c.get(format!("{}/admin/queues/q", a.admin)).bearer_auth(ADMIN_TOKEN).send().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
    // A first wave grows N past the minimum.
    wave(&c, &[&a.base, &b.base]).await;
    let grown = admin(&c, &a, "/admin/queues/q").await["controller"]["n"].as_u64().unwrap_or(0);

    // Redis restarts empty.
    redis.signal("-KILL");
    drop(redis);
    let redis = RedisServer::start(port);
    // A second wave on the new line: every visitor gets in, every tick of the
    // new line stays within the bounds, and decisions are made again.
    wave(&c, &[&a.base, &b.base]).await;
    let log = admin(&c, &b, "/admin/queues/q/ticks?limit=1000").await;
    let ticks = log["ticks"].as_array().unwrap();
    assert_eq!(released_within_bounds(ticks), VISITORS as u64, "the new line's log holds the second wave: {log}");
    let oldest = ticks.iter().min_by_key(|t| t["tick"].as_u64().unwrap()).unwrap();
    assert_eq!(oldest["n"], 4, "the new line starts from the minimum (it grew to {grown} before): {oldest}");
    let s = eventually("decisions on the new line", Duration::from_secs(5), || async {
        let s = admin(&c, &a, "/admin/queues/q").await;
        if s["controller"]["tick"].as_u64().is_some_and(|t| t > 0) { Ok(s) } else { Err(s.to_string()) }
    })
    .await;
    assert_eq!(s["controller"]["mode"], "adaptive");
    drop(redis);
}
