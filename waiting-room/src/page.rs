//! The queue page served at `/wr/{q}`: HTML, a stylesheet and a small script
//! compiled into the binary (no external assets, no framework).
//!
//! # How the page stays current
//!
//! 1. **WebSocket** `/wr/{q}/ws`: the script applies every pushed
//!    [`StatusMessage`]. On READY it shows a short "you're in" moment, fetches
//!    `/wr/{q}/status` (whose response sets the HttpOnly `wr_entry` cookie, which
//!    a WebSocket cannot do) and replaces the location with `return_to`; only if
//!    that fetch fails does it write the cookie from the pushed token itself.
//! 2. **Polling**, when the socket cannot open or closes without READY:
//!    `GET /wr/{q}/status` every `retry_after_seconds`, joining once with
//!    `POST /wr/{q}/join` if the answer is NOT_IN_QUEUE.
//! 3. **No JavaScript**: a `<meta http-equiv="refresh">` inside `<noscript>`
//!    (so it never interrupts the live script) reloads the page every
//!    `retry_after_seconds`; the READY page refreshes at once to `return_to`,
//!    and its response already carries the cookie.
//!
//! # The challenge (`challenge = "pow"`)
//!
//! A visitor without a place gets the page in step `challenge`: the data block
//! carries the challenge, and the script solves it in a Web Worker (WebCrypto
//! SHA-256, a plain-JavaScript SHA-256 where WebCrypto is missing, on the main
//! thread in slices where workers are), showing progress in
//! `data-wr="challenge_progress"`, then posts the answer to `join` and goes on
//! live. A WebSocket that answers NOT_IN_QUEUE with a challenge (the place
//! lapsed) and a `join` that answers 428 are solved the same way. Without
//! JavaScript the built-in page explains that the line cannot be joined and
//! how to fix it. Over a per-client limit the page is served with status 429
//! in step `refused`, says why (`{{notice}}`) and reloads itself after
//! `Retry-After` (the script, or without it a meta refresh).
//!
//! # Languages
//!
//! The built-in page speaks English and German ([`Lang`]), chosen from the
//! request's `Accept-Language` by [`render_for`]: the spoken language with
//! the highest q-value (the earlier one on a tie, `q=0` refuses, anything
//! else or nothing means English). Every text the page shows or announces
//! is translated: the template's (`{{t.key}}`, from `page/i18n.rs`'s `PAGE`
//! table), the values of `{{eta}}`, `{{countdown}}`, `{{countdown_to_text}}`,
//! `{{wait_range}}` and the grouping of numbers, and every text the script
//! writes at runtime, which it takes from the data block (`"t"`, the `LIVE`
//! table; its functions `humanWait`, `countdownText` and `waitRange` are
//! the twins of [`human_wait_in`], [`countdown_in`] and [`wait_range_in`]).
//! The refusal detail (`{{notice}}`) comes from the limiter and stays English.
//!
//! # Operator templates
//!
//! A queue's `page_template` file replaces the built-in page. The built-in page
//! is itself rendered from such a template (`page/default.html`), so every
//! placeholder below works the same in both. Placeholders are replaced in one
//! pass (a value that looks like a placeholder is never expanded again); an
//! unknown `{{name}}` is left as written so a typo shows on the page.
//!
//! | placeholder        | value (HTML-escaped)                                        |
//! |--------------------|-------------------------------------------------------------|
//! | `{{queue_name}}`   | the queue's display name                                    |
//! | `{{queue_id}}`     | the queue id                                                |
//! | `{{position}}`     | place in line, digits grouped (`1,204`); empty unless WAITING |
//! | `{{eta}}`          | the estimate in words (`about 2 minutes`, `less than a minute`) |
//! | `{{eta_seconds}}`  | the estimate in seconds; empty unless WAITING               |
//! | `{{queue_length}}` | visitors in line; empty unless WAITING                      |
//! | `{{status}}`       | `WAITING`, `READY`, `NOT_IN_QUEUE`, `SCHEDULED`, `PREQUEUE`, `CLOSED`, `UNAVAILABLE` or `SOLD_OUT` |
//! | `{{countdown}}`    | time left to the next opening (`04:05`, `1:02:03`), SCHEDULED / PREQUEUE |
//! | `{{countdown_to}}` | that opening, RFC 3339 (for a `<time datetime>`)            |
//! | `{{countdown_to_text}}` | the same in words (`on 24 Dec 2026, 10:00 UTC`)        |
//! | `{{entrants}}`     | visitors in the pre-queue (PREQUEUE)                        |
//! | `{{public_id}}`    | the visitor's public id in the lottery (PREQUEUE, WAITING)  |
//! | `{{lottery_url}}`  | where the lottery is published (queues with a pre-queue)    |
//! | `{{message}}`      | the operator's message to the queue (live), else empty     |
//! | `{{drawn}}`        | `true` while WAITING at a place drawn by lottery            |
//! | `{{mode}}`         | `random` when visitors are let in by random draw, else empty |
//! | `{{wait_range}}`   | the random-mode wait in words (`less than a minute and about 5 minutes`) |
//! | `{{step}}`         | `challenge`, `refused` or empty (see above)                 |
//! | `{{notice}}`       | why the visitor was refused (step `refused`), else empty    |
//! | `{{paused}}`       | `true` while the operator has paused releases, else `false` |
//! | `{{return_to}}`    | where the visitor goes once admitted (same-origin path)     |
//! | `{{refresh}}`      | the meta-refresh tag (no-JS updates and the READY redirect) |
//! | `{{script}}`       | the live-update script and its JSON data block              |
//! | `{{style}}`        | the built-in stylesheet as a `<style>` element (optional)   |
//! | `{{lang}}`         | the visitor's language, `en` or `de` (for `<html lang>`)     |
//! | `{{t.key}}`        | the built-in page's text `key` in that language (trusted HTML, may hold the placeholders above; keys in `page/i18n.rs`) |
//!
//! An operator's template that names `{{lang}}` follows the visitor's
//! language (`{{t.key}}` gives it the built-in texts; the values above and the
//! script's texts follow too); one that does not is rendered in English
//! throughout, as it always was.
//!
//! The script updates elements by attribute: `data-wr="position"`, `"eta"`,
//! `"eta_seconds"`, `"queue_length"`, `"notice"`, `"countdown"`, `"entrants"`,
//! `"public_id"`, `"opens_at_text"`, `"wait_range"`, `"message"` (text), `"progress"` and
//! `"challenge_progress"` (`aria-valuenow`, the `--wr-progress` CSS variable,
//! and `value` of a `<progress>`), `"announce"`
//! (a polite live region), `"connection"` (live / polling / reconnecting text)
//! and `"continue"` (a link to `return_to`). It mirrors the state on `<html>` as
//! `data-wr-status`, `data-wr-paused`, `data-wr-step`, `data-wr-drawn`, `data-wr-mode` and `data-wr-link`
//! (`live`, `polling`, `offline`) for stylesheets to show and hide sections.
//! `configs/page-template.example.html` is a complete, commented example.

