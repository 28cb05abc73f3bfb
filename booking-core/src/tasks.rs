//! Background work that repeats until shutdown: the hold sweeper, the claim
//! reconciler, the idempotency sweeper.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

/// Run `work` every `interval` (the first time at once, or after one
/// interval) until `shutdown` flips. A run that overruns delays the next
/// instead of bunching runs up.
pub fn every<F, Fut>(
    interval: Duration,
    at_once: bool,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let first = if at_once { Instant::now() } else { Instant::now() + interval };
        let mut ticks = tokio::time::interval_at(first, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => work().await,
                _ = shutdown.changed() => return,
            }
        }
    })
}
