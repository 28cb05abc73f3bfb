//! Adaptive admission, from the waiting room's own tick log
//! (`GET /admin/queues/{q}/ticks`, each tick's allowed `n`, what it
//! `released`, who was still `waiting`).
//!
//! The `adaptive_ticks` check: every tick of the run released at most the N
//! it was allowed; on an adaptive queue that N stayed within `max_per_tick`;
//! and a tick that left visitors waiting released all of its N — unless a
//! `max_active` cap was set, which may hold a release back. Visitors' own
//! observations cannot show the last one (they do not see who else waits),
//! so the log is the evidence; the `tick_limit` check stays the client-side
//! cross-check of the same releases.
//!
//! An adaptive queue's N moves from tick to tick, so `tick_limit` bounds each
//! window of length T by the `n` logged for the ticks around it instead of
//! `release_per_tick` (see [`tick_limit`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::evidence::TickLog;
use super::ticks::{self, TickStats};
use super::{Check, Evidence, check, skipped};
use crate::services::{TICK_LOG_LIMIT, TickEntry};

/// What the tick log says about the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdaptiveStats {
    /// The queue's admission mode (after the run).
    pub mode: String,
    /// Ticks logged during the run.
    pub ticks: usize,
    /// Smallest N of those ticks.
    pub n_min: u64,
    /// Largest.
    pub n_max: u64,
    /// Mean.
    pub n_mean: f64,
    /// Visitors they released.
    pub released: u64,
    /// Ticks by the controller's reason.
    pub reasons: BTreeMap<String, u64>,
}

impl AdaptiveStats {
    /// Tally `ticks` (none: `None`).
    pub fn of(mode: &str, ticks: &[&TickEntry]) -> Option<AdaptiveStats> {
        let n_min = ticks.iter().map(|t| t.n).min()?;
        let n_max = ticks.iter().map(|t| t.n).max()?;
        let mut reasons = BTreeMap::new();
        for t in ticks {
            *reasons.entry(t.reason.clone()).or_default() += 1;
        }
        Some(AdaptiveStats {
            mode: mode.to_owned(),
            ticks: ticks.len(),
            n_min,
            n_max,
            n_mean: ticks.iter().map(|t| t.n as f64).sum::<f64>() / ticks.len() as f64,
            released: ticks.iter().map(|t| t.released).sum(),
            reasons,
        })
    }
}

/// The violations among `ticks`. `queue_adaptive` is the queue's mode for
/// entries that do not say theirs; `max_per_tick` bounds N in adaptive mode
/// (unknown: that part is not checked); with a `max_active` cap a tick may
/// release fewer than N with visitors waiting.
pub fn tick_violations(
    ticks: &[&TickEntry],
    queue_adaptive: bool,
    max_per_tick: Option<u64>,
    max_active: u64,
) -> Vec<String> {
    let mut v = Vec::new();
    for t in ticks {
        let adaptive = if t.mode.is_empty() { queue_adaptive } else { t.mode == "adaptive" };
        if t.released > t.n {
            v.push(format!("tick {} released {} with n = {}", t.tick, t.released, t.n));
        }
        if adaptive
            && let Some(max) = max_per_tick
            && t.n > max
        {
            v.push(format!("tick {} (adaptive, {}) set n = {} above max_per_tick = {max}", t.tick, t.reason, t.n));
        }
        if t.waiting > 0 && max_active == 0 && t.released < t.n {
            v.push(format!(
                "tick {} released {} of n = {} while {} were left waiting (no max_active cap)",
                t.tick, t.released, t.n, t.waiting
            ));
        }
    }
    v
}

