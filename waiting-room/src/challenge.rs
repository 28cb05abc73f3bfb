//! The proof-of-work challenge a queue asks for (`challenge = "pow"`) before
//! it grants a new place: minting places costs a client CPU time, a little
//! for one visitor, a lot for a script that wants ten thousand.
//!
//! # Format (version 1)
//!
//! ```text
//! challenge = "v1.<queue>.<difficulty>.<expires_ms>.<seed>.<mac>"
//! ```
//!
//! `seed` is 16 random bytes and `mac` the HMAC-SHA256 of everything before
//! its `.`, both base64url without padding. The MAC key is derived from the
//! key directory's cookie secret, so every instance sharing the directory
//! issues and accepts the same challenges without any shared state. The
//! answer is a `nonce` of 1-64 characters from `A-Z a-z 0-9 _ -` such that
//! `SHA-256(challenge ":" nonce)` starts with at least `difficulty` zero
//! bits: a client tries 2^difficulty nonces on average; checking an answer
//! costs one HMAC and one hash. Each seed buys one place: the store keeps a
//! spent seed until its challenge has expired (see `store`).
//!
//! # Difficulty
//!
//! The difficulty rises with the pressure on the queue: `min_bits` plus
//! log2 of (new places in the last tick ÷ places released per tick), capped
//! at `max_bits`. The store measures the new places per tick, so every
//! instance sees the same figure ([`difficulty`]). Each extra bit doubles the
//! expected work, so the work to join grows in proportion to how much faster
//! the line fills than it empties, and falls back a tick after a flood ends.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shared::visitor::CookieSigner;

use crate::client::ClientKey;

/// The `algorithm` clients are told to run.
pub const ALGORITHM: &str = "sha256-leading-zero-bits";
/// Version prefix of the challenge text.
const VERSION: &str = "v1";
/// Longest challenge text an answer may carry (a real one is ~150 bytes).
pub const MAX_CHALLENGE_LEN: usize = 256;
/// Longest nonce.
pub const MAX_NONCE_LEN: usize = 64;

/// The keys of challenges and client tags, derived from the cookie secret.
#[derive(Clone)]
pub struct Keys {
    challenge: Hmac<Sha256>,
    clients: Hmac<Sha256>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("challenge::Keys(..)")
    }
}

/// A challenge as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The signed text the client hashes.
    pub text: String,
    /// Leading zero bits required.
    pub difficulty: u8,
    /// When answers stop being accepted (ms since the epoch).
    pub expires_at_ms: i64,
}

/// What a client is told about a challenge (the 428 problem's members, and
/// `challenge` of a NOT_IN_QUEUE message).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ChallengeBody {
    /// The text to hash; send it back unchanged with the nonce.
    #[schema(example = "v1.sale.14.1767225600000.q83vEjRWeJCrze8SNFZ4kA.gq0Yz3Jf0Hq4gGZ5xB5a0mbXr1r6kQ0mVbVfW4b2F2s")]
    pub challenge: String,
    /// Leading zero bits `SHA-256(challenge ":" nonce)` must start with.
    #[schema(example = 14)]
    pub difficulty: u8,
    /// Always `sha256-leading-zero-bits`.
    #[schema(example = "sha256-leading-zero-bits")]
    pub algorithm: &'static str,
    /// When answers stop being accepted (RFC 3339).
    #[schema(format = DateTime)]
    pub expires_at: String,
}

impl From<&Challenge> for ChallengeBody {
    fn from(c: &Challenge) -> Self {
        ChallengeBody {
            challenge: c.text.clone(),
            difficulty: c.difficulty,
            algorithm: ALGORITHM,
            expires_at: crate::clock::rfc3339_ms(c.expires_at_ms),
        }
    }
}

/// A client's answer: the body of `POST /wr/{q}/join`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// The challenge text, as received.
    pub challenge: String,
    /// 1-64 characters from `A-Z a-z 0-9 _ -`.
    #[schema(example = "48213")]
    pub nonce: String,
}

/// A verified answer: what the store needs to accept its seed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solved {
    /// The challenge's seed (base64url).
    pub seed: String,
    /// When the challenge expires (ms): the seed is remembered until then.
    pub expires_at_ms: i64,
}

