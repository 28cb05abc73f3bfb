//! A small drop against the real stack (both binaries, Redis, PostgreSQL):
//! visitors join the pre-queue, the lottery orders them at the opening, 40
//! seats sell out and everyone else hears SOLD_OUT; `loadtest --drop`'s
//! audit passes with its four drop checks on real data.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use e2e::{Stack, StackOptions};
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use loadtest::Args;
use loadtest::audit::Status;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The booking core's admin port is chosen when the stack starts, after
/// the waiting room's config is written: the config's `[stock] url` points
/// here, and this forwards `GET /admin/stock` once the stack is up.
async fn stock_relay() -> (String, tokio::sync::watch::Sender<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/admin/stock", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::watch::channel(String::new());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let (client, rx) = (client.clone(), rx.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let (client, target) = (client.clone(), rx.borrow().clone());
                    async move {
                        let (status, body) = match client.get(&target).bearer_auth(e2e::ADMIN_TOKEN).send().await {
                            Ok(r) if !target.is_empty() => (r.status().as_u16(), r.bytes().await.unwrap_or_default()),
                            _ => (503, Bytes::new()),
                        };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .unwrap(),
                        )
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(socket), service).await;
            });
        }
    });
    (url, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_through_the_real_stack_passes_the_lottery_and_sold_out_checks() {
    let (stock_url, target) = stock_relay().await;
    let now = OffsetDateTime::now_utc();
    let at =
        |secs: i64| (now + Duration::from_secs(secs as u64)).replace_nanosecond(0).unwrap().format(&Rfc3339).unwrap();
    let extra = format!(
        "prequeue_from = \"{}\"\nopens_at = \"{}\"\nstop_when_sold_out = true\nstock_events = [1]\n\n[stock]\nurl = \
         \"{stock_url}\"\ntoken = \"{}\"\npoll_interval = \"200ms\"\n",
        at(6),
        at(11),
        e2e::ADMIN_TOKEN
    );
    let stack = Stack::start(StackOptions {
        redis: true,
        postgres: true,
        release_per_tick: 15,
        tick: "500ms".into(),
        waiting_room_extra: extra,
        ..StackOptions::default()
    })
    .await
    .unwrap();
    target.send_replace(format!("{}/admin/stock", stack.booking_admin));
    // 4 × 10 = 40 seats: event 1 of the fresh database.
    let (event, campaign) = stack.seed(4, 10, 100_000).await.unwrap();
    assert_eq!(event, 1, "the queue follows event 1");
    let (event, campaign) = (event.to_string(), campaign.to_string());
    let mut argv = vec!["loadtest", "--drop", "--proxy", stack.proxy.as_str(), "--queue", "sale"];
    argv.extend(["--event", event.as_str(), "--campaign", campaign.as_str(), "--quiet"]);
    argv.extend(["--arrivals", "100/s", "--duration", "2s", "--late-arrivals", "5", "--poll-share", "0.2"]);
    argv.extend([
        "--abandon-share",
        "0",
        "--confirm",
        "1",
        "--claim-twice",
        "0",
        "--max-wait",
        "60s",
        "--drain",
        "60s",
    ]);
    argv.extend(["--proxy-admin", stack.proxy_admin.as_str(), "--booking", stack.booking.as_str()]);
    argv.extend(["--booking-admin", stack.booking_admin.as_str()]);
    argv.extend(["--admin-token", e2e::ADMIN_TOKEN, "--database-url", stack.database_url.as_str()]);
    let report = loadtest::run(Args::try_parse_from(argv).unwrap()).await.unwrap();
    let text = report.render();
    assert!(report.passed(), "{text}\n{}", stack.logs());
    for name in ["lottery_verified", "lottery_order", "no_admission_after_sold_out", "sold_out_heard"] {
        let c = report.audit.check(name).unwrap();
        assert_eq!(c.status, Status::Pass, "{name}: {}\n{text}", c.detail);
    }
    let d = report.audit.drop.clone().unwrap();
    assert_eq!((d.entrants, d.harness_entrants), (200, 200), "{text}");
    assert_eq!(report.visitors.bookings, 40, "the 40 seats sold out\n{text}");
    assert!(d.sockets_told > 100, "most sockets were still waiting when it sold out\n{text}");
    let v = &report.visitors;
    assert_eq!(v.sold_out + v.done, report.arrivals.planned, "everyone booked or was told SOLD_OUT\n{text}");
}
