//! Slowloris and friends: heads that never end, heads that never stop,
//! thousands of idle connections, a proxy short of descriptors. One client
//! must not take the proxy down for the others.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;
use crate::net::*;

const QUEUES: &str =
    "[[queues]]\nid = \"q\"\npaths = [\"/gated\"]\nrelease_per_tick = 1\ntick = \"10s\"\nsession = \"10m\"\n";

async fn pass_ok(from: std::net::IpAddr, proxy: &Proxy) -> u16 {
    let host = proxy.base.trim_start_matches("http://");
    status(
        &exchange(
            from,
            &proxy.base,
            format!("GET /pass HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await,
    )
}

/// Open `n` idle connections, client `from(i)` for the i-th, and sort them
/// into those the proxy holds and those it refused, each refusal being a
/// canned `expect` answer or a bare close.
async fn open_idle(
    proxy: &Proxy,
    n: u32,
    from: impl Fn(u32) -> std::net::IpAddr,
    expect: u16,
) -> (Vec<tokio::net::TcpStream>, usize) {
    let mut opened = Vec::new();
    for i in 0..n {
        // A connect the kernel refuses (the backlog full) is a refusal too.
        if let Ok(s) = connect_from(from(i), &proxy.base).await {
            opened.push(s);
        }
    }
    // The kernel completes a handshake before the proxy accepts it: give
    // every connection half a second (all at once) to be refused. An
    // accepted one hears nothing until it sends a request.
    let settled = futures_util::future::join_all(opened.into_iter().map(|mut s| async move {
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            Ok(Ok(n)) => {
                let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(n == 0 || status(&answer) == expect, "{answer}");
                None
            }
            Ok(Err(_)) => None,
            Err(_) => Some(s),
        }
    }))
    .await;
    let open: Vec<_> = settled.into_iter().flatten().collect();
    let refused = n as usize - open.len();
    (open, refused)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_that_trickles_in_is_cut_off_at_its_deadline_while_others_are_served() {
    let up = RecordingUpstream::start().await;
    let limits = "[limits]\nheader_timeout = \"1s\"\n";
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits(limits)).await;
    let c = client();
    let before = metric(&c, &proxy, "waiting_room_refused_total{reason=\"head_timeout\"}").await;
    let mut slow = connect_from(client_ip(10), &proxy.base).await.unwrap();
    slow.write_all(b"GET /pass HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms: every read is well within any per-read
    // timeout, the head as a whole is not.
    let trickle = tokio::spawn(async move {
        for b in b"X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(600) {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    assert_eq!(pass_ok(client_ip(11), &proxy).await, 200, "another client is served meanwhile");
    let mut slow = trickle.await.unwrap();
    let answer = String::from_utf8_lossy(&read_all(&mut slow, Duration::from_secs(2)).await).into_owned();
    assert!(started.elapsed() < Duration::from_secs(30), "the slow head was never cut off");
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("did not arrive in time"), "{answer}");
    assert_eq!(metric(&c, &proxy, "waiting_room_refused_total{reason=\"head_timeout\"}").await - before, 1.0);
    assert!(!up.request_lines().iter().any(|l| l.contains("X-Slow")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_heads_get_431_after_the_limit_and_are_never_buffered_whole() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("")).await;
    let before = rss_kib(proxy.pid());
    // 200 clients each start a head of about 1 MiB and never finish it.
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let base = proxy.base.clone();
        tasks.push(tokio::spawn(async move {
            let from = client_ip(20 + (i % 100) as u8);
            let mut s = connect_from(from, &base).await.unwrap();
            let _ = s.write_all(b"GET /pass HTTP/1.1\r\nHost: x\r\n").await;
            let line = format!("X-Pad: {}\r\n", "a".repeat(1000));
            let mut sent = 0usize;
            while sent < 1024 * 1024 {
                if s.write_all(line.as_bytes()).await.is_err() {
                    break;
                }
                sent += line.len();
            }
            let answer = String::from_utf8_lossy(&read_all(&mut s, Duration::from_secs(2)).await).into_owned();
            (sent, answer, s)
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        let (_sent, answer, s) = t.await.unwrap();
        assert_eq!(status(&answer), 431, "{answer}");
        assert!(answer.contains("larger than 16384 bytes"), "{answer}");
        held.push(s);
    }
    let grown_mib = rss_kib(proxy.pid()).saturating_sub(before) / 1024;
    // Buffering the heads whole would be 200 MiB.
    assert!(grown_mib < 48, "the proxy grew by {grown_mib} MiB");
    assert_eq!(pass_ok(client_ip(5), &proxy).await, 200);
}

#[tokio::test]
async fn more_header_fields_than_allowed_get_431() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("")).await;
    let head = |n: usize| {
        let mut h = String::from("GET /pass HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
        for i in 0..n {
            h.push_str(&format!("X-F{i}: v\r\n"));
        }
        h.push_str("\r\n");
        h
    };
    // Host and Connection count: 98 more is 100 in all.
    assert_eq!(status(&exchange(client_ip(30), &proxy.base, head(98).as_bytes()).await), 200);
    let over = exchange(client_ip(30), &proxy.base, head(99).as_bytes()).await;
    assert_eq!(status(&over), 431, "{over}");
    assert!(over.contains("more than 100 header fields"), "{over}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_of_one_client_stop_at_its_cap_and_everyone_else_is_served() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("")).await;
    let c = client();
    let (open, refused) = open_idle(&proxy, 600, |_| client_ip(40), 429).await;
    assert_eq!(open.len(), 256, "the default cap is 256 per client ({refused} refused)");
    assert_eq!(pass_ok(client_ip(41), &proxy).await, 200);
    assert!(metric(&c, &proxy, "waiting_room_refused_total{reason=\"client_connections\"}").await >= 344.0);
    // Closing them gives the client its share back.
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pass_ok(client_ip(40), &proxy).await != 200 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_short_of_descriptors_refuses_connections_instead_of_failing_to_accept() {
    let up = RecordingUpstream::start().await;
    // 200 open files: a budget of 100 descriptors, 88 of them for clients.
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("").open_files(200)).await;
    let c = client();
    let (open, refused) = open_idle(&proxy, 300, |i| client_ip(50 + (i % 30) as u8), 503).await;
    assert!((80..=88).contains(&open.len()), "{} held, {refused} refused", open.len());
    assert!(metric(&c, &proxy, "waiting_room_refused_total{reason=\"connections\"}").await >= 200.0);
    drop(open);
    let deadline = Instant::now() + Duration::from_secs(5);
    while pass_ok(client_ip(90), &proxy).await != 200 {
        assert!(Instant::now() < deadline, "no recovery: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!proxy.log().contains("Too many open files"), "{}", proxy.log());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let up = RecordingUpstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(QUEUES, up.addr).limits("[limits]\nidle_timeout = \"1s\"\n")).await;
    let mut s = connect_from(client_ip(60), &proxy.base).await.unwrap();
    s.write_all(b"GET /pass HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert_eq!(status(&String::from_utf8_lossy(&buf[..n])), 200);
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("closed").unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());
}
