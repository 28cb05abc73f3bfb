//! A circuit breaker in front of the queue store, so nothing waits on a
//! store that is known to be down.
//!
//! Every call is bounded by the client's own response timeout
//! (`store.response_timeout`). After [`FAILURES`] failed calls in a row the
//! breaker opens: for [`COOLDOWN`] every call fails at once, without
//! touching the store (a frozen Redis would otherwise cost every join and
//! poll the whole timeout). Then one call is let through as a probe; its
//! success closes the breaker, its failure opens it again. Readiness
//! (`/wr/readyz`) reads [`Breaker::is_open`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use shared::visitor::VisitorId;

use super::{
    Draw, JoinChecks, LotteryRecord, Params, Placed, QueueStore, Release, Report, SharedSettings, Standing, Stats,
    StoreError, TickLog,
};
use crate::clock::now_ms;

/// Failed calls in a row that open the breaker.
pub const FAILURES: u32 = 3;
/// How long an open breaker refuses calls before probing.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// A store behind a circuit breaker.
pub struct Breaker {
    inner: Arc<dyn QueueStore>,
    failures: AtomicU32,
    /// When the breaker may let a probe through (ms); 0 while closed.
    open_until_ms: AtomicI64,
    /// A probe is in flight: others still fail fast.
    probing: AtomicBool,
}

impl Breaker {
    /// `inner` behind a closed breaker.
    pub fn new(inner: Arc<dyn QueueStore>) -> Self {
        Breaker {
            inner,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Is the breaker refusing calls (the store is known to be down)?
    pub fn is_open(&self) -> bool {
        self.open_until_ms.load(Ordering::Acquire) != 0
    }

    async fn call<T>(&self, op: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        let open_until = self.open_until_ms.load(Ordering::Acquire);
        let probe = open_until != 0;
        if probe && (now_ms() < open_until || self.probing.swap(true, Ordering::AcqRel)) {
            return Err(StoreError::NotCalled("the queue store is not answering (circuit open)"));
        }
        // A probe whose caller goes away (a client that hangs up mid-join)
        // must not leave the breaker waiting for it forever.
        let _probe = probe.then_some(ProbeGuard(&self.probing));
        let result = op.await;
        // A write too few replicas hold was still answered by the store
        // (`store.wait_replicas`): it says nothing about the store being down.
        let answered = result.as_ref().err().is_none_or(StoreError::is_unreplicated);
        if answered {
            self.failures.store(0, Ordering::Release);
            self.open_until_ms.store(0, Ordering::Release);
        } else {
            let failures = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
            if probe || failures >= FAILURES {
                let until = now_ms() + i64::try_from(COOLDOWN.as_millis()).unwrap_or(1000);
                if self.open_until_ms.swap(until, Ordering::AcqRel) == 0 {
                    tracing::warn!("queue store failing: calls refused at once for {COOLDOWN:?}, then probed");
                }
            }
        }
        result
    }
}

impl Breaker {
    /// [`Breaker::call`] for an idempotent call (joining again keeps the
    /// place, a release is guarded by the tick marker, reads change
    /// nothing): a timeout gets one more try before it counts, because
    /// under load it is usually a slow answer (Redis starved of CPU for a
    /// moment), not a dead store. A frozen store costs two timeouts per call
    /// until the breaker opens.
    async fn call_idempotent<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        self.call(async {
            match op().await {
                Err(e) if e.is_timeout() => op().await,
                done => done,
            }
        })
        .await
    }
}

/// Clears the in-flight probe flag however the probe ends.
struct ProbeGuard<'a>(&'a AtomicBool);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[async_trait]
impl QueueStore for Breaker {
    async fn join_placed(
        &self,
        queue: &str,
        visitor: VisitorId,
        p: &Params,
        checks: &JoinChecks,
    ) -> Result<Placed, StoreError> {
        self.call_idempotent(|| self.inner.join_placed(queue, visitor, p, checks)).await
    }

