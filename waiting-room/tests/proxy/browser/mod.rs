//! A real browser through the whole visitor flow: headless Chromium (Debian's
//! `/usr/bin/chromium`, driven by `playwright-core` from `tests/browser`) opens
//! a protected URL, is sent to the queue page, watches its place move, is
//! admitted and lands where it started: over the WebSocket, by polling when the
//! socket is blocked, with JavaScript off through the meta refresh, and on a
//! queue asking for a proof of work (solved with WebCrypto, and without it).
//! And an accessibility check: axe-core (`tests/browser/a11y.js`) on the queue
//! page in every state, in English and German, in both colour schemes.
//!
//! These tests fail (never skip) when Chromium, `playwright-core` or `axe-core` is missing,
//! saying how to install them; nothing is ever downloaded by the tests.

mod a11y;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::helpers::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The protected page the browser asks for first and must land on at the end.
const START: &str = "/a/start?x=1";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Missing tools are a failure with instructions, not a silent skip: a skipped
/// browser test would let a broken page through CI.
fn require_browser() {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: install it with `apt-get install -y chromium` (the browser test never downloads a browser)"
    );
    assert!(
        browser_dir().join("node_modules/playwright-core/package.json").is_file(),
        "playwright-core is missing: run `npm ci --prefix waiting-room/tests/browser`"
    );
}

/// Run `tests/browser/visit.js` for `scenario` against `proxy`. `before_arrival`
/// runs once Chromium is up and just before it opens [`START`], so visitors it
/// puts in line are certainly ahead of the browser but not yet released.
async fn visit(proxy: &Proxy, scenario: &str, out_dir: &Path, before_arrival: impl Future<Output = ()>) -> Value {
    require_browser();
    let mut child = Command::new("node")
        .arg(browser_dir().join("visit.js"))
        .arg(scenario)
        .arg(proxy.url(START))
        .arg(out_dir)
        .current_dir(browser_dir())
        .env("WR_CHROMIUM", CHROMIUM)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20 or later is required for the browser test): {e}"));
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut stderr = child.stderr.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();

    let mut first = String::new();
    let launched = tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut first)).await;
    if !matches!(launched, Ok(Ok(n)) if n > 0 && first.contains("\"launched\"")) {
        let mut err = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stderr.read_to_string(&mut err)).await;
        panic!("Chromium did not start for the browser test: {first}{err}");
    }
    before_arrival.await;
    stdin.write_all(b"go\n").await.unwrap();
    drop(stdin);

    let (mut out, mut err) = (String::new(), String::new());
    let finished = tokio::time::timeout(Duration::from_secs(60), async {
        let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
        a.and(b).and(child.wait().await)
    })
    .await;
    let status = match finished {
        Ok(Ok(status)) => status,
        other => panic!("visit.js {scenario} did not finish within 60 s ({other:?}):\n{out}\n{err}\n{}", proxy.log()),
    };
    let last: Value = out
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("visit.js {scenario} printed no result ({status}):\n{out}\n{err}"));
    assert!(status.success() && last["event"] == "result", "visit.js {scenario} failed ({status}): {last:#}\n{err}");
    last
}

/// Positions the page displayed while waiting, in order, repeats removed.
fn positions(r: &Value) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for s in r["samples"].as_array().unwrap() {
        if s["status"] == "WAITING"
            && let Some(p) = s["position"].as_str().and_then(|p| p.replace(',', "").parse().ok())
            && out.last() != Some(&p)
        {
            out.push(p);
        }
    }
    out
}

/// The `wr_entry` cookie in the browser's jar.
fn entry_cookie(r: &Value) -> &Value {
    r["cookies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wr_entry")
        .unwrap_or_else(|| panic!("no wr_entry cookie in the browser: {:#}", r["cookies"]))
}

/// The visitor id a token was issued to (its `sub`).
fn token_subject(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    claims["sub"].as_str().unwrap().to_owned()
}

