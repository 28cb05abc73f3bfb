//! Entry-token verification: every `/api` route calls
//! [`Auth::authenticate`] (signature and expiry, with the waiting room's public
//! keys) and, when it touches an event, [`Auth::authorize`] (the token's queue
//! must cover that event). Neither touches the database, so a flood of bad
//! tokens costs CPU only.
//!
//! When a token names a key id we do not know, the public-key folder is read
//! again (at most once a second): the waiting room rotates keys by adding a
//! file, and restarting the booking core for that would drop every request in
//! flight.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use parking_lot::{Mutex, RwLock};
use shared::keys::{KeyError, load_verifier};
use shared::problem::Problem;
use shared::token::{TokenError, TokenVerifier};

use crate::config::Config;
use crate::metrics::Metrics;
use crate::problem::ApiError;

/// How often an unknown key id may trigger a re-read of the key folder.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// The verified caller of an `/api` route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// The visitor id (the token's `sub`, 32 hex characters).
    pub id: String,
    /// The queue that admitted them (the token's `aud`).
    pub queue: String,
    /// When their session ends: the token's `exp`, in epoch ms. Holds end by
    /// then at the latest.
    pub session_ends_at: i64,
}

/// Which events a queue admits to.
#[derive(Debug, Clone)]
enum Scope {
    All,
    Events(HashSet<i64>),
}

/// Why a request was refused by the token check.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// → 401: no token in `Authorization: Bearer` or the `wr_entry` cookie.
    #[error("this API needs an entry token: join the waiting room first (cookie wr_entry or Authorization: Bearer)")]
    Missing,
    /// → 401: the request names two tokens (two `Authorization` headers or
    /// differing `wr_entry` cookies): the proxy's gate refuses those too,
    /// so neither can have been the one it let through.
    #[error("{0}; send one entry token")]
    Ambiguous(shared::AmbiguousToken),
    /// → 401: the session the token granted is over.
    #[error("your entry token has expired; join the waiting room again")]
    Expired,
    /// → 401: malformed, forged, or signed by a key this service does not trust.
    #[error("the entry token is not valid ({0}); join the waiting room again")]
    Invalid(TokenError),
    /// → 401: the token's subject is not a visitor id.
    #[error("the entry token does not name a visitor; join the waiting room again")]
    BadSubject,
    /// → 403: the token's queue is not configured here.
    #[error("queue \"{0}\" does not admit to this service")]
    UnknownQueue(String),
    /// → 403: the token's queue does not cover the event touched.
    #[error("your entry token (queue \"{queue}\") does not admit to event {event_id}; join that event's queue")]
    WrongQueue {
        /// The token's queue.
        queue: String,
        /// The event the request touched.
        event_id: i64,
    },
}

impl AuthError {
    fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Ambiguous(_) => "ambiguous",
            AuthError::Expired => "expired",
            AuthError::Invalid(TokenError::UnknownKey) => "unknown_key",
            AuthError::Invalid(_) => "invalid",
            AuthError::BadSubject => "bad_subject",
            AuthError::UnknownQueue(_) => "unknown_queue",
            AuthError::WrongQueue { .. } => "wrong_queue",
        }
    }
}

impl ApiError for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::UnknownQueue(_) | AuthError::WrongQueue { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    fn extend(&self, problem: Problem) -> Problem {
        problem.with("reason", self.reason())
    }
}

/// Verifies entry tokens and queue scopes.
pub struct Auth {
    /// Swapped whole on reload; a std-style lock is right because nothing is
    /// awaited while it is held and reads vastly outnumber reloads.
    verifier: RwLock<Arc<TokenVerifier>>,
    public_dir: PathBuf,
    leeway_seconds: u64,
    /// Last reload attempt, so a stream of junk key ids cannot make us re-read
    /// the folder on every request.
    last_reload: Mutex<Instant>,
    scopes: HashMap<String, Scope>,
    metrics: Metrics,
}

impl Auth {
    /// Load the public keys and the queue → event map.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Auth, KeyError> {
        let leeway_seconds = config.keys.leeway.as_secs();
        let verifier = load_verifier(&config.keys.public_dir)?.with_leeway(leeway_seconds);
        let scopes = config
            .queues
            .iter()
            .map(|q| {
                let scope = if q.all_events { Scope::All } else { Scope::Events(q.events.iter().copied().collect()) };
                (q.id.clone(), scope)
            })
            .collect();
        Ok(Auth {
            verifier: RwLock::new(Arc::new(verifier)),
            public_dir: config.keys.public_dir.clone(),
            leeway_seconds,
            // Allow the first reload at once.
            last_reload: Mutex::new(Instant::now().checked_sub(RELOAD_EVERY).unwrap_or_else(Instant::now)),
            scopes,
            metrics,
        })
    }

    /// Verify the request's entry token; the visitor is its `sub`.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Visitor, AuthError> {
        self.check(headers).inspect_err(|e| self.metrics.auth_failures.with_label_values(&[e.reason()]).inc())
    }

    fn check(&self, headers: &HeaderMap) -> Result<Visitor, AuthError> {
        // The same rule as the proxy's gate: one token per request.
        let values = |name: http::HeaderName| headers.get_all(name).into_iter().map(|v| v.as_bytes());
        let token = shared::entry_token(values(http::header::AUTHORIZATION), values(http::header::COOKIE))
            .map_err(AuthError::Ambiguous)?
            .ok_or(AuthError::Missing)?;
        let claims = match self.verify(token) {
            Err(TokenError::UnknownKey) if self.reload() => self.verify(token),
            other => other,
        }
        .map_err(|e| if e == TokenError::Expired { AuthError::Expired } else { AuthError::Invalid(e) })?;
        if claims.sub.len() != 32 || !claims.sub.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::BadSubject);
        }
        if !self.scopes.contains_key(&claims.aud) {
            return Err(AuthError::UnknownQueue(claims.aud));
        }
        let session_ends_at = claims.exp.saturating_mul(1000);
        Ok(Visitor { id: claims.sub.to_ascii_lowercase(), queue: claims.aud, session_ends_at })
    }

    fn verify(&self, token: &str) -> Result<shared::token::EntryClaims, TokenError> {
        let verifier = self.verifier.read().clone();
        verifier.verify_any_queue(token)
    }

    /// Re-read the key folder if the last attempt is old enough; true if the
    /// verifier was replaced.
    fn reload(&self) -> bool {
        {
            let mut last = self.last_reload.lock();
            if last.elapsed() < RELOAD_EVERY {
                return false;
            }
            *last = Instant::now();
        }
        match load_verifier(&self.public_dir) {
            Ok(v) => {
                *self.verifier.write() = Arc::new(v.with_leeway(self.leeway_seconds));
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not reload public keys");
                false
            }
        }
    }

    /// Does the visitor's queue cover `event_id`? (No metric: a question, not a refusal.)
    pub fn covers(&self, visitor: &Visitor, event_id: i64) -> bool {
        match self.scopes.get(&visitor.queue) {
            Some(Scope::All) => true,
            Some(Scope::Events(events)) => events.contains(&event_id),
            None => false,
        }
    }

    /// Does the visitor's queue admit to `event_id`?
    pub fn authorize(&self, visitor: &Visitor, event_id: i64) -> Result<(), AuthError> {
        if self.covers(visitor, event_id) {
            return Ok(());
        }
        let e = AuthError::WrongQueue { queue: visitor.queue.clone(), event_id };
        self.metrics.auth_failures.with_label_values(&[e.reason()]).inc();
        Err(e)
    }
}
