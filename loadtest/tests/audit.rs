//! The audit catches injected violations: the harness runs against a small
//! in-test fake of the proxy and booking APIs that misbehaves in one way at a
//! time, and the matching check must fail. The same fake behaving correctly
//! passes every check, so a failure is the injected fault and nothing else.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use loadtest::audit::Status;
use parking_lot::Mutex;
use serde_json::{Value, json};

const N: usize = 5;
const TICK_MS: u64 = 200;
const STOCK: i64 = 10;
const EVENT: i64 = 7;
const CAMPAIGN: i64 = 3;

/// The one thing the fake gets wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Releases 2N per tick.
    OverAdmit,
    /// Releases the newest visitors first.
    Lifo,
    /// Every hold is granted, and only one seat is ever shown available.
    DoubleBook,
    /// Every claim is granted, again and again.
    OverIssue,
    /// Claims are acknowledged but never stored.
    LoseClaims,
    /// Confirms fail with 500.
    ServerError,
    /// The protected URL answers 200 without a token.
    OpenGate,
    /// No tick log (`/admin/queues/q/ticks` answers 404, like a build without adaptive admission).
    NoTickLog,
    /// Each tick releases one fewer than its N while visitors wait (and logs N).
    ShortRelease,
    /// Not a fault: every third join and status call answers 503 with
    /// `Retry-After: 1` (the store did not answer in time), changing nothing.
    StoreBlips,
    /// Not a fault: adaptive admission, N per tick moving between 1 and 2N
    /// (above `release_per_tick` = N, within `max_per_tick` = 2N).
    Adaptive,
}

#[derive(Default)]
struct Fake {
    fault: Option<Fault>,
    next_visitor: u64,
    line: VecDeque<String>,
    admitted: HashMap<String, i64>,
    ticks: u64,
    released: u64,
    last_release: i64,
    /// The tick log, newest first (as the waiting room serves it).
    log: VecDeque<Value>,
    seats: HashMap<i64, String>,
    next_id: i64,
    /// Claims answered 201, per visitor.
    acknowledged: HashMap<String, usize>,
    /// Claims stored (what `/api/me/coupons` and `/admin/stats` show).
    claims: HashMap<String, Vec<i64>>,
    issued: i64,
    /// Join and status calls so far (`StoreBlips`).
    queue_calls: u64,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339).unwrap()
}

fn token(visitor: &str) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"sub": visitor}).to_string());
    format!("e30.{payload}.sig")
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

impl Fake {
    fn fault(&self) -> Fault {
        self.fault.unwrap_or(Fault::None)
    }

    fn standing(&self, visitor: &str) -> Value {
        if let Some(at) = self.admitted.get(visitor) {
            return json!({"status": "READY", "queue": "q", "token": token(visitor),
                          "expires_at": rfc3339(at + 600_000), "admitted_at": rfc3339(*at)});
        }
        match self.line.iter().position(|v| v == visitor) {
            Some(i) => json!({"status": "WAITING", "queue": "q", "position": i + 1, "queue_length": self.line.len(),
                              "eta_seconds": 1, "retry_after_seconds": 1}),
            None => json!({"status": "NOT_IN_QUEUE", "queue": "q", "join_url": "/wr/q/join"}),
        }
    }

    fn tick(&mut self) {
        // Like the real store: a release only once a full tick has passed since the last one.
        let at = now_ms();
        if at - self.last_release < TICK_MS as i64 {
            return;
        }
        self.last_release = at;
        // The N this tick may release, as logged; OverAdmit and ShortRelease lie about it.
        let (n, mode) = match self.fault() {
            // Mostly 1, every fifth tick 2N: the line builds up, and that tick's release exceeds N.
            Fault::Adaptive if self.ticks % 5 == 4 => (2 * N, "adaptive"),
            Fault::Adaptive => (1, "adaptive"),
            _ => (N, "fixed"),
        };
        let releasing = match self.fault() {
            Fault::OverAdmit => 2 * N,
            Fault::ShortRelease => N - 1,
            _ => n,
        };
        let mut released = 0;
        for _ in 0..releasing {
            let next = if self.fault() == Fault::Lifo { self.line.pop_back() } else { self.line.pop_front() };
            let Some(v) = next else { break };
            self.admitted.insert(v, at);
            self.released += 1;
            released += 1;
        }
        self.ticks += 1;
        self.log.push_front(json!({"tick": self.ticks, "at_ms": at, "n": n, "released": released,
                                   "waiting": self.line.len(), "mode": mode, "reason": mode}));
        self.log.truncate(1000);
    }

