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
#[cfg(test)]
mod tests;
mod words;

pub use words::{countdown, countdown_in, eta_text, eta_text_in, human_wait, human_wait_in, wait_range, wait_range_in};
use words::{countdown_to, grouped, readable_time, secs_until};

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
