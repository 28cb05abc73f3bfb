//! A short sale against the real stack (both binaries, Redis, PostgreSQL)
//! passes every audit check, with each check fed by real data.
#![allow(clippy::unwrap_used)]

use clap::Parser;
use e2e::{Stack, StackOptions};
use loadtest::Args;
use loadtest::audit::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_sale_through_the_real_stack_passes_every_audit_check() {
    let stack = Stack::start(StackOptions {
        redis: true,
        postgres: true,
        release_per_tick: 40,
        tick: "500ms".into(),
        ..StackOptions::default()
    })
    .await
    .unwrap();
    // 200 seats and 150 coupons for 300 visitors: some holds conflict, the coupons sell out.
    let (event, campaign) = stack.seed(10, 20, 150).await.unwrap();
    let (event, campaign) = (event.to_string(), campaign.to_string());
    let args = Args::try_parse_from([
        "loadtest",
        "--proxy",
        &stack.proxy,
        "--queue",
        "sale",
        "--event",
        &event,
        "--campaign",
        &campaign,
        "--arrivals",
        "150/s",
        "--duration",
        "2s",
        "--poll-share",
        "0.2",
        "--abandon-share",
        "0.1",
        "--abandon-within",
        "1s",
        "--claim-twice",
        "0.3",
        "--max-wait",
        "30s",
        "--drain",
        "30s",
        "--proxy-admin",
        &stack.proxy_admin,
        "--booking",
        &stack.booking,
        "--booking-admin",
        &stack.booking_admin,
        "--admin-token",
        e2e::ADMIN_TOKEN,
        "--database-url",
        &stack.database_url,
        // Connections spread over two loopback source addresses (HTTP clients and WebSockets).
        "--source-addrs",
        "127.0.0.1-127.0.0.2",
        "--quiet",
    ])
    .unwrap();
    let report = loadtest::run(args).await.unwrap();
    let text = report.render();
    assert!(report.passed(), "{text}\n{}", stack.logs());

    // Every check ran on real data (none skipped).
    for c in &report.audit.checks {
        assert_eq!(c.status, Status::Pass, "{}: {}\n{text}", c.name, c.detail);
    }
    assert_eq!(report.arrivals.planned, 300, "{text}");
    let v = &report.visitors;
    assert!(v.admitted_by_tick >= 200, "most visitors queued and were released by ticks\n{text}");
    assert!(v.abandoned > 0 && v.polling > 0 && v.websocket > 0, "{text}");
    assert_eq!(v.claims, 150, "the stock sold out exactly\n{text}");
    assert!(v.bookings > 0, "{text}");
    assert!(report.audit.ticks.releases.len() >= 5, "{text}");
    assert!(report.audit.ticks.max_per_release <= 40, "{text}");
    assert_eq!(report.audit.order.tau, Some(1.0), "{text}");
    assert!(report.audit.order.concordant > 1000, "{text}");
}
