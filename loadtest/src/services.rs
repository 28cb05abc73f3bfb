//! The services' operator endpoints the harness reads: the waiting room's
//! `GET /admin/queues/{q}` (N, T, tick counters, the admission mode and its
//! controller) and `GET /admin/queues/{q}/ticks` (the log of recent ticks,
//! from builds with adaptive admission), the booking core's
//! `GET /admin/stats` (claims and stock per campaign) and `POST /admin/…`
//! (creating the sale) on its operator listener, and a visitor's own
//! `GET /api/me/coupons` on its public one.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A queue's counters and admission settings, as its admin API tells them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueState {
    /// N.
    pub release_per_tick: u64,
    /// T.
    #[serde(with = "crate::cli::human")]
    pub tick: Duration,
    /// Free-entry threshold.
    pub free_entry: u64,
    /// Ticks so far (across instances).
    pub ticks: u64,
    /// Visitors released by ticks so far.
    pub released_total: u64,
    /// Visitors dropped as abandoned so far.
    pub abandoned_total: u64,
    /// In line now.
    pub waiting: u64,
    /// Most active sessions (0 = no cap).
    pub max_active: u64,
    /// How N is set: `fixed` or `adaptive` (`fixed` from builds that predate
    /// adaptive admission, which have no such setting).
    pub mode: String,
    /// Adaptive: lowest N (absent on older builds).
    pub min_per_tick: Option<u64>,
    /// Adaptive: highest N (absent on older builds).
    pub max_per_tick: Option<u64>,
    /// Adaptive: N pinned by the operator (0 = not pinned).
    pub pin_per_tick: Option<u64>,
    /// Adaptive: the upstream p99 the controller keeps under, as configured ("300ms").
    pub target_p99: Option<String>,
    /// The controller's latest decision (builds with adaptive admission).
    pub controller: Option<Controller>,
}

impl QueueState {
    /// Whether N follows the adaptive controller.
    pub fn adaptive(&self) -> bool {
        self.mode == "adaptive"
    }

    /// Read the answer of `GET /admin/queues/{q}`.
    pub fn from_json(v: &Value) -> Result<QueueState> {
        let a = &v["settings"]["admission"];
        let num = |v: &Value, what: &str| v.as_u64().with_context(|| format!("queue state: no {what} in {v}"));
        let tick = a["tick"].as_str().context("queue state: no settings.admission.tick")?;
        // Informational (the report's, not the audit's): read what is there,
        // never fail the run over it.
        let c = &v["controller"];
        let controller = c.is_object().then(|| Controller {
            mode: c["mode"].as_str().unwrap_or_default().to_owned(),
            n: c["n"].as_u64().unwrap_or(0),
            reason: c["reason"].as_str().unwrap_or_default().to_owned(),
            tick: c["tick"].as_u64().unwrap_or(0),
        });
        Ok(QueueState {
            release_per_tick: num(&a["release_per_tick"], "release_per_tick")?,
            tick: humantime::parse_duration(tick).with_context(|| format!("queue state: tick {tick:?}"))?,
            free_entry: a["free_entry"].as_u64().unwrap_or(0),
            ticks: num(&v["ticks"], "ticks")?,
            released_total: num(&v["released_total"], "released_total")?,
            abandoned_total: num(&v["abandoned_total"], "abandoned_total")?,
            waiting: v["waiting"].as_u64().unwrap_or(0),
            max_active: a["max_active"].as_u64().unwrap_or(0),
            mode: a["admission"].as_str().unwrap_or("fixed").to_owned(),
            min_per_tick: a["min_per_tick"].as_u64(),
            max_per_tick: a["max_per_tick"].as_u64(),
            pin_per_tick: a["pin_per_tick"].as_u64(),
            target_p99: a["target_p99"].as_str().map(str::to_owned),
            controller,
        })
    }
}

/// The adaptive controller's latest decision (`controller` in the queue
/// state); a member that is absent or null reads as empty or 0.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Controller {
    /// `adaptive` or `fixed`.
    pub mode: String,
    /// The N it set.
    pub n: u64,
    /// Why: `headroom`, `overload`, `hold`, `pinned`, `fixed`.
    pub reason: String,
    /// The tick it decided at.
    pub tick: u64,
}

