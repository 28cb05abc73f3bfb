//! A purchase ends the session: the upstream answers `wr-session: end`, the
//! proxy keeps the header to itself, refuses that token from then on on every
//! instance (also one that starts later), and frees its `max_active` slot.

use std::time::Duration;

use crate::helpers::*;

/// An upstream answering 200 to everything, and to a confirm also
/// `wr-session: end; reason="confirm"`.
async fn shop() -> std::net::SocketAddr {
    raw_upstream(|head| async move {
        if head.starts_with("POST /api/holds/h1/confirm ") {
            b"HTTP/1.1 200 OK\r\nwr-session: end; reason=\"confirm\"\r\ncontent-length: 6\r\n\r\nbooked".to_vec()
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_ends_the_session_on_every_instance_and_frees_its_slot() {
    let up = shop().await;
    let prefix = unique("ended");
    let keys = tempfile::tempdir().unwrap();
    // One visitor at a time: free entry for the first, the next one waits
    // for the slot.
    let q = format!("{}max_active = 1\n", queue("q", "/api", 5, "500ms", "10m", 1));
    let a = Proxy::start(ProxySpec::redis(&q, up, &prefix).keys(keys.path())).await;
    let b = Proxy::start(ProxySpec::redis(&q, up, &prefix).keys(keys.path())).await;
    let c = client();
    let mut buyer = Visitor::default();
    assert_eq!(buyer.join(&c, &a, "q").await["status"], "READY");
    let token = buyer.get("wr_entry").unwrap().to_owned();
    let mut next = Visitor::default();
    assert_eq!(next.join(&c, &b, "q").await["status"], "WAITING");

    // Both instances know the token (verified, then from the cache: the
    // second request on a connection takes the fast lane).
    let get = |proxy: &Proxy| c.get(proxy.url("/api/seats")).bearer_auth(&token).send();
    for proxy in [&a, &b] {
        for _ in 0..3 {
            assert_eq!(get(proxy).await.unwrap().status(), 200);
        }
    }
    let confirmed = c.post(a.url("/api/holds/h1/confirm")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert!(confirmed.headers().get("wr-session").is_none(), "the header is the proxy's only");
    assert_eq!(confirmed.text().await.unwrap(), "booked");

    // Refused at once where the purchase passed, and soon on the other
    // instance (told over the store's channel).
    let r = get(&a).await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("session ended"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while get(&b).await.unwrap().status() != 401 {
        assert!(std::time::Instant::now() < deadline, "instance b still lets the token through");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An instance that starts now asks the store when it first sees the token.
    let late = Proxy::start(ProxySpec::redis(&q, up, &prefix).keys(keys.path())).await;
    assert_eq!(get(&late).await.unwrap().status(), 401);
    assert_eq!(metric(&c, &a, "waiting_room_sessions_ended_total{queue=\"q\",reason=\"confirm\"}").await, 1.0);

    // The slot is free: the next visitor is let in by a tick.
    let s = next.until_ready(&c, &b, "q", Duration::from_secs(10)).await;
    assert_eq!(s["status"], "READY");
    // And the buyer may queue again for another purchase.
    let again = buyer.join(&c, &a, "q").await;
    assert_eq!(again["status"], "WAITING", "{again}");
}
