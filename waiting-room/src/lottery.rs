//! The pre-queue lottery: a draw anyone can check.
//!
//! A queue with a schedule and a pre-queue (`prequeue_from` .. `opens_at`,
//! see `schedule.rs`) orders the visitors who joined before the opening by
//! lottery, not by who clicked first. Arriving early then buys nothing,
//! and a script that joins at the first millisecond has no edge over a
//! person.
//!
//! # The rule (version `sha256-commit/hmac-sha256-order/v1`)
//!
//! 1. Before the pre-queue opens, the first instance to get there stores a
//!    random 32-byte **seed** (kept secret) and every instance publishes its
//!    **commitment** `SHA-256(seed)` (hex) at `GET /wr/{q}/lottery`. The
//!    seed cannot change afterwards without the commitment showing it.
//! 2. Every visitor has a **public id** per queue: the first 8 bytes of
//!    `SHA-256("wr-lottery" 0x00 queue 0x00 visitor-id)` in hex. It names
//!    the visitor in the published list without revealing the visitor id (a
//!    bearer secret); each visitor sees their own on the queue page.
//! 3. At `opens_at` the entrants (everyone who joined the pre-queue) are
//!    sorted by `HMAC-SHA256(key = seed, message = public id)` (hex,
//!    ascending; the public id breaks a tie), and the line takes that order.
//!    The draw happens once, atomically in the store, whichever instance
//!    gets there first.
//! 4. The seed and the ordered list of public ids are then published next
//!    to the commitment. Anyone can check that the seed matches the
//!    commitment, that the list is in the rule's order, and that their own
//!    public id is in it: `waiting-room verify-lottery`.
//!
//! Why a commitment: the order depends on the seed, so an operator who could
//! pick the seed after seeing the entrants could pick the winners. Published
//! before anyone joins, the commitment pins the seed; visitors cannot
//! predict the order either, since the seed stays secret until the draw.
//! What no published list can prove is that nobody was left out or added:
//! each visitor checks their own public id, and the count is public.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::visitor::VisitorId;

/// The rule's name, published with every draw.
pub const ALGORITHM: &str = "sha256-commit/hmac-sha256-order/v1";

/// A fresh secret seed (hex of 32 random bytes).
pub fn new_seed() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The seed's bytes; a seed that is not hex (never one this module made)
/// is taken as its text, so a published one can still be checked.
fn seed_bytes(seed: &str) -> Vec<u8> {
    hex::decode(seed).unwrap_or_else(|_| seed.as_bytes().to_vec())
}

/// `SHA-256(seed)`, hex.
pub fn commitment(seed: &str) -> String {
    hex::encode(Sha256::digest(seed_bytes(seed)))
}

/// The visitor's public id in `queue` (see the module docs).
pub fn public_id(queue: &str, visitor: VisitorId) -> String {
    let mut h = Sha256::new();
    h.update(b"wr-lottery\0");
    h.update(queue.as_bytes());
    h.update(b"\0");
    h.update(visitor.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The draw key of a public id: `HMAC-SHA256(seed, public id)`, hex.
pub fn draw_key(seed: &[u8], public_id: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed).expect("HMAC takes a key of any length");
    mac.update(public_id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Sort `items` (anything with a public id) into the rule's order.
pub fn order_by<T>(seed: &str, items: Vec<T>, id: impl Fn(&T) -> &str) -> Vec<T> {
    let key = seed_bytes(seed);
    let mut keyed: Vec<(String, T)> = items.into_iter().map(|t| (draw_key(&key, id(&t)), t)).collect();
    keyed.sort_by(|(a, ta), (b, tb)| a.cmp(b).then_with(|| id(ta).cmp(id(tb))));
    keyed.into_iter().map(|(_, t)| t).collect()
}

/// The entrants of `queue`, in drawn order: (public id, visitor).
pub fn draw(queue: &str, seed: &str, entrants: &[VisitorId]) -> Vec<(String, VisitorId)> {
    let items = entrants.iter().map(|v| (public_id(queue, *v), *v)).collect();
    order_by(seed, items, |(p, _)| p.as_str())
}

/// What `GET /wr/{q}/lottery` publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Published {
    /// Queue id.
    pub queue: String,
    /// The rule ([`ALGORITHM`]).
    pub algorithm: String,
    /// `committed` until the draw, then `drawn`.
    pub state: String,
    /// `SHA-256(seed)`, hex.
    pub commitment: String,
    /// When the commitment was made (RFC 3339): before the pre-queue opened,
    /// unless the store lost it.
    pub committed_at: String,
    /// When the pre-queue opens and when the draw is due (RFC 3339).
    pub prequeue_from: String,
    /// When the sale opens: the draw (RFC 3339).
    pub opens_at: String,
    /// The seed, hex (after the draw).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub seed: Option<String>,
    /// When the draw happened (RFC 3339; after the draw).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub drawn_at: Option<String>,
    /// The entrants' public ids in drawn order: the first was placed first
    /// (after the draw).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entrants: Option<Vec<String>>,
}

/// Why a published draw does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    /// Not drawn yet: nothing to check but the commitment's presence.
    #[error("the lottery has not been drawn yet (commitment {0})")]
    NotDrawn(String),
    /// Another rule.
    #[error("unknown algorithm {0:?}; this tool checks {ALGORITHM:?}")]
    Algorithm(String),
    /// The seed does not hash to the commitment.
    #[error("the seed does not match the commitment: SHA-256(seed) = {computed}, commitment = {published}")]
    Commitment {
        /// What the seed hashes to.
        computed: String,
        /// What was published.
        published: String,
    },
    /// The list is not in the rule's order.
    #[error(
        "the entrants are not in the lottery's order: place {place} is {published:?}, the rule puts {expected:?} there"
    )]
    Order {
        /// 1-based place of the first difference.
        place: usize,
        /// Who is there.
        published: String,
        /// Who the rule puts there.
        expected: String,
    },
    /// A public id appears twice.
    #[error("public id {0:?} appears more than once")]
    Duplicate(String),
}

