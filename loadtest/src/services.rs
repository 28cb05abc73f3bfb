//! The services' operator endpoints the harness reads: the waiting room's
//! `GET /admin/queues/{q}` (N, T, tick counters), the booking core's
//! `GET /admin/stats` (claims and stock per campaign) and `POST /admin/…`
//! (creating the sale) on its operator listener, and a visitor's own
//! `GET /api/me/coupons` on its public one.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;
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
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

async fn get_json(url: &str, token: &str) -> Result<Value> {
    let r = http().get(url).bearer_auth(token).send().await.with_context(|| format!("GET {url}"))?;
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
}

/// `GET {admin}/admin/queues/{queue}` of the waiting room.
pub async fn queue_state(admin: &str, token: &str, queue: &str) -> Result<QueueState> {
    let v = get_json(&format!("{}/admin/queues/{queue}", admin.trim_end_matches('/')), token).await?;
    let a = &v["settings"]["admission"];
    let num = |v: &Value, what: &str| v.as_u64().with_context(|| format!("queue state: no {what} in {v}"));
    let tick = a["tick"].as_str().context("queue state: no settings.admission.tick")?;
    Ok(QueueState {
        release_per_tick: num(&a["release_per_tick"], "release_per_tick")?,
        tick: humantime::parse_duration(tick).with_context(|| format!("queue state: tick {tick:?}"))?,
        free_entry: a["free_entry"].as_u64().unwrap_or(0),
        ticks: num(&v["ticks"], "ticks")?,
        released_total: num(&v["released_total"], "released_total")?,
        abandoned_total: num(&v["abandoned_total"], "abandoned_total")?,
        waiting: v["waiting"].as_u64().unwrap_or(0),
    })
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
