//! The WebSocket push: cross-instance fan-out, monotonic positions, READY
//! tokens, abandonment of visitors who left, and hostile frames.

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::*;

/// A WebSocket handshake on a bare TCP stream (for peers tungstenite would
/// not imitate): returns the stream and the bytes read so far, which start
/// with the 101.
async fn raw_upgrade(base: &str, queue: &str) -> (tokio::net::TcpStream, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let handshake = format!(
        "GET /wr/{queue}/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    raw.write_all(handshake.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = raw.read(&mut buf).await.unwrap();
    buf.truncate(n);
    assert!(buf.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&buf));
    (raw, buf)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_instance_a_hears_releases_by_instance_b_within_one_tick() {
    const TICK_MS: i64 = 1000;
    let upstream = Upstream::start().await;
    let prefix = unique("fanout");
    let keys = tempfile::tempdir().unwrap();
    let q = queue("q", "/a", 1, "1s", "10m", 0);
    // A serves sockets but never ticks; B ticks.
    let a = Proxy::start_with(ProxySpec::redis(&q, upstream.addr, &prefix).keys(keys.path()), "release_ticks = false")
        .await;
    let b = Proxy::start(ProxySpec::redis(&q, upstream.addr, &prefix).keys(keys.path())).await;
    let c = client();
    let mut ahead = vec![Visitor::default(); 3];
    for v in &mut ahead {
        v.join(&c, &b, "q").await;
    }
    let mut me = Visitor::default();
    me.join(&c, &b, "q").await;
    let mut ws = connect_ws(&a, "q", &mut me).await;
    let mut received: Vec<(serde_json::Value, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = next_json(&mut ws, Duration::from_secs(5)).await.expect("a message at least every tick");
        received.push((m.clone(), now_ms()));
        if m["status"] == "READY" {
            break;
        }
        assert!(Instant::now() < deadline, "never admitted: {received:?}");
    }
    // Positions never go up, and every release by B reached A's socket within a tick.
    let positions: Vec<u64> = received.iter().filter_map(|(m, _)| m["position"].as_u64()).collect();
    assert!(positions.windows(2).all(|w| w[1] <= w[0]), "{positions:?}");
    let mut release_times = Vec::new();
    for v in &mut ahead {
        release_times.push(millis(v.status(&c, &b, "q").await["admitted_at"].as_str().unwrap()));
    }
    let (ready, ready_at) = received.last().unwrap().clone();
    release_times.push(millis(ready["admitted_at"].as_str().unwrap()));
    for (i, released) in release_times.iter().enumerate() {
        // After the i-th release, the socket must have heard position 3 - i (or READY) within a tick.
        let expected = 3 - i as u64;
        let heard = received
            .iter()
            .find(|(m, _)| m["status"] == "READY" || m["position"].as_u64().is_some_and(|p| p <= expected))
            .map(|(_, at)| *at)
            .unwrap();
        assert!(heard - released <= TICK_MS, "release {i} at {released} heard at {heard}: {received:?}");
    }
    assert!(ready_at - release_times[3] <= TICK_MS);
    // The READY message carries a token the gate accepts.
    let token = ready["token"].as_str().unwrap();
    assert_eq!(c.get(a.url("/a/x")).bearer_auth(token).send().await.unwrap().status(), 200);
    assert!(metric(&c, &a, "waiting_room_ws_messages_total").await >= 2.0);
    assert_eq!(metric(&c, &a, "waiting_room_ticks_total{queue=\"q\"}").await, 0.0, "A never ticks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitors_who_left_are_skipped_and_a_visitor_back_in_time_keeps_the_place() {
    let upstream = Upstream::start().await;
    let prefix = unique("abandon");
    let q = format!("{}abandon_after = \"3s\"\n", queue("q", "/a", 50, "6s", "10m", 0));
    let proxy = Proxy::start(ProxySpec::redis(&q, upstream.addr, &prefix)).await;
    let c = client();
    let mut visitors = vec![Visitor::default(); 100];
    let mut sockets = Vec::new();
    for v in visitors.iter_mut() {
        let mut ws = connect_ws(&proxy, "q", v).await;
        let first = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first["status"], "WAITING");
        assert_eq!(first["position"].as_u64(), Some(sockets.len() as u64 + 1));
        sockets.push(Some(ws));
    }
    // 30 leave for good (every third of the first 90): no socket, no polling.
    let gone: Vec<usize> = (0..90).step_by(3).collect();
    for &i in &gone {
        sockets[i].take().unwrap().close(None).await.unwrap();
    }
    // Visitor 1 drops the socket and is back within the window.
    sockets[1].take().unwrap().close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut back = connect_ws(&proxy, "q", &mut visitors[1]).await;
    let again = next_json(&mut back, Duration::from_secs(5)).await.unwrap();
    assert_eq!(again["position"].as_u64(), Some(2), "back within abandon_after: same place");
    sockets[1] = Some(back);

    // The first release comes one tick (6 s) after start, > 3 s after the 30 left.
    let present: Vec<usize> = (0..100).filter(|i| !gone.contains(i)).collect();
    let mut admitted = Vec::new();
    let mut still_waiting = Vec::new();
    for &i in &present {
        let ws = sockets[i].as_mut().unwrap();
        loop {
            let m = next_json(ws, Duration::from_secs(12)).await.expect("an update after the release");
            if m["status"] == "READY" {
                admitted.push(i);
                break;
            }
            if m["status"] == "WAITING"
                && m["position"].as_u64().unwrap() <= 20
                && m["queue_length"].as_u64() == Some(20)
            {
                still_waiting.push((i, m["position"].as_u64().unwrap()));
                break;
            }
        }
    }
    assert_eq!(admitted, present[..50].to_vec(), "the 50 admitted are the first 50 still present");
    let expected: Vec<(usize, u64)> = present[50..].iter().enumerate().map(|(k, &i)| (i, k as u64 + 1)).collect();
    assert_eq!(still_waiting, expected);
    for &i in &gone {
        assert_eq!(visitors[i].status(&c, &proxy, "q").await["status"], "NOT_IN_QUEUE", "visitor {i} left");
    }
    assert_eq!(metric(&c, &proxy, "waiting_room_abandoned_total{queue=\"q\"}").await, 30.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_binary_and_non_upgrade_requests_are_refused_and_others_are_still_served() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 10, "10s", "10m", 0);
    let proxy = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();

    let mut v = Visitor::default();
    let mut ws = connect_ws(&proxy, "q", &mut v).await;
    next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    ws.send(Message::text("x".repeat(5000))).await.unwrap();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1008), "oversized frame");

    let mut ws = connect_ws(&proxy, "q", &mut v).await;
    next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(close_code(&mut ws, Duration::from_secs(5)).await, Some(1008), "binary frame");

    // Garbage bytes that are not a frame at all: closed with 1002.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Like any client, wait for the 101 before sending frames (RFC 6455 §4.1).
        let (mut raw, mut got) = raw_upgrade(&proxy.base, "q").await;
        // A complete, masked, empty frame with the reserved opcode 0xF.
        raw.write_all(&[0x8F, 0x80, 0xDE, 0xAD, 0xBE, 0xEF]).await.unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        // The last frame the server sent is a close frame (0x88) with code 1002.
        let close_at = got.windows(2).rposition(|w| w[0] == 0x88).expect("a close frame");
        assert_eq!(u16::from_be_bytes([got[close_at + 2], got[close_at + 3]]), 1002, "{got:?}");
    }

    // Small text frames are tolerated.
    let mut ws = connect_ws(&proxy, "q", &mut v).await;
    let first = next_json(&mut ws, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first["position"].as_u64(), Some(1), "the same visitor keeps the place across sockets");
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next_json(&mut ws, Duration::from_millis(500)).await, None, "no reply, no close");

    let r = c.get(proxy.url("/wr/q/ws")).send().await.unwrap();
    assert_eq!(r.status(), 426);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = c.post(proxy.url("/wr/q/ws")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .get(proxy.url("/wr/nope/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 426, "still not a valid handshake");

    // Everybody else is still served.
    let mut other = Visitor::default();
    let mut ws2 = connect_ws(&proxy, "q", &mut other).await;
    // Third: behind the first visitor and the raw client, which joined too.
    assert_eq!(next_json(&mut ws2, Duration::from_secs(5)).await.unwrap()["position"].as_u64(), Some(3));
    assert_eq!(c.get(proxy.url("/wr/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_are_told_when_to_come_back() {
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 1, "10s", "10m", 0);
    let proxy = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let c = client();
    let mut first = Visitor::default();
    first.join(&c, &proxy, "q").await;
    for _ in 0..48 {
        Visitor::default().join(&c, &proxy, "q").await;
    }
    let mut last = Visitor::default();
    last.join(&c, &proxy, "q").await;
    let near = first.status(&c, &proxy, "q").await;
    let far = last.status(&c, &proxy, "q").await;
    let (near_retry, far_retry) =
        (near["retry_after_seconds"].as_u64().unwrap(), far["retry_after_seconds"].as_u64().unwrap());
    assert!(near_retry >= 2, "{near}");
    assert!(far_retry > near_retry, "far back polls less often: {near} vs {far}");
    assert!(far["eta_seconds"].as_u64().unwrap() > near["eta_seconds"].as_u64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_stop_answering_pings_are_closed_and_live_ones_stay() {
    use tokio::io::AsyncReadExt;
    let upstream = Upstream::start().await;
    let q = queue("q", "/a", 10, "1h", "10m", 0);
    let proxy = Proxy::start_with(ProxySpec::memory(&q, upstream.addr), "ws_ping_interval = \"1s\"").await;

    // A live client: tungstenite answers pings as long as the socket is read,
    // so a task keeps reading it and reports whether it was ever closed.
    let mut live_visitor = Visitor::default();
    let mut live = connect_ws(&proxy, "q", &mut live_visitor).await;
    next_json(&mut live, Duration::from_secs(5)).await.unwrap();
    let live_task = tokio::spawn(async move {
        use futures_util::StreamExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
        loop {
            match tokio::time::timeout_at(deadline, live.next()).await {
                Err(_) => return (live, false),
                Ok(Some(Ok(Message::Close(_))) | Some(Err(_)) | None) => return (live, true),
                Ok(Some(Ok(_))) => continue,
            }
        }
    });

    // A dead peer: completes the handshake, then never reads or answers again.
    let (mut dead, _) = raw_upgrade(&proxy.base, "q").await;

    // Two silent intervals later the server gives up on the dead peer: after
    // its pings and a close frame, the connection reaches EOF.
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(8), dead.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    assert!(closed, "the silent peer was never closed");
    assert!(started.elapsed() >= Duration::from_secs(1), "closed too early: {:?}", started.elapsed());

    // The live client, which answered every ping, is still connected.
    assert_eq!(metric(&client(), &proxy, "waiting_room_ws_connections").await, 1.0, "only the live socket remains");
    let (mut live, was_closed) = live_task.await.unwrap();
    assert!(!was_closed, "a client answering pings must not be closed");
    use futures_util::SinkExt;
    live.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_json(&mut live, Duration::from_millis(500)).await, None, "no message, but no close either");
}
