//! Fail fast on Redis trouble: every Redis call of the booking core goes
//! through one [`RedisLink`], a connection with explicit timeouts behind a
//! circuit [`Breaker`].
//!
//! - **Timeouts** (`[redis]`): each connection attempt gives up after
//!   `connect_timeout`, each reply after `response_timeout` (≤ 250 ms by
//!   default, since claims wait for the gate), and a lost connection is
//!   retried `retries` times before the next call starts over. Every call is
//!   also bounded by `response_timeout` as a whole, so a call never waits
//!   longer for a reconnect in progress either.
//! - **Breaker**: after [`FAILURES_TO_OPEN`] consecutive failures (timeouts,
//!   I/O, refused or dropped connections; not script errors) calls fail at
//!   once for [`OPEN_FOR`]; then one call is let through as a probe: success
//!   closes the breaker, failure opens it again. A probe whose future is
//!   dropped before it finished (its request was cancelled) reopens the way
//!   for the next probe at once, through a drop guard, so the breaker can
//!   never stay half-open.
//!
//! What each user does while Redis is down: seat-map fan-out and view counts
//! are side effects, done off the request path and skipped while the breaker
//! is open; the claim gate answers "unguarded" and claims go to the database
//! alone (see [`crate::coupons`]); `/readyz` answers 503.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult};
use tokio::time::Instant;

use crate::config::RedisConfig;

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker fails calls before letting a probe through.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// The description of the error a call gets while the breaker is open.
const OPEN: &str = "Redis circuit open: failing fast";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls fail at once until `until`; the first call after it probes.
    Open { until: Instant },
    /// One call (the probe) is out; the others fail at once.
    Probing,
}

/// A circuit breaker (cheap to share behind an `Arc`).
#[derive(Debug)]
pub struct Breaker {
    /// A plain mutex: held for a few instructions, never across an await.
    state: Mutex<State>,
    failures_to_open: u32,
    open_for: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(FAILURES_TO_OPEN, OPEN_FOR)
    }
}

/// Leave to make one call; report its outcome with [`Permit::succeeded`] or
/// [`Permit::failed`]. Dropped without an outcome, a probe's permit lets the
/// next call probe at once.
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// Open after `failures_to_open` failures in a row, for `open_for`.
    pub fn new(failures_to_open: u32, open_for: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            failures_to_open: failures_to_open.max(1),
            open_for,
        }
    }

    /// May a call go out now? `None` while open (or while a probe is out).
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        let mut state = self.state.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                true
            }
            State::Open { .. } | State::Probing => return None,
        };
        Some(Permit { breaker: self, probe, reported: false })
    }

    /// True while calls fail at once (open and not yet due for a probe, or a
    /// probe out): side effects skip Redis rather than queue behind it.
    pub fn is_open(&self) -> bool {
        match *self.state.lock() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::Probing => true,
        }
    }

    fn success(&self) {
        let mut state = self.state.lock();
        if *state != (State::Closed { failures: 0 }) {
            if !matches!(*state, State::Closed { .. }) {
                tracing::info!("Redis answers again; circuit closed");
            }
            *state = State::Closed { failures: 0 };
        }
    }

    fn failure(&self, probe: bool) {
        let mut state = self.state.lock();
        let until = Instant::now() + self.open_for;
        match *state {
            State::Closed { failures } if failures + 1 >= self.failures_to_open => {
                tracing::warn!(failures = failures + 1, "Redis keeps failing; circuit open, calls fail fast");
                *state = State::Open { until };
            }
            State::Closed { failures } => *state = State::Closed { failures: failures + 1 },
            State::Probing if probe => *state = State::Open { until },
            // A call that went out before the breaker opened: it stays open as it is.
            State::Open { .. } | State::Probing => {}
        }
    }

    fn abandoned_probe(&self) {
        let mut state = self.state.lock();
        if *state == State::Probing {
            *state = State::Open { until: Instant::now() };
        }
    }
}

impl Permit<'_> {
    /// The call succeeded (Redis answered).
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.success();
    }

    /// The call failed for a reason that says Redis is in trouble.
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.failure(self.probe);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.reported {
            self.breaker.abandoned_probe();
        }
    }
}