/// The `adaptive_ticks` check and the numbers behind it. `admitted_by_tick`
/// is how many visitors the harness saw released by a tick.
pub fn adaptive_ticks(e: &Evidence, admitted_by_tick: usize) -> (Check, Option<AdaptiveStats>) {
    const NAME: &str = "adaptive_ticks";
    match &e.tick_log {
        TickLog::NotAsked => return (skipped(NAME, "needs --proxy-admin (and --admin-token)"), None),
        TickLog::Missing => {
            let why = "the waiting room has no GET /admin/queues/{q}/ticks (404: a build without adaptive admission)";
            return (skipped(NAME, why), None);
        }
        TickLog::Unreadable => return (skipped(NAME, "the tick log could not be read (see `sources`)"), None),
        TickLog::Read(_) => {}
    }
    let Some(queue) = e.queue() else {
        return (skipped(NAME, "the queue's settings could not be read (see `sources`)"), None);
    };
    let ticks = e.run_ticks();
    let stats = AdaptiveStats::of(&queue.mode, &ticks);
    let Some(s) = &stats else {
        let check = if !queue.adaptive() {
            skipped(NAME, "fixed admission and no tick logged during the run")
        } else if admitted_by_tick > 0 {
            check(
                NAME,
                &[format!("{admitted_by_tick} visitors were released by ticks, but the log holds no tick of the run")],
                String::new(),
            )
        } else {
            skipped(NAME, "adaptive admission, but no tick ran during the run")
        };
        return (check, None);
    };
    let violations = tick_violations(&ticks, queue.adaptive(), queue.max_per_tick, queue.max_active);
    // A full log that starts inside the run has lost the run's first ticks.
    let lost_note = match (&e.tick_log, e.run_window_ms) {
        (TickLog::Read(log), Some((from, _))) if log.len() >= TICK_LOG_LIMIT => {
            match log.iter().map(|t| t.at_ms).min() {
                Some(oldest) if oldest > from => {
                    format!(
                        " (the log keeps {TICK_LOG_LIMIT} ticks: the run's first {} ms went unchecked)",
                        oldest - from
                    )
                }
                _ => String::new(),
            }
        }
        _ => String::new(),
    };
    let max_note = match (queue.adaptive(), queue.max_per_tick) {
        (true, Some(max)) => format!(" ≤ max_per_tick = {max}"),
        (true, None) => " (max_per_tick unknown: not bounded)".into(),
        (false, _) => String::new(),
    };
    let cap_note = if queue.max_active == 0 {
        "every tick that left visitors waiting released all of its n".to_owned()
    } else {
        format!("max_active = {} may hold a release back, so a short release is not a fault", queue.max_active)
    };
    let ok = format!(
        "{} {} ticks in the run{lost_note}: released ≤ n, n {}–{} (mean {:.1}){max_note}; {cap_note}; reasons {:?}",
        s.ticks, s.mode, s.n_min, s.n_max, s.n_mean, s.reasons
    );
    (check(NAME, &violations, ok), stats)
}

/// The most one window [`start_ms`, `start_ms` + T) may admit on an adaptive
/// queue: the largest `n` logged for a tick within T of the window's start
/// (a window of length T holds at most one tick when ticks keep their
/// spacing, and the slack of T either side absorbs any difference between a
/// tick's logged time and the `admitted_at` it gave its visitors), or
/// `max_per_tick` where the log has no such tick. `None` when neither is known.
pub fn window_bound(ticks: &[&TickEntry], start_ms: i64, tick: Duration, max_per_tick: Option<u64>) -> Option<u64> {
    let t = i64::try_from(tick.as_millis()).unwrap_or(i64::MAX);
    let (from, to) = (start_ms.saturating_sub(t), start_ms.saturating_add(t));
    ticks.iter().filter(|e| (from..=to).contains(&e.at_ms)).map(|e| e.n).max().or(max_per_tick)
}

