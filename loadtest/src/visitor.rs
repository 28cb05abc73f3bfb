//! One virtual visitor, from arrival to coupon.
//!
//! ```text
//! GET protected URL (no token) ─► 401/302
//! POST /wr/{q}/join ─► READY (free entry) or WAITING (position)
//! wait: WebSocket messages until READY, or poll /status honouring retry_after_seconds
//!       (abandoners leave after a random time; no WebSocket permit or a dropped socket → poll)
//! GET seats ─► POST hold on a random AVAILABLE seat (another one after a 409)
//!          ─► POST claim (twice with --claim-twice) ─► POST confirm (probability --confirm;
//!              last: a confirmed booking ends the session)
//! (a no-show, --no-show, stops at READY: admitted, but never comes to the booking core)
//! (SOLD_OUT at the join, on the socket or from a poll ends the visit: sold out, not an error;
//!  PREQUEUE is waited out like WAITING, its public id kept for the drop's audit)
//! ```
//!
//! Each step's latency is measured from its intended start (see
//! [`crate::metrics`]), and everything the audit needs lands in the
//! visitor's [`VisitorRecord`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Args;
use crate::metrics::{Live, Metrics, Step};
use crate::net::{Answer, Net};
use crate::record::{ClaimObs, Fate, HoldObs, JoinObs, Mode, VisitorRecord};

/// What every visitor shares.
pub struct Ctx {
    /// The flags.
    pub args: Args,
    /// Sockets.
    pub net: Net,
    /// Measurements (shared with the progress line).
    pub metrics: Arc<Metrics>,
    /// Start of the run: the zero of every client-side time.
    pub start: Instant,
    /// Event booked.
    pub event: i64,
    /// Campaign claimed.
    pub campaign: i64,
    /// Protected path opened first.
    pub protected: String,
}

impl Ctx {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.args.proxy_base())
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A visitor's choices, fixed at arrival from the run's seed.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Arrival number.
    pub index: usize,
    /// WebSocket or polling.
    pub mode: Mode,
    /// Leaves the line after this long, if not admitted before.
    pub abandon_after: Option<Duration>,
    /// Confirms its hold.
    pub confirm: bool,
    /// Claims twice.
    pub claim_twice: bool,
    /// Seed of its own random choices (seats, think times).
    pub seed: u64,
    /// Walks away once admitted, without a single request (`--no-show`).
    pub no_show: bool,
}

/// Salt of the no-show draw, so it is a stream of its own (ASCII "no-shows").
const NO_SHOW_SALT: u64 = 0x6e6f_2d73_686f_7773;