use crate::queues::Queue;
use crate::standing::{QueueStatus, StatusMessage};

mod i18n;
pub use i18n::Lang;

/// The built-in page, rendered through the same placeholders as an operator's.
const DEFAULT_TEMPLATE: &str = include_str!("page/default.html");
/// The built-in stylesheet (`{{style}}`).
const STYLE: &str = include_str!("page/queue.css");
/// The live-update script (part of `{{script}}`).
const SCRIPT: &str = include_str!("page/queue.js");
/// The challenge solver, run in a Web Worker (part of `{{script}}`).
const SOLVER: &str = include_str!("page/pow.js");
/// No-JS reload interval when the message carries none (NOT_IN_QUEUE).
const DEFAULT_REFRESH_SECS: u64 = 5;

/// Only same-origin relative paths may be returned to; anything else is `/`.
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

pub use shared::html::escape;
use shared::html::fill;

/// A wait in words, the way a person would say it, in English.
pub fn human_wait(secs: u64) -> String {
    human_wait_in(Lang::En, secs)
}

/// A wait in words in `lang`. `queue.js` has the same function (`humanWait`)
/// for live updates; keep the two in step.
pub fn human_wait_in(lang: Lang, secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    let say = |key: &str, vars: &[(&str, &str)]| i18n::format(lang.live(key), vars);
    if secs < 45 {
        say("less_than_a_minute", &[])
    } else if secs < 90 {
        say("about_a_minute", &[])
    } else if secs < HOUR - 30 {
        say("about_minutes", &[("n", &((secs + 30) / MIN).to_string())])
    } else if secs < 24 * HOUR {
        // Past an hour, minutes are noise: round to the nearest quarter hour.
        let quarters = (secs + 450) / 900;
        let (h, m) = (quarters / 4, (quarters % 4) * 15);
        let (h, m) = (h.to_string(), m.to_string());
        match (h.as_str(), m.as_str()) {
            ("1", "0") => say("about_one_hour", &[]),
            (_, "0") => say("about_hours", &[("n", &h)]),
            ("1", _) => say("about_one_hour_minutes", &[("m", &m)]),
            _ => say("about_hours_minutes", &[("n", &h), ("m", &m)]),
        }
    } else {
        say("more_than_a_day", &[])
    }
}

