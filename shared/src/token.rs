//! The entry token: an EdDSA (Ed25519) JWT the waiting room signs when it admits
//! a visitor and that anybody holding the public key can verify.
//!
//! Claims: `sub` = visitor id, `aud` = queue id, `iat`, `exp` = admission + session,
//! `jti`. The header carries `kid` so several public keys can be trusted at once
//! while keys rotate.

use std::collections::HashMap;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// Error signing or parsing a key (from the JWT library).
pub type SignError = jsonwebtoken::errors::Error;

/// Claims of an entry token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryClaims {
    /// The visitor id (32 hex characters).
    pub sub: String,
    /// The queue the token admits to.
    pub aud: String,
    /// Admission time, seconds since the Unix epoch.
    pub iat: i64,
    /// End of the session, seconds since the Unix epoch.
    pub exp: i64,
    /// Token id; the same admission always yields the same id.
    pub jti: String,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT, or a header/claims this format does not allow (including `alg: none`).
    #[error("the token is malformed")]
    Malformed,
    /// The `kid` is missing or names a key this service does not trust.
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    /// The signature does not match the trusted key.
    #[error("the token signature is invalid")]
    BadSignature,
    /// The session it grants has ended.
    #[error("the token has expired")]
    Expired,
    /// Valid, but for another queue.
    #[error("the token is for another queue")]
    WrongQueue,
}

/// Signs entry tokens with the waiting room's private key.
pub struct TokenSigner {
    kid: String,
    key: EncodingKey,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer from a PKCS#8 PEM Ed25519 private key.
    pub fn from_pkcs8_pem(kid: impl Into<String>, pem: &[u8]) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(TokenSigner { kid: kid.into(), key: EncodingKey::from_ed_pem(pem)? })
    }

    /// The key id written into every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Sign the claims. Signing with a loaded Ed25519 key does not fail in practice;
    /// the error is surfaced rather than hidden.
    pub fn sign(&self, claims: &EntryClaims) -> Result<String, SignError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
    }
}

/// Verifies entry tokens against a set of trusted public keys, by `kid`.
#[derive(Clone, Default)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    leeway_seconds: u64,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("TokenVerifier").field("kids", &kids).finish()
    }
}

impl TokenVerifier {
    /// A verifier trusting no key yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trust a public key (SPKI PEM, `-----BEGIN PUBLIC KEY-----`) under `kid`.
    pub fn trust_pem(&mut self, kid: impl Into<String>, pem: &[u8]) -> Result<(), jsonwebtoken::errors::Error> {
        self.keys.insert(kid.into(), DecodingKey::from_ed_pem(pem)?);
        Ok(())
    }

    /// Accept tokens up to this many seconds past `exp` (clock skew between hosts).
    /// The waiting room uses 0 so a session ends exactly when it says.
    pub fn with_leeway(mut self, seconds: u64) -> Self {
        self.leeway_seconds = seconds;
        self
    }

    /// Key ids this verifier trusts.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verify `token` and check it admits to `queue`.
    pub fn verify(&self, token: &str, queue: &str) -> Result<EntryClaims, TokenError> {
        let claims = self.verify_any_queue(token)?;
        if claims.aud != queue {
            return Err(TokenError::WrongQueue);
        }
        Ok(claims)
    }

    /// Verify signature and expiry without checking the queue; the caller decides
    /// which queues the token may touch (the booking core maps queues to events).
    pub fn verify_any_queue(&self, token: &str) -> Result<EntryClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let key = header.kid.as_deref().and_then(|kid| self.keys.get(kid)).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = self.leeway_seconds;
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        jsonwebtoken::decode::<EntryClaims>(token, key, &validation).map(|d| d.claims).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidSignature => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::generate_keypair_pem;
    use base64::Engine;

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
    }

    fn pair(kid: &str) -> (TokenSigner, TokenVerifier) {
        let (private, public) = generate_keypair_pem().unwrap();
        let signer = TokenSigner::from_pkcs8_pem(kid, private.as_bytes()).unwrap();
        let mut verifier = TokenVerifier::new();
        verifier.trust_pem(kid, public.as_bytes()).unwrap();
        (signer, verifier)
    }

    fn claims(queue: &str, exp: i64) -> EntryClaims {
        EntryClaims { sub: "ab".repeat(16), aud: queue.into(), iat: now(), exp, jti: "j1".into() }
    }

    #[test]
    fn a_signed_token_verifies_for_its_queue_only() {
        let (s, v) = pair("k1");
        let t = s.sign(&claims("q1", now() + 60)).unwrap();
        assert_eq!(v.verify(&t, "q1").unwrap().aud, "q1");
        assert_eq!(v.verify(&t, "q2"), Err(TokenError::WrongQueue));
    }

    #[test]
    fn expired_unknown_key_forged_and_alg_none_tokens_are_refused() {
        let (s, v) = pair("k1");
        let expired = s.sign(&claims("q", now() - 5)).unwrap();
        assert_eq!(v.verify(&expired, "q"), Err(TokenError::Expired));

        let (other, _) = pair("k2");
        let unknown = other.sign(&claims("q", now() + 60)).unwrap();
        assert_eq!(v.verify(&unknown, "q"), Err(TokenError::UnknownKey));

        // Same kid, different key: the signature cannot match.
        let (impostor, _) = pair("k1");
        let forged = impostor.sign(&claims("q", now() + 60)).unwrap();
        assert_eq!(v.verify(&forged, "q"), Err(TokenError::BadSignature));

        // Tampered claims keep the old signature.
        let good = s.sign(&claims("q", now() + 60)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut c = claims("q", now() + 6000);
        c.sub = "cd".repeat(16);
        let body = b64.encode(serde_json::to_vec(&c).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], body, parts[2]);
        assert_eq!(v.verify(&tampered, "q"), Err(TokenError::BadSignature));

        let none_header = b64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        let none = format!("{none_header}.{body}.");
        assert_eq!(v.verify(&none, "q"), Err(TokenError::Malformed));

        assert_eq!(v.verify("not-a-jwt", "q"), Err(TokenError::Malformed));
    }

    #[test]
    fn leeway_accepts_a_token_just_past_exp() {
        let (s, v) = pair("k1");
        let t = s.sign(&claims("q", now() - 2)).unwrap();
        assert!(v.clone().with_leeway(30).verify(&t, "q").is_ok());
        assert_eq!(v.verify(&t, "q"), Err(TokenError::Expired));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// Whatever a client sends as a token, it is refused without a panic;
        /// only a real signature from a trusted key verifies.
        #[test]
        fn arbitrary_tokens_are_refused_and_never_panic(
            text in "[A-Za-z0-9_.=+/-]{0,300}",
            parts in proptest::collection::vec("[A-Za-z0-9_-]{0,40}", 0..5),
        ) {
            static PAIR: std::sync::LazyLock<(TokenSigner, TokenVerifier)> = std::sync::LazyLock::new(|| pair("k1"));
            let (_, verifier) = &*PAIR;
            proptest::prop_assert!(verifier.verify_any_queue(&text).is_err());
            proptest::prop_assert!(verifier.verify(&parts.join("."), "q").is_err());
        }
    }
}
