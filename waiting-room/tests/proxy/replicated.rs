//! Replicated Redis under two proxy instances: a Sentinel failover (the
//! primary killed with SIGKILL) in the middle of a queue, with
//! `store.wait_replicas = 1`, loses no place a visitor was told about and
//! never releases more than N in a tick.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;
use crate::servers::{MASTER_NAME, Sentinel};

const N: u64 = 5;

/// A join that may fail: the answer, or the status code.
async fn try_join(c: &reqwest::Client, proxy: &Proxy, v: &mut Visitor) -> Result<Value, u16> {
    let r = c
        .post(proxy.url("/wr/q/join"))
        .header("cookie", v.cookie_header())
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|_| 0u16)?;
    if r.status() != 200 {
        return Err(r.status().as_u16());
    }
    for h in r.headers().get_all("set-cookie") {
        let Some((pair, _)) = h.to_str().unwrap().split_once(';') else { continue };
        let (k, val) = pair.split_once('=').unwrap();
        v.cookies.retain(|(name, _)| name != k);
        v.cookies.push((k.to_owned(), val.to_owned()));
    }
    r.json().await.map_err(|_| 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sentinel_failover_mid_queue_loses_no_acknowledged_place_and_keeps_n_per_tick() {
    // Two replicas: after the failover one is left to acknowledge writes
    // (wait_replicas = n needs n + 1 replicas to survive losing one node).
    let mut redis = tokio::task::spawn_blocking(|| Sentinel::start(2)).await.unwrap();
    let old_primary = redis.primary.port;
    let shared = Shared::new("failover").await;
    let store = format!(
        "sentinel = {{ master_name = \"{MASTER_NAME}\", nodes = [\"{}\"] }}\nwait_replicas = 1\n",
        redis.sentinel_url()
    );
    let queues = format!("{}abandon_after = \"10m\"\n", queue("q", "/a", N, "500ms", "10m", 0));
    let spec = || ProxySpec { store: Some(&store), ..shared.spec(&queues) };
    let proxies = [Proxy::start(spec()).await, Proxy::start(spec()).await];
    let c = client();

    // Visitors join one after another, alternately on each instance, while
    // the instances release N per tick; the primary dies after 3 s.
    let mut acknowledged: Vec<Visitor> = Vec::new();
    let (mut refused, mut killed_at, mut back_after) = (0, None::<Instant>, None::<Duration>);
    let started = Instant::now();
    let mut i = 0;
    loop {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(3) {
            redis.primary.kill();
            killed_at = Some(Instant::now());
        }
        let mut v = Visitor::default();
        match try_join(&c, &proxies[i % 2], &mut v).await {
            Ok(answer) => {
                assert!(answer["status"] == "WAITING" || answer["status"] == "READY", "{answer}");
                acknowledged.push(v);
                if let (Some(at), None) = (killed_at, back_after) {
                    back_after = Some(at.elapsed());
                }
            }
            Err(_) => refused += 1,
        }
        i += 1;
        match (killed_at, back_after) {
            (Some(at), None) => assert!(at.elapsed() < Duration::from_secs(20), "no join succeeded within 20 s"),
            // Joins go on for 3 s after the first success past the failover.
            (Some(at), Some(back)) if at.elapsed() > back + Duration::from_secs(3) => break,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = back_after.unwrap();
    let new_primary = redis.primary_port();
    assert!(new_primary.is_some_and(|p| p != old_primary), "the sentinel promoted a replica: {new_primary:?}");
    eprintln!(
        "{} joins acknowledged, {refused} refused; joins answered again {back_after:?} after the primary died",
        acknowledged.len()
    );

    // Every acknowledged join is still in line or was admitted.
    let mut admitted_at: HashMap<String, u64> = HashMap::new();
    let mut waiting = 0;
    for (n, v) in acknowledged.iter_mut().enumerate() {
        let s = eventually("a status answer", Duration::from_secs(10), || {
            let mut v = v.clone();
            let c = &c;
            let proxy = &proxies[n % 2];
            async move {
                let r = c
                    .get(proxy.url("/wr/q/status"))
                    .header("cookie", v.cookie_header())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() != 200 {
                    return Err(r.status().to_string());
                }
                v.cookies.clear();
                r.json::<Value>().await.map_err(|e| e.to_string())
            }
        })
        .await;
        match s["status"].as_str() {
            Some("READY") => {
                *admitted_at.entry(s["admitted_at"].as_str().unwrap().to_owned()).or_default() += 1;
            }
            Some("WAITING") => waiting += 1,
            _ => panic!("visitor {n}, whose join was acknowledged, lost the place: {s}"),
        }
    }
    let admitted: u64 = admitted_at.values().sum();
    eprintln!("{admitted} admitted in {} ticks, {waiting} waiting", admitted_at.len());
    assert!(admitted > 0 && waiting > 0, "admitted {admitted}, waiting {waiting}");
    for (at, count) in &admitted_at {
        assert!(*count <= N, "{count} admitted at {at}, more than N = {N}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_a_redis_cluster_admit_in_join_order_at_n_per_tick() {
    let cluster = tokio::task::spawn_blocking(crate::servers::Cluster::start).await.unwrap();
    let shared = Shared::new("cluster").await;
    let nodes: Vec<String> = cluster.urls().iter().map(|u| format!("\"{u}\"")).collect();
    let store = format!("cluster_nodes = [{}]\n", nodes.join(", "));
    let queues = queue("q", "/a", N, "300ms", "10m", 0);
    let spec = || ProxySpec { store: Some(&store), ..shared.spec(&queues) };
    let proxies = [Proxy::start(spec()).await, Proxy::start(spec()).await];
    let c = client();
    let mut visitors = Vec::new();
    for i in 0..20 {
        let mut v = Visitor::default();
        let answer = v.join(&c, &proxies[i % 2], "q").await;
        assert_eq!(answer["status"], "WAITING", "{answer}");
        assert_eq!(answer["position"], i as u64 + 1);
        visitors.push(v);
    }
    // Each polls the other instance than the one it joined on.
    let mut admitted = Vec::new();
    for (i, v) in visitors.iter_mut().enumerate() {
        let s = v.until_ready(&c, &proxies[(i + 1) % 2], "q", Duration::from_secs(20)).await;
        admitted.push(s["admitted_at"].as_str().unwrap().to_owned());
    }
    let times: Vec<i64> = admitted.iter().map(|a| millis(a)).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "admitted out of join order: {admitted:?}");
    let mut per_tick: HashMap<&str, u64> = HashMap::new();
    for at in &admitted {
        *per_tick.entry(at).or_default() += 1;
    }
    assert!(per_tick.values().all(|n| *n <= N), "more than N = {N} in a tick: {per_tick:?}");
    assert_eq!(per_tick.len(), 4, "20 visitors at 5 per tick: {per_tick:?}");
}