    fn handle(
        &mut self,
        method: &str,
        path: &str,
        cookie: Option<String>,
        auth: Option<String>,
        body: &[u8],
    ) -> Response<Full<Bytes>> {
        let visitor = auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")).and_then(|t| {
            let p = t.split('.').nth(1)?;
            let v: Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
            Some(v["sub"].as_str()?.to_owned())
        });
        let fault = self.fault();
        if fault == Fault::StoreBlips && matches!(path, "/wr/q/join" | "/wr/q/status") {
            self.queue_calls += 1;
            if self.queue_calls.is_multiple_of(3) {
                let mut r = reply(503, json!({"title": "the queue store is not answering; retry in a few seconds"}));
                r.headers_mut().insert("retry-after", "1".parse().unwrap());
                return r;
            }
        }
        match (method, path) {
            ("POST", "/wr/q/join") => {
                let id = cookie.unwrap_or_else(|| {
                    self.next_visitor += 1;
                    format!("{:032x}", self.next_visitor)
                });
                if !self.admitted.contains_key(&id) && !self.line.contains(&id) {
                    self.line.push_back(id.clone());
                }
                let mut r = reply(200, self.standing(&id));
                r.headers_mut().insert("set-cookie", format!("wr_visitor={id}; Path=/").parse().unwrap());
                r
            }
            ("GET", "/wr/q/status") => reply(200, self.standing(&cookie.unwrap_or_default())),
            ("GET", "/admin/queues/q") => {
                // The shape of a build from before adaptive admission, unless adaptive.
                let mut admission =
                    json!({"release_per_tick": N, "tick": format!("{TICK_MS}ms"), "free_entry": 0, "max_active": 0});
                if fault == Fault::Adaptive {
                    admission["admission"] = json!("adaptive");
                    admission["min_per_tick"] = json!(1);
                    admission["max_per_tick"] = json!(2 * N);
                }
                reply(
                    200,
                    json!({"settings": {"admission": admission}, "ticks": self.ticks, "released_total": self.released,
                           "abandoned_total": 0, "waiting": self.line.len()}),
                )
            }
            ("GET", "/admin/queues/q/ticks") if fault == Fault::NoTickLog => reply(404, json!({"title": "not here"})),
            ("GET", "/admin/queues/q/ticks") => reply(200, json!({"queue": "q", "ticks": self.log})),
            ("GET", "/admin/stats") => {
                reply(200, json!({"campaigns": [{"id": CAMPAIGN, "stock": STOCK, "claimed": self.issued}]}))
            }
            _ if visitor.is_none() && fault == Fault::OpenGate => reply(200, json!({"seats": []})),
            _ if visitor.is_none() => reply(401, json!({"title": "token needed"})),
            ("GET", "/api/events/7/seats") => {
                let seats: Vec<Value> = (1..=20)
                    .map(|id| {
                        // The double-booking fake shows seat 1 free forever, and no other seat.
                        let free = if fault == Fault::DoubleBook { id == 1 } else { !self.seats.contains_key(&id) };
                        json!({"id": id, "status": if free { "AVAILABLE" } else { "HELD" }})
                    })
                    .collect();
                reply(200, json!({"event_id": EVENT, "seats": seats}))
            }
            ("POST", "/api/events/7/holds") => {
                let seat = serde_json::from_slice::<Value>(body).unwrap()["seat_id"].as_i64().unwrap();
                if self.seats.contains_key(&seat) && fault != Fault::DoubleBook {
                    return reply(409, json!({"title": "taken"}));
                }
                self.seats.insert(seat, visitor.unwrap_or_default());
                self.next_id += 1;
                reply(
                    201,
                    json!({"hold_id": format!("7-{}", self.next_id), "seat_id": seat, "event_id": EVENT,
                                  "expires_at": rfc3339(now_ms() + 300_000)}),
                )
            }
            ("POST", p) if p.starts_with("/api/holds/") && p.ends_with("/confirm") => {
                if fault == Fault::ServerError {
                    return reply(500, json!({"title": "boom"}));
                }
                reply(200, json!({"booking_id": 1}))
            }
            ("POST", "/api/coupons/3/claims") => {
                let v = visitor.unwrap_or_default();
                if fault != Fault::OverIssue {
                    if self.acknowledged.contains_key(&v) {
                        return reply(409, json!({"title": "already claimed"}));
                    }
                    if self.acknowledged.len() as i64 >= STOCK {
                        return reply(410, json!({"title": "sold out"}));
                    }
                }
                self.next_id += 1;
                let id = self.next_id;
                *self.acknowledged.entry(v.clone()).or_default() += 1;
                if fault != Fault::LoseClaims {
                    self.issued += 1;
                    self.claims.entry(v).or_default().push(id);
                }
                reply(
                    201,
                    json!({"claim_id": id, "campaign_id": CAMPAIGN, "code": format!("C{id}"), "claimed_at": rfc3339(now_ms())}),
                )
            }
            ("GET", "/api/me/coupons") => {
                let ids = self.claims.get(&visitor.unwrap_or_default()).cloned().unwrap_or_default();
                reply(
                    200,
                    Value::Array(ids.iter().map(|id| json!({"claim_id": id, "campaign_id": CAMPAIGN})).collect()),
                )
            }
            _ => reply(404, json!({"title": "not here"})),
        }
    }
}

