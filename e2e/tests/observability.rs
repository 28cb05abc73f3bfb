//! Observability end to end: the Grafana dashboard's queries run against a
//! real Prometheus scraping a real stack, and the proxy's request id is found
//! in the booking core's JSON log.
//!
//! The dashboard test starts Debian's `prometheus` (`/usr/bin/prometheus`, or
//! `PROMETHEUS_BIN`) with `configs/prometheus.yml`, its two targets pointed at
//! the stack, drives a sale through the proxy in two rounds (so every counter
//! is seen before and after it moves), then runs every PromQL expression in
//! `grafana/dashboards/waiting-room.json` and fails if one errors, names a
//! metric the services do not export, returns nothing, or (for the traffic
//! the test caused) shows no activity.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Stack, StackOptions, workspace_root};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const QUEUE: &str = "sale";
/// Visitors per traffic round (one on a WebSocket, the rest polling).
const VISITORS: usize = 8;
const ROUNDS: usize = 2;
const STOCK: i64 = 12;

/// Metrics the test's traffic must show as activity (a value above zero) in
/// every dashboard expression made only of them. Gauges that may rightly be
/// zero at the end (waiting, ETA, open sockets, stock left) are not here;
/// their activity is checked with `max_over_time` below.
const MUST_MOVE: &[&str] = &[
    "waiting_room_joins_total",
    "waiting_room_admissions_total",
    "waiting_room_active_sessions",
    "waiting_room_release_rate",
    "waiting_room_configured_release_rate",
    "waiting_room_release_per_tick",
    "waiting_room_tick_duration_seconds_bucket",
    "waiting_room_ws_messages_total",
    "waiting_room_push_delay_seconds_bucket",
    "waiting_room_gate_decisions_total",
    "waiting_room_upstream_latency_seconds_bucket",
    "waiting_room_upstream_latency_seconds_count",
    "waiting_room_requests_total",
    "waiting_room_token_cache_total",
    "waiting_room_adaptive_n",
    "waiting_room_adaptive_decisions_total",
    "waiting_room_arrivals_total",
    "booking_core_holds_total",
    "booking_core_confirms_total",
    "booking_core_releases_total",
    "booking_core_hold_expiries_total",
    "booking_core_hold_conflicts_total",
    "booking_core_claims_total",
    "booking_core_claims_sold_out_total",
    "booking_core_claim_duplicates_total",
    "booking_core_coupon_stock",
    "booking_core_http_responses_total",
    "booking_core_http_request_duration_seconds_bucket",
    "booking_core_db_query_duration_seconds_bucket",
    "booking_core_db_pool_connections",
    "booking_core_auth_failures_total",
    "booking_core_seat_map_cache_hits_total",
    "booking_core_seat_map_cache_misses_total",
];

// ---------------------------------------------------------------------------
// The dashboard: its expressions and the metric names they use.

