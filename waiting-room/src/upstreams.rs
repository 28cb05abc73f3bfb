//! The protected service's instances (`server.upstreams`): one healthy set
//! that both lanes pick from, round robin.
//!
//! Health is Pingora's load balancer with an active TCP check every
//! `server.upstream_check_interval` (a killed or unreachable instance stops
//! accepting connections), run as a background service. Between checks a
//! request whose connection to an instance fails — nothing was sent, so
//! trying again is safe — is sent to another healthy instance at once; a
//! 502 only comes when no instance is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pingora::lb::health_check::TcpHealthCheck;
use pingora::lb::selection::RoundRobin;
use pingora::lb::{Backend, LoadBalancer};

/// The upstream instances and their health.
pub struct Upstreams {
    lb: Arc<LoadBalancer<RoundRobin>>,
    /// Every configured instance, in config order.
    all: Vec<SocketAddr>,
}

impl Upstreams {
    /// The set of `addrs`, checked every `check_every` once the background
    /// service runs. Every instance counts as healthy until a check fails.
    pub fn new(addrs: &[SocketAddr], check_every: Duration) -> std::io::Result<Self> {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(addrs.iter().copied())?;
        let mut check = TcpHealthCheck::new();
        check.peer_template.options.connection_timeout = Some(check_every.min(Duration::from_secs(1)));
        lb.set_health_check(check);
        lb.health_check_frequency = Some(check_every);
        lb.parallel_health_check = true;
        Ok(Upstreams { lb: Arc::new(lb), all: addrs.to_vec() })
    }

    /// The load balancer, to run as Pingora's background service (its
    /// health checks).
    pub fn balancer(&self) -> Arc<LoadBalancer<RoundRobin>> {
        self.lb.clone()
    }

    /// A healthy instance not in `tried`, round robin; `None` when none is left.
    pub fn pick(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        // One instance: no choice to make (and no health to wait for).
        if let [only] = self.all.as_slice() {
            return (!tried.contains(only)).then_some(*only);
        }
        let accept = |b: &Backend, healthy: bool| healthy && inet(b).is_some_and(|a| !tried.contains(&a));
        self.lb.select_with(b"", self.all.len() * 2, accept).as_ref().and_then(inet)
    }

    /// Every configured instance.
    pub fn all(&self) -> &[SocketAddr] {
        &self.all
    }
}

fn inet(b: &Backend) -> Option<SocketAddr> {
    b.addr.as_inet().copied()
}
