//! The key directory: created on first start, never regenerated.
//!
//! ```text
//! <dir>/signing.pem        current Ed25519 private key (PKCS#8 PEM, mode 0600)
//! <dir>/public/<kid>.pem   every public key tokens may be signed with (SPKI PEM)
//! <dir>/cookie.secret      HMAC secret for the visitor cookie (hex, mode 0600)
//! ```
//!
//! Regenerating keys at restart invalidated every token in flight in the reference
//! projects, so a file that exists is only ever read. Rotation is deliberate
//! ([`rotate`]): a new signing key is written and the old public key stays in
//! `public/`, so tokens already issued keep verifying until they expire. The
//! booking core needs only `public/`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use sha2::{Digest, Sha256};

use crate::token::{TokenSigner, TokenVerifier};
use crate::visitor::CookieSigner;

/// Why the key directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file exists but does not hold a usable key.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io { path: path.to_owned(), source }
}

/// Everything the waiting room signs and verifies with.
#[derive(Debug)]
pub struct KeyDir {
    /// Signs new entry tokens with the current key.
    pub signer: TokenSigner,
    /// Verifies tokens signed with any key in `public/`.
    pub verifier: TokenVerifier,
    /// Signs and checks the visitor cookie.
    pub cookies: CookieSigner,
}

/// A fresh Ed25519 key pair as (PKCS#8 private PEM, SPKI public PEM).
pub fn generate_keypair_pem() -> Result<(String, String), KeyError> {
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    pem_pair(&key).map_err(|reason| KeyError::Invalid { path: PathBuf::from("<generated>"), reason })
}

fn pem_pair(key: &SigningKey) -> Result<(String, String), String> {
    let private = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    let public = key.verifying_key().to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    Ok((private.to_string(), public))
}

/// The key id of a signing key: the first 8 bytes of SHA-256 of its public key, hex.
pub fn kid_of(key: &SigningKey) -> String {
    hex::encode(&Sha256::digest(key.verifying_key().as_bytes())[..8])
}

/// Write `contents` to `path` only if nothing is there yet. Two instances
/// starting at once on one directory both end up reading the same winner.
fn write_new(path: &Path, contents: &[u8]) -> Result<bool, KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(contents).map_err(io(&tmp.0))?;
    tmp.1.sync_all().map_err(io(&tmp.0))?;
    let linked = match fs::hard_link(&tmp.0, path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => {
            let _ = fs::remove_file(&tmp.0);
            return Err(io(path)(e));
        }
    };
    let _ = fs::remove_file(&tmp.0);
    Ok(linked)
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), KeyError> {
    let name = format!(".tmp-{}-{}", std::process::id(), hex::encode(rand::random::<[u8; 8]>()));
    let path = dir.join(name);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path).map_err(io(&path))?;
    Ok((path, file))
}

fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = fs::read_to_string(path).map_err(io(path))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| KeyError::Invalid { path: path.to_owned(), reason: format!("not an Ed25519 PKCS#8 key: {e}") })
}

fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(io(dir))
}

/// Make sure `signing.pem` and its public key exist; returns the signing key.
fn ensure_signing_key(dir: &Path) -> Result<SigningKey, KeyError> {
    let path = dir.join("signing.pem");
    if !path.exists() {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let (private, _) = pem_pair(&key).map_err(|reason| KeyError::Invalid { path: path.clone(), reason })?;
        write_new(&path, private.as_bytes())?;
    }
    let key = read_signing_key(&path)?;
    publish_public_key(dir, &key)?;
    Ok(key)
}

fn publish_public_key(dir: &Path, key: &SigningKey) -> Result<(), KeyError> {
    let public_dir = dir.join("public");
    ensure_dir(&public_dir)?;
    let (_, public) = pem_pair(key).map_err(|reason| KeyError::Invalid { path: public_dir.clone(), reason })?;
    let path = public_dir.join(format!("{}.pem", kid_of(key)));
    if !path.exists() {
        write_new(&path, public.as_bytes())?;
    }
    Ok(())
}

