//! A queue's sale schedule: when its line opens, when a pre-queue gathers
//! visitors before that, and when the sale closes.
//!
//! ```text
//!            prequeue_from          opens_at                 closes_at
//! ──────────────────┼──────────────────┼─────────────────────────┼──────────
//!   Scheduled       │   PreQueue       │  Open                   │  Closed
//!   countdown,      │   join; no place │  the pre-queue in lottery│  no new places;
//!   nobody joins    │   number yet     │  order, then FIFO        │  the line is served
//! ```
//!
//! - Without `opens_at` a queue is always open (until `closes_at`, if set).
//! - Without `prequeue_from`, visitors before `opens_at` see a countdown and
//!   join from `opens_at` in arrival order (no lottery).
//! - With it, visitors who join from `prequeue_from` are entrants of the
//!   lottery (`lottery.rs`): no free entry, no release, no abandonment
//!   (nobody is asked to keep a tab open for an hour before a sale), and at
//!   `opens_at` the draw orders them; the phase stays `PreQueue` on an
//!   instance until it knows the draw happened (one tick, about a second).
//! - After `closes_at` nobody new joins; whoever is already in line or
//!   admitted keeps their place and session (the doors close, the people
//!   inside are served).
//!
//! Times are wall-clock: each instance decides the phase on its own clock
//! for what it shows; the store decides who is an entrant by its own clock
//! (the join script compares with `opens_at`), so instances whose clocks
//! differ by a little disagree at most about the text on a page for that
//! little, never about the order.

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time from the config: RFC 3339 text, kept as ms since the
/// Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct At(pub i64);

impl At {
    /// Parse RFC 3339 (`2026-12-24T10:00:00Z`, an offset, fractions).
    pub fn parse(text: &str) -> Result<At, String> {
        let t = OffsetDateTime::parse(text.trim(), &Rfc3339)
            .map_err(|_| format!("expected an RFC 3339 time like \"2026-12-24T10:00:00Z\", got {text:?}"))?;
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map(At).map_err(|_| format!("{text:?} is out of range"))
    }

    /// RFC 3339 text (UTC).
    pub fn rfc3339(self) -> String {
        crate::clock::rfc3339_ms(self.0)
    }
}

impl serde::Serialize for At {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for At {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        At::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a queue's schedule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before anyone may join: a countdown.
    Scheduled,
    /// Entrants gather for the lottery.
    PreQueue,
    /// The line runs.
    Open,
    /// No new places.
    Closed,
}

impl Phase {
    /// Label for the status message, the admin API and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Scheduled => "scheduled",
            Phase::PreQueue => "prequeue",
            Phase::Open => "open",
            Phase::Closed => "closed",
        }
    }
}

/// A queue's schedule (all optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Schedule {
    /// Visitors may join the pre-queue from here (needs `opens_at`).
    pub prequeue_from: Option<At>,
    /// The line opens (and the lottery is drawn).
    pub opens_at: Option<At>,
    /// No new places from here.
    pub closes_at: Option<At>,
}

impl Schedule {
    /// Check the times against each other; the error names the key (under
    /// `at`) that is wrong.
    pub fn validate(&self, at: &str) -> Result<(), shared::config::ConfigError> {
        use shared::config::ConfigError;
        if let Some(p) = self.prequeue_from {
            match self.opens_at {
                None => {
                    return Err(ConfigError::new(
                        format!("{at}.prequeue_from"),
                        "a pre-queue needs opens_at: the time its lottery is drawn",
                    ));
                }
                Some(o) if p >= o => {
                    return Err(ConfigError::new(
                        format!("{at}.prequeue_from"),
                        format!("expected a time before opens_at ({})", o.rfc3339()),
                    ));
                }
                _ => {}
            }
        }
        if let (Some(c), Some(o)) = (self.closes_at, self.opens_at)
            && c <= o
        {
            return Err(ConfigError::new(
                format!("{at}.closes_at"),
                format!("expected a time after opens_at ({})", o.rfc3339()),
            ));
        }
        Ok(())
    }

