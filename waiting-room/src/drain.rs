//! Graceful shutdown (a deploy): stop accepting, finish what is in flight,
//! tell every queue WebSocket to reconnect elsewhere, then exit.
//!
//! SIGTERM and SIGINT both start it ([`Signals`]); Pingora broadcasts its
//! shutdown watch, the proxy workers stop accepting and call
//! [`Drain::start`], and wait (at most `server.grace_period`) until every
//! tracked connection has ended: client connections finish the request in
//! flight and answer it with `Connection: close`; queue WebSockets send a
//! close frame 1001 ("going away") whose reason asks the page to reconnect,
//! which it does to any instance, keeping its place by its cookie.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// The process's drain state, shared by the workers and every connection.
pub struct Drain {
    draining: watch::Sender<bool>,
    active: AtomicUsize,
    idle: Notify,
}

/// A connection being tracked; dropping it ends it.
pub struct Tracked(Arc<Drain>);

impl Default for Drain {
    fn default() -> Self {
        Drain { draining: watch::Sender::new(false), active: AtomicUsize::new(0), idle: Notify::new() }
    }
}

impl Drain {
    /// Start draining (idempotent).
    pub fn start(&self) {
        self.draining.send_replace(true);
    }

    /// Has draining started?
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// A receiver that changes to `true` when draining starts.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.draining.subscribe()
    }

    /// Track one connection until the guard is dropped.
    pub fn track(self: &Arc<Self>) -> Tracked {
        self.active.fetch_add(1, Ordering::AcqRel);
        Tracked(self.clone())
    }

    /// Connections tracked now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Wait until no connection is tracked.
    pub async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Pingora's shutdown signals, with SIGINT graceful too (Pingora's own
/// handler makes it a fast exit that cuts every connection) and SIGQUIT
/// (Pingora's graceful upgrade, which this proxy does not do) the same.
pub struct Signals;

#[async_trait::async_trait]
impl pingora::server::ShutdownSignalWatch for Signals {
    async fn recv(&self) -> pingora::server::ShutdownSignal {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut quit)) =
            (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::quit()))
        else {
            tracing::error!("cannot listen for shutdown signals");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
            _ = quit.recv() => tracing::info!("SIGQUIT: draining"),
        }
        pingora::server::ShutdownSignal::GracefulTerminate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_returns_once_every_tracked_connection_ended() {
        let drain = Arc::new(Drain::default());
        assert!(!drain.is_draining());
        let mut watch = drain.watch();
        let a = drain.track();
        let b = drain.track();
        drain.start();
        assert!(drain.is_draining());
        assert!(watch.changed().await.is_ok() && *watch.borrow());
        let waiter = tokio::spawn({
            let drain = drain.clone();
            async move { drain.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter).await.unwrap().unwrap();
        assert_eq!(drain.active(), 0);
    }
}