/// A number in [0, 1) from `seed`, `index` and `salt` alone (the splitmix64
/// finalizer): a draw that does not depend on how many draws the plan's
/// generator made before it.
fn unit_hash(seed: u64, index: usize, salt: u64) -> f64 {
    let mut z = seed ^ salt ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // The top 53 bits, as a double in [0, 1).
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Plan {
    /// The plan of visitor `index` (deterministic for a given `--seed`).
    pub fn new(args: &Args, index: usize) -> Plan {
        let seed = args.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = StdRng::seed_from_u64(seed);
        let mode = if rng.gen_bool(args.poll_share) { Mode::Polling } else { Mode::WebSocket };
        let abandon_after = rng.gen_bool(args.abandon_share).then(|| args.abandon_within.mul_f64(rng.r#gen::<f64>()));
        Plan {
            index,
            mode,
            abandon_after,
            confirm: rng.gen_bool(args.confirm),
            claim_twice: rng.gen_bool(args.claim_twice),
            seed: rng.r#gen(),
            // Not drawn from `rng`: the abandon draw above takes one more
            // number only for abandoners, so a draw from `rng` would pick
            // other no-shows whenever --abandon-share changes, and two runs
            // compared side by side (fixed against adaptive admission) must
            // lose the same visitors.
            no_show: unit_hash(args.seed, index, NO_SHOW_SALT) < args.no_show,
        }
    }
}

/// Counts a visitor as waiting for as long as it lives (also when the flow is cancelled).
struct InLine<'a>(&'a AtomicU64);

impl<'a> InLine<'a> {
    fn enter(counter: &'a AtomicU64) -> Self {
        Live::inc(counter);
        InLine(counter)
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        Live::dec(self.0);
    }
}

/// A failed flow: the error kind (already counted in the metrics).
type Failed = String;

/// Run visitor `plan.index`, which should arrive at `intended`, until it is
/// done or `stop` turns true; returns what it saw.
pub async fn visit(ctx: Arc<Ctx>, plan: Plan, intended: Instant, mut stop: watch::Receiver<bool>) -> VisitorRecord {
    let mut rec = VisitorRecord::new(plan.index, plan.mode, plan.abandon_after.is_some());
    Live::inc(&ctx.metrics.live.arrivals);
    let result = tokio::select! {
        r = flow(&ctx, &plan, intended, &mut rec) => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    rec.fate = match result {
        Some(Ok(fate)) => fate,
        Some(Err(kind)) => Fate::Failed(kind),
        None if rec.queued() && rec.admitted_at_ms.is_none() && !rec.abandoner => Fate::StillWaiting,
        None if rec.queued() && rec.admitted_at_ms.is_none() => Fate::Abandoned,
        None => Fate::Stopped,
    };
    Live::inc(&ctx.metrics.live.finished);
    rec
}

/// Send `request` for `step`; `ok` lists the statuses that are normal outcomes.
async fn call(
    ctx: &Ctx,
    step: Step,
    request: reqwest::RequestBuilder,
    intended: Instant,
    ok: &[u16],
) -> Result<Answer, Failed> {
    match ctx.net.send(request).await {
        Ok(a) => {
            let latency = intended.elapsed();
            let code = a.status.as_u16();
            if ok.contains(&code) {
                ctx.metrics.record(step, latency, &code.to_string());
                Ok(a)
            } else {
                let kind = if a.status.is_server_error() { format!("5xx:{code}") } else { format!("status:{code}") };
                ctx.metrics.error(step, &kind, Some(latency));
                Err(format!("{}:{kind}", step.name()))
            }
        }
        Err(e) => {
            let kind = e.kind();
            ctx.metrics.error(step, &kind, None);
            Err(format!("{}:{kind}", step.name()))
        }
    }
}

/// The whole flow; `Ok` with the fate, `Err` with the error kind that ended it.
async fn flow(ctx: &Ctx, plan: &Plan, arrival: Instant, rec: &mut VisitorRecord) -> Result<Fate, Failed> {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let client = ctx.net.client(plan.index);
    tokio::time::sleep_until(arrival.into()).await;

    // 1. The protected page without a token: refused (401 for API clients).
    let gate = ctx.net.send(client.get(ctx.url(&ctx.protected)).header("accept", "application/json")).await;
    match gate {
        Ok(a) => {
            rec.gate_status = Some(a.status.as_u16());
            let code = a.status.as_u16();
            if code == 401 || code == 302 {
                ctx.metrics.record(Step::Gate, arrival.elapsed(), &code.to_string());
            } else {
                let kind = if a.status.is_server_error() { format!("5xx:{code}") } else { format!("open:{code}") };
                ctx.metrics.error(Step::Gate, &kind, Some(arrival.elapsed()));
            }
        }
        Err(e) => ctx.metrics.error(Step::Gate, &e.kind(), None),
    }

    // 2. Join.
    let (mut standing, cookie) = join(ctx, plan, rec, Instant::now(), "").await?;
    let joined = Instant::now();
    if standing["status"] == "SOLD_OUT" {
        rec.sold_out_ns = Some(ctx.ns(joined));
        return Ok(Fate::SoldOut);
    }
    let ready = if standing["status"] == "READY" {
        rec.free_entry = true;
        standing
    } else {
        let in_line = InLine::enter(&ctx.metrics.live.waiting);
        let deadline = joined + ctx.args.max_wait;
        let leave_at = plan.abandon_after.map(|d| joined + d);
        let mut outcome = Waited::Fallback(standing.clone());
        if plan.mode == Mode::WebSocket
            && let Some(permit) = ctx.net.try_ws_permit()
        {
            outcome = wait_on_socket(ctx, plan, rec, &cookie, joined, deadline, leave_at).await;
            drop(permit);
        }
        if let Waited::Fallback(last) = outcome {
            // Poll from the latest standing seen (the join's if the socket never spoke).
            if !last.is_null() {
                standing = last;
            }
            outcome = wait_polling(ctx, plan, rec, &cookie, standing, deadline, leave_at).await?;
        }
        drop(in_line);
        match outcome {
            Waited::Ready(m) => m,
            Waited::Left => return Ok(Fate::Abandoned),
            Waited::SoldOut => return Ok(Fate::SoldOut),
            Waited::TimedOut => {
                ctx.metrics.error(Step::AdmissionWait, "never_admitted", Some(joined.elapsed()));
                return Err("admission_wait:never_admitted".into());
            }
            Waited::Fallback(_) => unreachable!("polling never falls back"),
        }
    };
    let admitted = Instant::now();
    rec.admitted_ns = Some(ctx.ns(admitted));
    if !rec.free_entry {
        ctx.metrics.record(Step::AdmissionWait, admitted - joined, "READY");
    }
    Live::inc(&ctx.metrics.live.admitted);
    let token = ready["token"].as_str().unwrap_or_default().to_owned();
    rec.admitted_at_ms = ready["admitted_at"].as_str().and_then(epoch_ms);
    rec.visitor_id = token_subject(&token);
    rec.token = Some(token.clone());
    if token.is_empty() || rec.admitted_at_ms.is_none() {
        ctx.metrics.error(Step::AdmissionWait, "ready_without_token", None);
        return Err("admission_wait:ready_without_token".into());
    }

    if plan.no_show {
        // Admitted, and never seen again: the proxy's only sign of them is
        // that no request with their token arrives.
        return Ok(Fate::NoShow);
    }

    // 3. Booking, through the proxy with the token.
    book(ctx, plan, rec, &mut rng, client, &token, admitted).await?;
    rec.finished_ns = Some(ctx.ns(Instant::now()));
    Ok(Fate::Done)
}

/// Answers to a join the harness works through before it gives up: a 428
/// (solve, answer), a 429 or a 503 (wait `Retry-After`) each.
const JOIN_ATTEMPTS: u32 = 8;
/// The longest `Retry-After` the harness waits out.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// `POST /wr/{q}/join` with the visitor's cookies so far (`""` for a new
/// visitor); returns the answer and the cookies after it (`wr_visitor` and
/// the queue ticket, which puts the visitor back at their place should the
/// queue's store lose the line). A 428 is answered with the solved challenge,
/// a 429 waited out, as a browser does; so is a 503 (the queue's store did
/// not answer in time: the page tries again), counted as `retried_503`.
async fn join(
    ctx: &Ctx,
    plan: &Plan,
    rec: &mut VisitorRecord,
    intended: Instant,
    cookies: &str,
) -> Result<(Value, String), Failed> {
    let client = ctx.net.client(plan.index);
    let url = ctx.url(&format!("/wr/{}/join", ctx.args.queue));
    let mut intended = intended;
    let mut body: Option<Value> = None;
    let mut attempts = 0;
    let (a, sent) = loop {
        let sent = Instant::now();
        let mut request = client.post(&url);
        if !cookies.is_empty() {
            request = request.header("cookie", cookies);
        }
        if let Some(b) = &body {
            request = request.json(b);
        }
        let a = call(ctx, Step::Join, request, intended, &[200, 428, 429, 503]).await?;
        attempts += 1;
        match a.status.as_u16() {
            200 => break (a, sent),
            _ if attempts >= JOIN_ATTEMPTS => {
                ctx.metrics.error(Step::Join, "gave_up", None);
                return Err("join:gave_up".into());
            }
            428 => {
                let started = Instant::now();
                let solved = crate::challenge::answer(&a.json()).await.map_err(|kind| {
                    ctx.metrics.error(Step::Challenge, kind, None);
                    format!("challenge:{kind}")
                })?;
                ctx.metrics.record(Step::Challenge, started.elapsed(), &format!("bits:{}", solved.difficulty));
                rec.challenges += 1;
                rec.hashes += solved.hashes;
                body = Some(solved.body);
            }
            503 => {
                // The wait is the visitor's: the join's latency keeps
                // counting from the first attempt.
                ctx.metrics.count(Step::Join, "retried_503");
                tokio::time::sleep(retry_after(&a)).await;
                continue;
            }
            _ => tokio::time::sleep(retry_after(&a)).await,
        }
        intended = Instant::now();
    };
    let received = Instant::now();
    let cookie = merge_cookies(cookies, a.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()));
    let m = a.json();
    match m["status"].as_str() {
        // Waiting in some form: in line, in a pre-queue, not open yet, or the
        // queue not available for now (the wait loops handle each).
        Some("READY" | "WAITING" | "PREQUEUE" | "SCHEDULED" | "UNAVAILABLE") => {}
        Some("CLOSED") => {
            ctx.metrics.error(Step::Join, "answer:CLOSED", None);
            return Err("join:closed".into());
        }
        // Nothing left to sell: this visitor is done (the sale's outcome, not
        // a failure of the room; the caller stops).
        Some("SOLD_OUT") => {}
        other => {
            ctx.metrics.error(Step::Join, &format!("answer:{}", other.unwrap_or("not_json")), None);
            return Err("join:unexpected_answer".into());
        }
    }
    if !cookie.split("; ").any(|c| c.starts_with("wr_visitor=")) && m["status"] == "WAITING" {
        ctx.metrics.error(Step::Join, "no_visitor_cookie", None);
        return Err("join:no_visitor_cookie".into());
    }
    let position = m["position"].as_u64();
    if rec.join.is_none() {
        rec.join = Some(JoinObs { sent_ns: ctx.ns(sent), received_ns: ctx.ns(received), position });
    }
    rec.saw_standing(&m);
    Ok((m, cookie))
}

/// How long an answer asks to wait (`Retry-After` in seconds; 1 s if it
/// does not say), at most [`MAX_RETRY_AFTER`].
fn retry_after(a: &Answer) -> Duration {
    a.headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
        .min(MAX_RETRY_AFTER)
}

/// The `Cookie` header after a join: `sent` with the visitor and ticket
/// cookies of the answer's `Set-Cookie` values replacing theirs.
fn merge_cookies<'a>(sent: &str, set: impl Iterator<Item = &'a str>) -> String {
    let mut pairs: Vec<(String, String)> =
        sent.split(';').filter_map(|p| p.trim().split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    for value in set {
        let Some((k, v)) = value.split(';').next().and_then(|p| p.trim().split_once('=')) else { continue };
        if k == "wr_visitor" || k.starts_with("wr_ticket_") {
            pairs.retain(|(name, _)| name != k);
            pairs.push((k.to_owned(), v.to_owned()));
        }
    }
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
}

/// How waiting ended.
enum Waited {
    /// The READY message.
    Ready(Value),
    /// The visitor left on purpose.
    Left,
    /// Told SOLD_OUT: nothing left to wait for.
    SoldOut,
    /// `--max-wait` passed.
    TimedOut,
    /// The socket could not be used: poll from here (the last standing seen).
    Fallback(Value),
}

/// Sleep until `at` (or forever).
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Wait on `/wr/{q}/ws` until READY.
async fn wait_on_socket(
    ctx: &Ctx,
    plan: &Plan,
    rec: &mut VisitorRecord,
    cookie: &str,
    joined: Instant,
    deadline: Instant,
    leave_at: Option<Instant>,
) -> Waited {
    let url = ctx.url(&format!("/wr/{}/ws", ctx.args.queue)).replacen("http://", "ws://", 1);
    let mut socket = match ctx.net.websocket(plan.index, &url, cookie).await {
        Ok(s) => s,
        Err(e) => {
            ctx.metrics.error(Step::WsFirst, &e.kind(), None);
            return Waited::Fallback(Value::Null);
        }
    };
    Live::inc(&ctx.metrics.live.sockets);
    rec.on_socket = true;
    let mut first = true;
    let mut last = Value::Null;
    let outcome = loop {
        let message = tokio::select! {
            m = socket.next() => m,
            _ = until(leave_at) => break Waited::Left,
            _ = tokio::time::sleep_until(deadline.into()) => break Waited::TimedOut,
        };
        let text = match message {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) | None => {
                ctx.metrics.error(
                    Step::WsFirst,
                    if first { "closed_before_first" } else { "closed_before_ready" },
                    None,
                );
                break Waited::Fallback(last);
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) => {
                ctx.metrics.error(Step::WsFirst, "socket_error", None);
                break Waited::Fallback(last);
            }
        };
        let m: Value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
        if first {
            ctx.metrics.record(Step::WsFirst, joined.elapsed(), m["status"].as_str().unwrap_or("not_json"));
            first = false;
        }
        match m["status"].as_str() {
            Some("READY") => break Waited::Ready(m),
            // The line, the pre-queue, or a queue not available for now: the
            // socket brings the next standing.
            Some("WAITING" | "PREQUEUE" | "UNAVAILABLE") => {
                rec.saw_standing(&m);
                last = m;
            }
            Some("SOLD_OUT") => {
                rec.sold_out_ns = Some(ctx.ns(Instant::now()));
                rec.sold_out_on_socket = true;
                break Waited::SoldOut;
            }
            // NOT_IN_QUEUE (the place lapsed, or the store lost the line) or
            // garbage: polling rejoins, with the queue ticket.
            _ => break Waited::Fallback(m),
        }
    };
    Live::dec(&ctx.metrics.live.sockets);
    rec.on_socket = false;
    // Let the normal close (after READY) finish without holding up the booking.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.close(None)).await;
    });
    outcome
}