    async fn status(&self, queue: &str, visitor: VisitorId, p: &Params) -> Result<Standing, StoreError> {
        self.call_idempotent(|| self.inner.status(queue, visitor, p)).await
    }

    async fn release(&self, queue: &str, p: &Params) -> Result<Release, StoreError> {
        self.call_idempotent(|| self.inner.release(queue, p)).await
    }

    async fn standings(&self, queue: &str, visitors: &[VisitorId]) -> Result<Vec<Standing>, StoreError> {
        self.call_idempotent(|| self.inner.standings(queue, visitors)).await
    }

    async fn touch(&self, queue: &str, visitors: &[VisitorId]) -> Result<(), StoreError> {
        self.call_idempotent(|| self.inner.touch(queue, visitors)).await
    }

    async fn stats(&self, queue: &str) -> Result<Stats, StoreError> {
        self.call_idempotent(|| self.inner.stats(queue)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call(self.inner.ping()).await
    }

    async fn load_catalog(&self) -> Result<Option<(u64, String)>, StoreError> {
        self.call_idempotent(|| self.inner.load_catalog()).await
    }

    async fn save_catalog(&self, expected: u64, json: &str) -> Result<Option<u64>, StoreError> {
        self.call(self.inner.save_catalog(expected, json)).await
    }

    async fn purge(&self, queue: &str) -> Result<(), StoreError> {
        self.call_idempotent(|| self.inner.purge(queue)).await
    }

    async fn load_settings(&self, queue: &str) -> Result<Option<SharedSettings>, StoreError> {
        self.call_idempotent(|| self.inner.load_settings(queue)).await
    }

    async fn save_settings(&self, queue: &str, settings: &SharedSettings) -> Result<SharedSettings, StoreError> {
        self.call(self.inner.save_settings(queue, settings)).await
    }

    async fn end_session(
        &self,
        queue: &str,
        visitor: VisitorId,
        iat_s: i64,
        until_ms: i64,
    ) -> Result<bool, StoreError> {
        self.call(self.inner.end_session(queue, visitor, iat_s, until_ms)).await
    }

    async fn revoked(&self, queue: &str, visitor: VisitorId, iat_s: i64) -> Result<bool, StoreError> {
        self.call_idempotent(|| self.inner.revoked(queue, visitor, iat_s)).await
    }

    async fn report(&self, queue: &str, report: &Report) -> Result<(), StoreError> {
        // Not retried: a report that did land would count twice.
        self.call(self.inner.report(queue, report)).await
    }

    async fn save_decision(&self, queue: &str, record: &crate::adaptive::Record) -> Result<bool, StoreError> {
        self.call_idempotent(|| self.inner.save_decision(queue, record)).await
    }

    async fn ticks(&self, queue: &str, limit: usize) -> Result<Vec<TickLog>, StoreError> {
        self.call_idempotent(|| self.inner.ticks(queue, limit)).await
    }

    async fn lottery(&self, queue: &str, new_seed: Option<&str>) -> Result<Option<LotteryRecord>, StoreError> {
        // Idempotent: the first seed stored stays.
        self.call_idempotent(|| self.inner.lottery(queue, new_seed)).await
    }

    async fn entrants(&self, queue: &str) -> Result<Vec<VisitorId>, StoreError> {
        self.call_idempotent(|| self.inner.entrants(queue)).await
    }

    async fn draw(
        &self,
        queue: &str,
        opens_at_ms: i64,
        order: &[VisitorId],
        published: &str,
    ) -> Result<Draw, StoreError> {
        // Idempotent: a draw that landed answers AlreadyDrawn the second time.
        self.call_idempotent(|| self.inner.draw(queue, opens_at_ms, order, published)).await
    }

    fn known_down(&self) -> bool {
        self.is_open()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// What Redis gives for a refused connection.
    fn refused() -> StoreError {
        StoreError::Redis(std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into())
    }

    /// What Redis gives for a call with no answer within its response timeout.
    fn timed_out() -> StoreError {
        let e = StoreError::Redis(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
        assert!(e.is_timeout());
        e
    }

    /// A store whose pings fail while `down`, counting the calls it gets.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicUsize,
    }

    impl Flaky {
        fn ping(&self) -> Result<(), StoreError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) { Err(refused()) } else { Ok(()) }
        }
    }