/// One entry of `GET /admin/queues/{q}/ticks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickEntry {
    /// Tick number.
    pub tick: u64,
    /// When it ran (epoch ms, server clock).
    pub at_ms: i64,
    /// The N it was allowed to release.
    pub n: u64,
    /// Visitors it released.
    pub released: u64,
    /// Visitors still in line after it.
    pub waiting: u64,
    /// `adaptive` or `fixed` (what the queue was in at that tick; empty when not said).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub mode: String,
    /// The controller's reason for `n` (empty when not said).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub reason: String,
}

/// A string member that may be null: null reads as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// Read the answer of `GET /admin/queues/{q}/ticks` (newest first there; any order here).
pub fn parse_tick_log(v: &Value) -> Result<Vec<TickEntry>> {
    let ticks = v.get("ticks").context("tick log: no `ticks` list")?;
    Vec::<TickEntry>::deserialize(ticks).context("tick log: malformed entry")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

/// `GET url` with the bearer token: the status and, when it is a success, the JSON body.
async fn get(url: &str, token: &str) -> Result<(reqwest::StatusCode, Option<Value>)> {
    let r = http().get(url).bearer_auth(token).send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok((status, None));
    }
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    let v = serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))?;
    Ok((status, Some(v)))
}

async fn get_json(url: &str, token: &str) -> Result<Value> {
    match get(url, token).await? {
        (_, Some(v)) => Ok(v),
        (status, None) => bail!("GET {url}: {status}"),
    }
}

/// `GET {admin}/admin/queues/{queue}` of the waiting room.
pub async fn queue_state(admin: &str, token: &str, queue: &str) -> Result<QueueState> {
    QueueState::from_json(&get_json(&format!("{}/admin/queues/{queue}", admin.trim_end_matches('/')), token).await?)
}

/// Most ticks the waiting room keeps, and asks for (its default answer is
/// the last 100: 25 s of ticks at 250 ms, less than a run).
pub const TICK_LOG_LIMIT: usize = 1000;

/// `GET {admin}/admin/queues/{queue}/ticks`: the waiting room's log of recent
/// ticks; `None` when it answers 404 (a build without adaptive admission).
pub async fn tick_log(admin: &str, token: &str, queue: &str) -> Result<Option<Vec<TickEntry>>> {
    let url = format!("{}/admin/queues/{queue}/ticks?limit={TICK_LOG_LIMIT}", admin.trim_end_matches('/'));
    match get(&url, token).await? {
        (_, Some(v)) => parse_tick_log(&v).map(Some),
        (_, None) => Ok(None),
    }
}

/// `GET {proxy}/wr/{queue}/lottery`: the queue's published lottery (the
/// commitment; after the draw also the seed and the drawn order).
pub async fn lottery(proxy: &str, queue: &str) -> Result<waiting_room::lottery::Published> {
    let v = get_json(&format!("{}/wr/{queue}/lottery", proxy.trim_end_matches('/')), "").await?;
    serde_json::from_value(v).context("the published lottery is malformed")
}

/// `GET {booking_admin}/admin/stock`: the event's free seats (an `AVAILABLE`
/// seat or an expired hold); an event the answer does not list has none.
pub async fn free_seats(booking_admin: &str, token: &str, event: i64) -> Result<i64> {
    let v = get_json(&format!("{}/admin/stock", booking_admin.trim_end_matches('/')), token).await?;
    let events = v["events"].as_array().context("/admin/stock: no `events` list")?;
    Ok(events.iter().find(|e| e["id"].as_i64() == Some(event)).and_then(|e| e["free_seats"].as_i64()).unwrap_or(0))
}

/// One campaign in the booking core's `/admin/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CampaignStock {
    /// Codes in total.
    pub stock: i64,
    /// Codes claimed.
    pub claimed: i64,
}

/// `GET {booking_admin}/admin/stats`: the campaign's stock and claims.
pub async fn campaign_stock(booking_admin: &str, token: &str, campaign: i64) -> Result<CampaignStock> {
    let v = get_json(&format!("{}/admin/stats", booking_admin.trim_end_matches('/')), token).await?;
    let c = v["campaigns"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["id"].as_i64() == Some(campaign)))
        .with_context(|| format!("/admin/stats lists no campaign {campaign}"))?;
    Ok(CampaignStock {
        stock: c["stock"].as_i64().context("/admin/stats: campaign without stock")?,
        claimed: c["claimed"].as_i64().context("/admin/stats: campaign without claimed")?,
    })
}