/// Does `e` say Redis is unreachable or stalled (rather than a script or
/// type error, which a healthy Redis returns)?
fn is_trouble(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Is `e` the breaker refusing a call (nothing was sent)?
pub fn is_fail_fast(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Io && e.to_string().contains(OPEN)
}

/// The booking core's Redis connection: timeouts from `[redis]`, one breaker
/// for every user (they share the connection, so they share its fate). Cheap
/// to clone.
#[derive(Clone)]
pub struct RedisLink {
    conn: ConnectionManager,
    breaker: Arc<Breaker>,
    /// Bound on a whole call, waiting for a reconnect included.
    call_timeout: Duration,
}

impl RedisLink {
    /// Connect (bounded by `connect_timeout` per attempt and `retries`).
    pub async fn connect(config: &RedisConfig) -> RedisResult<(redis::Client, RedisLink)> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(config.retries)
            .set_max_delay(config.connect_timeout);
        let conn = client.get_connection_manager_with_config(manager).await?;
        let link = RedisLink { conn, breaker: Arc::new(Breaker::default()), call_timeout: config.response_timeout };
        Ok((client, link))
    }

    /// The breaker (open: calls fail at once).
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Run one call on the connection, through the breaker and bounded by
    /// `response_timeout`.
    pub async fn run<T, F, Fut>(&self, call: F) -> RedisResult<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.breaker.try_acquire() else {
            return Err(RedisError::from((ErrorKind::Io, OPEN)));
        };
        let answer = match tokio::time::timeout(self.call_timeout, call(self.conn.clone())).await {
            Ok(answer) => answer,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("Redis did not answer within {:?}", self.call_timeout),
            ))),
        };
        match &answer {
            Err(e) if is_trouble(e) => permit.failed(),
            _ => permit.succeeded(),
        }
        answer
    }

    /// `PING`, for readiness.
    pub async fn ping(&self) -> RedisResult<()> {
        self.run(|mut conn| async move { redis::cmd("PING").query_async::<()>(&mut conn).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A breaker that reopens the way for a probe after 20 ms (so tests run on the real clock).
    fn breaker() -> Breaker {
        Breaker::new(FAILURES_TO_OPEN, Duration::from_millis(20))
    }

    fn wait_until_due() {
        std::thread::sleep(Duration::from_millis(30));
    }

    #[test]
    fn three_failures_open_the_breaker_then_one_probe_decides() {
        let b = breaker();
        for _ in 0..2 {
            b.try_acquire().unwrap().failed();
            assert!(!b.is_open());
        }
        b.try_acquire().unwrap().failed();
        assert!(b.is_open());
        assert!(b.try_acquire().is_none());
        wait_until_due();
        let probe = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_none(), "one probe at a time");
        probe.failed();
        assert!(b.try_acquire().is_none(), "a failed probe opens it again");
        wait_until_due();
        b.try_acquire().unwrap().succeeded();
        assert!(!b.is_open());
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn a_success_resets_the_count_of_failures() {
        let b = breaker();
        b.try_acquire().unwrap().failed();
        b.try_acquire().unwrap().failed();
        b.try_acquire().unwrap().succeeded();
        b.try_acquire().unwrap().failed();
        b.try_acquire().unwrap().failed();
        assert!(!b.is_open());
    }

    #[test]
    fn the_default_breaker_stays_open_for_a_second() {
        let b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN {
            b.try_acquire().unwrap().failed();
        }
        wait_until_due();
        assert!(b.try_acquire().is_none());
    }

    #[test]
    fn a_dropped_probe_lets_the_next_call_probe_at_once() {
        let b = breaker();
        for _ in 0..3 {
            b.try_acquire().unwrap().failed();
        }
        wait_until_due();
        drop(b.try_acquire().unwrap());
        let probe = b.try_acquire().expect("not stuck half-open");
        probe.succeeded();
        assert!(!b.is_open());
    }

    #[tokio::test]
    async fn a_cancelled_probe_future_does_not_leave_the_breaker_stuck() {
        let b = Arc::new(breaker());
        for _ in 0..3 {
            b.try_acquire().unwrap().failed();
        }
        wait_until_due();
        let call = {
            let b = b.clone();
            async move {
                let permit = b.try_acquire().unwrap();
                std::future::pending::<()>().await;
                permit.succeeded();
            }
        };
        assert!(tokio::time::timeout(Duration::from_millis(10), call).await.is_err());
        assert!(b.try_acquire().is_some());
    }

    #[test]
    fn only_connection_trouble_counts_as_a_failure() {
        let refused = RedisError::from(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused"));
        let timed_out = RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"));
        let script = RedisError::from((ErrorKind::Server(redis::ServerErrorKind::ResponseError), "ERR in script"));
        assert!(is_trouble(&refused) && is_trouble(&timed_out));
        assert!(!is_trouble(&script));
        assert!(is_fail_fast(&RedisError::from((ErrorKind::Io, OPEN))));
        assert!(!is_fail_fast(&refused));
    }
}
