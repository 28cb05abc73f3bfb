//! Places in line are not free to mint: new visitor ids and joins are
//! budgeted per client address, and one address holds a bounded number of
//! waiting places in a line, across every instance.

use std::time::Duration;

use futures_util::future::join_all;

use crate::helpers::*;
use crate::joiners::*;
use crate::net::client_ip;

fn is_problem(a: &Answer) -> bool {
    a.header("content-type") == Some("application/problem+json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_mint_a_line_of_places() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1h", "10m", 0), upstream.addr).limits("")).await;
    let c = client_from(client_ip(20));
    let metrics = client();
    let before = metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"new_visitor_rate\"}").await
        + metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"join_rate\"}").await;
    // A script joining as fast as it can, never keeping a cookie.
    let answers = join_all((0..150).map(|_| join(&c, &proxy, "q", None, None))).await;
    let placed = answers.iter().filter(|a| a.status == 200).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(placed + refused.len(), 150, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    // The defaults: a burst of 20 new visitors (plus what 1 a second refills meanwhile).
    assert!((20..=23).contains(&placed), "{placed} places from one address");
    for a in &refused {
        assert!(is_problem(a), "{a:?}");
        assert!(a.header("retry-after").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1), "{a:?}");
        let limit = a.body["limit"].as_str().unwrap();
        assert!(limit == "new_visitors" || limit == "joins", "{a:?}");
        assert!(a.body["detail"].as_str().unwrap().starts_with("too many "), "{a:?}");
        assert!(a.visitor_cookie().is_none(), "a refused join mints no visitor id");
    }
    // The next real visitor, from another address, is not behind 150 bogus places.
    let real = join(&client_from(client_ip(21)), &proxy, "q", None, None).await;
    assert_eq!(real.status, 200, "{real:?}");
    assert_eq!(real.body["position"].as_u64(), Some(placed as u64 + 1));
    let after = metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"new_visitor_rate\"}").await
        + metric(&metrics, &proxy, "waiting_room_refused_total{reason=\"join_rate\"}").await;
    assert_eq!(after - before, refused.len() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_from_one_address_do_not_each_keep_a_place() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1h", "10m", 0), upstream.addr).limits("")).await;
    // All at once: a script holding sockets open, each without a cookie.
    let opened = join_all((0..30).map(|_| async {
        use tokio::io::AsyncWriteExt;
        let mut s = crate::net::connect_from(client_ip(22), &proxy.base).await.unwrap();
        s.write_all(&crate::net::ws_handshake(&proxy.base, "q", "")).await.unwrap();
        let head =
            String::from_utf8_lossy(&crate::net::read_all(&mut s, Duration::from_millis(300)).await).into_owned();
        (s, head)
    }))
    .await;
    let mut upgraded = 0;
    for (_, head) in &opened {
        match crate::net::status(head) {
            101 => upgraded += 1,
            429 => assert!(head.contains("\"limit\":\"new_visitors\""), "{head}"),
            other => panic!("{other}: {head}"),
        }
    }
    assert!((20..=21).contains(&upgraded), "{upgraded} sockets, each with a new place");
    assert_eq!(waiting(&proxy, "q").await, upgraded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_keeps_its_id_and_status_polls_are_never_limited() {
    let upstream = Upstream::start().await;
    // Slow refills, so no token comes back while the test runs.
    let limits = "[limits]\nnew_visitors = { rate = 0.05, burst = 2.0 }\njoins = { rate = 0.05, burst = 4.0 }\n";
    let proxy =
        Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1h", "10m", 0), upstream.addr).limits(limits)).await;
    let c = client_from(client_ip(23));
    let a = join(&c, &proxy, "q", None, None).await;
    let b = join(&c, &proxy, "q", None, None).await;
    assert_eq!((a.status, b.status), (200, 200));
    let third = join(&c, &proxy, "q", None, None).await;
    assert_eq!((third.status, third.body["limit"].as_str()), (429, Some("new_visitors")), "{third:?}");
    // A visitor with its cookie needs no new id: it spends only a join.
    let cookie = a.visitor_cookie().unwrap();
    let again = join(&c, &proxy, "q", Some(&cookie), None).await;
    assert_eq!((again.status, again.body["position"].as_u64()), (200, Some(1)));
    let over = join(&c, &proxy, "q", Some(&cookie), None).await;
    assert_eq!((over.status, over.body["limit"].as_str()), (429, Some("joins")), "{over:?}");
    let wait: u64 = over.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&wait), "{wait}");
    // The page and the socket are joins too: the page says so in HTML and reloads itself.
    let page = get(&c, &proxy, "/wr/q", Some(&cookie)).await;
    assert_eq!(page.status, 429);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    let html = page.body.as_str().unwrap();
    assert!(html.contains("data-wr-step=\"refused\"") && html.contains("too many joins from your address"), "{html}");
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\""), "the page retries by itself");
    // Polls are not joins.
    for _ in 0..30 {
        let s = get(&c, &proxy, "/wr/q/status", Some(&cookie)).await;
        assert_eq!((s.status, s.body["status"].as_str()), (200, Some("WAITING")));
    }
    // Another address has its own budgets.
    assert_eq!(join(&client_from(client_ip(24)), &proxy, "q", None, None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_holds_at_most_its_places_across_instances() {
    const CAP: usize = 5;
    let shared = Shared::new("places").await;
    // Rates off, so only the cap (which the store keeps across instances) decides.
    let limits = format!(
        "[limits]\nmax_connections_per_client = 0\nnew_visitors = {{ rate = 0.0, burst = 0.0 }}\n\
         joins = {{ rate = 0.0, burst = 0.0 }}\nmax_waiting_per_client = {CAP}\n"
    );
    let q = queue("q", "/a", 1, "1h", "10m", 0);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(Proxy::start(shared.spec(&q).limits(&limits)).await);
    }
    let c = client_from(client_ip(25));
    let answers = join_all((0..300).map(|i| join(&c, &proxies[i % 3], "q", None, None))).await;
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(placed.len(), CAP, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!(a.status, 429, "{a:?}");
        assert_eq!(a.body["limit"], "max_waiting_per_client", "{a:?}");
        assert!(a.body["detail"].as_str().unwrap().contains("already holds 5 places"), "{a:?}");
    }
    assert_eq!(waiting(&proxies[0], "q").await, CAP as u64);
    let metrics = client();
    let mut counted = 0.0;
    for p in &proxies {
        counted += metric(&metrics, p, "waiting_room_refused_total{reason=\"client_places\"}").await;
    }
    assert_eq!(counted, (300 - CAP) as f64);
    // A visitor of the capped address who holds a place keeps it; other addresses join.
    let held = join(&c, &proxies[1], "q", Some(&placed[0].visitor_cookie().unwrap()), None).await;
    assert_eq!(held.status, 200, "{held:?}");
    let other = join(&client_from(client_ip(26)), &proxies[2], "q", None, None).await;
    assert_eq!(other.body["position"].as_u64(), Some(CAP as u64 + 1));
}