fn rfc3339(t: OffsetDateTime) -> Result<String> {
    t.format(&Rfc3339).context("formatting a date")
}

/// Create an event of `rows × seats_per_row` seats and a campaign of `stock`
/// codes open from a minute ago for a day; returns (event id, campaign id).
pub async fn create_sale(
    booking_admin: &str,
    token: &str,
    rows: i64,
    seats_per_row: i64,
    stock: i64,
) -> Result<(i64, i64)> {
    let base = booking_admin.trim_end_matches('/');
    let now = OffsetDateTime::now_utc();
    let post = |path: &str, body: Value| {
        let url = format!("{base}{path}");
        async move {
            let r =
                http().post(&url).bearer_auth(token).json(&body).send().await.with_context(|| format!("POST {url}"))?;
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("POST {url}: {status}: {text}");
            }
            serde_json::from_str::<Value>(&text).with_context(|| format!("POST {url}: not JSON: {text}"))
        }
    };
    let event = post(
        "/admin/events",
        json!({"name": "Load test sale", "venue": "Harness hall", "starts_at": rfc3339(now + time::Duration::days(30))?,
               "rows": rows, "seats_per_row": seats_per_row, "price_cents": 4500}),
    )
    .await?;
    let event_id = event["id"].as_i64().context("POST /admin/events: no id")?;
    let campaign = post(
        "/admin/campaigns",
        json!({"event_id": event_id, "name": "Load test coupons", "stock": stock,
               "opens_at": rfc3339(now - time::Duration::minutes(1))?, "closes_at": rfc3339(now + time::Duration::days(1))?}),
    )
    .await?;
    Ok((event_id, campaign["id"].as_i64().context("POST /admin/campaigns: no id")?))
}