    /// Whether the queue has a pre-queue and so a lottery.
    pub fn has_lottery(&self) -> bool {
        self.prequeue_from.is_some() && self.opens_at.is_some()
    }

    /// The phase at `now_ms`, given whether this instance knows the lottery
    /// was drawn (a lottery queue stays in its pre-queue until then).
    pub fn phase(&self, now_ms: i64, drawn: bool) -> Phase {
        if self.closes_at.is_some_and(|c| now_ms >= c.0) {
            return Phase::Closed;
        }
        match (self.prequeue_from, self.opens_at) {
            (Some(p), Some(_)) if now_ms < p.0 => Phase::Scheduled,
            (Some(_), Some(o)) if now_ms < o.0 || !drawn => Phase::PreQueue,
            (None, Some(o)) if now_ms < o.0 => Phase::Scheduled,
            _ => Phase::Open,
        }
    }

    /// When the next phase begins after `now_ms` (for countdowns and for
    /// how long a client should wait before asking again).
    pub fn next_change(&self, now_ms: i64) -> Option<At> {
        [self.prequeue_from, self.opens_at, self.closes_at].into_iter().flatten().find(|t| t.0 > now_ms)
    }

    /// The ms until which joins are entrants of the lottery (0: none).
    pub fn entrants_until_ms(&self) -> i64 {
        if self.has_lottery() { self.opens_at.map_or(0, |o| o.0) } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<At> {
        Some(At::parse(s).expect("test times parse"))
    }

    #[test]
    fn phases_follow_the_times() {
        let s = Schedule {
            prequeue_from: at("2026-12-24T09:00:00Z"),
            opens_at: at("2026-12-24T10:00:00Z"),
            closes_at: at("2026-12-24T12:00:00+01:00"),
        };
        let t = |x: &str| at(x).map_or(0, |a| a.0);
        assert_eq!(s.phase(t("2026-12-24T08:59:59Z"), false), Phase::Scheduled);
        assert_eq!(s.phase(t("2026-12-24T09:00:00Z"), false), Phase::PreQueue);
        // Opening time passed but the draw not known here yet: still the pre-queue.
        assert_eq!(s.phase(t("2026-12-24T10:00:01Z"), false), Phase::PreQueue);
        assert_eq!(s.phase(t("2026-12-24T10:00:01Z"), true), Phase::Open);
        assert_eq!(s.phase(t("2026-12-24T11:00:00Z"), true), Phase::Closed, "12:00+01:00 is 11:00Z");
        assert_eq!(s.next_change(t("2026-12-24T09:30:00Z")), s.opens_at);
        assert_eq!(s.entrants_until_ms(), t("2026-12-24T10:00:00Z"));
        let plain = Schedule { opens_at: s.opens_at, ..Schedule::default() };
        assert_eq!(plain.phase(t("2026-12-24T09:30:00Z"), false), Phase::Scheduled);
        assert_eq!(plain.phase(t("2026-12-24T10:00:00Z"), false), Phase::Open, "no lottery to wait for");
        assert_eq!(plain.entrants_until_ms(), 0);
        assert_eq!(Schedule::default().phase(0, false), Phase::Open);
    }

    #[test]
    fn times_are_checked_against_each_other() {
        let bad = Schedule { prequeue_from: at("2026-12-24T10:00:00Z"), ..Schedule::default() };
        assert_eq!(bad.validate("queues[0]").map_err(|e| e.key), Err("queues[0].prequeue_from".to_owned()));
        let late = Schedule {
            prequeue_from: at("2026-12-24T10:00:00Z"),
            opens_at: at("2026-12-24T10:00:00Z"),
            ..Schedule::default()
        };
        assert!(late.validate("q").is_err());
        let closes = Schedule {
            opens_at: at("2026-12-24T10:00:00Z"),
            closes_at: at("2026-12-24T09:00:00Z"),
            ..Schedule::default()
        };
        assert_eq!(closes.validate("q").map_err(|e| e.key), Err("q.closes_at".to_owned()));
        assert!(At::parse("tomorrow").is_err());
        assert!(At::parse("2026-12-24 10:00").is_err());
    }
}
