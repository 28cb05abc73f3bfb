//! Ticks: exact batch sizes, and the per-interval limit across instances.

use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tick_releases_exactly_min_n_and_waiting() {
    let upstream = Upstream::start().await;
    let prefix = unique("exact");
    let proxy = Proxy::start(ProxySpec {
        queues: &queue("q", "/a", 3, "1500ms", "10m", 0),
        upstream: upstream.addr,
        redis_prefix: Some(&prefix),
        keys_dir: None,
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await;
    let c = client();
    let mut vs = vec![Visitor::default(); 7];
    for v in &mut vs {
        v.join(&c, &proxy, "q").await;
    }
    let mut expected_ready = 0;
    for batch in [3usize, 3, 1] {
        expected_ready += batch;
        // Wait for the tick that admits the last visitor of this batch, then
        // look at everyone before the next tick.
        vs[expected_ready - 1].until_ready(&c, &proxy, "q", Duration::from_secs(5)).await;
        for (i, v) in vs.iter_mut().enumerate() {
            let s = v.status(&c, &proxy, "q").await;
            if i < expected_ready {
                assert_eq!(s["status"], "READY", "visitor {i} after {expected_ready}: {s}");
            } else {
                assert_eq!(s["status"], "WAITING", "visitor {i} after {expected_ready}: {s}");
                assert_eq!(s["position"].as_u64(), Some((i - expected_ready + 1) as u64));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_on_one_redis_release_at_most_n_per_interval_in_join_order() {
    const N: usize = 5;
    const TICK_MS: i64 = 300;
    const VISITORS: usize = 120;
    let upstream = Upstream::start().await;
    let prefix = unique("three");
    let keys = tempfile::tempdir().unwrap();
    let q = queue("q", "/a", N as u64, "300ms", "10m", 0);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(
            Proxy::start(ProxySpec {
                queues: &q,
                upstream: upstream.addr,
                redis_prefix: Some(&prefix),
                keys_dir: Some(keys.path()),
                redis_url: None,
                store: None,
                limits: ONE_ADDRESS_LIMITS,
                open_files: None,
            })
            .await,
        );
    }
    let c = client();
    // Join one after another, spread over the instances: the join order is known.
    let mut vs = vec![Visitor::default(); VISITORS];
    for (i, v) in vs.iter_mut().enumerate() {
        v.join(&c, &proxies[i % 3], "q").await;
    }
    let mut admitted: Vec<Option<i64>> = vec![None; VISITORS];
    let deadline = Instant::now() + Duration::from_secs(40);
    while admitted.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "not everyone was admitted");
        for (i, v) in vs.iter_mut().enumerate() {
            if admitted[i].is_none() {
                let s = v.status(&c, &proxies[(i + 1) % 3], "q").await;
                if s["status"] == "READY" {
                    admitted[i] = Some(millis(s["admitted_at"].as_str().unwrap()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let times: Vec<i64> = admitted.into_iter().map(Option::unwrap).collect();

    // Admission order equals join order.
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "admission order differs from join order: {times:?}");
    // At least 20 intervals, and no window of one tick holds more than N.
    let mut releases: Vec<i64> = times.clone();
    releases.dedup();
    assert!(releases.len() >= 20, "only {} releases", releases.len());
    for &start in &releases {
        let in_window = times.iter().filter(|&&t| t >= start && t < start + TICK_MS).count();
        assert!(in_window <= N, "{in_window} admitted within {TICK_MS} ms of {start}");
    }
    for w in releases.windows(2) {
        assert!(w[1] - w[0] >= TICK_MS, "releases {} ms apart", w[1] - w[0]);
    }
    // The ticks were shared between instances (each one ticks when it is first to see it due).
    let mut ticking = 0;
    for p in &proxies {
        let text = c.get(&p.metrics).send().await.unwrap().text().await.unwrap();
        let ticks: f64 = text
            .lines()
            .find(|l| l.starts_with("waiting_room_ticks_total{queue=\"q\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        if ticks > 0.0 {
            ticking += 1;
        }
    }
    assert!(ticking >= 2, "only {ticking} instance(s) performed ticks");
}
