//! The event page a visitor lands on once the waiting room admits them:
//! `GET /events/{id}`, HTML with a small vanilla script (`web/event.*`,
//! compiled in, no external assets) that drives the JSON API on the same
//! origin — seat map, holds with a countdown, confirm and release, coupon
//! claims, "my bookings/coupons".
//!
//! The page is protected like every `/api` route: the entry token is verified
//! here and must admit to the event, so a request that slipped past the proxy
//! gets the same 401/403 problem. The server renders what the API cannot tell
//! the script: the event's coupon campaigns (there is no listing route), the
//! visitor's live holds with their ids (so a reload keeps the cart), and when
//! the session ends (the token's `exp`).

use http::StatusCode;
use serde::Serialize;
use shared::html::{escape, fill};
use shared::percent::encode_component as encode;

use crate::catalogue::EventView;
use crate::clock::{self, now_ms};
use crate::http::{Input, Success};
use crate::problem::{ApiError, Failure};
use crate::routes::admin::CampaignView;
use crate::store::StoreError;
use crate::store::holds::LiveHold;

const TEMPLATE: &str = include_str!("web/event.html");
const CSS: &str = include_str!("web/event.css");
const SCRIPT: &str = include_str!("web/event.js");

/// Page errors that are not the token's or the catalogue's.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct PageError(#[from] StoreError);

impl ApiError for PageError {
    fn status(&self) -> StatusCode {
        self.0.status()
    }
}

/// Everything the script starts from, embedded as JSON.
#[derive(Debug, Serialize)]
struct PageState {
    event: EventView,
    campaigns: Vec<CampaignView>,
    holds: Vec<LiveHold>,
    queue: String,
    session_ends_at: Option<String>,
    hold_seconds: u64,
    /// Most seats one visitor may hold or book on this event.
    max_per_visitor: i64,
    /// Which purchases end the session (`confirm`, `claim`), so the page can
    /// say what will happen before it does.
    end_session_on: Vec<&'static str>,
}

/// `GET /events/{id}` → 200 HTML; 401/403 like the API; 404 no such event.
pub async fn event_page(cx: &Input, id: i64) -> Result<Success, Failure> {
    let visitor = cx.visitor()?;
    cx.state.auth().authorize(&visitor, id)?;
    let event = cx.state.catalogue().event(id).await?;
    let store = cx.state.store();
    let campaigns = store.campaigns_of_event(id).await.map_err(PageError)?;
    let holds = store.live_holds_on(id, &visitor.id, now_ms()).await.map_err(PageError)?;
    let state = PageState {
        event: EventView::from(&event),
        campaigns: campaigns.iter().map(CampaignView::from).collect(),
        holds,
        queue: visitor.queue.clone(),
        session_ends_at: Some(clock::rfc3339(visitor.session_ends_at)),
        hold_seconds: cx.state.config().holds.length.as_secs(),
        max_per_visitor: cx.state.config().holds.max_per_visitor,
        end_session_on: cx.state.config().end_session_on.iter().map(|e| e.reason()).collect(),
    };
    let rejoin = format!("/wr/{}?return_to={}", encode(&visitor.queue), encode(&cx.path));
    let page = fill(TEMPLATE, |key| match key {
        "name" => Some(escape(&event.name)),
        "venue" => Some(escape(&event.venue)),
        "starts_at" => Some(clock::rfc3339(event.starts_at)),
        "starts_at_text" => Some(escape(&utc_text(event.starts_at))),
        "rejoin" => Some(escape(&rejoin)),
        "state" => Some(script_json(&state)),
        "css" => Some(CSS.to_owned()),
        "js" => Some(SCRIPT.to_owned()),
        _ => None,
    });
    Ok(Success::raw(StatusCode::OK, "text/html; charset=utf-8", page))
}

/// JSON safe inside `<script>`: `<`, `>` and `&` only occur inside JSON
/// strings, where their `\u` escapes mean the same, and `</script>` can then
/// never close the element early.
fn script_json<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap_or_else(|_| "{}".into());
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// `Sat 1 Jun 2030, 19:30 UTC`: shown until the script replaces it with local time.
fn utc_text(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else {
        return clock::rfc3339(ms);
    };
    let weekday = t.weekday().to_string();
    let month = t.month().to_string();
    format!(
        "{} {} {} {}, {:02}:{:02} UTC",
        &weekday[..3.min(weekday.len())],
        t.day(),
        &month[..3.min(month.len())],
        t.year(),
        t.hour(),
        t.minute()
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn templates_are_filled_in_one_pass_and_unknown_keys_stay() {
        let out = fill("a {{x}} b {{y}} c {{nope}} {{", |k| match k {
            "x" => Some("{{y}}".into()),
            "y" => Some("Y".into()),
            _ => None,
        });
        assert_eq!(out, "a {{y}} b Y c {{nope}} {{");
    }

    #[test]
    fn the_page_template_uses_only_keys_the_handler_fills() {
        let known = ["name", "venue", "starts_at", "starts_at_text", "rejoin", "state", "css", "js"];
        let out = fill(TEMPLATE, |k| known.contains(&k).then(String::new));
        assert!(!out.contains("{{"), "unfilled placeholder in event.html");
        for key in known {
            assert!(TEMPLATE.contains(&format!("{{{{{key}}}}}")), "{key} unused");
        }
    }

    #[test]
    fn event_text_cannot_break_out_of_html_or_the_state_script() {
        assert_eq!(escape(r#"<b>"Tom" & 'Jerry'</b>"#), "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;");
        let json = script_json(&serde_json::json!({"name": "</script><script>alert(1)</script>&"}));
        assert!(!json.contains('<') && !json.contains('>') && !json.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["name"], "</script><script>alert(1)</script>&");
    }

    #[test]
    fn rejoin_links_and_dates_are_well_formed() {
        assert_eq!(encode("/events/1"), "%2Fevents%2F1");
        assert_eq!(encode("demo-q_1"), "demo-q_1");
        assert_eq!(utc_text(1_906_572_600_000), "Sat 1 Jun 2030, 19:30 UTC");
    }
}