    #[tokio::test]
    async fn a_failing_store_is_left_alone_for_the_cooldown_then_probed() {
        let flaky = Arc::new(Flaky::default());
        let breaker = Breaker::new(Arc::new(crate::store::memory::MemoryStore::new()));
        let call = || async { breaker.call(async { flaky.ping() }).await };
        assert!(call().await.is_ok());
        flaky.down.store(true, Ordering::SeqCst);
        for _ in 0..FAILURES {
            assert!(call().await.is_err());
        }
        assert!(breaker.is_open());
        let before = flaky.calls.load(Ordering::SeqCst);
        for _ in 0..100 {
            assert!(call().await.is_err());
        }
        assert_eq!(flaky.calls.load(Ordering::SeqCst), before, "nothing reached the store while open");
        // After the cooldown one probe goes through; it fails: open again.
        tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
        assert!(call().await.is_err());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), before + 1);
        assert!(breaker.is_open());
        // The store is back: the next probe closes the breaker.
        flaky.down.store(false, Ordering::SeqCst);
        tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
        assert!(call().await.is_ok());
        assert!(!breaker.is_open());
        assert!(call().await.is_ok());
    }

    #[tokio::test]
    async fn a_probe_whose_caller_went_away_does_not_keep_the_breaker_open() {
        let breaker = Breaker::new(Arc::new(crate::store::memory::MemoryStore::new()));
        for _ in 0..FAILURES {
            let _ = breaker.call(async { Err::<(), _>(refused()) }).await;
        }
        tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
        // The probe hangs, and its caller gives up on it.
        let hung = breaker.call(std::future::pending::<Result<(), StoreError>>());
        assert!(tokio::time::timeout(Duration::from_millis(50), hung).await.is_err());
        // The next call is the new probe; the store answers: closed.
        assert!(breaker.call(async { Ok::<_, StoreError>(()) }).await.is_ok());
        assert!(!breaker.is_open());
    }

    #[tokio::test]
    async fn writes_too_few_replicas_hold_fail_without_opening_the_breaker() {
        let breaker = Breaker::new(Arc::new(crate::store::memory::MemoryStore::new()));
        for _ in 0..FAILURES * 2 {
            let e = breaker.call(async { Err::<(), _>(StoreError::Unreplicated("0 of 1".into())) }).await.unwrap_err();
            assert!(e.is_unreplicated());
        }
        assert!(!breaker.is_open(), "the store answered every call");
        assert!(breaker.call(async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn an_idempotent_call_that_timed_out_is_tried_once_more() {
        let breaker = Breaker::new(Arc::new(crate::store::memory::MemoryStore::new()));
        let tries = AtomicUsize::new(0);
        // A slow answer: the second try gets through, nothing counts as failed.
        let slow_once = || async {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            if n == 0 { Err(timed_out()) } else { Ok(n) }
        };
        assert_eq!(breaker.call_idempotent(slow_once).await.unwrap(), 1);
        assert_eq!(breaker.failures.load(Ordering::SeqCst), 0);
        // Always timing out: two tries per call, one failure each, and the
        // breaker opens after FAILURES calls as before.
        tries.store(0, Ordering::SeqCst);
        let frozen = || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(timed_out())
        };
        for _ in 0..FAILURES {
            assert!(breaker.call_idempotent(frozen).await.is_err());
        }
        assert_eq!(tries.load(Ordering::SeqCst), 2 * FAILURES as usize);
        assert!(breaker.is_open());
        // Other errors are not tried again.
        let breaker = Breaker::new(Arc::new(crate::store::memory::MemoryStore::new()));
        tries.store(0, Ordering::SeqCst);
        let refused = || async {
            tries.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(refused())
        };
        assert!(breaker.call_idempotent(refused).await.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
