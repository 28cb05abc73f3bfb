//! The line of one in-memory queue (`Line`) and the Fenwick tree that ranks
//! it in O(log n): a data structure of its own, apart from the queue's state.

use std::collections::{BTreeMap, HashMap};

use shared::visitor::VisitorId;

/// Counts of present sequence numbers, for O(log n) ranks.
#[derive(Default)]
struct Fenwick {
    /// Sequence number stored at index 1.
    base: u64,
    /// 1-based tree; `tree[0]` unused.
    tree: Vec<u32>,
}

impl Fenwick {
    fn capacity(&self) -> u64 {
        self.tree.len().saturating_sub(1) as u64
    }

    fn covers(&self, seq: u64) -> bool {
        seq >= self.base && seq - self.base < self.capacity()
    }

    fn add(&mut self, seq: u64, delta: i32) {
        let mut i = (seq - self.base + 1) as usize;
        while i < self.tree.len() {
            self.tree[i] = self.tree[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    /// Present sequence numbers `<= seq`.
    fn prefix(&self, seq: u64) -> u64 {
        if seq < self.base {
            return 0;
        }
        let mut i = ((seq - self.base + 1) as usize).min(self.tree.len().saturating_sub(1));
        let mut sum = 0u64;
        while i > 0 {
            sum += u64::from(self.tree[i]);
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

/// The line: who waits, in join order, with ranks.
#[derive(Default)]
pub(super) struct Line {
    pub(super) by_visitor: HashMap<VisitorId, u64>,
    by_seq: BTreeMap<u64, VisitorId>,
    counts: Fenwick,
}

impl Line {
    pub(super) fn len(&self) -> u64 {
        self.by_seq.len() as u64
    }

    pub(super) fn push(&mut self, visitor: VisitorId, seq: u64) {
        self.by_visitor.insert(visitor, seq);
        self.by_seq.insert(seq, visitor);
        if !self.counts.covers(seq) {
            self.rebuild(seq);
        } else {
            self.counts.add(seq, 1);
        }
    }

    /// Start the tree at the current head with room to grow; O(n log n) but
    /// only when the tail outgrows the capacity, so amortized O(log n).
    fn rebuild(&mut self, newest: u64) {
        let base = self.by_seq.keys().next().copied().unwrap_or(newest);
        let span = newest - base + 1;
        let capacity = (span * 2).max(1024) as usize;
        self.counts = Fenwick { base, tree: vec![0; capacity + 1] };
        let seqs: Vec<u64> = self.by_seq.keys().copied().collect();
        for seq in seqs {
            self.counts.add(seq, 1);
        }
    }

    pub(super) fn remove(&mut self, visitor: &VisitorId) -> bool {
        let Some(seq) = self.by_visitor.remove(visitor) else { return false };
        self.by_seq.remove(&seq);
        if self.counts.covers(seq) {
            self.counts.add(seq, -1);
        }
        true
    }

    pub(super) fn position(&self, visitor: &VisitorId) -> Option<u64> {
        self.by_visitor.get(visitor).map(|&seq| self.counts.prefix(seq))
    }

    /// Take `k` visitors drawn uniformly from the whole line (random mode):
    /// O(line length), once per tick.
    pub(super) fn take_random(&mut self, k: u64) -> Vec<VisitorId> {
        let len = self.by_seq.len();
        let k = usize::try_from(k).unwrap_or(usize::MAX).min(len);
        let mut picked = rand::seq::index::sample(&mut rand::thread_rng(), len, k).into_vec();
        picked.sort_unstable();
        let mut next = picked.into_iter().peekable();
        let chosen: Vec<VisitorId> = self
            .by_seq
            .values()
            .enumerate()
            .filter_map(|(i, v)| (next.next_if_eq(&i).is_some()).then_some(*v))
            .collect();
        for v in &chosen {
            self.remove(v);
        }
        chosen
    }

    pub(super) fn pop_front(&mut self) -> Option<VisitorId> {
        let (&seq, &visitor) = self.by_seq.iter().next()?;
        self.by_seq.remove(&seq);
        self.by_visitor.remove(&visitor);
        if self.counts.covers(seq) {
            self.counts.add(seq, -1);
        }
        Some(visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fenwick_ranks_follow_removals_and_growth() {
        let mut line = Line::default();
        let ids: Vec<VisitorId> = (0..5000).map(|_| VisitorId::random()).collect();
        for (i, v) in ids.iter().enumerate() {
            line.push(*v, i as u64 + 1);
        }
        assert_eq!(line.position(&ids[0]), Some(1));
        assert_eq!(line.position(&ids[4999]), Some(5000));
        line.remove(&ids[10]);
        assert_eq!(line.position(&ids[11]), Some(11));
        for _ in 0..100 {
            line.pop_front();
        }
        assert_eq!(line.position(&ids[200]), Some(200 - 100));
        // keep appending far beyond the original capacity
        let more: Vec<VisitorId> = (0..20000).map(|_| VisitorId::random()).collect();
        for (i, v) in more.iter().enumerate() {
            line.push(*v, 5001 + i as u64);
        }
        assert_eq!(line.position(&more[0]), Some(5000 - 101 + 1));
        assert_eq!(line.position(&ids[200]), Some(100));
    }
}