/// The `tick_limit` check on an adaptive queue: each window of length T
/// within the N of its tick (see [`window_bound`]), and the admin counters
/// within `max_per_tick` per tick.
pub fn tick_limit(stats: &TickStats, e: &Evidence) -> Check {
    const NAME: &str = "tick_limit";
    let (Some(tick), Some(queue)) = (e.tick(), e.queue()) else {
        return skipped(NAME, "T unknown: pass --proxy-admin (and --admin-token)");
    };
    let logged = e.run_ticks();
    if logged.is_empty() && queue.max_per_tick.is_none() {
        return skipped(NAME, "adaptive admission, and neither a tick log nor max_per_tick to bound a tick by");
    }
    let mut v = Vec::new();
    let mut from_log = 0usize;
    for (start, sum) in ticks::windows(&stats.releases, tick) {
        let logged_n = window_bound(&logged, start, tick, None);
        from_log += usize::from(logged_n.is_some());
        if let Some(bound) = logged_n.or(queue.max_per_tick)
            && sum > bound
        {
            let whose = if logged_n.is_some() { "the logged n of its tick" } else { "max_per_tick" };
            v.push(format!("{sum} admissions within one tick interval from {start} ms ({whose} = {bound})"));
        }
    }
    if let Some(max) = queue.max_per_tick
        && let Some(counters) = e.counter_violation(max)
    {
        v.push(format!("{counters}, with max_per_tick"));
    }
    let windows = stats.releases.len();
    let max_note = queue.max_per_tick.map_or(String::new(), |m| format!(", the rest by max_per_tick = {m}"));
    check(
        NAME,
        &v,
        format!(
            "{windows} releases seen, largest {}; every window of T within its bound ({from_log} bounded by the \
             tick log's n{max_note}), closest releases {} ms apart",
            stats.max_per_release,
            stats.min_gap_ms.map_or("-".into(), |g| g.to_string())
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Status;
    use crate::services::{QueueState, parse_tick_log};

    /// An adaptive queue (max_per_tick 400, no max_active) as its admin API tells it.
    fn queue(mode: &str, max_active: u64) -> QueueState {
        let v = serde_json::json!({
            "settings": {"admission": {"release_per_tick": 40, "tick": "1s", "max_active": max_active,
                                       "admission": mode, "min_per_tick": 1, "max_per_tick": 400}},
            "ticks": 10, "released_total": 100, "abandoned_total": 0, "waiting": 0});
        QueueState::from_json(&v).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Evidence with `log` (recorded JSON) read during a run from 1_000 to 100_000 ms.
    fn evidence(mode: &str, max_active: u64, log: &str) -> Evidence {
        let v: serde_json::Value = serde_json::from_str(log).unwrap_or_else(|e| panic!("{e}"));
        Evidence {
            queue_after: Some(queue(mode, max_active)),
            tick_log: TickLog::Read(parse_tick_log(&v).unwrap_or_else(|e| panic!("{e:#}"))),
            run_window_ms: Some((1_000, 100_000)),
            ..Evidence::default()
        }
    }

    /// A healthy adaptive run: N grows with headroom, holds, and the last
    /// tick empties the line (released < n with nobody left is fine). The
    /// first entry ran before the run and breaks every rule: it must be ignored.
    const GOOD: &str = r#"{"queue":"sale","ticks":[
        {"tick":6,"at_ms":6000,"n":200,"released":35,"waiting":0,"mode":"adaptive","reason":"headroom"},
        {"tick":5,"at_ms":5000,"n":180,"released":180,"waiting":90,"mode":"adaptive","reason":"hold"},
        {"tick":4,"at_ms":4000,"n":180,"released":180,"waiting":300,"mode":"adaptive","reason":"headroom"},
        {"tick":3,"at_ms":3000,"n":120,"released":120,"waiting":500,"mode":"adaptive","reason":"headroom"},
        {"tick":2,"at_ms":2000,"n":60,"released":60,"waiting":400,"mode":"adaptive","reason":"overload"},
        {"tick":1,"at_ms":500,"n":9999,"released":10000,"waiting":7,"mode":"adaptive","reason":"headroom"}]}"#;

    #[test]
    fn a_healthy_adaptive_log_passes_and_is_tallied() {
        let e = evidence("adaptive", 0, GOOD);
        let (c, stats) = adaptive_ticks(&e, 575);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        let s = stats.unwrap_or_else(|| panic!("no stats"));
        assert_eq!((s.ticks, s.n_min, s.n_max, s.released), (5, 60, 200, 575));
        assert!((s.n_mean - 148.0).abs() < 1e-9, "{}", s.n_mean);
        assert_eq!(s.reasons.get("headroom"), Some(&3));
        assert!(c.detail.contains("max_per_tick = 400"), "{}", c.detail);
    }

    #[test]
    fn a_full_log_that_starts_inside_the_run_says_what_went_unchecked() {
        let entries: Vec<String> = (0..TICK_LOG_LIMIT)
            .map(|i| format!(r#"{{"tick":{i},"at_ms":{},"n":5,"released":5,"waiting":1}}"#, 50_000 + i))
            .collect();
        let e = evidence("adaptive", 0, &format!(r#"{{"ticks":[{}]}}"#, entries.join(",")));
        let (c, _) = adaptive_ticks(&e, 5000);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        assert!(c.detail.contains("first 49000 ms went unchecked"), "{}", c.detail);
        // A log that reaches back before the run says nothing of the kind.
        assert!(!adaptive_ticks(&evidence("adaptive", 0, GOOD), 575).0.detail.contains("unchecked"));
    }

    #[test]
    fn each_broken_rule_fails_the_check() {
        let cases = [
            // Released more than allowed.
            (
                r#"{"tick":2,"at_ms":2000,"n":60,"released":61,"waiting":0,"mode":"adaptive","reason":"headroom"}"#,
                "released 61 with n = 60",
            ),
            // N above the ceiling.
            (
                r#"{"tick":2,"at_ms":2000,"n":401,"released":401,"waiting":5,"mode":"adaptive","reason":"headroom"}"#,
                "above max_per_tick = 400",
            ),
            // A short release with visitors left waiting.
            (
                r#"{"tick":2,"at_ms":2000,"n":60,"released":59,"waiting":1,"mode":"adaptive","reason":"hold"}"#,
                "released 59 of n = 60 while 1 were left waiting",
            ),
        ];
        for (entry, says) in cases {
            let e = evidence("adaptive", 0, &format!(r#"{{"ticks":[{entry}]}}"#));
            let (c, _) = adaptive_ticks(&e, 60);
            assert_eq!(c.status, Status::Fail, "{entry}: {}", c.detail);
            assert!(c.detail.contains(says), "{entry}: {}", c.detail);
        }
    }

    #[test]
    fn a_max_active_cap_excuses_short_releases_but_not_over_releases() {
        let short = r#"{"ticks":[{"tick":2,"at_ms":2000,"n":60,"released":10,"waiting":99,"mode":"adaptive","reason":"hold"}]}"#;
        assert_eq!(adaptive_ticks(&evidence("adaptive", 500, short), 10).0.status, Status::Pass);
        let over = r#"{"ticks":[{"tick":2,"at_ms":2000,"n":60,"released":70,"waiting":99,"mode":"adaptive","reason":"hold"}]}"#;
        assert_eq!(adaptive_ticks(&evidence("adaptive", 500, over), 70).0.status, Status::Fail);
    }

    #[test]
    fn fixed_mode_checks_releases_but_not_the_ceiling() {
        // N = 1000 > max_per_tick is fine in fixed mode (the ceiling is the controller's).
        let log = r#"{"ticks":[{"tick":2,"at_ms":2000,"n":1000,"released":1000,"waiting":5,"mode":"fixed","reason":"fixed"}]}"#;
        assert_eq!(adaptive_ticks(&evidence("fixed", 0, log), 1000).0.status, Status::Pass);
        let short =
            r#"{"ticks":[{"tick":2,"at_ms":2000,"n":40,"released":39,"waiting":5,"mode":"fixed","reason":"fixed"}]}"#;
        assert_eq!(adaptive_ticks(&evidence("fixed", 0, short), 39).0.status, Status::Fail);
    }

    #[test]
    fn no_log_or_no_ticks_is_skipped_unless_releases_went_unlogged() {
        let mut e = evidence("fixed", 0, GOOD);
        e.tick_log = TickLog::Missing;
        let (c, stats) = adaptive_ticks(&e, 500);
        assert_eq!(c.status, Status::Skipped);
        assert!(c.detail.contains("404"), "{}", c.detail);
        assert!(stats.is_none());
        e.tick_log = TickLog::NotAsked;
        assert!(adaptive_ticks(&e, 500).0.detail.contains("--proxy-admin"));
        // A log with no tick in the run's window.
        let outside = evidence("fixed", 0, r#"{"ticks":[{"tick":1,"at_ms":500,"n":5,"released":5,"waiting":0}]}"#);
        assert_eq!(adaptive_ticks(&outside, 500).0.status, Status::Skipped);
        let empty = evidence("adaptive", 0, r#"{"ticks":[]}"#);
        assert_eq!(adaptive_ticks(&empty, 0).0.status, Status::Skipped);
        // Adaptive, visitors released by ticks, and not one tick logged: the log is wrong.
        assert_eq!(adaptive_ticks(&empty, 12).0.status, Status::Fail);
    }

    fn releases(at: &[(i64, usize)]) -> TickStats {
        ticks::tick_stats(at.iter().flat_map(|&(t, n)| std::iter::repeat_n(t, n)), Some(Duration::from_secs(1)))
    }

    #[test]
    fn tick_limit_bounds_each_window_by_its_logged_n() {
        // Visitors saw releases of 60, 120, 180 (above release_per_tick = 40,
        // within each tick's own n): a fixed N would false-fail this run.
        let e = evidence("adaptive", 0, GOOD);
        let ok = releases(&[(2000, 60), (3000, 120), (4000, 180)]);
        let c = tick_limit(&ok, &e);
        assert_eq!(c.status, Status::Pass, "{}", c.detail);
        // 181 admitted by the tick that allowed 120: the slack of T either side
        // takes in its neighbours' n (up to 180), so only more than that is certain.
        let over = releases(&[(2000, 60), (3000, 181), (4000, 180)]);
        let c = tick_limit(&over, &e);
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(c.detail.contains("181 admissions"), "{}", c.detail);
        // Two releases in one window add up against the one tick's n.
        let doubled = releases(&[(4000, 180), (4400, 100)]);
        assert_eq!(tick_limit(&doubled, &e).status, Status::Fail);
    }

    #[test]
    fn tick_limit_falls_back_to_max_per_tick_where_the_log_is_silent() {
        let e = evidence("adaptive", 0, r#"{"ticks":[]}"#);
        assert_eq!(tick_limit(&releases(&[(50_000, 400)]), &e).status, Status::Pass);
        let c = tick_limit(&releases(&[(50_000, 401)]), &e);
        assert_eq!(c.status, Status::Fail, "{}", c.detail);
        assert!(c.detail.contains("max_per_tick = 400"), "{}", c.detail);
        assert_eq!(window_bound(&[], 0, Duration::from_secs(1), None), None);
    }
}