impl KeyDir {
    /// Open the key directory, creating whatever is missing (and only that).
    pub fn open_or_create(dir: &Path) -> Result<KeyDir, KeyError> {
        ensure_dir(dir)?;
        let key = ensure_signing_key(dir)?;
        let signing_path = dir.join("signing.pem");
        let private = fs::read(&signing_path).map_err(io(&signing_path))?;
        let signer = TokenSigner::from_pkcs8_pem(kid_of(&key), &private)
            .map_err(|e| KeyError::Invalid { path: signing_path.clone(), reason: e.to_string() })?;

        let secret_path = dir.join("cookie.secret");
        if !secret_path.exists() {
            write_new(&secret_path, hex::encode(rand::random::<[u8; 32]>()).as_bytes())?;
        }
        let secret_hex = fs::read_to_string(&secret_path).map_err(io(&secret_path))?;
        let secret = hex::decode(secret_hex.trim()).ok().filter(|s| s.len() >= 16).ok_or_else(|| {
            KeyError::Invalid { path: secret_path.clone(), reason: "expected at least 16 hex-encoded bytes".into() }
        })?;

        Ok(KeyDir { signer, verifier: load_verifier(&dir.join("public"))?, cookies: CookieSigner::new(&secret) })
    }
}

/// Trust every `<kid>.pem` public key in `dir` (what the booking core reads).
pub fn load_verifier(dir: &Path) -> Result<TokenVerifier, KeyError> {
    let mut verifier = TokenVerifier::new();
    let entries = fs::read_dir(dir).map_err(io(dir))?;
    for entry in entries {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let Some(kid) = path.file_stem().and_then(|s| s.to_str()) else { continue };
        let pem = fs::read(&path).map_err(io(&path))?;
        verifier
            .trust_pem(kid.to_owned(), &pem)
            .map_err(|e| KeyError::Invalid { path: path.clone(), reason: format!("not an Ed25519 public key: {e}") })?;
    }
    if verifier.kids().next().is_none() {
        return Err(KeyError::Invalid { path: dir.to_owned(), reason: "no public key (*.pem) found".into() });
    }
    Ok(verifier)
}

/// Replace the signing key with a new one, keeping the old public key trusted.
/// Returns the new key id.
pub fn rotate(dir: &Path) -> Result<String, KeyError> {
    ensure_dir(dir)?;
    let old = dir.join("signing.pem");
    if old.exists() {
        // Make sure the outgoing key's public half stays trusted.
        publish_public_key(dir, &read_signing_key(&old)?)?;
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let (private, _) = pem_pair(&key).map_err(|reason| KeyError::Invalid { path: old.clone(), reason })?;
    let (tmp, mut file) = tempfile_in(dir)?;
    file.write_all(private.as_bytes()).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &old).map_err(io(&old))?;
    publish_public_key(dir, &key)?;
    Ok(kid_of(&key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::EntryClaims;

    fn claims() -> EntryClaims {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        EntryClaims { sub: "00".repeat(16), aud: "q".into(), iat: now, exp: now + 60, jti: "j".into() }
    }

    #[test]
    fn keys_are_created_once_and_reopened_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let first = KeyDir::open_or_create(dir.path()).unwrap();
        let token = first.signer.sign(&claims()).unwrap();
        let cookie = first.cookies.sign(crate::visitor::VisitorId::random());

        let second = KeyDir::open_or_create(dir.path()).unwrap();
        assert_eq!(first.signer.kid(), second.signer.kid());
        assert!(second.verifier.verify(&token, "q").is_ok());
        assert!(second.cookies.verify(&cookie).is_some());
        // The booking core only needs the public directory.
        assert!(load_verifier(&dir.path().join("public")).unwrap().verify(&token, "q").is_ok());
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_and_signs_with_the_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let before = KeyDir::open_or_create(dir.path()).unwrap();
        let old_token = before.signer.sign(&claims()).unwrap();
        let new_kid = rotate(dir.path()).unwrap();
        let after = KeyDir::open_or_create(dir.path()).unwrap();
        assert_eq!(after.signer.kid(), new_kid);
        assert_ne!(before.signer.kid(), new_kid);
        assert!(after.verifier.verify(&old_token, "q").is_ok());
        assert!(after.verifier.verify(&after.signer.sign(&claims()).unwrap(), "q").is_ok());
    }

    #[test]
    fn a_corrupt_signing_key_is_an_error_not_a_silent_regeneration() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("signing.pem"), "garbage").unwrap();
        let err = KeyDir::open_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("signing.pem"), "{err}");
        assert_eq!(fs::read_to_string(dir.path().join("signing.pem")).unwrap(), "garbage");
    }
}
