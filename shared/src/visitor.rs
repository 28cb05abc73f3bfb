//! Visitor identity: a random 128-bit id carried in an HMAC-signed cookie.
//!
//! The cookie value is `<32 hex id>.<base64url HMAC-SHA256(id)>`. A value that
//! does not verify is treated as absent, so nobody can take a place in line by
//! inventing an id.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A visitor id: 16 random bytes, shown as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VisitorId([u8; 16]);

impl VisitorId {
    /// A fresh random id.
    pub fn random() -> Self {
        VisitorId(rand::random())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// From raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        VisitorId(bytes)
    }
}

impl fmt::Display for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for VisitorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VisitorId({self})")
    }
}

/// The text is not 32 hex characters.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a visitor id is 32 hex characters")]
pub struct BadVisitorId;

impl FromStr for VisitorId {
    type Err = BadVisitorId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 16];
        if s.len() != 32 {
            return Err(BadVisitorId);
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| BadVisitorId)?;
        Ok(VisitorId(out))
    }
}

/// Signs and verifies visitor cookie values.
#[derive(Clone)]
pub struct CookieSigner {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for CookieSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CookieSigner(..)")
    }
}

impl CookieSigner {
    /// A signer keyed with `secret` (any length; the key directory uses 32 bytes).
    pub fn new(secret: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts keys of any length");
        CookieSigner { mac }
    }

    /// The cookie value for `id`.
    pub fn sign(&self, id: VisitorId) -> String {
        let mut mac = self.mac.clone();
        mac.update(&id.0);
        format!("{id}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// A 32-byte key for another use of the same secret (`purpose` names it),
    /// so every instance sharing the key directory derives the same key
    /// without a second secret file. The MAC input is never 16 bytes long, so
    /// it can never coincide with a cookie's (a visitor id).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(b"waiting-room key derivation:");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The id in a cookie value, if the signature matches (compared in constant time).
    pub fn verify(&self, value: &str) -> Option<VisitorId> {
        let (id, sig) = value.split_once('.')?;
        let id: VisitorId = id.parse().ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        let mut mac = self.mac.clone();
        mac.update(&id.0);
        mac.verify_slice(&sig).ok().map(|_| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_cookie_round_trips() {
        let s = CookieSigner::new(b"0123456789abcdef0123456789abcdef");
        let id = VisitorId::random();
        assert_eq!(s.verify(&s.sign(id)), Some(id));
        assert_eq!(id.to_string().parse::<VisitorId>(), Ok(id));
    }

    #[test]
    fn invented_tampered_or_foreign_cookies_are_rejected() {
        let s = CookieSigner::new(b"secret-one-secret-one");
        let other = CookieSigner::new(b"secret-two-secret-two");
        let id = VisitorId::random();
        let good = s.sign(id);
        assert_eq!(s.verify(&other.sign(id)), None);
        assert_eq!(s.verify(&id.to_string()), None);
        let mut tampered = good.clone().into_bytes();
        tampered[0] = if tampered[0] == b'a' { b'b' } else { b'a' };
        assert_eq!(s.verify(std::str::from_utf8(&tampered).unwrap()), None);
        assert_eq!(s.verify("zz.zz"), None);
        assert_eq!(s.verify(""), None);
    }

    #[test]
    fn derived_keys_depend_on_secret_and_purpose() {
        let s = CookieSigner::new(b"secret-one-secret-one");
        assert_eq!(s.derive("a"), CookieSigner::new(b"secret-one-secret-one").derive("a"));
        assert_ne!(s.derive("a"), s.derive("b"));
        assert_ne!(s.derive("a"), CookieSigner::new(b"secret-two-secret-two").derive("a"));
    }
}
