//! The page's values in words and figures (waits, estimates, countdowns,
//! times, grouped digits) in the visitor's language: the texts `queue.js`
//! mirrors, apart from the page assembly in `page.rs`.

use super::Lang;
use super::i18n;
use crate::standing::{QueueStatus, StatusMessage};

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
pub(super) fn countdown_to(m: &StatusMessage) -> Option<&str> {
    match m.status {
        QueueStatus::Scheduled => m.prequeue_from.as_deref().or(m.opens_at.as_deref()),
        QueueStatus::Prequeue => m.opens_at.as_deref(),
        _ => None,
    }
}

/// Seconds from `now_ms` to an RFC 3339 time (0 when past or unreadable).
pub(super) fn secs_until(rfc3339: &str, now_ms: i64) -> u64 {
    crate::schedule::At::parse(rfc3339).map_or(0, |t| u64::try_from((t.0 - now_ms + 999) / 1000).unwrap_or(0))
}

/// Digits grouped by thousands (`12,345`; `12.345` in German), as
/// `queue.js` shows them.
pub(super) fn grouped(lang: Lang, n: u64) -> String {
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

/// An RFC 3339 time as a person reads it, in UTC (`on 24 Dec 2026, 10:00
/// UTC`); the script replaces it with the visitor's local time.
pub(super) fn readable_time(lang: Lang, rfc3339: &str) -> String {
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
