//! Admissions per tick, from the `admitted_at` every client observed.
//!
//! Everyone released by one tick shares that tick's `admitted_at` (the queue
//! store's clock at the release), so grouping the observed times gives the
//! releases and their sizes. The invariant is "any window of length T holds
//! at most N admissions"; it is checked directly with a sliding window over
//! the releases, which also catches two releases closer than T. Visitors let
//! in at once by free entry are not tick releases and are left out. The
//! counts are lower bounds (visitors outside the harness, and abandoners who
//! left before their release, are not seen), so a violation is certain.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// One observed release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Release {
    /// Its `admitted_at` (epoch ms).
    pub at_ms: i64,
    /// Visitors the harness saw admitted by it.
    pub admitted: u64,
}

/// The tick audit's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TickStats {
    /// Every release, in time order.
    pub releases: Vec<Release>,
    /// Largest release.
    pub max_per_release: u64,
    /// Mean release size.
    pub mean_per_release: f64,
    /// Smallest gap between two releases (ms).
    pub min_gap_ms: Option<i64>,
    /// Largest sum of admissions inside any window of length T (when T is known).
    pub max_in_window: Option<u64>,
    /// The window holding it starts at this release.
    pub worst_window_start_ms: Option<i64>,
}

/// Group admission times into releases and find the fullest window of length `tick`.
pub fn tick_stats(admitted_ms: impl IntoIterator<Item = i64>, tick: Option<Duration>) -> TickStats {
    let mut groups: BTreeMap<i64, u64> = BTreeMap::new();
    for t in admitted_ms {
        *groups.entry(t).or_default() += 1;
    }
    let releases: Vec<Release> = groups.into_iter().map(|(at_ms, admitted)| Release { at_ms, admitted }).collect();
    let max_per_release = releases.iter().map(|r| r.admitted).max().unwrap_or(0);
    let total: u64 = releases.iter().map(|r| r.admitted).sum();
    let mean_per_release = if releases.is_empty() { 0.0 } else { total as f64 / releases.len() as f64 };
    let min_gap_ms = releases.windows(2).map(|w| w[1].at_ms - w[0].at_ms).min();
    let (mut max_in_window, mut worst_window_start_ms) = (None, None);
    if let Some(t) = tick {
        let mut best = (0u64, None);
        for (start, sum) in windows(&releases, t) {
            if sum > best.0 {
                best = (sum, Some(start));
            }
        }
        max_in_window = Some(best.0);
        worst_window_start_ms = best.1;
    }
    TickStats { releases, max_per_release, mean_per_release, min_gap_ms, max_in_window, worst_window_start_ms }
}

/// The windows [start, start + `tick`) that start at each release (in time
/// order), with the admissions inside each: (start ms, admissions). The
/// fullest window of any start begins at a release, so these are all that
/// need checking.
pub fn windows(releases: &[Release], tick: Duration) -> Vec<(i64, u64)> {
    let t = i64::try_from(tick.as_millis()).unwrap_or(i64::MAX).max(1);
    let (mut end, mut sum) = (0usize, 0u64);
    let mut out = Vec::with_capacity(releases.len());
    for (start, r) in releases.iter().enumerate() {
        while end < releases.len() && releases[end].at_ms < r.at_ms.saturating_add(t) {
            sum += releases[end].admitted;
            end += 1;
        }
        out.push((r.at_ms, sum));
        sum -= releases[start].admitted;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(releases: &[(i64, usize)]) -> Vec<i64> {
        releases.iter().flat_map(|&(at, n)| std::iter::repeat_n(at, n)).collect()
    }

    #[test]
    fn releases_a_tick_apart_hold_at_most_their_own_size_in_a_window() {
        let s = tick_stats(times(&[(1000, 10), (2000, 10), (3000, 4)]), Some(Duration::from_secs(1)));
        assert_eq!(s.releases.len(), 3);
        assert_eq!(s.max_per_release, 10);
        assert_eq!(s.min_gap_ms, Some(1000));
        assert_eq!(s.max_in_window, Some(10));
    }

    #[test]
    fn two_releases_closer_than_a_tick_add_up_in_one_window() {
        let s = tick_stats(times(&[(1000, 10), (1600, 10), (3000, 4)]), Some(Duration::from_secs(1)));
        assert_eq!(s.max_in_window, Some(20));
        assert_eq!(s.worst_window_start_ms, Some(1000));
        assert_eq!(s.min_gap_ms, Some(600));
    }

    #[test]
    fn every_window_starting_at_a_release_is_listed_with_its_sum() {
        let s = tick_stats(times(&[(1000, 10), (1600, 7), (3000, 4)]), None);
        assert_eq!(windows(&s.releases, Duration::from_secs(1)), vec![(1000, 17), (1600, 7), (3000, 4)]);
        assert_eq!(windows(&[], Duration::from_secs(1)), Vec::new());
    }

    #[test]
    fn without_a_tick_only_release_sizes_are_known() {
        let s = tick_stats(times(&[(5, 3)]), None);
        assert_eq!((s.max_per_release, s.max_in_window), (3, None));
        assert_eq!(tick_stats(Vec::new(), None).mean_per_release, 0.0);
    }
}
