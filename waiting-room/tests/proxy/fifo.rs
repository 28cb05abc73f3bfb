//! FIFO under concurrency: positions, rejoins, and the first release.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::*;

async fn a_thousand_concurrent_joins(redis: bool) {
    let upstream = Upstream::start().await;
    let prefix = unique("fifo");
    let proxy = Proxy::start(ProxySpec {
        queues: &queue("q", "/a", 300, "5s", "10m", 0),
        upstream: upstream.addr,
        redis_prefix: redis.then_some(prefix.as_str()),
        keys_dir: None,
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let (c, base) = (c.clone(), proxy.base.clone());
        tasks.push(tokio::spawn(async move {
            let mut v = Visitor::default();
            let r = c.post(format!("{base}/wr/q/join")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().split(';').next().unwrap().to_owned();
            let (k, val) = cookie.split_once('=').unwrap();
            v.cookies.push((k.to_owned(), val.to_owned()));
            let body: serde_json::Value = r.json().await.unwrap();
            (v, body["position"].as_u64().unwrap())
        }));
    }
    let mut visitors = Vec::new();
    for t in tasks {
        visitors.push(t.await.unwrap());
    }
    let mut positions: Vec<u64> = visitors.iter().map(|(_, p)| *p).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=1000).collect::<Vec<_>>(), "positions must be a permutation of 1..=1000");

    // Rejoining keeps the place.
    for (v, p) in visitors.iter_mut().take(20) {
        let again = v.join(&c, &proxy, "q").await;
        assert_eq!(again["position"].as_u64(), Some(*p));
    }

    // The first tick releases exactly the first 300 in join order; everyone
    // else moves up by exactly 300.
    let by_position: HashMap<u64, Visitor> = visitors.into_iter().map(|(v, p)| (p, v)).collect();
    let mut first = by_position[&1].clone();
    first.until_ready(&c, &proxy, "q", Duration::from_secs(10)).await;
    for (p, v) in &by_position {
        let s = v.clone().status(&c, &proxy, "q").await;
        if *p <= 300 {
            assert_eq!(s["status"], "READY", "position {p}: {s}");
        } else {
            assert_eq!(s["status"], "WAITING", "position {p}: {s}");
            assert_eq!(s["position"].as_u64(), Some(p - 300), "position {p}: {s}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_joins_are_served_in_order_with_redis() {
    a_thousand_concurrent_joins(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_joins_are_served_in_order_in_memory() {
    a_thousand_concurrent_joins(false).await;
}