/// The `{{eta}}` text for a message, in English.
pub fn eta_text(m: &StatusMessage) -> String {
    eta_text_in(Lang::En, m)
}

/// The `{{eta}}` text for a message in `lang`: an estimate is meaningless
/// while the operator holds the line, so a paused line says so instead.
pub fn eta_text_in(lang: Lang, m: &StatusMessage) -> String {
    match (m.status, m.eta_seconds) {
        (QueueStatus::Ready, _) => lang.live("now").to_owned(),
        (_, Some(_)) if m.paused => lang.live("on_hold").to_owned(),
        (_, Some(s)) => human_wait_in(lang, s),
        _ => String::new(),
    }
}

/// A countdown of `secs` as a clock shows it (`04:05`, `1:02:03`,
/// `2 days 03:04:05`), in English.
pub fn countdown(secs: u64) -> String {
    countdown_in(Lang::En, secs)
}

/// A countdown in `lang`. `queue.js` has the same function (`countdownText`);
/// keep the two in step.
pub fn countdown_in(lang: Lang, secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m:02}:{s:02}"),
        (0, h) => format!("{h}:{m:02}:{s:02}"),
        (d, h) => {
            let clock = format!("{h:02}:{m:02}:{s:02}");
            let key = if d == 1 { "one_day" } else { "days" };
            i18n::format(lang.live(key), &[("n", &d.to_string()), ("clock", &clock)])
        }
    }
}

/// A random-mode wait in words (`less than a minute and about 5 minutes`),
/// in English.
pub fn wait_range(soonest: u64, longest: u64) -> String {
    wait_range_in(Lang::En, soonest, longest)
}

/// A random-mode wait in words in `lang`; `queue.js` says it the same way.
pub fn wait_range_in(lang: Lang, soonest: u64, longest: u64) -> String {
    let (soonest, longest) = (human_wait_in(lang, soonest), human_wait_in(lang, longest));
    i18n::format(lang.live("wait_range"), &[("soonest", &soonest), ("longest", &longest)])
}

/// What a countdown on the page counts to: the pre-queue's or the line's
/// opening (SCHEDULED), the draw (PREQUEUE).
fn countdown_to(m: &StatusMessage) -> Option<&str> {
    match m.status {
        QueueStatus::Scheduled => m.prequeue_from.as_deref().or(m.opens_at.as_deref()),
        QueueStatus::Prequeue => m.opens_at.as_deref(),
        _ => None,
    }
}

/// Seconds from `now_ms` to an RFC 3339 time (0 when past or unreadable).
fn secs_until(rfc3339: &str, now_ms: i64) -> u64 {
    crate::schedule::At::parse(rfc3339).map_or(0, |t| u64::try_from((t.0 - now_ms + 999) / 1000).unwrap_or(0))
}

/// Digits grouped by thousands (`12,345`; `12.345` in German), as
/// `queue.js` shows them.
fn grouped(lang: Lang, n: u64) -> String {
    let digits = n.to_string();
    let separator = lang.live("group_separator");
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push_str(separator);
        }
        out.push(c);
    }
    out
}

/// A refusal the page explains: the detail and the seconds until it retries.
pub type Refused<'a> = Option<(&'a str, u64)>;

/// The meta-refresh tag: straight to `return_to` when READY (the response sets
/// the cookie); none while a challenge waits (reloading cannot solve it);
/// otherwise, for browsers without JavaScript, a reload after `Retry-After`
/// when refused (reloading is retrying) or every `retry_after_seconds`. Those
/// reloads sit in `<noscript>`: a refresh, once parsed, cannot be cancelled by
/// the script and would tear down its socket, and a timed refresh the visitor
/// cannot stop fails WCAG 2.2.1 (axe's `meta-refresh`); the script reloads a
/// refused page itself.
pub fn refresh_tag(m: &StatusMessage, return_to: &str, refused: Refused<'_>) -> String {
    if m.status == QueueStatus::Ready {
        format!("<meta http-equiv=\"refresh\" content=\"0;url={}\">", escape(return_to))
    } else if let Some((_, secs)) = refused {
        format!("<noscript><meta http-equiv=\"refresh\" content=\"{}\"></noscript>", secs.max(1))
    } else if m.challenge.is_some() {
        String::new()
    } else {
        let secs = m.retry_after_seconds.unwrap_or(DEFAULT_REFRESH_SECS).max(1);
        format!("<noscript><meta http-equiv=\"refresh\" content=\"{secs}\"></noscript>")
    }
}