/// Check a published draw: the seed against the commitment, the list
/// against the rule. Returns the number of entrants.
pub fn verify(p: &Published) -> Result<usize, Mismatch> {
    if p.algorithm != ALGORITHM {
        return Err(Mismatch::Algorithm(p.algorithm.clone()));
    }
    let (Some(seed), Some(entrants)) = (&p.seed, &p.entrants) else {
        return Err(Mismatch::NotDrawn(p.commitment.clone()));
    };
    let computed = commitment(seed);
    if !computed.eq_ignore_ascii_case(&p.commitment) {
        return Err(Mismatch::Commitment { computed, published: p.commitment.clone() });
    }
    let mut seen = std::collections::HashSet::with_capacity(entrants.len());
    if let Some(dup) = entrants.iter().find(|e| !seen.insert(e.as_str())) {
        return Err(Mismatch::Duplicate(dup.clone()));
    }
    let expected = order_by(seed, entrants.iter().map(String::as_str).collect(), |s| s);
    if let Some(place) = entrants.iter().zip(&expected).position(|(a, b)| a != b) {
        return Err(Mismatch::Order {
            place: place + 1,
            published: entrants[place].clone(),
            expected: expected[place].to_owned(),
        });
    }
    Ok(entrants.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn published(seed: &str, entrants: Vec<String>) -> Published {
        Published {
            queue: "q".into(),
            algorithm: ALGORITHM.into(),
            state: "drawn".into(),
            commitment: commitment(seed),
            committed_at: String::new(),
            prequeue_from: String::new(),
            opens_at: String::new(),
            seed: Some(seed.into()),
            drawn_at: None,
            entrants: Some(entrants),
        }
    }

    #[test]
    fn the_rule_is_the_documented_one() {
        // Computed by hand from the module docs, so a change of the rule
        // (which would break every published draw's check) fails here.
        let seed = "00".repeat(32);
        assert_eq!(commitment(&seed), "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925");
        let v = VisitorId::from_bytes([7; 16]);
        let id = public_id("q", v);
        assert_eq!(id.len(), 16);
        assert_ne!(id, public_id("other", v), "public ids differ per queue");
        let key = draw_key(&[0; 32], "abc");
        assert_eq!(key.len(), 64);
    }

    #[test]
    fn a_draw_verifies_and_any_tampering_does_not() {
        let seed = new_seed();
        let visitors: Vec<VisitorId> = (0..200).map(|_| VisitorId::random()).collect();
        let drawn = draw("q", &seed, &visitors);
        let ids: Vec<String> = drawn.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(verify(&published(&seed, ids.clone())), Ok(200));
        // Not the join order (200 entrants in join order by chance: 1/200!).
        let joined: Vec<String> = visitors.iter().map(|v| public_id("q", *v)).collect();
        assert_ne!(ids, joined);
        // Two swapped places.
        let mut swapped = ids.clone();
        swapped.swap(3, 4);
        assert!(matches!(verify(&published(&seed, swapped)), Err(Mismatch::Order { place: 4, .. })));
        // Another seed than committed.
        let mut other = published(&seed, ids.clone());
        other.seed = Some(new_seed());
        assert!(matches!(verify(&other), Err(Mismatch::Commitment { .. })));
        // A duplicate.
        let mut dup = ids.clone();
        dup[5] = dup[6].clone();
        assert!(matches!(verify(&published(&seed, dup)), Err(Mismatch::Duplicate(_))));
        // Not drawn.
        let mut early = published(&seed, ids);
        early.seed = None;
        assert!(matches!(verify(&early), Err(Mismatch::NotDrawn(_))));
    }

    proptest! {
        /// Whatever the seed and the ids, the rule's own order verifies, and
        /// so does nothing else (a permutation that moves an entry).
        #[test]
        fn only_the_rules_order_verifies(
            seed in "[0-9a-f]{64}|[ -~]{0,40}",
            ids in proptest::collection::hash_set("[0-9a-f]{16}", 2..40),
            rot in 1usize..39,
        ) {
            let ordered = order_by(&seed, ids.into_iter().collect::<Vec<_>>(), |s| s.as_str());
            prop_assert_eq!(verify(&published(&seed, ordered.clone())), Ok(ordered.len()));
            let mut moved = ordered.clone();
            let r = rot % moved.len();
            moved.rotate_left(r.max(1));
            prop_assert!(verify(&published(&seed, moved)).is_err());
        }

        /// The published document is a parser input of `verify-lottery`: any
        /// JSON text is an answer or an error, never a panic.
        #[test]
        fn any_document_parses_or_fails_cleanly(text in "\\PC{0,200}") {
            if let Ok(p) = serde_json::from_str::<Published>(&text) {
                let _ = verify(&p);
            }
        }
    }
}
