//! The circuit breaker in front of the Redis link, and which errors trip it:
//! [`FAILURES_TO_OPEN`] failures in a row open it for [`OPEN_FOR`], then one
//! probe decides (see the parent module for what each user does meanwhile).

use std::time::Duration;

use parking_lot::Mutex;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::time::Instant;

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 3;
/// How long an open breaker fails calls before letting a probe through.
pub const OPEN_FOR: Duration = Duration::from_secs(1);

/// The description of the error a call gets while the breaker is open.
pub(super) const OPEN: &str = "Redis circuit open: failing fast";

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

/// Does `e` say Redis is unreachable, stalled or not serving (rather than a
/// script or type error, which a healthy Redis returns)? A primary that has
/// become a replica (`READONLY`, after a failover), a cluster with a slot
/// nobody serves (`CLUSTERDOWN`) and the like count as trouble too.
pub(super) fn is_trouble(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::BusyLoading
            )
        )
}

/// Is `e` the breaker refusing a call (nothing was sent)?
pub fn is_fail_fast(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Io && e.to_string().contains(OPEN)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
        // A failed-over primary (now a replica) and a cluster missing a slot's node.
        let read_only = RedisError::from((ErrorKind::Server(ServerErrorKind::ReadOnly), "READONLY"));
        let cluster_down = RedisError::from((ErrorKind::Server(ServerErrorKind::ClusterDown), "CLUSTERDOWN"));
        assert!(is_trouble(&read_only) && is_trouble(&cluster_down));
        assert!(is_fail_fast(&RedisError::from((ErrorKind::Io, OPEN))));
        assert!(!is_fail_fast(&refused));
    }
}