/// The browser arrived at [`START`] holding the entry cookie, and the upstream
/// saw that request as coming from the visitor the token was issued to.
fn assert_landed(r: &Value, proxy: &Proxy, upstream: &Upstream) {
    assert_eq!(r["arrived"]["url"], proxy.url(START), "the browser never reached {START}: {r:#}");
    assert_eq!(r["body"], "ok", "the upstream's page is shown");
    assert!(r["pageErrors"].as_array().unwrap().is_empty(), "script errors: {:#}", r["pageErrors"]);
    let cookie = entry_cookie(r);
    assert_eq!(cookie["httpOnly"], true, "the entry cookie must come from the server (HttpOnly): {cookie}");
    let subject = token_subject(cookie["value"].as_str().unwrap());
    let seen = upstream.seen.lock().clone();
    let landed = seen.iter().find(|s| s.path == "/a/start").unwrap_or_else(|| panic!("upstream saw: {seen:?}"));
    assert_eq!(landed.visitor.as_deref(), Some(subject.as_str()), "x-visitor-id names the admitted visitor");
}

/// Put `how_many` visitors in line right after a tick, so the browser arriving
/// next has a whole tick interval to load the page before the line moves.
async fn put_in_line(proxy: &Proxy, how_many: usize) {
    let c = client();
    let mut probe = Visitor::default();
    probe.join(&c, proxy, "q").await;
    probe.until_ready(&c, proxy, "q", Duration::from_secs(10)).await;
    for _ in 0..how_many {
        assert_eq!(Visitor::default().join(&c, proxy, "q").await["status"], "WAITING");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sent_to_the_queue_page_sees_its_place_move_and_lands_where_it_started() {
    let upstream = Upstream::start().await;
    let q = format!("{}name = \"Summer Tour 2025: ticket sale\"\n", queue("q", "/a", 1, "2s", "10m", 0));
    let proxy = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let shots = proxy.dir.join("screenshots");
    let r = visit(&proxy, "live", &shots, put_in_line(&proxy, 2)).await;

    // The gate redirected the browser to the queue page, remembering where it was going.
    assert_eq!(r["redirectChain"][0], proxy.url(START));
    assert_eq!(r["queueUrl"], proxy.url("/wr/q?return_to=/a/start%3Fx%3D1"));
    // Its place went down with the ticks, live over the WebSocket.
    let seen = positions(&r);
    assert!(seen.len() >= 2 && seen[0] >= 2, "the page should show the place moving: {seen:?} {r:#}");
    assert!(seen.windows(2).all(|w| w[1] < w[0]), "positions only go down: {seen:?}");
    println!("positions shown: {seen:?}");
    assert!(r["sockets"].as_u64() >= Some(1) && r["socketFrames"].as_u64() >= Some(2), "{r:#}");
    assert_eq!(r["statusPolls"], 1, "one /status call on READY (to set the cookie), no polling: {r:#}");
    let samples = r["samples"].as_array().unwrap();
    let waiting: Vec<&Value> = samples.iter().filter(|s| s["status"] == "WAITING").collect();
    assert!(waiting.iter().any(|s| s["link"] == "live"), "the page says it is live: {r:#}");
    for s in &waiting {
        let eta = s["eta"].as_str().unwrap();
        assert!(eta == "less than a minute" || eta.starts_with("about "), "estimate in words: {eta:?}");
    }
    let progress: Vec<u64> = waiting.iter().filter_map(|s| s["progress"].as_str()?.parse().ok()).collect();
    assert!(progress.last() > progress.first(), "the progress bar fills as the line moves: {progress:?}");
    // A visible "you're in" moment before leaving.
    let ready = samples.iter().find(|s| s["status"] == "READY").unwrap_or_else(|| panic!("no READY moment: {r:#}"));
    assert_eq!(ready["readyVisible"], true);
    // Screen readers hear the admission at once, but not every tick of a fast line.
    assert_eq!(ready["announce"], "You're in! Taking you to the site now.");
    assert!(waiting.iter().all(|s| s["announce"] == ""), "announced more than every 15 s: {waiting:#?}");
    let shown_ms = r["arrived"]["ms"].as_u64().unwrap() - ready["at"].as_u64().unwrap();
    assert!(shown_ms >= 800, "the celebration lasted only {shown_ms} ms");
    assert_landed(&r, &proxy, &upstream);

    let shots: Vec<&Value> = r["screenshots"].as_array().unwrap().iter().collect();
    assert_eq!(shots.len(), 2, "phone and desktop screenshots: {r:#}");
    for s in shots {
        let file = s["file"].as_str().unwrap();
        assert!(std::fs::metadata(file).map(|m| m.len() > 10_000).unwrap_or(false), "{file}");
        println!("queue page screenshot ({}, {} at #{}): {file}", s["name"], s["status"], s["position"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_websocket_is_blocked_gets_in_by_polling() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1s", "10m", 0), upstream.addr)).await;
    let r = visit(&proxy, "no-websocket", &proxy.dir.join("screenshots"), put_in_line(&proxy, 1)).await;

    assert!(r["blockedSockets"].as_u64() >= Some(1), "the page tried the WebSocket first: {r:#}");
    assert!(r["statusPolls"].as_u64() >= Some(1), "then polled /status: {r:#}");
    let samples = r["samples"].as_array().unwrap();
    assert!(samples.iter().any(|s| s["link"] == "polling"), "the page says it is polling: {r:#}");
    assert!(!positions(&r).is_empty(), "a place was shown while waiting: {r:#}");
    assert_landed(&r, &proxy, &upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_without_javascript_gets_in_through_the_meta_refresh() {
    let upstream = Upstream::start().await;
    let proxy = Proxy::start(ProxySpec::memory(&queue("q", "/a", 1, "1s", "10m", 0), upstream.addr)).await;
    let r = visit(&proxy, "no-javascript", &proxy.dir.join("screenshots"), put_in_line(&proxy, 1)).await;

    assert_eq!(r["sockets"], 0, "no script, no socket: {r:#}");
    assert_eq!(r["statusPolls"], 0, "no script, no polling: {r:#}");
    assert!(r["queuePageLoads"].as_u64() >= Some(2), "the waiting page reloaded itself: {r:#}");
    assert!(!positions(&r).is_empty(), "the server-rendered page shows the place: {r:#}");
    assert_landed(&r, &proxy, &upstream);
}

/// A queue asking for a proof of work of 10 bits (about a thousand hashes).
fn pow_queue() -> String {
    format!(
        "{}challenge = \"pow\"\nchallenge_min_bits = 10\nchallenge_max_bits = 10\n",
        queue("q", "/a", 1, "2s", "10m", 0)
    )
}

/// The page was served with the challenge, solved it, posted one answer and
/// landed.
fn assert_solved_and_landed(r: &Value, proxy: &Proxy, upstream: &Upstream) {
    let samples = r["samples"].as_array().unwrap();
    assert_eq!(r["queueStep"], "challenge", "the page was served with the challenge: {r:#}");
    assert_eq!(r["answers"], 1, "one answer posted: {r:#}");
    let solved = samples.iter().find_map(|s| s["powMs"].as_u64()).unwrap_or_else(|| panic!("no solve time: {r:#}"));
    println!("solved in {solved} ms");
    assert!(samples.iter().all(|s| s["step"] != "refused"), "{r:#}");
    assert_landed(r, proxy, upstream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_solves_the_queue_challenge_with_or_without_webcrypto_and_is_admitted() {
    // Without WebCrypto (as on a page served over plain HTTP) the plain-JavaScript SHA-256 does the work.
    for scenario in ["challenge", "challenge-no-webcrypto"] {
        let upstream = Upstream::start().await;
        let proxy = Proxy::start(ProxySpec::memory(&pow_queue(), upstream.addr)).await;
        let r = visit(&proxy, scenario, &proxy.dir.join("screenshots"), async {}).await;
        assert_solved_and_landed(&r, &proxy, &upstream);
        assert!(r["sockets"].as_u64() >= Some(1), "{scenario}: live over the WebSocket after joining: {r:#}");
    }
}

/// A Redis that forgets while the browser waits (restarted empty): the page
/// hears that its place is gone, joins again on its own with the queue ticket
/// cookie, gets its place back and is admitted — live and by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_whose_queue_store_restarts_empty_gets_its_place_back_and_lands() {
    for (scenario, waits_on) in [
        ("live", "waiting_room_ws_connections"),
        ("no-websocket", "waiting_room_requests_total{route=\"status\",status=\"200\"}"),
    ] {
        let port = free_port();
        let redis = RedisServer::start(port);
        let upstream = Upstream::start().await;
        let (url, prefix) = (redis.url(), unique("browser-forgets"));
        let q = queue("q", "/a", 1, "2s", "10m", 0);
        let proxy =
            Proxy::start(ProxySpec { redis_url: Some(&url), ..ProxySpec::redis(&q, upstream.addr, &prefix) }).await;
        let c = client();
        // Once the page waits (its socket open, or its first poll answered),
        // Redis dies and comes back empty.
        let restart = async {
            let page = "waiting_room_requests_total{route=\"page\",status=\"200\"}";
            let above = |series: &'static str, floor: f64| {
                let c = &c;
                let proxy = &proxy;
                move || async move {
                    let n = metric(c, proxy, series).await;
                    if n > floor { Ok(()) } else { Err(format!("{series} = {n}")) }
                }
            };
            eventually("the browser loads the queue page", Duration::from_secs(20), above(page, 0.0)).await;
            // Polls before the page (the visitors put in line) do not count;
            // the socket gauge counts the page's socket only.
            let floor = if scenario == "live" { 0.0 } else { metric(&c, &proxy, waits_on).await };
            eventually("the page waits", Duration::from_secs(20), above(waits_on, floor)).await;
            redis.signal("-KILL");
            drop(redis);
            RedisServer::start(port)
        };
        let shots = proxy.dir.join("screenshots");
        let (r, _redis) = tokio::join!(visit(&proxy, scenario, &shots, put_in_line(&proxy, 2)), restart);
        assert!(r["joinPosts"].as_u64() >= Some(1), "{scenario}: the page joined again by itself: {r:#}");
        let restored = metric(&c, &proxy, "waiting_room_joins_total{outcome=\"restored\",queue=\"q\"}").await;
        assert_eq!(restored, 1.0, "{scenario}: the ticket restored the place: {r:#}\n{}", proxy.log());
        assert_landed(&r, &proxy, &upstream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_before_a_scheduled_sale_counts_down_joins_the_pre_queue_and_gets_its_drawn_place() {
    let upstream = Upstream::start().await;
    let now = waiting_room::clock::now_ms();
    // Chromium takes a few seconds to start: the pre-queue opens after that,
    // the sale a few seconds later.
    let q = format!(
        "{}prequeue_from = \"{}\"\nopens_at = \"{}\"\n",
        queue("q", "/a", 1, "500ms", "10m", 0),
        waiting_room::clock::rfc3339_ms(now + 9_000),
        waiting_room::clock::rfc3339_ms(now + 14_000)
    );
    let proxy = Proxy::start(ProxySpec::memory(&q, upstream.addr)).await;
    let r = visit(&proxy, "scheduled", &proxy.dir.join("screenshots"), async {}).await;
    let samples = r["samples"].as_array().unwrap();
    let statuses: Vec<&str> = samples.iter().filter_map(|s| s["status"].as_str()).collect();
    let mut phases: Vec<&str> = statuses.clone();
    phases.dedup();
    // Countdown, pre-queue (the page reloaded itself at the opening of the
    // pre-queue), the drawn place (or straight in: one entrant, N = 1), in.
    assert_eq!(phases.first(), Some(&"SCHEDULED"), "{phases:?} {r:#}");
    let pre = phases.iter().position(|s| *s == "PREQUEUE").unwrap_or_else(|| panic!("no pre-queue: {phases:?} {r:#}"));
    assert!(phases[pre + 1..].iter().all(|s| *s == "WAITING" || *s == "READY"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"READY"), "{phases:?}");
    let scheduled: Vec<&Value> = samples.iter().filter(|s| s["status"] == "SCHEDULED").collect();
    let counts: Vec<&str> = scheduled.iter().filter_map(|s| s["countdown"].as_str()).collect();
    assert!(counts.len() >= 2 && counts.iter().all(|c| c.starts_with("00:0") || *c == "Opening…"), "{counts:?}");
    let prequeue = samples.iter().find(|s| s["status"] == "PREQUEUE").unwrap();
    let id = prequeue["publicId"].as_str().unwrap_or("");
    assert!(id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()), "public id shown: {prequeue}");
    assert!(r["queuePageLoads"].as_u64() >= Some(2), "the page reloaded itself into the pre-queue: {r:#}");
    assert!(r["sockets"].as_u64() >= Some(1), "the pre-queue listens on the socket: {r:#}");
    assert_landed(&r, &proxy, &upstream);
}
