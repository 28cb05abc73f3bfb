//! `on_store_down`: with Redis gone, a `closed` queue lets nobody new in, an
//! `open` one lets visitors through at its release rate with short sessions.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_a_closed_queue_refuses_and_an_open_one_lets_in_at_its_rate() {
    let port = free_port();
    let redis = RedisServer::start(port);
    let url = redis.url();
    let upstream = Upstream::start().await;
    let prefix = unique("down");
    let queues = format!(
        "{}{}on_store_down = \"open\"\nstore_down_session = \"30s\"\n",
        queue("shut", "/shut", 3, "10s", "10m", 0),
        queue("door", "/door", 3, "10s", "10m", 0)
    );
    let proxy =
        Proxy::start(ProxySpec { redis_url: Some(&url), ..ProxySpec::redis(&queues, upstream.addr, &prefix) }).await;
    let c = client();
    let json = |path: &str| c.get(proxy.url(path)).header("accept", "application/json").send();
    // Store up: both queues gate as usual.
    assert_eq!(json("/door/x").await.unwrap().status(), 401);
    assert_eq!(json("/shut/x").await.unwrap().status(), 401);
    assert_eq!(metric(&c, &proxy, "waiting_room_queue_mode{mode=\"normal\",queue=\"door\"}").await, 1.0);

    drop(redis);
    eventually("the store is known down", Duration::from_secs(10), || async {
        let mode = metric(&c, &proxy, "waiting_room_queue_mode{mode=\"open\",queue=\"door\"}").await;
        if mode == 1.0 { Ok(()) } else { Err(format!("door mode open = {mode}")) }
    })
    .await;
    // Each queue's ticker finds out on its own next call.
    eventually("the closed queue knows too", Duration::from_secs(10), || async {
        let mode = metric(&c, &proxy, "waiting_room_queue_mode{mode=\"closed\",queue=\"shut\"}").await;
        if mode == 1.0 { Ok(()) } else { Err(format!("shut mode closed = {mode}")) }
    })
    .await;
    // Ready (it serves), degraded; the store check says 503.
    let ready = c.get(proxy.url("/wr/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "degraded");
    assert_eq!(c.get(proxy.url("/wr/healthz")).send().await.unwrap().status(), 503);

    // Closed: nobody new gets in.
    assert_eq!(json("/shut/x").await.unwrap().status(), 401);
    let join = c.post(proxy.url("/wr/shut/join")).send().await.unwrap();
    assert_eq!(join.status(), 503);
    assert!(join.headers().contains_key("retry-after"));

    // Open: ten strangers at once; the burst (N = 3 per 10 s tick) gets
    // through, each with a token the upstream sees and a wr_entry cookie.
    let before = upstream.count();
    let mut through = Vec::new();
    for _ in 0..10 {
        let r = json("/door/x").await.unwrap();
        match r.status().as_u16() {
            200 => {
                let cookies: Vec<String> =
                    r.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
                let entry = cookies.iter().find(|c| c.starts_with("wr_entry=")).expect("the token as a cookie");
                assert!(cookies.iter().any(|c| c.starts_with("wr_visitor=")), "a new visitor id");
                let token = entry.split(';').next().unwrap().trim_start_matches("wr_entry=").to_owned();
                through.push(token);
            }
            401 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(through.len(), 3, "the open door's burst is the queue's release per tick");
    assert_eq!(upstream.count() - before, 3);
    for t in &through {
        assert_eq!(upstream.carrying(t), 1, "the upstream saw the minted token");
    }
    // The minted token is a real token: it passes again (fast lane or not),
    // and says a short session.
    let again = c.get(proxy.url("/door/y")).header("cookie", format!("wr_entry={}", through[0])).send().await.unwrap();
    assert_eq!(again.status(), 200);
    let payload = through[0].split('.').nth(1).unwrap();
    let claims: serde_json::Value = {
        use base64::Engine;
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    };
    let session = claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap();
    assert!((29..=31).contains(&session), "a session of store_down_session, got {session} s");
    // The allowance is shared with joins: spent, a join is 503 too.
    assert_eq!(c.post(proxy.url("/wr/door/join")).send().await.unwrap().status(), 503);

    // The store returns: back to normal, the door shuts.
    let _redis = RedisServer::start(port);
    eventually("the store is back", Duration::from_secs(15), || async {
        let mode = metric(&c, &proxy, "waiting_room_queue_mode{mode=\"normal\",queue=\"door\"}").await;
        if mode == 1.0 { Ok(()) } else { Err(format!("door mode normal = {mode}")) }
    })
    .await;
    assert_eq!(json("/door/z").await.unwrap().status(), 401);
    assert_eq!(c.post(proxy.url("/wr/door/join")).send().await.unwrap().status(), 200);
}
