//! Admission order against join order, from what clients saw.
//!
//! The join order is only known for sure between visitors whose joins did not
//! overlap: when A's join answer arrived before B's join request left, the
//! queue store (one atomic step per join) gave A the earlier sequence
//! number. FIFO then requires A's `admitted_at` to be no later than B's.
//! Pairs whose joins overlapped, or who were admitted by the same tick (same
//! `admitted_at`), are not ordered and do not count.
//!
//! Over the ordered pairs, C are concordant and D discordant, and the
//! reported tau is (C − D) / (C + D): Kendall's tau restricted to pairs
//! ordered on both sides (Goodman–Kruskal's gamma). FIFO gives exactly 1.0;
//! any D > 0 is a visitor admitted before someone who provably joined
//! earlier. Only visitors whose admission was seen take part (see the
//! `fifo_order` check for those stopped in line). Counting runs in
//! O(n log n) with a Fenwick tree over admission ranks.

use serde::Serialize;

/// A visitor in the order audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Joined {
    /// Arrival number (for reporting).
    pub index: usize,
    /// Join request sent (client ns).
    pub sent_ns: u64,
    /// Join answer received (client ns).
    pub received_ns: u64,
    /// `admitted_at` (server ms).
    pub admitted_ms: i64,
}

impl Joined {
    /// The visitors among `records` whose join and admission were both seen.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a crate::record::VisitorRecord>) -> Vec<Joined> {
        records
            .into_iter()
            .filter_map(|r| {
                let j = r.join?;
                Some(Joined {
                    index: r.index,
                    sent_ns: j.sent_ns,
                    received_ns: j.received_ns,
                    admitted_ms: r.admitted_at_ms?,
                })
            })
            .collect()
    }
}

/// The order audit's numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OrderStats {
    /// Visitors compared.
    pub visitors: usize,
    /// Pairs ordered by join and by admission, in the same direction.
    pub concordant: u64,
    /// Pairs ordered by join and by admission, in opposite directions.
    pub discordant: u64,
    /// (C − D) / (C + D); `None` when no pair is ordered on both sides.
    pub tau: Option<f64>,
    /// One discordant pair (earlier joiner, later joiner), by arrival number.
    pub example: Option<(usize, usize)>,
}

/// Fenwick tree counting inserted ranks.
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn add(&mut self, rank: usize) {
        let mut i = rank + 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// How many inserted ranks are `< rank`.
    fn below(&self, rank: usize) -> u64 {
        let (mut i, mut sum) = (rank, 0);
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// Count concordant and discordant pairs.
pub fn order_stats(visitors: &[Joined]) -> OrderStats {
    let mut ranks: Vec<i64> = visitors.iter().map(|v| v.admitted_ms).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let rank = |ms: i64| ranks.partition_point(|&r| r < ms);

    let mut by_sent: Vec<&Joined> = visitors.iter().collect();
    by_sent.sort_by_key(|v| v.sent_ns);
    let mut by_received: Vec<&Joined> = visitors.iter().collect();
    by_received.sort_by_key(|v| v.received_ns);

    let mut tree = Fenwick(vec![0; ranks.len() + 1]);
    let (mut inserted, mut next) = (0u64, 0usize);
    let (mut concordant, mut discordant) = (0u64, 0u64);
    let mut latest: Option<&Joined> = None;
    let mut example = None;
    for b in by_sent {
        // Everyone whose join was answered before b's join was sent joined earlier.
        while next < by_received.len() && by_received[next].received_ns < b.sent_ns {
            let a = by_received[next];
            tree.add(rank(a.admitted_ms));
            inserted += 1;
            if latest.is_none_or(|l| a.admitted_ms > l.admitted_ms) {
                latest = Some(a);
            }
            next += 1;
        }
        let r = rank(b.admitted_ms);
        let before = tree.below(r);
        let not_after = tree.below(r + 1);
        concordant += before;
        discordant += inserted - not_after;
        if example.is_none()
            && let Some(l) = latest
            && l.admitted_ms > b.admitted_ms
        {
            example = Some((l.index, b.index));
        }
    }
    let ordered = concordant + discordant;
    OrderStats {
        visitors: visitors.len(),
        concordant,
        discordant,
        tau: (ordered > 0).then(|| (concordant as f64 - discordant as f64) / ordered as f64),
        example,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(index: usize, sent: u64, received: u64, admitted: i64) -> Joined {
        Joined { index, sent_ns: sent, received_ns: received, admitted_ms: admitted }
    }

    /// The same counts the slow way.
    fn brute(vs: &[Joined]) -> (u64, u64) {
        let (mut c, mut d) = (0, 0);
        for a in vs {
            for b in vs {
                if a.received_ns < b.sent_ns {
                    if a.admitted_ms < b.admitted_ms {
                        c += 1;
                    } else if a.admitted_ms > b.admitted_ms {
                        d += 1;
                    }
                }
            }
        }
        (c, d)
    }

    #[test]
    fn fifo_admissions_give_tau_one() {
        // 30 sequential joins, released 10 per tick.
        let vs: Vec<Joined> = (0..30).map(|i| v(i, i as u64 * 10, i as u64 * 10 + 5, 1000 * (i as i64 / 10))).collect();
        let s = order_stats(&vs);
        assert_eq!(s.discordant, 0);
        assert_eq!(s.tau, Some(1.0));
        assert_eq!(s.concordant, brute(&vs).0);
        assert_eq!(s.example, None);
    }

    #[test]
    fn a_visitor_admitted_before_an_earlier_joiner_is_a_discordant_pair() {
        let mut vs: Vec<Joined> = (0..10).map(|i| v(i, i as u64 * 10, i as u64 * 10 + 5, 1000 * i as i64)).collect();
        vs[7].admitted_ms = 0; // jumped the line
        let s = order_stats(&vs);
        assert_eq!((s.concordant, s.discordant), brute(&vs));
        assert_eq!(s.discordant, 6);
        assert!(s.tau.is_some_and(|t| t < 1.0));
        assert_eq!(s.example.map(|(_, later)| later), Some(7));
    }

    #[test]
    fn overlapping_joins_and_same_tick_admissions_are_not_ordered() {
        // Two joins in flight at once, admitted in either order: no evidence either way.
        let vs = vec![v(0, 0, 100, 2000), v(1, 50, 150, 1000), v(2, 200, 210, i64::MAX)];
        let s = order_stats(&vs);
        assert_eq!(s.discordant, 0);
        assert_eq!(s.concordant, 2);
    }

    #[test]
    fn the_fast_count_matches_the_quadratic_one_on_random_data() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let vs: Vec<Joined> = (0..300)
            .map(|i| {
                let sent = rng.gen_range(0..10_000u64);
                v(i, sent, sent + rng.gen_range(0..300), rng.gen_range(0..20) * 1000)
            })
            .collect();
        let s = order_stats(&vs);
        assert_eq!((s.concordant, s.discordant), brute(&vs));
    }
}
