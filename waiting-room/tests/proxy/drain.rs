//! A deploy: SIGTERM (or SIGINT) to a proxy under load. Every request in
//! flight is answered, every queue socket is told to reconnect (1001), and
//! the process exits 0 — on both lanes.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// An upstream that answers every request after `delay`.
async fn slow_upstream(delay: Duration) -> std::net::SocketAddr {
    raw_upstream(move |_| async move {
        tokio::time::sleep(delay).await;
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow".to_vec()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_request_in_flight_and_tells_sockets_to_reconnect() {
    for (lane, extra, signal) in [("fast", "", "TERM"), ("pingora", "fast_lane = false", "INT")] {
        let up = slow_upstream(Duration::from_millis(800)).await;
        let q = queue("q", "/gated", 1, "1h", "10m", 0);
        let mut proxy = Proxy::start_with(ProxySpec::memory(&q, up), extra).await;
        // Waiting visitors on sockets.
        let mut sockets = Vec::new();
        for _ in 0..20 {
            let mut v = Visitor::default();
            let mut ws = connect_ws(&proxy, "q", &mut v).await;
            assert_eq!(next_json(&mut ws, Duration::from_secs(5)).await.unwrap()["status"], "WAITING");
            sockets.push(ws);
        }
        // 30 slow requests in flight, on keep-alive connections.
        let c = reqwest::Client::new();
        let requests: Vec<_> = (0..30)
            .map(|i| {
                let c = c.clone();
                let url = proxy.url(&format!("/slow/{i}"));
                tokio::spawn(async move {
                    let r = c.get(url).send().await?;
                    let status = r.status().as_u16();
                    Ok::<_, reqwest::Error>((status, r.text().await?))
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let signalled = Instant::now();
        proxy.signal(signal);
        for (i, r) in requests.into_iter().enumerate() {
            let answer = r.await.unwrap();
            assert!(matches!(&answer, Ok((200, body)) if body == "slow"), "{lane}: request {i}: {answer:?}");
        }
        for ws in &mut sockets {
            let frame = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(ws)).await;
            let Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(close))))) = frame else {
                panic!("{lane}: no close frame: {frame:?}");
            };
            assert_eq!(u16::from(close.code), 1001, "{lane}");
            assert!(close.reason.contains("reconnect"), "{lane}: {close:?}");
        }
        let status = proxy.exited(Duration::from_secs(15)).await.unwrap_or_else(|| panic!("{lane}: still running"));
        assert!(status.success(), "{lane}: {status}: {}", proxy.log());
        assert!(signalled.elapsed() < Duration::from_secs(10), "{lane}: took {:?}", signalled.elapsed());
    }
}