/// Why an answer was not accepted; each says what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Not a challenge this service issues.
    Forged,
    /// Issued for another queue.
    OtherQueue,
    /// Past its expiry.
    Expired,
    /// Issued when the queue was calmer than it is now.
    TooEasy,
    /// The nonce does not give enough zero bits.
    Wrong,
}

impl Invalid {
    /// The problem detail.
    pub fn detail(self) -> &'static str {
        match self {
            Invalid::Forged => "the challenge in the answer was not issued by this waiting room",
            Invalid::OtherQueue => "the challenge in the answer was issued for another queue",
            Invalid::Expired => "the challenge in the answer has expired",
            Invalid::TooEasy => "the line got busier since that challenge was issued, so it is no longer enough",
            Invalid::Wrong => "the nonce does not solve the challenge (too few leading zero bits)",
        }
    }
}

impl Answer {
    /// Parse a join body: `None` when empty (no answer), an error saying
    /// what is wrong when it is not `{"challenge": "…", "nonce": "…"}`.
    pub fn parse(body: &[u8]) -> Result<Option<Answer>, String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let answer: Answer = serde_json::from_slice(body).map_err(|e| {
            format!(
                "the join body must be JSON {{\"challenge\": \"<as received>\", \"nonce\": \"<your answer>\"}} \
                 or empty ({e})"
            )
        })?;
        if answer.challenge.is_empty() || answer.challenge.len() > MAX_CHALLENGE_LEN {
            return Err(format!("`challenge` must be the text received (1-{MAX_CHALLENGE_LEN} bytes)"));
        }
        if answer.nonce.is_empty()
            || answer.nonce.len() > MAX_NONCE_LEN
            || !answer.nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(format!("`nonce` must be 1-{MAX_NONCE_LEN} characters from A-Z a-z 0-9 _ -"));
        }
        Ok(Some(answer))
    }
}

/// Leading zero bits of a digest.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for b in digest {
        if *b == 0 {
            bits += 8;
        } else {
            return bits + b.leading_zeros();
        }
    }
    bits
}

/// `SHA-256(challenge ":" nonce)`.
pub fn digest(challenge: &str, nonce: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(challenge.as_bytes());
    h.update(b":");
    h.update(nonce.as_bytes());
    h.finalize().into()
}

/// The difficulty for a queue that took `joined` new places in its last
/// tick and releases `per_tick` a tick: `min_bits + ceil(log2(joined /
/// per_tick))` when the line grows faster than it drains, capped at
/// `max_bits`.
pub fn difficulty(joined: u64, per_tick: u64, min_bits: u8, max_bits: u8) -> u8 {
    let per_tick = per_tick.max(1);
    let mut extra = 0u8;
    // The smallest `extra` with per_tick * 2^extra >= joined.
    while extra < 64 && u128::from(per_tick) << extra < u128::from(joined) {
        extra += 1;
    }
    min_bits.saturating_add(extra).min(max_bits.max(min_bits))
}

impl Keys {
    /// Keys derived from the key directory's cookie secret.
    pub fn new(cookies: &CookieSigner) -> Self {
        let key = |purpose: &str| {
            // HMAC takes keys of any length; 32 bytes never fail.
            Hmac::<Sha256>::new_from_slice(&cookies.derive(purpose)).unwrap_or_else(|_| unreachable!())
        };
        Keys { challenge: key("challenge v1"), clients: key("client tag v1") }
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = self.challenge.clone();
        mac.update(signed.as_bytes());
        mac
    }

