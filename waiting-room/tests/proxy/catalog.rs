//! Queues managed at runtime (`catalog.rs`): created, redefined and deleted
//! through one instance's admin API, applied by every instance on the store;
//! validated like the config file; surviving a store that forgets.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;

async fn admin(
    c: &reqwest::Client,
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = c.request(method, format!("{}{path}", proxy.admin)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin_up(c: &reqwest::Client, p: &Proxy) {
    eventually("the admin API answers", Duration::from_secs(10), || async {
        let r = c.get(format!("{}/admin/catalog", p.admin)).bearer_auth(ADMIN_TOKEN).send().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
}

/// What the proxy does with a request for `path` without a token: `true`
/// if a queue holds it (401), `false` if it reached the upstream (200).
async fn gated(c: &reqwest::Client, p: &Proxy, path: &str) -> bool {
    let status = c.get(p.url(path)).send().await.unwrap().status().as_u16();
    assert!(status == 401 || status == 200, "{path}: {status}");
    status == 401
}

/// Wait until every proxy gates (`true`) or passes (`false`) each path as
/// `expect` says; returns how long the slowest took.
async fn until_gating(what: &str, proxies: &[&Proxy], expect: &[(&str, bool)]) -> Duration {
    let (c, started) = (client(), Instant::now());
    for p in proxies {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut ok = true;
            for (path, want) in expect {
                ok &= gated(&c, p, path).await == *want;
            }
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "{what}: not seen on {} within 5 s", p.base);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    started.elapsed()
}

/// The queue ids of a catalog document (`GET /admin/catalog`, or the stored JSON).
fn ids_of(catalog: &Value) -> Vec<String> {
    catalog["queues"].as_array().unwrap().iter().map(|e| e["config"]["id"].as_str().unwrap().to_owned()).collect()
}

/// A minimal queue definition `id` protecting `path`.
fn small_queue(id: &str, path: &str) -> Value {
    json!({"id": id, "paths": [path], "release_per_tick": 1, "tick": "1s", "session": "1m"})
}

/// Two instances on one Redis (fresh prefix `name`), each admin API up.
async fn two_instances(name: &str) -> (Shared, Proxy, Proxy) {
    let shared = Shared::new(name).await;
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    let a = Proxy::start(shared.spec(&q)).await;
    let b = Proxy::start(shared.spec(&q)).await;
    let c = client();
    admin_up(&c, &a).await;
    admin_up(&c, &b).await;
    (shared, a, b)
}

fn drop_queue() -> Value {
    json!({
        "id": "drop",
        "name": "Winter drop",
        "paths": ["/drop"],
        "release_per_tick": 1,
        "tick": "1s",
        "session": "10m",
        "template": "<!doctype html><html lang=\"en\"><head><title>{{queue_name}}</title></head>\
                     <body><h1>Our own page for {{queue_name}}</h1><p>{{position}}</p></body></html>",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_created_redefined_and_deleted_on_one_instance_is_applied_by_every_instance() {
    let shared = Shared::new("catalog").await;
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    let a = Proxy::start(shared.spec(&q)).await;
    let b = Proxy::start(shared.spec(&q)).await;
    let cc = Proxy::start(shared.spec(&q)).await;
    let c = client();
    for p in [&a, &b, &cc] {
        admin_up(&c, p).await;
    }
    assert!(!gated(&c, &b, "/drop/x").await, "no queue protects /drop yet");

    // Created through A: every instance protects its paths and serves its page.
    let (status, created) = admin(&c, &a, reqwest::Method::POST, "/admin/queues", Some(drop_queue())).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["id"], "drop");
    assert_eq!(created["paths"], json!(["/drop"]));
    let took = until_gating("the new queue protects /drop", &[&a, &b, &cc], &[("/drop/x", true)]).await;
    println!("a created queue was applied by all three instances after {took:?}");
    for p in [&b, &cc] {
        let page = c.get(p.url("/wr/drop")).send().await.unwrap().text().await.unwrap();
        assert!(page.contains("Our own page for Winter drop"), "{page}");
        let (status, s) = admin(&c, p, reqwest::Method::GET, "/admin/queues/drop", None).await;
        assert_eq!((status, s["name"].clone()), (200, json!("Winter drop")));
    }

    // A visitor waits in it on C's socket (1 per tick, someone ahead).
    let mut first = Visitor::default();
    first.join(&c, &b, "drop").await;
    let mut waiter = Visitor::default();
    let mut ws = connect_ws(&cc, "drop", &mut waiter).await;
    let hello = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert!(["WAITING", "READY"].contains(&hello["status"].as_str().unwrap()), "{hello}");

    // Redefined through B: new paths and name everywhere, the line kept.
    let (status, s) = admin(
        &c,
        &b,
        reqwest::Method::PATCH,
        "/admin/queues/drop",
        Some(json!({"paths": ["/drop2"], "name": "Winter drop, part 2"})),
    )
    .await;
    assert_eq!(status, 200, "{s}");
    let took = until_gating("the redefined paths", &[&a, &b, &cc], &[("/drop2/x", true), ("/drop/x", false)]).await;
    println!("a redefinition was applied by all three instances after {took:?}");
    let page = c.get(a.url("/wr/drop")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Winter drop, part 2"), "{page}");
    let (_, s) = admin(&c, &a, reqwest::Method::GET, "/admin/queues/drop", None).await;
    assert!(s["waiting"].as_u64().unwrap() + s["active"].as_u64().unwrap() >= 2, "the line was kept: {s}");

    // Deleting a queue people are in needs force.
    let (status, refused) = admin(&c, &cc, reqwest::Method::DELETE, "/admin/queues/drop", None).await;
    assert_eq!(status, 409, "{refused}");
    assert!(refused["detail"].as_str().unwrap().contains("force=true"), "{refused}");
    let (status, deleted) = admin(&c, &cc, reqwest::Method::DELETE, "/admin/queues/drop?force=true", None).await;
    assert_eq!(status, 200, "{deleted}");
    // The socket held on C hears CLOSED and a normal close, unless it was
    // admitted before (then it closed already).
    if hello["status"] == "WAITING" {
        let mut last = Value::Null;
        while let Some(m) = next_json(&mut ws, Duration::from_secs(5)).await {
            last = m;
            if last["status"] == "CLOSED" {
                break;
            }
        }
        assert_eq!(last["status"], "CLOSED", "{last}");
        assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1000));
    }
    let took = until_gating("the deleted queue's paths are open", &[&a, &b, &cc], &[("/drop2/x", false)]).await;
    println!("a deletion was applied by all three instances after {took:?}");
    for p in [&a, &b, &cc] {
        let (status, _) = admin(&c, p, reqwest::Method::GET, "/admin/queues/drop", None).await;
        assert_eq!(status, 404);
        let r = c.post(p.url("/wr/drop/join")).send().await.unwrap();
        assert_eq!(r.status(), 404, "no joining a deleted queue");
        assert!(gated(&c, p, "/a/x").await, "the other queue is untouched");
    }

    // Created again under the same id: an empty line.
    let (status, again) = admin(&c, &b, reqwest::Method::POST, "/admin/queues", Some(drop_queue())).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!((again["waiting"].as_u64(), again["active"].as_u64()), (Some(0), Some(0)), "{again}");
    let versions: Vec<Value> = futures_util::future::join_all([&a, &b, &cc].map(|p| async {
        let c = client();
        eventually("the same catalog version", Duration::from_secs(5), || async {
            let (_, cat) = admin(&c, p, reqwest::Method::GET, "/admin/catalog", None).await;
            if ids_of(&cat) == ["q", "drop"] { Ok(cat["version"].clone()) } else { Err(cat.to_string()) }
        })
        .await
    }))
    .await;
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_is_validated_like_the_config_file_with_the_key_named() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    let p = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();
    admin_up(&c, &p).await;
    let with = |k: &str, v: Value| {
        let mut d = drop_queue();
        d[k] = v;
        d
    };
    let cases = [
        (with("paths", json!(["/a/inner"])), "queues[1].paths[0]", "overlaps"),
        (with("paths", json!(["/wr/x"])), "queues[1].paths[0]", "reserved"),
        (with("paths", json!([])), "queues[1].paths", "at least one"),
        (with("id", json!("no spaces")), "queues[1].id", "expected 1-64"),
        (with("tick", json!("ten")), "tick", "duration"),
        (with("release_per_tick", json!("many")), "release_per_tick", "invalid type"),
        (with("opens_at", json!("tomorrow")), "opens_at", "RFC 3339"),
        (with("colour", json!("blue")), "colour", "unknown field"),
        (with("page_template", json!("/etc/passwd")), "queues[1].page_template", "template itself"),
        (with("template", json!("x".repeat(70_000))), "queues[1].template", "at most"),
        (with("prequeue_from", json!("2030-01-01T00:00:00Z")), "queues[1].prequeue_from", "needs opens_at"),
        (with("stop_when_sold_out", json!(true)), "queues[1].stop_when_sold_out", "[stock] url"),
    ];
    for (body, field, words) in cases {
        let (status, problem) = admin(&c, &p, reqwest::Method::POST, "/admin/queues", Some(body)).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains(words), "{field}: {problem}");
    }
    let mut no_paths = drop_queue();
    no_paths.as_object_mut().unwrap().remove("paths");
    let (status, problem) = admin(&c, &p, reqwest::Method::POST, "/admin/queues", Some(no_paths)).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("paths")), "{problem}");
    let (status, problem) = admin(&c, &p, reqwest::Method::POST, "/admin/queues", Some(json!([1]))).await;
    assert_eq!(status, 422, "{problem}");
    let (status, problem) = admin(&c, &p, reqwest::Method::POST, "/admin/queues", Some(with("id", json!("q")))).await;
    assert_eq!(status, 409, "an existing id: {problem}");
    // A redefinition: same rules; the id never changes; null removes a key.
    let (status, _) = admin(&c, &p, reqwest::Method::POST, "/admin/queues", Some(drop_queue())).await;
    assert_eq!(status, 201);
    let patch = |body: Value| admin(&c, &p, reqwest::Method::PATCH, "/admin/queues/drop", Some(body));
    let (status, problem) = patch(json!({"paths": ["/"]})).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("queues[1].paths[0]")), "{problem}");
    let (status, problem) = patch(json!({"id": "other"})).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("id")), "{problem}");
    let (status, problem) =
        patch(json!({"closes_at": "2020-01-01T00:00:00Z", "opens_at": "2021-01-01T00:00:00Z"})).await;
    assert_eq!((status, problem["field"].clone()), (422, json!("queues[1].closes_at")), "{problem}");
    // Nothing of the refused changes was applied.
    assert!(gated(&c, &p, "/drop/x").await && !gated(&c, &p, "/b").await);
    // Settings and definition in one call; then the schedule removed again.
    let (status, s) = patch(json!({"release_per_tick": 7, "closes_at": "2020-01-01T00:00:00Z"})).await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["settings"]["admission"]["release_per_tick"], 7);
    assert_eq!(s["phase"], "closed");
    let (status, s) = patch(json!({"closes_at": null})).await;
    assert_eq!((status, s["phase"].clone()), (200, json!("open")), "{s}");
    // Memory backend: this instance is the store; the catalog says so.
    let (_, cat) = admin(&c, &p, reqwest::Method::GET, "/admin/catalog", None).await;
    assert_eq!(cat["queues"][1]["config"]["closes_at"], Value::Null, "{cat}");
    assert!(cat["queues"][1]["template"].as_str().unwrap().contains("Our own page"), "{cat}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_through_two_instances_are_all_kept_and_a_duplicate_id_is_created_once() {
    let (_shared, a, b) = two_instances("catalog-race").await;
    let c = client();
    let creates = (0..16).map(|i| {
        let (c, p) = (c.clone(), if i % 2 == 0 { &a } else { &b });
        async move {
            let body = small_queue(&format!("q{i}"), &format!("/p{i}"));
            admin(&c, p, reqwest::Method::POST, "/admin/queues", Some(body)).await.0
        }
    });
    let statuses = futures_util::future::join_all(creates).await;
    assert!(statuses.iter().all(|s| *s == 201), "every change is kept: {statuses:?}");
    let created = statuses.len();
    for p in [&a, &b] {
        eventually("every created queue on both", Duration::from_secs(5), || async {
            let (_, cat) = admin(&c, p, reqwest::Method::GET, "/admin/catalog", None).await;
            let n = cat["queues"].as_array().unwrap().len();
            if n == 1 + created { Ok(()) } else { Err(format!("{n} queues: {cat}")) }
        })
        .await;
    }
    let same = (0..10).map(|i| {
        let (c, p) = (c.clone(), if i % 2 == 0 { &a } else { &b });
        async move {
            let body = small_queue("same", &format!("/same{i}"));
            admin(&c, p, reqwest::Method::POST, "/admin/queues", Some(body)).await.0
        }
    });
    let statuses = futures_util::future::join_all(same).await;
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_forgets_the_catalog_gets_it_back_and_a_restarted_instance_runs_the_stored_one() {
    let shared = Shared::new("catalog-forgets").await;
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    let a = Proxy::start(shared.spec(&q)).await;
    let c = client();
    admin_up(&c, &a).await;
    let (status, _) = admin(&c, &a, reqwest::Method::POST, "/admin/queues", Some(drop_queue())).await;
    assert_eq!(status, 201);
    // The store forgets the catalog (a Redis restarted empty): A saves the
    // one it runs back.
    let key = format!("{{{}}}:catalog", shared.prefix);
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let removed: u64 = redis::cmd("DEL").arg(&key).query_async(&mut redis).await.unwrap();
    assert_eq!(removed, 1);
    eventually("the catalog is saved back", Duration::from_secs(5), || async {
        let json: Option<String> =
            redis::cmd("HGET").arg(&key).arg("json").query_async(&mut redis.clone()).await.unwrap();
        match json {
            Some(j) if j.contains("\"drop\"") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // An instance started with a file that lacks "drop" runs the stored catalog.
    let late = Proxy::start(shared.spec(&q)).await;
    admin_up(&c, &late).await;
    eventually("the late instance runs the stored queue", Duration::from_secs(5), || async {
        if gated(&c, &late, "/drop/x").await { Ok(()) } else { Err("/drop passes".into()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_creates_a_queue_the_file_gained_and_redefines_one_it_changed() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    let p = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();
    admin_up(&c, &p).await;
    assert!(!gated(&c, &p, "/late/x").await);
    p.edit_config(|t| {
        format!("{}\n{}", t.replace("paths = [\"/a\"]", "paths = [\"/a2\"]"), queue("late", "/late", 1, "1s", "1m", 0))
    });
    p.signal("HUP");
    eventually("the reload applied", Duration::from_secs(5), || async {
        let c = client();
        let seen = (gated(&c, &p, "/late/x").await, gated(&c, &p, "/a2").await, gated(&c, &p, "/a").await);
        if seen == (true, true, false) { Ok(()) } else { Err(format!("{seen:?}")) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_during_changes_leaves_each_change_whole_or_absent() {
    let (shared, a, b) = two_instances("catalog-kill").await;
    let c = client();
    // Eight creates through B; B is killed (SIGKILL) while they are in flight.
    let creates = (0..8).map(|i| {
        let (c, admin) = (c.clone(), b.admin.clone());
        tokio::spawn(async move {
            let body = small_queue(&format!("k{i}"), &format!("/k{i}"));
            let r = c.post(format!("{admin}/admin/queues")).bearer_auth(ADMIN_TOKEN).json(&body).send().await;
            (i, r.map(|r| r.status().as_u16()).ok())
        })
    });
    let creates: Vec<_> = creates.collect();
    tokio::time::sleep(Duration::from_millis(3)).await;
    b.signal("KILL");
    let mut acknowledged = Vec::new();
    for t in creates {
        if let (i, Some(201)) = t.await.unwrap() {
            acknowledged.push(format!("k{i}"));
        }
    }
    // The store's catalog holds every acknowledged create, each whole; A
    // runs exactly the store's catalog and gates each of its queues' paths.
    let key = format!("{{{}}}:catalog", shared.prefix);
    let mut redis = redis::Client::open(redis_url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let stored: String = redis::cmd("HGET").arg(&key).arg("json").query_async(&mut redis).await.unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    let ids = ids_of(&stored);
    for id in &acknowledged {
        assert!(ids.contains(id), "acknowledged {id} is not in the catalog {ids:?}");
    }
    eventually("A runs the stored catalog", Duration::from_secs(5), || async {
        let (_, cat) = admin(&c, &a, reqwest::Method::GET, "/admin/catalog", None).await;
        let here = ids_of(&cat);
        if here == ids { Ok(()) } else { Err(format!("{here:?} vs {ids:?}")) }
    })
    .await;
    for i in 0..8 {
        let id = format!("k{i}");
        assert_eq!(gated(&c, &a, &format!("/k{i}/x")).await, ids.contains(&id), "{id}: {ids:?}");
    }
    println!("killed mid-change: {} of 8 acknowledged, {} in the catalog", acknowledged.len(), ids.len() - 1);
    // The survivor takes changes as before.
    let (status, _) = admin(&c, &a, reqwest::Method::POST, "/admin/queues", Some(drop_queue())).await;
    assert_eq!(status, 201);
}