/// Claim ids a visitor holds in `campaign`, from `GET {booking}/api/me/coupons`
/// with its entry token; `None` when the token is no longer accepted.
pub async fn my_claims(
    client: &reqwest::Client,
    booking: &str,
    token: &str,
    campaign: i64,
) -> Result<Option<Vec<i64>>> {
    let url = format!("{}/api/me/coupons", booking.trim_end_matches('/'));
    let r = client.get(&url).bearer_auth(token).send().await.with_context(|| format!("GET {url}"))?;
    if r.status() == reqwest::StatusCode::UNAUTHORIZED {
        return Ok(None);
    }
    if !r.status().is_success() {
        bail!("GET {url}: {}", r.status());
    }
    let v: Value = r.json().await.with_context(|| format!("GET {url}: not JSON"))?;
    let ids = v
        .as_array()
        .context("/api/me/coupons: not a list")?
        .iter()
        .filter(|c| c["campaign_id"].as_i64() == Some(campaign))
        .filter_map(|c| c["claim_id"].as_i64())
        .collect();
    Ok(Some(ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// `GET /admin/queues/sale` of a build from before adaptive admission (recorded).
    const FIXED_BEFORE_ADAPTIVE: &str = r#"{"id":"sale","name":"sale","paths":["/api/events"],
        "settings":{"admission":{"free_entry":0,"release_per_tick":40,"tick":"1s","session":"10m","max_active":0,
        "abandon_after":"1m"},"paused":false,"queue_all":false,"version":3},"waiting":120,"active":800,
        "ticks":57,"released_total":2280,"abandoned_total":4,"release_rate_measured":40.0,
        "release_rate_configured":40.0,"connections_here":118}"#;

    /// The same on a build with adaptive admission, in adaptive mode.
    const ADAPTIVE: &str = r#"{"id":"sale","name":"sale","paths":["/api/events"],
        "settings":{"admission":{"free_entry":0,"release_per_tick":40,"tick":"500ms","session":"10m","max_active":0,
        "abandon_after":"1m","admission":"adaptive","min_per_tick":1,"max_per_tick":400,"target_p99":"300ms",
        "target_error_rate":0.01,"arrival_grace":"10s","pin_per_tick":0},"paused":false,"queue_all":false,"version":4},
        "waiting":5000,"active":900,"ticks":57,"released_total":3100,"abandoned_total":0,
        "controller":{"mode":"adaptive","n":120,"reason":"headroom","tick":57,"signals":{"samples":812,"p50_ms":12.0,
        "p99_ms":85.0,"error_rate":0.0,"in_flight":3,"arrived":100,"no_shows":30,"waiting":5000,"released":110}}}"#;

    #[test]
    fn a_queue_state_from_before_adaptive_admission_reads_as_fixed() {
        let q = QueueState::from_json(&json(FIXED_BEFORE_ADAPTIVE)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!((q.release_per_tick, q.tick, q.ticks, q.waiting), (40, Duration::from_secs(1), 57, 120));
        assert_eq!(q.mode, "fixed");
        assert!(!q.adaptive());
        assert_eq!((q.max_per_tick, q.controller.as_ref()), (None, None));
    }

    #[test]
    fn an_adaptive_queue_state_has_its_bounds_and_controller() {
        let q = QueueState::from_json(&json(ADAPTIVE)).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(q.adaptive());
        assert_eq!((q.min_per_tick, q.max_per_tick, q.pin_per_tick), (Some(1), Some(400), Some(0)));
        assert_eq!((q.tick, q.max_active), (Duration::from_millis(500), 0));
        assert_eq!(q.target_p99.as_deref(), Some("300ms"));
        let c = q.controller.unwrap_or_else(|| panic!("no controller"));
        assert_eq!((c.mode.as_str(), c.n, c.reason.as_str(), c.tick), ("adaptive", 120, "headroom", 57));
    }

    #[test]
    fn a_controller_with_null_members_still_reads() {
        // Recorded from a fixed queue before its first decision.
        let v = json(
            r#"{"settings":{"admission":{"release_per_tick":10,"tick":"1s","admission":"fixed"}},"ticks":0,
                "released_total":0,"abandoned_total":0,
                "controller":{"mode":"fixed","n":10,"pinned":null,"reason":null,"tick":null,"signals":null}}"#,
        );
        let q = QueueState::from_json(&v).unwrap_or_else(|e| panic!("{e:#}"));
        let c = q.controller.unwrap_or_else(|| panic!("no controller"));
        assert_eq!((c.mode.as_str(), c.n, c.reason.as_str(), c.tick), ("fixed", 10, "", 0));
    }

    #[test]
    fn a_queue_state_without_n_or_t_is_an_error() {
        assert!(QueueState::from_json(&json(r#"{"settings":{"admission":{"tick":"1s"}},"ticks":1}"#)).is_err());
        assert!(
            QueueState::from_json(&json(r#"{"settings":{"admission":{"release_per_tick":5}},"ticks":1}"#)).is_err()
        );
    }

    #[test]
    fn the_tick_log_parses_and_malformed_entries_are_errors() {
        let log = json(
            r#"{"queue":"sale","ticks":[
                {"tick":58,"at_ms":1764620000500,"n":130,"released":130,"waiting":4870,"mode":"adaptive","reason":"headroom"},
                {"tick":57,"at_ms":1764620000000,"n":120,"released":110,"waiting":0,"mode":"adaptive","reason":"hold"}]}"#,
        );
        let ticks = parse_tick_log(&log).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(ticks.len(), 2);
        assert_eq!((ticks[1].tick, ticks[1].n, ticks[1].released, ticks[1].waiting), (57, 120, 110, 0));
        assert_eq!(ticks[0].reason, "headroom");
        assert!(parse_tick_log(&json(r#"{"queue":"sale"}"#)).is_err());
        assert!(parse_tick_log(&json(r#"{"ticks":[{"tick":1,"at_ms":5}]}"#)).is_err(), "an entry without n");
        // Entries without mode or reason, or with null ones, still read (as empty).
        let bare = parse_tick_log(&json(r#"{"ticks":[{"tick":1,"at_ms":5,"n":3,"released":3,"waiting":9}]}"#));
        assert_eq!(bare.map(|t| t[0].mode.clone()).ok(), Some(String::new()));
        let nulls =
            json(r#"{"ticks":[{"tick":1,"at_ms":5,"n":3,"released":3,"waiting":9,"mode":null,"reason":null}]}"#);
        assert_eq!(parse_tick_log(&nulls).map(|t| t[0].reason.clone()).ok(), Some(String::new()));
    }
}