/// Start the fake on a free port; returns its base URL.
async fn start(fault: Fault) -> String {
    let fake = Arc::new(Mutex::new(Fake { fault: Some(fault), ..Fake::default() }));
    let ticker = fake.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(20));
        every.tick().await;
        loop {
            every.tick().await;
            ticker.lock().tick();
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let fake = fake.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let fake = fake.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().path().to_owned();
                        let header =
                            |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                        let cookie = header("cookie").and_then(|c| c.strip_prefix("wr_visitor=").map(str::to_owned));
                        let auth = header("authorization");
                        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        Ok::<_, Infallible>(fake.lock().handle(&method, &path, cookie, auth, &body))
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    url
}

/// Run 40 polling visitors against a fake with `fault`.
async fn run_against(fault: Fault) -> loadtest::Report {
    let url = start(fault).await;
    let args = loadtest::Args::try_parse_from([
        "loadtest",
        "--proxy",
        &url,
        "--queue",
        "q",
        "--event",
        "7",
        "--campaign",
        "3",
        "--arrivals",
        "40/s",
        "--duration",
        "1s",
        "--poll-share",
        "1",
        "--abandon-share",
        "0",
        "--claim-twice",
        "0.5",
        "--max-wait",
        "20s",
        "--drain",
        "20s",
        "--proxy-admin",
        &url,
        "--booking",
        &url,
        "--booking-admin",
        &url,
        "--admin-token",
        "t",
        "--allowed-errors",
        "1",
        "--quiet",
    ])
    .unwrap();
    loadtest::run(args).await.unwrap()
}

/// The fake has no database, so this check cannot run against it.
const NEEDS_DATABASE: &str = "grants_recorded";

/// What a check should say when `failing` are the injected faults
/// (`skipping`: checks the fault leaves without their data).
fn expected(name: &str, failing: &[&str], skipping: &[&str]) -> Status {
    if failing.contains(&name) {
        Status::Fail
    } else if name == NEEDS_DATABASE || skipping.contains(&name) {
        Status::Skipped
    } else {
        Status::Pass
    }
}

/// Every check in `failing` fails, every other one passes.
fn only_fails(report: &loadtest::Report, failing: &[&str]) {
    fails_and_skips(report, failing, &[]);
}