    /// A fresh challenge for `queue` at `difficulty`, answerable for `ttl_ms`.
    pub fn issue(&self, queue: &str, difficulty: u8, now_ms: i64, ttl_ms: i64) -> Challenge {
        let expires_at_ms = now_ms.saturating_add(ttl_ms);
        let seed = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
        let signed = format!("{VERSION}.{queue}.{difficulty}.{expires_at_ms}.{seed}");
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&signed).finalize().into_bytes());
        Challenge { text: format!("{signed}.{mac}"), difficulty, expires_at_ms }
    }

    /// Check an answer for `queue` at `now_ms`: issued here for this queue,
    /// unexpired, at least `min_bits` hard, and solved.
    pub fn verify(&self, queue: &str, answer: &Answer, now_ms: i64, min_bits: u8) -> Result<Solved, Invalid> {
        let (signed, mac) = answer.challenge.rsplit_once('.').ok_or(Invalid::Forged)?;
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| Invalid::Forged)?;
        self.mac(signed).verify_slice(&mac).map_err(|_| Invalid::Forged)?;
        // Signed by us, so well-formed; parsed defensively all the same.
        let mut fields = signed.split('.');
        let (Some(VERSION), Some(q), Some(bits), Some(expires), Some(seed), None) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(Invalid::Forged);
        };
        let bits: u8 = bits.parse().map_err(|_| Invalid::Forged)?;
        let expires_at_ms: i64 = expires.parse().map_err(|_| Invalid::Forged)?;
        if q != queue {
            return Err(Invalid::OtherQueue);
        }
        if expires_at_ms <= now_ms {
            return Err(Invalid::Expired);
        }
        if bits < min_bits {
            return Err(Invalid::TooEasy);
        }
        if leading_zero_bits(&digest(&answer.challenge, &answer.nonce)) < u32::from(bits) {
            return Err(Invalid::Wrong);
        }
        Ok(Solved { seed: seed.to_owned(), expires_at_ms })
    }

    /// What the store records a client as: a keyed hash of its address, so
    /// the store never holds addresses and tags cannot be reversed by
    /// hashing every IPv4 address.
    pub fn client_tag(&self, client: ClientKey) -> String {
        let mut mac = self.clients.clone();
        mac.update(client.to_string().as_bytes());
        URL_SAFE_NO_PAD.encode(&mac.finalize().into_bytes()[..12])
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn keys() -> Keys {
        Keys::new(&CookieSigner::new(b"0123456789abcdef0123456789abcdef"))
    }

    fn solve(c: &Challenge) -> String {
        (0u64..)
            .map(|n| n.to_string())
            .find(|n| leading_zero_bits(&digest(&c.text, n)) >= u32::from(c.difficulty))
            .unwrap_or_default()
    }

    fn answer(c: &Challenge, nonce: &str) -> Answer {
        Answer { challenge: c.text.clone(), nonce: nonce.to_owned() }
    }

    #[test]
    fn a_solved_challenge_verifies_once_per_seed_and_fails_every_other_way() {
        let k = keys();
        let c = k.issue("sale", 8, 1_000, 60_000);
        assert!(c.text.starts_with("v1.sale.8.61000."), "{}", c.text);
        let nonce = solve(&c);
        let solved = k.verify("sale", &answer(&c, &nonce), 2_000, 8).unwrap();
        assert_eq!(solved.expires_at_ms, 61_000);
        assert_eq!(k.issue("sale", 8, 1_000, 60_000).text.len(), c.text.len());
        assert_ne!(k.issue("sale", 8, 1_000, 60_000).text, c.text, "every challenge has its own seed");
        assert_eq!(k.verify("other", &answer(&c, &nonce), 2_000, 8), Err(Invalid::OtherQueue));
        assert_eq!(k.verify("sale", &answer(&c, &nonce), 61_000, 8), Err(Invalid::Expired));
        assert_eq!(k.verify("sale", &answer(&c, &nonce), 2_000, 9), Err(Invalid::TooEasy));
        let wrong = (0u64..).map(|n| n.to_string()).find(|n| leading_zero_bits(&digest(&c.text, n)) < 8).unwrap();
        assert_eq!(k.verify("sale", &answer(&c, &wrong), 2_000, 8), Err(Invalid::Wrong));
        // Another deployment's key, or an edited difficulty, is a forgery.
        let foreign = Keys::new(&CookieSigner::new(b"another-secret-another-secret")).issue("sale", 8, 1_000, 60_000);
        assert_eq!(k.verify("sale", &answer(&foreign, &solve(&foreign)), 2_000, 8), Err(Invalid::Forged));
        let easier = Challenge { text: c.text.replacen(".8.", ".1.", 1), ..c.clone() };
        assert_eq!(k.verify("sale", &answer(&easier, &solve(&easier)), 2_000, 1), Err(Invalid::Forged));
    }

    #[test]
    fn difficulty_rises_by_a_bit_per_doubling_of_pressure_within_bounds() {
        assert_eq!(difficulty(0, 100, 12, 20), 12);
        assert_eq!(difficulty(100, 100, 12, 20), 12);
        assert_eq!(difficulty(101, 100, 12, 20), 13);
        assert_eq!(difficulty(200, 100, 12, 20), 13);
        assert_eq!(difficulty(10_000, 100, 12, 20), 19);
        assert_eq!(difficulty(1_000_000, 100, 12, 20), 20);
        assert_eq!(difficulty(u64::MAX, 0, 12, 20), 20);
        assert_eq!(difficulty(5, 0, 3, 3), 3);
    }

    #[test]
    fn zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zero_bits(&[0xff]), 0);
        assert_eq!(leading_zero_bits(&[0x00, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0x00, 0x00, 0x80]), 16);
        assert_eq!(leading_zero_bits(&[0x00; 4]), 32);
    }

    #[test]
    fn client_tags_are_stable_short_and_keyed() {
        let ip = |s: &str| ClientKey::from(s.parse::<std::net::IpAddr>().unwrap());
        let k = keys();
        assert_eq!(k.client_tag(ip("192.0.2.1")), k.client_tag(ip("192.0.2.1")));
        assert_ne!(k.client_tag(ip("192.0.2.1")), k.client_tag(ip("192.0.2.2")));
        assert_eq!(k.client_tag(ip("2001:db8::1")), k.client_tag(ip("2001:db8::2")), "one /64, one client");
        assert_eq!(k.client_tag(ip("192.0.2.1")).len(), 16);
        let other = Keys::new(&CookieSigner::new(b"another-secret-another-secret"));
        assert_ne!(k.client_tag(ip("192.0.2.1")), other.client_tag(ip("192.0.2.1")));
    }

    #[test]
    fn join_bodies_parse_or_say_what_is_wrong() {
        assert_eq!(Answer::parse(b""), Ok(None));
        assert_eq!(Answer::parse(b" \r\n"), Ok(None));
        let a = Answer::parse(br#"{"challenge":"v1.x","nonce":"42"}"#).unwrap().unwrap();
        assert_eq!((a.challenge.as_str(), a.nonce.as_str()), ("v1.x", "42"));
        for bad in [
            &br#"{"challenge":"v1.x"}"#[..],
            br#"{"challenge":"v1.x","nonce":"4 2"}"#,
            br#"{"challenge":"v1.x","nonce":""}"#,
            br#"{"challenge":"","nonce":"1"}"#,
            br#"{"challenge":"v1.x","nonce":"1","extra":1}"#,
            br#"{"challenge":"v1.x","nonce":42}"#,
            b"challenge=v1.x&nonce=1",
            b"\xff\xfe",
        ] {
            let e = Answer::parse(bad).unwrap_err();
            assert!(e.contains("nonce") || e.contains("challenge"), "{e}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_body_parses_or_is_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Answer::parse(&body);
        }

        #[test]
        fn any_json_strings_parse_only_within_their_charsets(challenge in ".{0,300}", nonce in ".{0,80}") {
            let body = serde_json::json!({"challenge": challenge, "nonce": nonce}).to_string();
            let nonce_ok = (1..=MAX_NONCE_LEN).contains(&nonce.len())
                && nonce.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            let challenge_ok = (1..=MAX_CHALLENGE_LEN).contains(&challenge.len());
            match Answer::parse(body.as_bytes()) {
                Ok(Some(a)) => prop_assert!(nonce_ok && challenge_ok && a.challenge == challenge && a.nonce == nonce),
                Ok(None) => prop_assert!(false, "a JSON object is never an empty answer"),
                Err(_) => prop_assert!(!(nonce_ok && challenge_ok)),
            }
        }

        #[test]
        fn any_edit_of_a_challenge_is_refused(at in 0usize..200, byte in any::<u8>(), nonce in "[0-9]{1,6}") {
            let k = keys();
            let c = k.issue("sale", 1, 1_000, 60_000);
            let mut text = c.text.clone().into_bytes();
            let i = at % text.len();
            prop_assume!(text[i] != byte);
            text[i] = byte;
            let edited = Answer { challenge: String::from_utf8_lossy(&text).into_owned(), nonce };
            prop_assert!(k.verify("sale", &edited, 2_000, 0).is_err());
        }
    }
}