/// Poll `/wr/{q}/status` until READY, honouring `retry_after_seconds`.
async fn wait_polling(
    ctx: &Ctx,
    plan: &Plan,
    rec: &mut VisitorRecord,
    cookie: &str,
    mut standing: Value,
    deadline: Instant,
    leave_at: Option<Instant>,
) -> Result<Waited, Failed> {
    let client = ctx.net.client(plan.index);
    let url = ctx.url(&format!("/wr/{}/status", ctx.args.queue));
    let mut cookie = cookie.to_owned();
    loop {
        match standing["status"].as_str() {
            Some("READY") => return Ok(Waited::Ready(standing)),
            Some("WAITING" | "PREQUEUE" | "UNAVAILABLE") => {}
            Some("CLOSED") => return Err("wait:closed".into()),
            Some("SOLD_OUT") => {
                rec.sold_out_ns = Some(ctx.ns(Instant::now()));
                return Ok(Waited::SoldOut);
            }
            // Not open yet: join again once it opens (the answer says when).
            Some("SCHEDULED") => {
                let wait = Duration::from_secs(standing["retry_after_seconds"].as_u64().unwrap_or(2).max(1));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = until(leave_at) => return Ok(Waited::Left),
                    _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
                }
                let (m, c) = join(ctx, plan, rec, Instant::now(), &cookie).await?;
                cookie = c;
                standing = m;
                continue;
            }
            _ => {
                // Lost the place (or never had one): join again, at the back.
                rec.rejoined = true;
                rec.last_position = None;
                let (m, c) = join(ctx, plan, rec, Instant::now(), &cookie).await?;
                cookie = c;
                standing = m;
                continue;
            }
        }
        let wait = Duration::from_secs(standing["retry_after_seconds"].as_u64().unwrap_or(2).max(1));
        let next = Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = until(leave_at) => return Ok(Waited::Left),
            _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
        }
        let a = call(ctx, Step::Poll, client.get(&url).header("cookie", &cookie), next, &[200, 503]).await?;
        if a.status == 503 {
            // The queue's store did not answer in time: ask again after
            // its Retry-After, as the page does; the place is kept meanwhile.
            ctx.metrics.count(Step::Poll, "retried_503");
            tokio::select! {
                _ = tokio::time::sleep(retry_after(&a)) => {}
                _ = until(leave_at) => return Ok(Waited::Left),
                _ = tokio::time::sleep_until(deadline.into()) => return Ok(Waited::TimedOut),
            }
            continue;
        }
        standing = a.json();
        rec.saw_standing(&standing);
    }
}

