//! A Redis that forgets: restarted empty (no persistence) in the middle of a
//! queue, under two proxy instances. Every socket hears at once; the visitors
//! who come back with their queue tickets get their order back.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::helpers::*;

/// Kendall's tau between two orders of the same items (-1..1).
fn kendall_tau(a: &[usize], b: &[usize]) -> f64 {
    let pos_b: std::collections::HashMap<usize, usize> = b.iter().enumerate().map(|(i, x)| (*x, i)).collect();
    let (mut concordant, mut discordant) = (0i64, 0i64);
    for i in 0..a.len() {
        for j in i + 1..a.len() {
            if pos_b[&a[i]] < pos_b[&a[j]] {
                concordant += 1;
            } else {
                discordant += 1;
            }
        }
    }
    (concordant - discordant) as f64 / (concordant + discordant).max(1) as f64
}

async fn admin(c: &reqwest::Client, proxy: &Proxy, action: &str) {
    let r = c.post(format!("{}/admin/queues/q/{action}", proxy.admin)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert!(r.status().is_success(), "{action}: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restarted_empty_is_heard_at_once_and_tickets_restore_the_order() {
    const SOCKETS: usize = 100;
    const POLLERS: usize = 100;
    const FRESH: usize = 40;
    let port = free_port();
    let redis = RedisServer::start(port);
    let url = redis.url();
    let shared = Shared::new("forgets").await;
    let queues = queue("q", "/a", 50, "200ms", "10m", 0);
    let spec = || ProxySpec { redis_url: Some(&url), ..shared.spec(&queues) };
    let proxies = [Proxy::start(spec()).await, Proxy::start(spec()).await];
    let c = client();
    // Releases paused: the line stands still while Redis goes away.
    admin(&c, &proxies[0], "pause").await;

    // 200 visitors join in order 0..200, alternately on each instance; the
    // first 100 then listen on a socket, the rest poll.
    let mut visitors: Vec<Visitor> = Vec::new();
    let mut sockets = Vec::new();
    for i in 0..SOCKETS + POLLERS {
        let proxy = &proxies[i % 2];
        let mut v = Visitor::default();
        let answer = v.join(&c, proxy, "q").await;
        assert_eq!(answer["status"], "WAITING", "{answer}");
        assert_eq!(answer["position"], i as u64 + 1);
        let ticket = answer["ticket"].as_str().expect("a join that waits hands out a ticket");
        assert_eq!(v.get("wr_ticket_q"), Some(ticket), "the same ticket as a cookie");
        if i < SOCKETS {
            let mut ws = connect_ws(proxy, "q", &mut v).await;
            let first = next_json(&mut ws, Duration::from_secs(5)).await.expect("first message");
            assert_eq!(first["position"], i as u64 + 1, "the socket keeps the place");
            sockets.push(ws);
        }
        visitors.push(v);
    }
    // One more, who will try to come back on somebody else's ticket.
    let mut forger = Visitor::default();
    assert_eq!(forger.join(&c, &proxies[0], "q").await["position"], visitors.len() as u64 + 1);

    // Redis dies and comes back empty.
    redis.signal("-KILL");
    drop(redis);
    let redis = RedisServer::start(port);
    let back = Instant::now();

    // Every socket hears within 2 s that its place is gone (the new epoch
    // makes each instance push at once, though the tick count restarted).
    let heard = futures_util::future::join_all(sockets.iter_mut().enumerate().map(|(i, ws)| async move {
        loop {
            let left = Duration::from_secs(2).saturating_sub(back.elapsed());
            match next_json(ws, left).await {
                Some(m) if m["status"] == "NOT_IN_QUEUE" => return Ok(back.elapsed()),
                Some(_) => continue,
                None => return Err(format!("socket {i} heard nothing within 2 s of Redis returning")),
            }
        }
    }))
    .await;
    let mut slowest = Duration::ZERO;
    for h in heard {
        slowest = slowest.max(h.unwrap());
    }
    eprintln!("every socket heard of the loss within {slowest:?} of Redis returning");
    for p in &proxies {
        eventually("ready again", Duration::from_secs(10), || async {
            match c.get(p.url("/wr/healthz")).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(r.status().to_string()),
                Err(e) => Err(e.to_string()),
            }
        })
        .await;
    }
    for v in &mut visitors[SOCKETS..] {
        assert_eq!(v.status(&c, &proxies[1], "q").await["status"], "NOT_IN_QUEUE");
    }
    for p in &proxies {
        assert!(metric(&c, p, "waiting_room_store_epochs_total{queue=\"q\"}").await >= 1.0);
    }

    // The forger comes back first, with visitor 0's ticket in place of their
    // own: it does not verify for them, so they join like anyone new.
    let stolen = visitors[0].get("wr_ticket_q").unwrap().to_owned();
    forger.cookies.retain(|(k, _)| k != "wr_ticket_q");
    forger.cookies.push(("wr_ticket_q".into(), stolen));
    forger.join(&c, &proxies[1], "q").await;

    // They come back in a shuffled order, with fresh arrivals mixed in, on
    // either instance.
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..visitors.len()).collect();
    order.shuffle(&mut rand::thread_rng());
    let mut fresh: Vec<Visitor> = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if k % 5 == 0 && fresh.len() < FRESH {
            let mut f = Visitor::default();
            f.join(&c, &proxies[k % 2], "q").await;
            fresh.push(f);
        }
        let answer = visitors[i].join(&c, &proxies[(k + 1) % 2], "q").await;
        assert_eq!(answer["status"], "WAITING", "{answer}");
    }
    // The socket visitors listen again.
    drop(sockets);
    let mut sockets = Vec::new();
    for (i, v) in visitors.iter_mut().enumerate().take(SOCKETS) {
        sockets.push(connect_ws(&proxies[i % 2], "q", v).await);
    }

    // Places: the restored 200 first, in their original order; every fresh
    // arrival (the forger too) behind them.
    let mut positions = Vec::new();
    for v in &mut visitors {
        let s = v.status(&c, &proxies[0], "q").await;
        positions.push(s["position"].as_u64().expect("waiting"));
    }
    let mut by_position: Vec<usize> = (0..visitors.len()).collect();
    by_position.sort_by_key(|&i| positions[i]);
    let original: Vec<usize> = (0..visitors.len()).collect();
    let tau = kendall_tau(&original, &by_position);
    assert!(tau >= 0.99, "order after the loss: Kendall tau {tau}");
    assert_eq!(positions.iter().max().copied(), Some(visitors.len() as u64), "nobody fresh is ahead");
    for f in fresh.iter_mut().chain([&mut forger]) {
        let s = f.status(&c, &proxies[0], "q").await;
        assert!(s["position"].as_u64().unwrap() > visitors.len() as u64, "a fresh arrival ahead: {s}");
    }

    // The operator's pause outlived the loss (the instances wrote their
    // settings back); resuming lets the line in by that order.
    assert_eq!(visitors[0].status(&c, &proxies[1], "q").await["paused"], true);
    admin(&c, &proxies[0], "resume").await;
    let admitted: Vec<Value> = futures_util::future::join_all(visitors.iter_mut().enumerate().map(|(i, v)| {
        let c = c.clone();
        let proxy = &proxies[i % 2];
        async move { v.until_ready(&c, proxy, "q", Duration::from_secs(60)).await }
    }))
    .await;
    let at: Vec<String> = admitted.iter().map(|m| m["admitted_at"].as_str().unwrap().to_owned()).collect();
    // 50 per tick: visitor i is let in with batch i / 50, never before an earlier batch.
    for i in 1..at.len() {
        if i % 50 != 0 {
            assert_eq!(at[i], at[i - 1], "visitors {} and {i} share a tick", i - 1);
        } else {
            assert_ne!(at[i], at[i - 1], "visitor {i} starts the next tick's batch");
        }
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        let mut ready = false;
        while let Some(m) = next_json(ws, Duration::from_secs(5)).await {
            if m["status"] == "READY" {
                ready = true;
                break;
            }
        }
        assert!(ready, "socket {i} heard its admission");
    }
    drop(redis);
}