/// The page's step: `challenge`, `refused` or none.
fn step(m: &StatusMessage, refused: Refused<'_>) -> &'static str {
    match (refused, &m.challenge) {
        (Some(_), _) => "refused",
        (None, Some(_)) => "challenge",
        (None, None) => "",
    }
}

/// An RFC 3339 time as a person reads it, in UTC (`on 24 Dec 2026, 10:00
/// UTC`); the script replaces it with the visitor's local time.
fn readable_time(lang: Lang, rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(rfc3339, &Rfc3339) else { return rfc3339.to_owned() };
    let t = t.to_offset(time::UtcOffset::UTC);
    let month = lang.live("months").split(' ').nth(usize::from(u8::from(t.month())) - 1).unwrap_or("");
    let date = i18n::format(
        lang.live("date_utc"),
        &[
            ("day", &t.day().to_string()),
            ("month", month),
            ("year", &t.year().to_string()),
            ("time", &format!("{:02}:{:02}", t.hour(), t.minute())),
        ],
    );
    i18n::format(lang.live("opens_on"), &[("date", &date)])
}

/// The JSON data block and the script. The data carries no token: a READY
/// page's cookie comes from its response, and the page needs nothing else.
/// `<`, `>` and `&` are written as JSON escapes so no value can close the
/// `<script>` element.
fn script_tag(queue: &Queue, m: &StatusMessage, return_to: &str, refused: Refused<'_>, lang: Lang) -> String {
    let texts: serde_json::Map<String, serde_json::Value> =
        lang.live_texts().map(|(k, t)| (k.to_owned(), t.into())).collect();
    let data = serde_json::json!({
        "queue": queue.id(),
        "name": queue.def().config.display_name(),
        "status": m.status,
        "position": m.position,
        "queue_length": m.queue_length,
        "eta_seconds": m.eta_seconds,
        "retry_after_seconds": m.retry_after_seconds,
        "paused": m.paused,
        "return_to": return_to,
        "step": step(m, refused),
        "opens_at": m.opens_at,
        "prequeue_from": m.prequeue_from,
        "public_id": m.public_id,
        "message": m.message,
        "mode": m.mode,
        "wait_range_seconds": m.wait_range_seconds,
        "challenge": m.challenge,
        "retry_after": refused.map(|(_, secs)| secs),
        "lang": lang.code(),
        "t": texts,
    })
    .to_string()
    .replace('<', "\\u003c")
    .replace('>', "\\u003e")
    .replace('&', "\\u0026");
    // The solver's text is also the source of its worker; only queues that
    // ask for a challenge carry it.
    let solver =
        if queue.challenge_on() { format!("<script id=\"wr-solver\">\n{SOLVER}</script>\n") } else { String::new() };
    format!("<script type=\"application/json\" id=\"wr-data\">{data}</script>\n{solver}<script>\n{SCRIPT}</script>")
}

/// Whether a template has a `{{lang}}` placeholder (it follows the visitor's language).
fn names_lang(template: &str) -> bool {
    let found = std::cell::Cell::new(false);
    fill(template, |name| {
        found.set(found.get() || name == "lang");
        None
    });
    found.get()
}

/// Render the page in English (see [`render_in`]).
pub fn render(queue: &Queue, m: &StatusMessage, return_to: &str, refused: Refused<'_>) -> String {
    render_in(queue, m, return_to, refused, Lang::En)
}

/// Render the page in the language a request's `Accept-Language` header
/// (`None`: no header) asks for (see [`Lang::from_accept_language`]).
pub fn render_for(
    queue: &Queue,
    m: &StatusMessage,
    return_to: &str,
    refused: Refused<'_>,
    accept_language: Option<&str>,
) -> String {
    render_in(queue, m, return_to, refused, Lang::from_accept_language(accept_language))
}

/// Render the page for a visitor's current standing (or a refusal) in
/// `lang`: the operator's template when the queue has one, the built-in page
/// otherwise. An operator's template that does not name `{{lang}}` is written
/// in one language and rendered in English, as before there were languages.
/// The built-in texts (`{{t.key}}`, trusted HTML that may hold placeholders)
/// are put in first; then every other placeholder in one pass.
pub fn render_in(queue: &Queue, m: &StatusMessage, return_to: &str, refused: Refused<'_>, lang: Lang) -> String {
    let def = queue.def();
    let template = def.template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    let lang = if def.template.is_none() || names_lang(template) { lang } else { Lang::En };
    let template =
        fill(template, |name| name.strip_prefix("t.").and_then(|key| lang.page_text(key)).map(str::to_owned));
    let waiting = m.status == QueueStatus::Waiting;
    let number = |n: Option<u64>| if waiting { n.map(|n| grouped(lang, n)).unwrap_or_default() } else { String::new() };
    fill(&template, |name| {
        Some(match name {
            "queue_name" => escape(def.config.display_name()),
            "queue_id" => escape(queue.id()),
            "position" => number(m.position),
            "eta" => escape(&eta_text_in(lang, m)),
            "lang" => lang.code().to_owned(),
            "eta_seconds" => {
                if waiting {
                    m.eta_seconds.map(|s| s.to_string()).unwrap_or_default()
                } else {
                    String::new()
                }
            }
            "queue_length" => number(m.queue_length),
            "status" => escape(m.status.as_str()),
            "step" => step(m, refused).to_owned(),
            "notice" => escape(refused.map_or("", |(detail, _)| detail)),
            "paused" => m.paused.to_string(),
            "return_to" => escape(return_to),
            "refresh" => refresh_tag(m, return_to, refused),
            "script" => script_tag(queue, m, return_to, refused, lang),
            "style" => format!("<style>\n{STYLE}</style>"),
            "countdown_to" => escape(countdown_to(m).unwrap_or("")),
            "countdown_to_text" => escape(&countdown_to(m).map(|t| readable_time(lang, t)).unwrap_or_default()),
            "countdown" => {
                countdown_to(m).map(|t| countdown_in(lang, secs_until(t, crate::clock::now_ms()))).unwrap_or_default()
            }
            "entrants" => {
                if m.status == QueueStatus::Prequeue {
                    m.queue_length.map(|n| grouped(lang, n)).unwrap_or_default()
                } else {
                    String::new()
                }
            }
            "public_id" => escape(m.public_id.as_deref().unwrap_or("")),
            "lottery_url" => escape(m.lottery_url.as_deref().unwrap_or("")),
            "drawn" => (waiting && m.public_id.is_some()).to_string(),
            "message" => escape(m.message.as_deref().unwrap_or("")),
            "mode" => m.mode.unwrap_or("").to_owned(),
            "wait_range" => m.wait_range_seconds.map(|[a, b]| wait_range_in(lang, a, b)).unwrap_or_default(),
            _ => return None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QueueConfig;
    use crate::tokens::Issued;

    fn queue(name: &str, template: Option<&str>) -> Queue {
        let config: QueueConfig = serde_json::from_value(serde_json::json!({
            "id": "drop", "name": name, "paths": ["/a"], "release_per_tick": 1, "tick": "2s", "session": "10m",
        }))
        .unwrap();
        Queue::defined(crate::queues::Def::new(config, template.map(str::to_owned)))
    }

    fn waiting(position: u64, eta: u64, retry: u64) -> StatusMessage {
        StatusMessage {
            status: QueueStatus::Waiting,
            queue: "drop".into(),
            position: Some(position),
            queue_length: Some(position + 10),
            eta_seconds: Some(eta),
            retry_after_seconds: Some(retry),
            paused: false,
            entry: None,
            ..StatusMessage::default()
        }
    }

    fn ready() -> StatusMessage {
        StatusMessage {
            status: QueueStatus::Ready,
            queue: "drop".into(),
            position: None,
            queue_length: None,
            eta_seconds: None,
            retry_after_seconds: None,
            paused: false,
            entry: Some(Issued {
                token: "header.payload.signature".into(),
                expires_at: "2030-01-01T00:00:00Z".into(),
                admitted_at: "2030-01-01T00:00:00.000Z".into(),
                max_age: 600,
            }),
            ..StatusMessage::default()
        }
    }

    #[test]
    fn only_same_origin_paths_are_returned_to() {
        assert_eq!(safe_return_to(Some("/api/events/42?x=1")), "/api/events/42?x=1");
        assert_eq!(safe_return_to(Some("//evil.example/x")), "/");
        assert_eq!(safe_return_to(Some("https://evil.example/")), "/");
        assert_eq!(safe_return_to(Some("/\\evil")), "/");
        assert_eq!(safe_return_to(None), "/");
    }

    #[test]
    fn a_hostile_queue_name_is_escaped_everywhere_and_never_expanded() {
        let hostile = "<script>alert('x')</script> & \"{{script}}\"";
        let html = render(&queue(hostile, None), &waiting(3, 100, 10), "/a", None);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;{{script}}&quot;"));
        // In the JSON block the name is data, and cannot close the element.
        assert!(html.contains(r#""name":"\u003cscript\u003ealert('x')\u003c/script\u003e \u0026 \"{{script}}\"""#));
        assert_eq!(html.matches("id=\"wr-data\"").count(), 1, "the name's {{{{script}}}} was expanded");
    }

    #[test]
    fn a_return_path_cannot_break_out_of_the_data_block() {
        let html = render(&queue("Drop", None), &waiting(3, 100, 10), "/a/</script><script>x()</script>", None);
        assert!(!html.contains("</script><script>x()"));
        assert!(html.contains(r#""return_to":"/a/\u003c/script\u003e\u003cscript\u003ex()\u003c/script\u003e""#));
    }

    #[test]
    fn an_operator_template_gets_every_placeholder_filled() {
        let t = "<title>{{queue_name}}</title>{{refresh}}<b data-wr=\"position\">{{ position }}</b> {{eta}} \
                 ({{eta_seconds}} s) of {{queue_length}} in {{queue_id}} [{{status}} paused={{paused}}] \
                 <a href=\"{{return_to}}\">go</a> {{unknown}} {{ unclosed";
        let html = render(&queue("Big Drop", Some(t)), &waiting(1204, 150, 15), "/a/b?c=1&d=2", None);
        let (before_script, script) = html.split_once("<script type=").unwrap_or((&html, ""));
        assert_eq!(
            before_script,
            "<title>Big Drop</title><noscript><meta http-equiv=\"refresh\" content=\"15\"></noscript>\
             <b data-wr=\"position\">1,204</b> about 3 minutes (150 s) of 1,214 in drop [WAITING paused=false] \
             <a href=\"/a/b?c=1&amp;d=2\">go</a> {{unknown}} {{ unclosed"
        );
        assert!(script.is_empty(), "no {{{{script}}}} placeholder, so no script");
        let live = render(&queue("Big Drop", Some("<body>{{script}}</body>")), &waiting(2, 5, 2), "/a", None);
        assert!(live.contains("<script type=\"application/json\" id=\"wr-data\">{"));
        assert!(live.contains("\"position\":2") && live.contains("connectSocket"));
    }

    #[test]
    fn the_example_operator_template_uses_only_known_placeholders() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/page-template.example.html");
        let template = std::fs::read_to_string(path).unwrap();
        let html = render(&queue("Drop", Some(&template)), &waiting(3, 100, 10), "/a", None);
        // `{{this}}` is the comment's illustration of the syntax; nothing else may survive.
        assert_eq!(html.matches("{{").count(), 1, "{html}");
        assert!(html.contains("data-wr=\"position\">3</span>") && html.contains("id=\"wr-data\""));
    }

    #[test]
    fn an_operator_template_follows_the_visitors_language_only_if_it_names_lang() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/page-template.example.html");
        let example = std::fs::read_to_string(path).unwrap();
        let html = render_in(&queue("Drop", Some(&example)), &waiting(1204, 150, 10), "/a", None, Lang::De);
        assert!(html.contains("<html lang=\"de\"") && html.contains("<h1>Sie sind in der Warteschlange</h1>"));
        assert!(html.contains("data-wr=\"eta\">etwa 3 Minuten</") && html.contains(r#""lang":"de""#));
        let fixed = "<html lang=\"en\"><p>Wait: {{eta}} at {{position}}</p>{{script}}";
        let html = render_in(&queue("Drop", Some(fixed)), &waiting(1204, 150, 10), "/a", None, Lang::De);
        assert!(html.contains("<p>Wait: about 3 minutes at 1,204</p>") && html.contains(r#""lang":"en""#), "{html}");
    }

    #[test]
    fn the_ready_page_refreshes_straight_to_the_return_path_and_holds_no_token() {
        let html = render(&queue("Drop", None), &ready(), "/a/start?x=1&y=2", None);
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"0;url=/a/start?x=1&amp;y=2\">"));
        assert!(!html.contains("<noscript><meta http-equiv=\"refresh\""), "READY must redirect with JS too");
        assert!(html.contains("data-wr-status=\"READY\""));
        assert!(html.contains("href=\"/a/start?x=1&amp;y=2\""), "a plain link for when the refresh does not fire");
        assert!(!html.contains("header.payload.signature"), "the token stays in the HttpOnly cookie");
    }

    #[test]
    fn without_javascript_a_waiting_page_reloads_every_retry_interval() {
        let html = render(&queue("Drop", None), &waiting(40, 400, 7), "/a", None);
        assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"7\"></noscript>"));
        assert_eq!(html.matches("http-equiv=\"refresh\"").count(), 1);
        let mut lost = waiting(1, 0, 0);
        lost.status = QueueStatus::NotInQueue;
        lost.retry_after_seconds = None;
        assert!(render(&queue("Drop", None), &lost, "/a", None).contains("content=\"5\""));
    }

    #[test]
    fn the_default_page_shows_name_position_estimate_and_a_paused_notice() {
        let mut m = waiting(3, 100, 10);
        let html = render(&queue("Summer Tickets", None), &m, "/a", None);
        assert!(html.contains("<h1 class=\"wr-name\">Summer Tickets</h1>"), "{html}");
        assert!(html.contains("data-wr=\"position\">3</"));
        assert!(html.contains("data-wr=\"eta\">about 2 minutes</"));
        assert!(html.contains("aria-live=\"polite\""));
        assert!(html.contains("data-wr-paused=\"false\""));
        assert!(!html.contains("{{"), "every placeholder of the built-in page is known");
        m.paused = true;
        let html = render(&queue("Summer Tickets", None), &m, "/a", None);
        assert!(html.contains("data-wr-paused=\"true\"") && html.contains("data-wr=\"eta\">on hold</"));
    }

    fn challenged() -> StatusMessage {
        let mut m = waiting(1, 0, 0);
        m.status = QueueStatus::NotInQueue;
        m.position = None;
        m.retry_after_seconds = None;
        m.challenge = Some(crate::challenge::ChallengeBody {
            challenge: "v1.drop.12.99.seed.mac".into(),
            difficulty: 12,
            algorithm: crate::challenge::ALGORITHM,
            expires_at: "2030-01-01T00:00:00Z".into(),
        });
        m
    }

    #[test]
    fn a_visitor_without_a_place_gets_the_challenge_the_solver_and_a_no_script_explanation() {
        let pow = queue("Drop", None);
        let mut config = pow.def().config.clone();
        config.challenge = crate::config::ChallengeMode::Pow;
        pow.redefine(crate::queues::Def::new(config, None));
        let html = render(&pow, &challenged(), "/a", None);
        assert!(html.contains("data-wr-step=\"challenge\""));
        assert!(html.contains(r#""step":"challenge""#) && html.contains(r#""challenge":"v1.drop.12.99.seed.mac""#));
        assert!(html.contains("<script id=\"wr-solver\">") && html.contains("WorkerGlobalScope"));
        assert!(html.contains("<noscript><p class=\"wr-ready-text\"><strong>JavaScript is turned off"));
        assert!(!html.contains("http-equiv=\"refresh\""), "reloading cannot solve a challenge");
        // Queues without the challenge do not carry the solver.
        let plain = render(&queue("Drop", None), &waiting(3, 100, 10), "/a", None);
        assert!(!plain.contains("id=\"wr-solver\"") && plain.contains("data-wr-step=\"\""));
    }

    #[test]
    fn a_refused_visitor_is_told_why_and_the_page_retries_after_the_wait() {
        let mut m = waiting(1, 0, 0);
        m.status = QueueStatus::NotInQueue;
        let html = render(&queue("Drop", None), &m, "/a", Some(("too many joins from <your> address", 7)));
        assert!(html.contains("data-wr-step=\"refused\""));
        assert!(html.contains("data-wr=\"notice\">too many joins from &lt;your&gt; address</span>"));
        assert!(html.contains("<noscript><meta http-equiv=\"refresh\" content=\"7\"></noscript>"), "without script");
        assert!(html.contains(r#""retry_after":7"#));
    }

    #[test]
    fn the_built_in_page_speaks_german_from_accept_language_and_english_otherwise() {
        let q = queue("Sommer", None);
        let mut m = waiting(1204, 150, 15);
        let de = render_for(&q, &m, "/a", None, Some("de-DE,de;q=0.9,en;q=0.8"));
        assert!(de.starts_with("<!doctype html>\n<html lang=\"de\""), "{de}");
        assert!(de.contains("<title>Sommer · Warteraum</title>"));
        assert!(de.contains("data-wr=\"position\">1.204</") && de.contains("data-wr=\"eta\">etwa 3 Minuten</"));
        assert!(de.contains(r#""lang":"de""#) && de.contains(r#""opening":"Wird geöffnet…""#));
        assert!(!de.contains("{{"), "every placeholder is known");
        let en = render_for(&q, &m, "/a", None, Some("fr;q=1, de;q=0"));
        assert!(en.contains("<html lang=\"en\"") && en.contains("<title>Sommer · Waiting room</title>"));
        assert_eq!(en, render(&q, &m, "/a", None), "English is the fallback and `render`'s language");
        // No English sentence of the page is left in the German one (the script's comments are English).
        let html = de.split("<script").next().unwrap_or_default();
        for (key, text) in Lang::En.page_texts() {
            let text = text.replace("{{queue_name}}", "Sommer");
            assert!(!html.contains(&text), "{key} is English in German: {text}");
        }
        m.status = QueueStatus::Scheduled;
        m.opens_at = Some("2099-03-04T10:00:00Z".into());
        let de = render_in(&q, &m, "/a", None, Lang::De);
        assert!(de.contains(">am 4. März 2099, 10:00 UTC</time>") && de.contains("Tage "), "{de}");
    }

    #[test]
    fn every_text_the_script_asks_for_is_in_the_live_table() {
        let keys: Vec<&str> = SCRIPT
            .match_indices("t(\"")
            .filter(|(i, _)| !SCRIPT[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '.'))
            .filter_map(|(i, _)| SCRIPT[i + 3..].split('"').next())
            .collect();
        assert!(keys.len() > 30, "{keys:?}");
        for key in keys {
            assert!(Lang::En.live_texts().any(|(k, _)| k == key), "queue.js asks for {key:?}");
        }
        // Keys chosen by an expression: each branch written out.
        for key in ["drawing", "opening", "said_closed", "link_closed", "one_day", "days"] {
            assert!(SCRIPT.contains(&format!("\"{key}\"")), "{key}");
        }
    }

    #[test]
    fn countdowns_read_like_a_clock() {
        assert_eq!(countdown(0), "00:00");
        assert_eq!(countdown(65), "01:05");
        assert_eq!(countdown(3600), "1:00:00");
        assert_eq!(countdown(86_399), "23:59:59");
        assert_eq!(countdown(86_400 + 61), "1 day 00:01:01");
        assert_eq!(countdown(3 * 86_400), "3 days 00:00:00");
        assert_eq!(readable_time(Lang::En, "2026-12-24T10:00:00+02:00"), "on 24 Dec 2026, 08:00 UTC");
        assert_eq!(readable_time(Lang::De, "2026-03-04T10:00:00+02:00"), "am 4. März 2026, 08:00 UTC");
        assert_eq!(countdown_in(Lang::De, 2 * 86_400 + 5), "2 Tage 00:00:05");
        assert_eq!(countdown_in(Lang::De, 86_400), "1 Tag 00:00:00");
    }

    #[test]
    fn waits_read_the_way_people_say_them() {
        let cases = [
            (0, "less than a minute"),
            (44, "less than a minute"),
            (45, "about a minute"),
            (89, "about a minute"),
            (90, "about 2 minutes"),
            (125, "about 2 minutes"),
            (3_500, "about 58 minutes"),
            (3_570, "about 1 hour"),
            (4_500, "about 1 hour 15 minutes"),
            (7_300, "about 2 hours"),
            (86_400, "more than a day"),
        ];
        for (secs, words) in cases {
            assert_eq!(human_wait(secs), words, "{secs} s");
        }
        assert_eq!(grouped(Lang::En, 1_234_567), "1,234,567");
        assert_eq!(grouped(Lang::De, 1_234_567), "1.234.567");
        assert_eq!(grouped(Lang::En, 999), "999");
        let german = [
            (0, "weniger als eine Minute"),
            (45, "etwa eine Minute"),
            (125, "etwa 2 Minuten"),
            (3_570, "etwa 1 Stunde"),
            (4_500, "etwa 1 Stunde 15 Minuten"),
            (7_300, "etwa 2 Stunden"),
            (9_000, "etwa 2 Stunden 30 Minuten"),
            (86_400, "mehr als ein Tag"),
        ];
        for (secs, words) in german {
            assert_eq!(human_wait_in(Lang::De, secs), words, "{secs} s");
        }
        assert_eq!(human_wait(9_000), "about 2 hours 30 minutes");
        assert_eq!(wait_range_in(Lang::De, 10, 300), "weniger als eine Minute und etwa 5 Minuten");
    }
}
