//! Operator controls: config reload on SIGHUP and the admin API, applied live
//! and (with Redis) on every instance.

use std::time::{Duration, Instant};

use crate::helpers::*;
use serde_json::Value;

/// Wait for the admin listener, its own service: it may come up just after
/// the public one answered the health check.
async fn admin_answers(c: &reqwest::Client, p: &Proxy) {
    eventually("the admin API answers", Duration::from_secs(10), || async {
        let r = c.get(format!("{}/admin/queues/q", p.admin)).bearer_auth(ADMIN_TOKEN).send().await;
        r.map(|_| ()).map_err(|e| e.to_string())
    })
    .await;
}

async fn admin(
    c: &reqwest::Client,
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut req = c.request(method, format!("{}{path}", proxy.admin)).bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_owned());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Wait until `check` holds for the queue state read through `proxy`.
async fn until_state(
    c: &reqwest::Client,
    proxy: &Proxy,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, s) = admin(c, proxy, reqwest::Method::GET, "/admin/queues/q", None).await;
        assert_eq!(status, 200, "{s}");
        if check(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never happened: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_settings_live_and_rejects_an_invalid_edit() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 1, "1s", "10m", 1);
    let proxy = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();
    let mut admitted = Visitor::default();
    let token = admitted.join(&c, &proxy, "q").await["token"].as_str().unwrap().to_owned();
    let mut waiting = vec![Visitor::default(); 12];
    for v in &mut waiting {
        v.join(&c, &proxy, "q").await;
    }
    let mut socket_owner = waiting[11].clone();
    let mut ws = connect_ws(&proxy, "q", &mut socket_owner).await;
    next_json(&mut ws, Duration::from_secs(5)).await.unwrap();

    proxy.edit_config(|t| t.replace("release_per_tick = 1", "release_per_tick = 5"));
    proxy.signal("HUP");
    let s = until_state(&c, &proxy, "reload", |s| s["settings"]["admission"]["release_per_tick"] == 5).await;
    assert_eq!(s["settings"]["admission"]["tick"], "1s");
    // The next ticks release 5 at a time: after the reload, the released total grows by 5 per tick.
    let before = s["released_total"].as_u64().unwrap();
    let after = until_state(&c, &proxy, "a tick", |s| s["released_total"].as_u64().unwrap() > before).await;
    assert_eq!(after["released_total"].as_u64().unwrap() - before, 5);
    // The socket stayed open and kept receiving; the old token still works.
    assert!(next_json(&mut ws, Duration::from_secs(5)).await.is_some());
    assert_eq!(c.get(proxy.url("/a/x")).bearer_auth(&token).send().await.unwrap().status(), 200);

    // An invalid edit is rejected and the old settings stay.
    proxy.edit_config(|t| t.replace("tick = \"1s\"", "tick = \"ten\""));
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&c, &proxy, "waiting_room_config_reloads_total{result=\"rejected\"}").await < 1.0 {
        assert!(Instant::now() < deadline, "the bad reload was never reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.log().contains("queues[0].tick"), "the log names the bad key");
    let (_, s) = admin(&c, &proxy, reqwest::Method::GET, "/admin/queues/q", None).await;
    assert_eq!(s["settings"]["admission"]["tick"], "1s");
    assert_eq!(s["settings"]["admission"]["release_per_tick"], 5);
    assert_eq!(c.get(proxy.url("/wr/healthz")).send().await.unwrap().status(), 200, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_through_one_instance_apply_to_all() {
    let upstream = Upstream::start().await;
    let prefix = unique("admin");
    let keys = tempfile::tempdir().unwrap();
    let q = queue("q", "/a", 2, "500ms", "10m", 0);
    let a = Proxy::start(ProxySpec::redis(&q, upstream.addr, &prefix).keys(keys.path())).await;
    let b = Proxy::start(ProxySpec::redis(&q, upstream.addr, &prefix).keys(keys.path())).await;
    let c = client();

    // Auth and bad input first.
    let r = c.get(format!("{}/admin/queues", a.admin)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(format!("{}/admin/queues", a.admin)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, body) = admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"tick":"ten"}"#)).await;
    assert_eq!(status, 422);
    assert!(body["detail"].as_str().unwrap().starts_with("tick:"), "{body}");
    let (status, body) =
        admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"release_per_tick":0}"#)).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("release_per_tick")), "{body}");
    let (status, _) = admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"nonsense":1}"#)).await;
    assert_eq!(status, 422);
    let (status, _) = admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some("{not json")).await;
    assert_eq!(status, 422);
    let (status, _) = admin(&c, &a, reqwest::Method::GET, "/admin/queues/nope", None).await;
    assert_eq!(status, 404);

    // Pause through A: B sees it, and nobody is released by anyone.
    let (status, s) = admin(&c, &a, reqwest::Method::POST, "/admin/queues/q/pause", None).await;
    assert_eq!((status, s["settings"]["paused"].as_bool()), (200, Some(true)), "{s}");
    until_state(&c, &b, "pause on B", |s| s["settings"]["paused"] == true).await;
    let mut vs = vec![Visitor::default(); 6];
    for (i, v) in vs.iter_mut().enumerate() {
        let s = v.join(&c, if i % 2 == 0 { &a } else { &b }, "q").await;
        assert_eq!(s["paused"], true, "waiting visitors are told: {s}");
    }
    let released = until_state(&c, &b, "read", |_| true).await["released_total"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = until_state(&c, &b, "read", |_| true).await;
    assert_eq!(s["released_total"].as_u64().unwrap(), released, "nothing released while paused");
    assert_eq!(s["waiting"], 6);

    // Change N through B, resume through A: both instances release 4 per tick.
    let (status, s) =
        admin(&c, &b, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"release_per_tick":4,"tick":"700ms"}"#))
            .await;
    assert_eq!(status, 200, "{s}");
    until_state(&c, &a, "N on A", |s| s["settings"]["admission"]["release_per_tick"] == 4).await;
    admin(&c, &a, reqwest::Method::POST, "/admin/queues/q/resume", None).await;
    let s =
        until_state(&c, &b, "first release after resume", |s| s["released_total"].as_u64().unwrap() > released).await;
    assert_eq!(s["released_total"].as_u64().unwrap() - released, 4, "{s}");
    for (i, v) in vs.iter_mut().enumerate().take(4) {
        assert_eq!(v.status(&c, &a, "q").await["status"], "READY", "visitor {i}");
    }

    // queue-all: even with free entry, newcomers wait; free-entry restores it.
    admin(&c, &b, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"free_entry":100}"#)).await;
    until_state(&c, &a, "free entry on A", |s| s["settings"]["admission"]["free_entry"] == 100).await;
    until_state(&c, &a, "line empty", |s| s["waiting"] == 0).await;
    admin(&c, &a, reqwest::Method::POST, "/admin/queues/q/queue-all", None).await;
    until_state(&c, &b, "queue-all on B", |s| s["settings"]["queue_all"] == true).await;
    assert_eq!(Visitor::default().join(&c, &b, "q").await["status"], "WAITING");
    admin(&c, &a, reqwest::Method::POST, "/admin/queues/q/free-entry", None).await;
    until_state(&c, &b, "free entry back on B", |s| s["settings"]["queue_all"] == false).await;
    until_state(&c, &b, "line empty", |s| s["waiting"] == 0).await;
    assert_eq!(Visitor::default().join(&c, &b, "q").await["status"], "READY");

    // Every change was counted (pause, update, resume, update, queue_all, free_entry).
    let total = metric(&c, &a, "waiting_room_admin_changes_total{action=\"pause\",queue=\"q\"}").await
        + metric(&c, &a, "waiting_room_admin_changes_total{action=\"resume\",queue=\"q\"}").await
        + metric(&c, &b, "waiting_room_admin_changes_total{action=\"update\",queue=\"q\"}").await;
    assert_eq!(total, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_admission_is_switched_pinned_and_validated_through_the_admin_api() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 2, "200ms", "10m", 0);
    let p = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();
    admin_answers(&c, &p).await;
    let patch = |body: &'static str| {
        let (c, p) = (&c, &p);
        async move { admin(c, p, reqwest::Method::PATCH, "/admin/queues/q", Some(body)).await }
    };
    let (status, _) = patch(r#"{"admission":"sometimes"}"#).await;
    assert_eq!(status, 422);
    let (status, body) = patch(r#"{"admission":"adaptive","max_per_tick":0}"#).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("max_per_tick")), "{body}");
    let (status, body) = patch(r#"{"target_error_rate":0}"#).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("target_error_rate")), "{body}");
    let (status, s) = patch(r#"{"admission":"adaptive","min_per_tick":3,"max_per_tick":20}"#).await;
    assert_eq!((status, s["controller"]["mode"].as_str()), (200, Some("adaptive")), "{s}");
    let (status, body) = patch(r#"{"pin_per_tick":50}"#).await;
    assert_eq!((status, body["field"].as_str()), (422, Some("pin_per_tick")), "{body}");
    let (status, s) = patch(r#"{"pin_per_tick":7}"#).await;
    assert_eq!((status, s["controller"]["pinned"].as_u64(), s["controller"]["n"].as_u64()), (200, Some(7), Some(7)));

    let mut vs = vec![Visitor::default(); 30];
    for v in &mut vs {
        v.join(&c, &p, "q").await;
    }
    let pinned = until_state(&c, &p, "two pinned ticks", |s| s["released_total"].as_u64() >= Some(14)).await;
    assert_eq!(pinned["controller"]["mode"], "adaptive");
    let (status, log) = admin(&c, &p, reqwest::Method::GET, "/admin/queues/q/ticks?limit=5", None).await;
    assert_eq!(status, 200);
    let ticks = log["ticks"].as_array().unwrap();
    assert!(!ticks.is_empty() && ticks.len() <= 5, "{log}");
    let newest = &ticks[0];
    assert_eq!((newest["mode"].as_str(), newest["n"].as_u64()), (Some("pinned"), Some(7)), "{log}");
    assert!(ticks.iter().all(|t| t["released"].as_u64() <= t["n"].as_u64()), "{log}");
    for bad in ["limit=abc", "limit=0", "limit=1001"] {
        let (status, body) = admin(&c, &p, reqwest::Method::GET, &format!("/admin/queues/q/ticks?{bad}"), None).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    }
    let (status, _) = admin(&c, &p, reqwest::Method::GET, "/admin/queues/nope/ticks", None).await;
    assert_eq!(status, 404);

    // Back to fixed: the operator's N again.
    let (status, s) = patch(r#"{"admission":"fixed","pin_per_tick":0,"release_per_tick":2}"#).await;
    assert_eq!(
        (status, s["controller"]["mode"].as_str(), s["controller"]["n"].as_u64()),
        (200, Some("fixed"), Some(2))
    );
    let before = s["ticks"].as_u64().unwrap();
    until_state(&c, &p, "a fixed tick", |s| s["ticks"].as_u64() > Some(before + 1)).await;
    let (_, log) = admin(&c, &p, reqwest::Method::GET, "/admin/queues/q/ticks?limit=1", None).await;
    assert_eq!((log["ticks"][0]["mode"].as_str(), log["ticks"][0]["n"].as_u64()), (Some("fixed"), Some(2)), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_modes_switch_live_on_every_instance() {
    let shared = Shared::new("modes").await;
    let q = queue("q", "/a", 1, "300ms", "10m", 0);
    let (a, b) = (Proxy::start(shared.spec(&q)).await, Proxy::start(shared.spec(&q)).await);
    let c = client();
    admin_answers(&c, &a).await;
    let set = |mode: &'static str| {
        let (c, a) = (&c, &a);
        async move {
            let body = format!(r#"{{"mode":"{mode}"}}"#);
            let (status, s) = admin(c, a, reqwest::Method::PATCH, "/admin/queues/q", Some(&body)).await;
            assert_eq!(status, 200, "{s}");
            assert_eq!(s["settings"]["admission"]["mode"], mode, "{s}");
        }
    };
    let (status, body) = admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"mode":"lottery"}"#)).await;
    assert_eq!(status, 422, "{body}");

    // The operator's message, set on a: everyone on b hears it (status, page,
    // socket), escaped; a control character is refused; "" removes it.
    let mut reader = Visitor::default();
    reader.join(&c, &b, "q").await;
    let mut ws = connect_ws(&b, "q", &mut reader).await;
    next_json(&mut ws, Duration::from_secs(5)).await.expect("the first message");
    let (status, body) =
        admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"message":"a\u0007b"}"#)).await;
    assert_eq!(status, 422, "{body}");
    let note = r#"{"message":"Doors open at 10:00 <b>sharp</b>"}"#;
    assert_eq!(admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(note)).await.0, 200);
    let pushed = loop {
        let m = next_json(&mut ws, Duration::from_secs(5)).await.expect("the message is pushed");
        if m["message"].is_string() {
            break m;
        }
    };
    assert_eq!(pushed["message"], "Doors open at 10:00 <b>sharp</b>");
    drop(ws);
    let page =
        c.get(b.url("/wr/q")).header("cookie", reader.cookie_header()).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Doors open at 10:00 &lt;b&gt;sharp&lt;/b&gt;"), "escaped on the page");
    assert_eq!(admin(&c, &a, reqwest::Method::PATCH, "/admin/queues/q", Some(r#"{"message":""}"#)).await.0, 200);
    eventually("the message is gone on b", Duration::from_secs(3), || async {
        let m = reader.clone().status(&c, &b, "q").await;
        if m["message"].is_null() { Ok(()) } else { Err(m.to_string()) }
    })
    .await;

    // Reject, set on a: b refuses newcomers, a waiting visitor keeps the
    // place but hears "not available" (pushed on its socket), nobody is released.
    let mut waiting = Visitor::default();
    let mut sitter = Visitor::default();
    set("reject").await;
    let m = eventually("b rejects", Duration::from_secs(3), || async {
        let m: Value = c.post(b.url("/wr/q/join")).send().await.unwrap().json().await.unwrap();
        if m["status"] == "UNAVAILABLE" { Ok(m) } else { Err(m.to_string()) }
    })
    .await;
    assert_eq!(m["retry_after_seconds"], 30);
    let page = c.get(b.url("/wr/q")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("data-wr-status=\"UNAVAILABLE\"") && page.contains("Not available right now"));
    // Back to FIFO to put two visitors in line, one of them on a socket.
    set("fifo").await;
    eventually("b takes joins again", Duration::from_secs(3), || async {
        let m: Value = c.post(b.url("/wr/q/join")).send().await.unwrap().json().await.unwrap();
        if m["status"] != "UNAVAILABLE" { Ok(()) } else { Err(m.to_string()) }
    })
    .await;
    for v in [&mut waiting, &mut sitter] {
        v.join(&c, &b, "q").await;
    }
    let mut ws = connect_ws(&b, "q", &mut sitter).await;
    assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["status"], "WAITING");
    set("reject").await;
    let pushed = loop {
        let m = next_json(&mut ws, Duration::from_secs(5)).await.expect("a push");
        if m["status"] != "WAITING" {
            break m;
        }
    };
    assert_eq!(pushed["status"], "UNAVAILABLE", "{pushed}");
    let before = waiting.status(&c, &b, "q").await;
    assert_eq!(before["status"], "UNAVAILABLE", "{before}");

    // Random: no place number, a range; passthrough: everyone in.
    set("random").await;
    let m = eventually("b draws at random", Duration::from_secs(3), || async {
        let m = waiting.clone().status(&c, &b, "q").await;
        if m["mode"] == "random" || m["status"] == "READY" { Ok(m) } else { Err(m.to_string()) }
    })
    .await;
    if m["status"] == "WAITING" {
        assert!(m["position"].is_null() && m["wait_range_seconds"].as_array().map(Vec::len) == Some(2), "{m}");
    }
    set("passthrough").await;
    let newcomer: Value = eventually("b lets everyone in", Duration::from_secs(3), || async {
        let m: Value = c.post(b.url("/wr/q/join")).send().await.unwrap().json().await.unwrap();
        if m["status"] == "READY" { Ok(m) } else { Err(m.to_string()) }
    })
    .await;
    assert!(newcomer["token"].is_string());
    waiting.until_ready(&c, &a, "q", Duration::from_secs(5)).await;
    sitter.until_ready(&c, &a, "q", Duration::from_secs(5)).await;
}