/// Seat map, hold, claim (and maybe a second claim), confirm: the booking
/// last, because a confirmed booking ends the visitor's session.
async fn book(
    ctx: &Ctx,
    plan: &Plan,
    rec: &mut VisitorRecord,
    rng: &mut StdRng,
    client: &reqwest::Client,
    token: &str,
    admitted: Instant,
) -> Result<(), Failed> {
    let think = |rng: &mut StdRng| {
        let max = ctx.args.think;
        let d = if max.is_zero() { Duration::ZERO } else { max.mul_f64(rng.r#gen::<f64>()) };
        async move {
            if !d.is_zero() {
                tokio::time::sleep(d).await;
            }
            Instant::now()
        }
    };
    let bearer = format!("Bearer {token}");

    let at = if ctx.args.think.is_zero() { admitted } else { think(rng).await };
    let map = call(
        ctx,
        Step::SeatMap,
        client.get(ctx.url(&format!("/api/events/{}/seats", ctx.event))).header("authorization", &bearer),
        at,
        &[200],
    )
    .await?;
    // Only the free seat ids outlive this line: a parsed map of a large hall
    // is megabytes, and hundreds of visitors think before they hold.
    let mut free: Vec<i64> = map.json()["seats"]
        .as_array()
        .map(|s| s.iter().filter(|s| s["status"] == "AVAILABLE").filter_map(|s| s["id"].as_i64()).collect())
        .unwrap_or_default();
    drop(map);
    free.shuffle(rng);

    let mut held = None;
    let mut at = think(rng).await;
    for seat in free.iter().take(ctx.args.hold_attempts.max(1) as usize) {
        let a = call(
            ctx,
            Step::Hold,
            client
                .post(ctx.url(&format!("/api/events/{}/holds", ctx.event)))
                .header("authorization", &bearer)
                .json(&json!({ "seat_id": seat })),
            at,
            &[201, 409],
        )
        .await?;
        if a.status == 201 {
            let h = a.json();
            let hold = HoldObs {
                hold_id: h["hold_id"].as_str().unwrap_or_default().to_owned(),
                seat_id: h["seat_id"].as_i64().unwrap_or(*seat),
                expires_at_ms: h["expires_at"]
                    .as_i64()
                    .or_else(|| h["expires_at"].as_str().and_then(epoch_ms))
                    .unwrap_or(0),
                confirmed: false,
                confirmed_ns: None,
            };
            held = Some(rec.holds.len());
            rec.holds.push(hold);
            break;
        }
        at = Instant::now();
    }
    if free.is_empty() {
        ctx.metrics.count(Step::Hold, "no_seat_available");
    }

    let claims = if plan.claim_twice { 2 } else { 1 };
    for _ in 0..claims {
        let at = think(rng).await;
        let a = call(
            ctx,
            Step::Claim,
            client
                .post(ctx.url(&format!("/api/coupons/{}/claims", ctx.campaign)))
                .header("authorization", &bearer)
                .header("idempotency-key", uuid::Uuid::new_v4().simple().to_string()),
            at,
            &[201, 409, 410],
        )
        .await?;
        if a.status == 201 {
            let c = a.json();
            rec.claims.push(ClaimObs {
                claim_id: c["claim_id"].as_i64().unwrap_or(-1),
                campaign_id: c["campaign_id"].as_i64().unwrap_or(ctx.campaign),
                code: c["code"].as_str().unwrap_or_default().to_owned(),
            });
        }
    }

    // Confirming last: a confirmed booking ends the visitor's session.
    if let Some(i) = held
        && plan.confirm
    {
        let at = think(rng).await;
        let url = ctx.url(&format!("/api/holds/{}/confirm", rec.holds[i].hold_id));
        let a = call(ctx, Step::Confirm, client.post(url).header("authorization", &bearer), at, &[200, 410]).await?;
        rec.holds[i].confirmed = a.status == 200;
        if a.status == 200 {
            rec.holds[i].confirmed_ns = Some(ctx.ns(Instant::now()));
        }
    }
    Ok(())
}

/// Epoch milliseconds of an RFC 3339 time.
pub fn epoch_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The `sub` claim of a JWT (not verified: the harness only labels visitors with it).
pub fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    Some(claims["sub"].as_str()?.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_times_parse_to_epoch_milliseconds() {
        assert_eq!(epoch_ms("1970-01-01T00:00:01.250Z"), Some(1250));
        assert_eq!(epoch_ms("2026-11-21T13:33:00Z"), Some(1_795_267_980_000));
        assert_eq!(epoch_ms("yesterday"), None);
    }

    #[test]
    fn a_join_keeps_the_visitor_and_ticket_cookies_and_replaces_old_ones() {
        let set = ["wr_visitor=v2; Path=/; HttpOnly", "wr_ticket_q=t2; Path=/wr/q; HttpOnly", "other=x; Path=/"];
        assert_eq!(merge_cookies("wr_visitor=v1; wr_ticket_q=t1", set.into_iter()), "wr_visitor=v2; wr_ticket_q=t2");
        assert_eq!(merge_cookies("", ["wr_visitor=v; Path=/"].into_iter()), "wr_visitor=v");
        assert_eq!(merge_cookies("wr_visitor=v", std::iter::empty()), "wr_visitor=v");
    }

    #[test]
    fn the_token_subject_is_read_without_verification() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"ABCDEF","aud":"q"}"#);
        assert_eq!(token_subject(&format!("h.{payload}.s")), Some("abcdef".into()));
        assert_eq!(token_subject("garbage"), None);
    }

    #[test]
    fn plans_are_reproducible_and_follow_the_shares() {
        use clap::Parser;
        let args = Args::try_parse_from(["loadtest", "--poll-share", "0.25", "--abandon-share", "0"])
            .unwrap_or_else(|e| panic!("{e}"));
        let polling = (0..4000).filter(|&i| Plan::new(&args, i).mode == Mode::Polling).count();
        assert!((800..1200).contains(&polling), "{polling}");
        assert!((0..100).all(|i| Plan::new(&args, i).abandon_after.is_none()));
        assert_eq!(Plan::new(&args, 17).seed, Plan::new(&args, 17).seed);
        assert!((0..4000).all(|i| !Plan::new(&args, i).no_show), "no no-shows by default");
    }

    #[test]
    fn no_shows_follow_the_share_and_the_seed_but_not_the_other_shares() {
        use clap::Parser;
        let parse = |flags: &[&str]| {
            let mut argv = vec!["loadtest"];
            argv.extend_from_slice(flags);
            Args::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"))
        };
        let who = |args: &Args| (0..4000).filter(|&i| Plan::new(args, i).no_show).collect::<Vec<_>>();
        let base = who(&parse(&["--no-show", "0.3"]));
        assert!((1080..1320).contains(&base.len()), "{}", base.len());
        // The same visitors whatever the abandon and poll shares (the plan's
        // generator draws a different number of values for abandoners).
        assert_eq!(base, who(&parse(&["--no-show", "0.3", "--abandon-share", "0.5", "--poll-share", "0.9"])));
        // Another seed, other visitors.
        assert_ne!(base, who(&parse(&["--no-show", "0.3", "--seed", "2"])));
        // A larger share keeps every no-show of a smaller one (a threshold on one draw).
        let more = who(&parse(&["--no-show", "0.6"]));
        assert!(base.iter().all(|i| more.contains(i)) && more.len() > base.len());
        assert_eq!(who(&parse(&["--no-show", "1"])).len(), 4000);
    }
}