fn dashboard() -> Value {
    let path = workspace_root().join("grafana/dashboards/waiting-room.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard with where it came from: panel
/// targets (`expr`, at any depth, so panels inside collapsed rows count) and
/// templating queries (`label_values(metric, label)` becomes a query of
/// `metric` grouped by `label`).
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
                if let Some(expr) = map.get("expr").and_then(Value::as_str) {
                    out.push((format!("panel {title:?}"), expr.to_owned()));
                }
                for (key, child) in map {
                    if key != "templating" {
                        walk(child, title, out);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"].as_str().or(var["query"].as_str()).unwrap();
        let name = var["name"].as_str().unwrap();
        let expr = match query.trim().strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')) {
            Some(args) => {
                let (metric, label) =
                    args.rsplit_once(',').unwrap_or_else(|| panic!("label_values({args}): no metric"));
                format!("count by ({}) ({})", label.trim(), metric.trim())
            }
            None => query.strip_prefix("query_result(").and_then(|q| q.strip_suffix(')')).unwrap_or(query).to_owned(),
        };
        out.push((format!("variable ${name}"), expr));
    }
    out
}

/// Grafana's variables, given the values a person would see for this stack.
/// Longer names first, so `$__range_s` is not read as `$__range` + "_s".
fn substitute(expr: &str) -> String {
    let values = [
        ("$__rate_interval", "1m"),
        ("$__interval_ms", "15000"),
        ("$__interval", "15s"),
        ("$__range_ms", "300000"),
        ("$__range_s", "300"),
        ("$__range", "5m"),
        ("${queue}", QUEUE),
        ("[[queue]]", QUEUE),
        ("$queue", QUEUE),
    ];
    values.iter().fold(expr.to_owned(), |e, (var, value)| e.replace(var, value))
}

/// The metric names a PromQL expression selects: identifiers outside label
/// matchers, strings and ranges that are not functions, aggregations,
/// keywords or label lists of `by`/`without`/`on`/`ignoring`/`group_*`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    const WORDS: &[&str] = &[
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |mut i: usize, close: char| {
        while i < chars.len() && chars[i] != close {
            if chars[i] == '"' || chars[i] == '\'' {
                let quote = chars[i];
                i += 1;
                while i < chars.len() && chars[i] != quote {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
            }
            i += 1;
        }
        i + 1
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => i = skip_to(i + 1, '}'),
            '[' => i = skip_to(i + 1, ']'),
            '"' | '\'' | '`' => i = skip_to(i + 1, c),
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let call = chars.get(next) == Some(&'(');
                if LABEL_LISTS.contains(&word.as_str()) {
                    if call {
                        i = skip_to(next + 1, ')');
                    }
                } else if !call && !WORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    names.insert(word);
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(r#"histogram_quantile(0.99, sum by (le, op) (rate(x_seconds_bucket{op=~"a|b", q="}"}[5m])))"#),
        ["x_seconds_bucket"]
    );
    assert_eq!(
        names(r#"sum(rate(a_total{r="hit"}[1m])) / sum without (i) (rate(b_total[1m] offset 5m)) > bool 0"#),
        ["a_total", "b_total"]
    );
    assert_eq!(names("60 * max(c) by (queue) + on (queue) group_left d"), ["c", "d"]);
    assert_eq!(names("1 - sum(e) / sum(f) and vector(1)"), ["e", "f"]);
}

#[test]
fn the_dashboard_covers_every_part_of_the_sale() {
    let d = dashboard();
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let exprs = expressions(&d);
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    // The issue's list: waiting and active per queue, joins/s, admissions/s vs
    // configured rate, abandonments, ETA, WebSocket connections and push
    // delay, gate decisions, upstream latency, holds/confirms/expiries, claims
    // and stock left, DB latency.
    for metric in [
        "waiting_room_waiting_visitors",
        "waiting_room_active_sessions",
        "waiting_room_joins_total",
        "waiting_room_admissions_total",
        "waiting_room_configured_release_rate",
        "waiting_room_abandoned_total",
        "waiting_room_eta_seconds",
        "waiting_room_ws_connections",
        "waiting_room_push_delay_seconds_bucket",
        "waiting_room_gate_decisions_total",
        "waiting_room_upstream_latency_seconds_bucket",
        "booking_core_holds_total",
        "booking_core_confirms_total",
        "booking_core_hold_expiries_total",
        "booking_core_claims_total",
        "booking_core_coupon_stock_left",
        "booking_core_db_query_duration_seconds_bucket",
        // Adaptive admission: every decision and the signals it used.
        "waiting_room_adaptive_n",
        "waiting_room_adaptive_decisions_total",
        "waiting_room_upstream_window_p99_seconds",
        "waiting_room_upstream_window_error_ratio",
        "waiting_room_upstream_in_flight",
        "waiting_room_arrivals_total",
        "waiting_room_no_shows_total",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let upstream: Vec<_> =
        exprs.iter().filter(|(_, e)| e.contains("waiting_room_upstream_latency_seconds_bucket")).collect();
    assert!(upstream.iter().any(|(_, e)| e.contains("histogram_quantile(0.5,")), "upstream p50");
    assert!(upstream.iter().any(|(_, e)| e.contains("histogram_quantile(0.99,")), "upstream p99");
    // Every panel reads the provisioned datasource, and the queue variable
    // lists the queues the waiting room reports.
    let queue = &d["templating"]["list"][0];
    assert_eq!(queue["name"], "queue");
    let query = queue["query"]["query"].as_str().or(queue["query"].as_str());
    assert_eq!(query, Some("label_values(waiting_room_waiting_visitors, queue)"));
    let mut panels = 0;
    for panel in d["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        panels += 1;
        assert!(["timeseries", "stat", "gauge"].contains(&panel["type"].as_str().unwrap()), "{panel}");
        assert_eq!(panel["datasource"]["uid"], "prometheus", "{}", panel["title"]);
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        assert!(targets.iter().all(|t| t["datasource"]["uid"] == "prometheus"), "{}", panel["title"]);
    }
    assert!(panels >= 12);
    let datasource = std::fs::read_to_string(workspace_root().join("grafana/provisioning/datasources/datasource.yml"));
    let datasource = datasource.unwrap();
    assert!(datasource.contains("uid: prometheus") && datasource.contains("url: http://prometheus:9090"));
}

// ---------------------------------------------------------------------------
// A Prometheus server for the test.

struct Prometheus {
    url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

impl Prometheus {
    /// Start Prometheus with the shipped `configs/prometheus.yml`, its
    /// compose targets replaced by the stack's and scraping every second.
    async fn start(stack: &Stack) -> Prometheus {
        let shipped = std::fs::read_to_string(workspace_root().join("configs/prometheus.yml")).unwrap();
        for needle in ["waiting-room:9091", "booking-core:9093", "job_name: waiting-room", "job_name: booking-core"] {
            assert!(shipped.contains(needle), "configs/prometheus.yml lost {needle:?}");
        }
        let config = shipped
            .replace("waiting-room:9091", &host_port(&stack.proxy_metrics))
            .replace("booking-core:9093", &host_port(&stack.booking_admin))
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
            .replace("scrape_timeout: 4s", "scrape_timeout: 1s");
        assert!(config.contains("scrape_interval: 1s"), "configs/prometheus.yml: expected scrape_interval: 5s");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        let port = e2e::free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); scripts/ensure-deps.sh installs Debian's prometheus"));
        let mut p = Prometheus { url: format!("http://127.0.0.1:{port}"), child, log, _dir: dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "prometheus never became ready:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run an instant query: the result vector (a scalar as one sample), or
    /// Prometheus's error.
    async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![json!({"metric": {}, "value": body["data"]["result"]})]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// The sample values of `expr` (NaN for unparsable ones).
    async fn values(&self, expr: &str) -> Vec<f64> {
        let result = self.query(expr).await.unwrap_or_else(|e| panic!("{expr}: {e}"));
        result.iter().map(|s| s["value"][1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN)).collect()
    }

    /// Poll until `expr` has a sample satisfying `ok`.
    async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let values = self.values(expr).await;
            if values.iter().any(|v| ok(*v)) {
                return;
            }
            assert!(Instant::now() < deadline, "{expr} never matched; last {values:?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until both targets are up and were last scraped after `since`
    /// (Unix seconds).
    async fn wait_scraped_after(&self, since: f64) {
        self.wait_for("count(up == 1)", |v| v == 2.0).await;
        self.wait_for("min(timestamp(up))", |v| v > since).await;
    }

    /// Both active targets are healthy, as the targets page reports them.
    async fn wait_targets_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body: Value = reqwest::get(format!("{}/api/v1/targets", self.url)).await.unwrap().json().await.unwrap();
            let targets = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            let jobs: BTreeSet<&str> = targets.iter().filter_map(|t| t["labels"]["job"].as_str()).collect();
            if targets.len() == 2 && targets.iter().all(|t| t["health"] == "up") {
                assert_eq!(jobs, BTreeSet::from(["booking-core", "waiting-room"]));
                return;
            }
            assert!(Instant::now() < deadline, "targets never all up: {targets:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

// ---------------------------------------------------------------------------
// Traffic.

fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A visitor on a WebSocket: connects (and so joins), then reads pushes until
/// READY; returns the entry token.
async fn websocket_visitor(proxy: String) -> String {
    let url = format!("{}/wr/{QUEUE}/ws", proxy.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.into_client_request().unwrap()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut messages = 0;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.expect("no READY in time").unwrap().unwrap();
        if let Message::Text(text) = frame {
            messages += 1;
            let status: Value = serde_json::from_str(&text).unwrap();
            if status["status"] == "READY" {
                // Waited at least one tick: the READY came as a push after the first message.
                assert!(messages >= 2, "the WebSocket visitor was never pushed an update: {status}");
                return status["token"].as_str().unwrap().to_owned();
            }
        }
    }
}

/// A visitor of the queue API joins: (visitor cookie, first status).
async fn join(proxy: &str) -> (String, Value) {
    let r = client().post(format!("{proxy}/wr/{QUEUE}/join")).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    (cookie, r.json().await.unwrap())
}

/// A visitor who joined polls until READY; returns the token.
async fn poll_until_ready(proxy: String, cookie: String, mut status: Value) -> String {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status["status"] != "READY" {
        assert!(Instant::now() < deadline, "never admitted: {status}");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = c.get(format!("{proxy}/wr/{QUEUE}/status")).header("cookie", &cookie).send().await.unwrap();
        status = r.json().await.unwrap();
    }
    status["token"].as_str().unwrap().to_owned()
}

/// One round of a sale: visitors queue (one on a WebSocket), get in, look at
/// the seat map, hold seats (then confirm, release or abandon them), claim
/// coupons twice; strangers without a token are turned away.
async fn sale_round(stack: &Stack, event: i64, campaign: i64, round: usize) {
    let mut joined = Vec::new();
    for _ in 1..VISITORS {
        joined.push(join(&stack.proxy).await);
    }
    // The socket joins last, so it waits at the back of the line through
    // several ticks (and scrapes) and is pushed each move.
    let ws = tokio::spawn(websocket_visitor(stack.proxy.clone()));
    let polling: Vec<_> = joined
        .into_iter()
        .map(|(cookie, status)| tokio::spawn(poll_until_ready(stack.proxy.clone(), cookie, status)))
        .collect();
    let mut tokens = Vec::new();
    for p in polling {
        tokens.push(p.await.unwrap());
    }
    tokens.push(ws.await.unwrap());

    let c = client();
    let seats_url = format!("{}/api/events/{event}/seats", stack.proxy);
    // Turned away: an API client (401), a browser (302 to the queue page),
    // and a request that bypasses the proxy (the booking core's own 401).
    let r = c.get(&seats_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c.get(&seats_url).header("accept", "text/html").send().await.unwrap();
    assert_eq!(r.status(), 302);
    let r = c.get(format!("{}/api/events/{event}/seats", stack.booking)).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let mut seat_ids: Vec<i64> = Vec::new();
    let mut held = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        // Twice: the second map comes from the cache, the token from the gate's cache.
        for _ in 0..2 {
            let r = c.get(&seats_url).bearer_auth(token).send().await.unwrap();
            assert_eq!(r.status(), 200, "{}", stack.logs());
            let map: Value = r.json().await.unwrap();
            seat_ids = map["seats"].as_array().unwrap().iter().map(|s| s["id"].as_i64().unwrap()).collect();
        }
        seat_ids.sort_unstable();
        // The coupon first: a confirmed booking ends the visitor's session.
        let claim = format!("{}/api/coupons/{campaign}/claims", stack.proxy);
        let first = c.post(&claim).bearer_auth(token).send().await.unwrap().status().as_u16();
        assert!(first == 201 || first == 410, "claim: {first}");
        let second = c.post(&claim).bearer_auth(token).send().await.unwrap().status().as_u16();
        assert_eq!(second, if first == 201 { 409 } else { 410 }, "second claim");
        let seat = seat_ids[round * VISITORS + i];
        let r = c
            .post(format!("{}/api/events/{event}/holds", stack.proxy))
            .bearer_auth(token)
            .json(&json!({ "seat_id": seat }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", stack.logs());
        let hold: Value = r.json().await.unwrap();
        let hold_url = format!("{}/api/holds/{}", stack.proxy, hold["hold_id"].as_str().unwrap());
        match i % 3 {
            0 => {
                let r = c.post(format!("{hold_url}/confirm")).bearer_auth(token).send().await.unwrap();
                assert_eq!(r.status(), 200, "{}", stack.logs());
                held.push(seat);
            }
            1 => assert_eq!(c.delete(&hold_url).bearer_auth(token).send().await.unwrap().status(), 204),
            _ => {} // left to expire
        }
    }
    // A booked seat cannot be held again.
    let r = c
        .post(format!("{}/api/events/{event}/holds", stack.proxy))
        .bearer_auth(&tokens[1])
        .json(&json!({ "seat_id": held[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

/// Every sample name the two services export right now (histogram series
/// with their `_bucket`/`_sum`/`_count` suffixes, as Prometheus stores them).
async fn exported_names(stack: &Stack) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for url in [stack.proxy_metrics.clone(), format!("{}/metrics", stack.booking_admin)] {
        let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_dashboard_query_runs_against_prometheus_scraping_the_stack() {
    e2e::binaries().unwrap();
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        release_per_tick: 2,
        env: vec![
            // Short holds and a quick sweeper, so expiries happen within the test.
            ("BC_HOLDS__LENGTH".into(), "2s".into()),
            ("BC_HOLDS__SWEEP_INTERVAL".into(), "200ms".into()),
        ],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (event, campaign) = stack.seed(4, 10, STOCK).await.unwrap();
    let prometheus = Prometheus::start(&stack).await;
    prometheus.wait_targets_up().await;
    // Before any traffic: a series first scraped at 1 would hide that 1 from rate().
    prometheus.wait_scraped_after(now_secs()).await;

    for round in 0..ROUNDS {
        sale_round(&stack, event, campaign, round).await;
        prometheus.wait_scraped_after(now_secs()).await;
    }
    // Unconfirmed holds expire after 2 s; the sweeper counts them.
    prometheus.wait_for("booking_core_hold_expiries_total", |v| v > 0.0).await;
    prometheus.wait_scraped_after(now_secs()).await;

    let exported = exported_names(&stack).await;
    let known: Value =
        reqwest::get(format!("{}/api/v1/label/__name__/values", prometheus.url)).await.unwrap().json().await.unwrap();
    let known: BTreeSet<String> =
        known["data"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_owned()).collect();

    let exprs = expressions(&dashboard());
    assert!(exprs.len() >= 30, "only {} expressions found", exprs.len());
    let mut failures = Vec::new();
    for (source, raw) in &exprs {
        let expr = substitute(raw);
        if expr.contains('$') {
            failures.push(format!("{source}: unknown variable in {raw}"));
            continue;
        }
        let names = metric_names(&expr);
        if names.is_empty() {
            failures.push(format!("{source}: no metric in {expr}"));
        }
        for name in &names {
            if !known.contains(name) || !exported.contains(name) {
                failures.push(format!("{source}: {name} is not exported by either service ({expr})"));
            }
        }
        match prometheus.query(&expr).await {
            Err(e) => failures.push(format!("{source}: {expr}: {e}")),
            Ok(result) if result.is_empty() => failures.push(format!("{source}: no data for {expr}")),
            Ok(result) => {
                let moved = result
                    .iter()
                    .any(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0));
                if names.iter().all(|n| MUST_MOVE.contains(&n.as_str())) && !moved {
                    failures.push(format!("{source}: no activity in {expr}: {result:?}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} dashboard queries failed:\n{}",
        failures.len(),
        exprs.len(),
        failures.join("\n")
    );

    // The gauges that may rightly read zero now did move during the sale.
    for expr in [
        format!("max_over_time(waiting_room_waiting_visitors{{queue=\"{QUEUE}\"}}[5m])"),
        format!("max_over_time(waiting_room_eta_seconds{{queue=\"{QUEUE}\"}}[5m])"),
        "max_over_time(waiting_room_ws_connections[5m])".to_owned(),
    ] {
        let values = prometheus.values(&expr).await;
        assert!(values.iter().any(|v| *v > 0.0), "{expr}: {values:?}");
    }
    // Stock left is the database's truth: every code went to a claim.
    let campaign_label = format!("{{campaign=\"{campaign}\"}}");
    assert_eq!(prometheus.values(&format!("booking_core_coupon_stock{campaign_label}")).await, [STOCK as f64]);
    assert_eq!(prometheus.values(&format!("booking_core_coupon_stock_left{campaign_label}")).await, [0.0]);
    assert_eq!(prometheus.values("booking_core_claims_total").await, [STOCK as f64]);
    eprintln!("observability test took {:?}", started.elapsed());
}

// ---------------------------------------------------------------------------
// Request ids in the logs.

/// The log lines of `file` in the stack's folder, each parsed as JSON. With
/// `strict`, a line that is not JSON fails the test (the service was
/// configured for JSON logs); otherwise such lines (a library writing to
/// stderr itself) are skipped.
fn json_lines(stack: &Stack, file: &str, strict: bool) -> Vec<Value> {
    let text = std::fs::read_to_string(stack.dir.join(file)).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| match serde_json::from_str(l) {
            Ok(v) => Some(v),
            Err(e) if strict => panic!("{file}: not JSON ({e}): {l}"),
            Err(_) => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_request_id_is_on_the_booking_core_json_log_lines_of_that_request() {
    let stack = Stack::start(StackOptions {
        free_entry: 10,
        env: vec![("BC_LOG__FORMAT".into(), "json".into()), ("WR_LOG__FORMAT".into(), "json".into())],
        ..StackOptions::default()
    })
    .await
    .unwrap();
    let (event, _) = stack.seed(2, 5, 1).await.unwrap();
    let c = client();
    let ready: Value = c.post(format!("{}/wr/{QUEUE}/join", stack.proxy)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "READY", "free entry");
    let token = ready["token"].as_str().unwrap();
    let seats = format!("{}/api/events/{event}/seats", stack.proxy);

    // A well-formed id from the client is kept; a malformed one is replaced
    // by one the proxy generates. Either way the client gets it back.
    let r = c.get(&seats).bearer_auth(token).header("x-request-id", "abc123def456").send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "abc123def456");
    let r = c.get(&seats).bearer_auth(token).header("x-request-id", "bad id!").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let generated = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(generated.len() == 32 && generated.bytes().all(|b| b.is_ascii_hexdigit()), "{generated}");

    let answered = |lines: &[Value], id: &str| {
        lines.iter().any(|l| {
            l["span"]["request_id"] == id
                && l["fields"]["message"] == "answered"
                && l["fields"]["status"] == 200
                && l["span"]["path"] == format!("/api/events/{event}/seats")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = json_lines(&stack, "booking-core.log", true);
        if answered(&lines, "abc123def456") && answered(&lines, &generated) {
            // Every line logged inside a request span carries the id of its request.
            for l in lines.iter().filter(|l| l["span"]["name"] == "request") {
                assert!(l["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{l}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "request ids not in the booking core's log:\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The proxy logs the same id for the same request.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !json_lines(&stack, "waiting-room.log", false).iter().any(|l| l["fields"]["request_id"] == "abc123def456") {
        assert!(Instant::now() < deadline, "request id not in the proxy's log:\n{}", stack.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