/// Every check in `failing` fails, those in `skipping` are skipped, every other one passes.
fn fails_and_skips(report: &loadtest::Report, failing: &[&str], skipping: &[&str]) {
    let text = report.render();
    assert_eq!(report.passed(), failing.is_empty(), "{text}");
    for c in &report.audit.checks {
        assert_eq!(c.status, expected(c.name, failing, skipping), "{}: {}\n{text}", c.name, c.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fake_that_keeps_every_invariant_passes_every_check() {
    let report = run_against(Fault::None).await;
    let text = report.render();
    only_fails(&report, &[]);
    assert_eq!(report.audit.order.tau, Some(1.0), "{text}");
    assert_eq!(report.visitors.claims as i64, STOCK, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_waited_out_and_retried_like_the_page_does() {
    let report = run_against(Fault::StoreBlips).await;
    let text = report.render();
    only_fails(&report, &[]);
    let retried = |step: &str| {
        report.steps.iter().find(|s| s.step == step).and_then(|s| s.outcomes.get("retried_503").copied()).unwrap_or(0)
    };
    assert!(retried("join") > 0 && retried("poll") > 0, "{text}");
    let no_5xx = report.audit.checks.iter().find(|c| c.name == "no_5xx").unwrap();
    assert!(no_5xx.detail.contains("retried"), "the audit says what it let pass: {}", no_5xx.detail);
    assert_eq!(report.audit.order.tau, Some(1.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_twice_n_in_a_tick_fails_the_tick_limit() {
    let report = run_against(Fault::OverAdmit).await;
    // The tick log shows it too: released more than the logged n.
    only_fails(&report, &["tick_limit", "adaptive_ticks"]);
    assert!(report.audit.ticks.max_per_release > N as u64, "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admitting_the_newest_visitors_first_fails_fifo_order() {
    let report = run_against(Fault::Lifo).await;
    only_fails(&report, &["fifo_order"]);
    assert!(report.audit.order.discordant > 0, "{}", report.render());
    assert!(report.audit.order.tau.is_some_and(|t| t < 1.0), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_two_holds_on_one_seat_fails_the_single_holder_check() {
    let report = run_against(Fault::DoubleBook).await;
    only_fails(&report, &["seat_single_holder"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granting_every_claim_fails_the_stock_and_one_per_visitor_checks() {
    let report = run_against(Fault::OverIssue).await;
    only_fails(&report, &["coupons_within_stock", "one_coupon_per_visitor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledging_claims_that_were_never_stored_fails_claims_durable() {
    let report = run_against(Fault::LoseClaims).await;
    only_fails(&report, &["claims_durable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_anywhere_fails_no_5xx() {
    let report = run_against(Fault::ServerError).await;
    // The confirm failure also ends those visitors' flows.
    only_fails(&report, &["no_5xx"]);
    assert!(report.visitors.failed.keys().any(|k| k.contains("5xx:500")), "{}", report.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_url_served_without_a_token_fails_gate_closed() {
    let report = run_against(Fault::OpenGate).await;
    only_fails(&report, &["gate_closed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_room_without_a_tick_log_skips_adaptive_ticks_and_nothing_else() {
    let report = run_against(Fault::NoTickLog).await;
    fails_and_skips(&report, &[], &["adaptive_ticks"]);
    let c = report.audit.check("adaptive_ticks").unwrap();
    assert!(c.detail.contains("404"), "{}", c.detail);
    assert!(report.audit.adaptive.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn releasing_fewer_than_n_while_visitors_wait_fails_adaptive_ticks() {
    let report = run_against(Fault::ShortRelease).await;
    only_fails(&report, &["adaptive_ticks"]);
    let c = report.audit.check("adaptive_ticks").unwrap();
    assert!(c.detail.contains("left waiting"), "{}", c.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_admission_above_release_per_tick_passes_every_check() {
    let report = run_against(Fault::Adaptive).await;
    let text = report.render();
    only_fails(&report, &[]);
    // Releases above release_per_tick happened: a fixed N would have failed tick_limit.
    assert!(report.audit.ticks.max_per_release > N as u64, "{text}");
    let a = report.audit.adaptive.as_ref().unwrap();
    assert_eq!((a.mode.as_str(), a.n_min, a.n_max), ("adaptive", 1, 2 * N as u64), "{text}");
    assert!(text.contains("tick log (adaptive admission)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shows_are_admitted_make_no_request_and_are_reported() {
    let url = start(Fault::None).await;
    let args = loadtest::Args::try_parse_from([
        "loadtest",
        "--proxy",
        &url,
        "--queue",
        "q",
        "--event",
        "7",
        "--campaign",
        "3",
        "--arrivals",
        "40/s",
        "--duration",
        "1s",
        "--poll-share",
        "1",
        "--abandon-share",
        "0",
        "--no-show",
        "0.5",
        "--max-wait",
        "20s",
        "--drain",
        "20s",
        "--proxy-admin",
        &url,
        "--admin-token",
        "t",
        "--quiet",
    ])
    .unwrap();
    let report = loadtest::run(args).await.unwrap();
    let text = report.render();
    assert!(report.passed(), "{text}");
    let (v, a) = (&report.visitors, &report.admitted);
    assert_eq!(v.no_shows + v.done, 40, "everybody admitted, and either booked or walked away\n{text}");
    assert!((10..=30).contains(&v.no_shows), "about half are no-shows\n{text}");
    assert_eq!((a.admitted, a.no_shows, a.completed), (40, v.no_shows, v.done), "{text}");
    // Only visitors who came asked for a seat map: one each.
    let seat_maps = report.steps.iter().find(|s| s.step == "seat_map").map_or(0, |s| s.count);
    assert_eq!(seat_maps as usize, v.done, "{text}");
    assert!(a.requests.requests >= 2 * v.done as u64 && a.requests.server_errors == 0, "{text}");
    assert!(a.window_seconds > 0.0 && a.visitors_per_second > 0.0, "{text}");
    assert!(
        text.contains("no-shows") && report.summary_line().contains(&format!(" no_shows={}", v.no_shows)),
        "{text}"
    );
}
