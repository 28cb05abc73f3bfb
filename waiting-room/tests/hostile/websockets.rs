//! Queue WebSockets: only pages of this site may open them, and one client
//! holds at most its share.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;
use crate::net::*;

#[tokio::test]
async fn a_page_from_another_origin_cannot_open_the_queue_socket() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "10s", "10m", 0), upstream.addr).limits("")).await;
    let host = proxy.base.trim_start_matches("http://").to_owned();
    let evil =
        exchange(client_ip(1), &proxy.base, &ws_handshake(&proxy.base, "q", "Origin: https://evil.example\r\n")).await;
    assert_eq!(status(&evil), 403, "{evil}");
    assert!(evil.contains("application/problem+json") && evil.contains("origin"), "{evil}");
    assert!(!evil.contains("wr_entry"), "{evil}");
    let null = exchange(client_ip(1), &proxy.base, &ws_handshake(&proxy.base, "q", "Origin: null\r\n")).await;
    assert_eq!(status(&null), 403, "{null}");
    // The page this proxy serves, and clients that are no browser, may.
    let own = ws_handshake(&proxy.base, "q", &format!("Origin: http://{host}\r\n"));
    let mut s = connect_from(client_ip(1), &proxy.base).await.unwrap();
    s.write_all(&own).await.unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut s, Duration::from_millis(500)).await).into_owned();
    assert_eq!(status(&answer), 101, "{answer}");
    let bare = ws_handshake(&proxy.base, "q", "");
    let mut s = connect_from(client_ip(1), &proxy.base).await.unwrap();
    s.write_all(&bare).await.unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut s, Duration::from_millis(500)).await).into_owned();
    assert_eq!(status(&answer), 101, "{answer}");
}

#[tokio::test]
async fn one_client_holds_at_most_its_share_of_queue_sockets() {
    const CAP: usize = 5;
    let upstream = Upstream::start().await;
    let limits = format!("[limits]\nmax_websockets_per_client = {CAP}\n");
    let proxy =
        Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "10s", "10m", 0), upstream.addr).limits(&limits)).await;
    let c = client();
    let refused_before = metric(&c, &proxy, "waiting_room_refused_total{reason=\"client_websockets\"}").await;
    let mut open = Vec::new();
    for _ in 0..CAP {
        let mut s = connect_from(client_ip(2), &proxy.base).await.unwrap();
        s.write_all(&ws_handshake(&proxy.base, "q", "")).await.unwrap();
        let answer = String::from_utf8_lossy(&read_all(&mut s, Duration::from_millis(300)).await).into_owned();
        assert_eq!(status(&answer), 101, "{answer}");
        open.push(s);
    }
    let over = exchange(client_ip(2), &proxy.base, &ws_handshake(&proxy.base, "q", "")).await;
    assert_eq!(status(&over), 429, "{over}");
    assert!(over.to_ascii_lowercase().contains("retry-after:") && over.contains("limit 5"), "{over}");
    // Another client is not affected.
    let other = exchange(client_ip(3), &proxy.base, &ws_handshake(&proxy.base, "q", "")).await;
    assert_eq!(status(&other), 101, "{other}");
    let refused = metric(&c, &proxy, "waiting_room_refused_total{reason=\"client_websockets\"}").await;
    assert_eq!(refused - refused_before, 1.0);
    // Closing one gives the place back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let again = exchange(client_ip(2), &proxy.base, &ws_handshake(&proxy.base, "q", "")).await;
        if status(&again) == 101 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the place never came back: {again}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
