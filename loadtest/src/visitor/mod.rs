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

mod book;
mod join;
#[cfg(test)]
mod tests;
mod wait;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;

use crate::cli::Args;
use crate::metrics::{Live, Metrics, Step};
use crate::net::{Answer, Net};
use crate::record::{Fate, Mode, VisitorRecord};
use book::book;
use join::join;
use wait::{Waited, wait_on_socket, wait_polling};

/// What every visitor shares.
pub struct Shared {
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

impl Shared {
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
pub async fn visit(ctx: Arc<Shared>, plan: Plan, intended: Instant, mut stop: watch::Receiver<bool>) -> VisitorRecord {
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
    ctx: &Shared,
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
async fn flow(ctx: &Shared, plan: &Plan, arrival: Instant, rec: &mut VisitorRecord) -> Result<Fate, Failed> {
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
