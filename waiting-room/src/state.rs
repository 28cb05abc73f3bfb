//! What every part of the proxy shares: queues, store, keys, gate. One `Arc`
//! of it is held by the proxy service, the admission service and the push hub.

use std::sync::{Arc, OnceLock};

use shared::keys::KeyDir;

use crate::client::TrustedProxies;
use crate::drain::Drain;
use crate::edge::Policy;
use crate::gate::EntryGate;
use crate::limits::Limits;
use crate::queues::Queues;
use crate::sockets::Hub;
use crate::store::QueueStore;

/// Tokens the gate caches at most.
const TOKEN_CACHE: usize = 200_000;

/// Shared state of one proxy process.
pub struct State {
    /// The queues.
    pub queues: Queues,
    /// Set once by the admission service when the store is connected: Redis
    /// connections must be made inside a runtime that lives as long as the
    /// server, which only exists once Pingora has started the services.
    store: OnceLock<Arc<dyn QueueStore>>,
    /// Signing key, trusted keys, cookie secret.
    pub keys: KeyDir,
    /// Keys of proof-of-work challenges and client tags (from the cookie secret).
    pub challenges: crate::challenge::Keys,
    /// Queue tickets (from the cookie secret).
    pub tickets: crate::ticket::Tickets,
    /// Token verification with cache.
    pub gate: EntryGate,
    /// Mark cookies `Secure`.
    pub cookie_secure: bool,
    /// WebSocket connections of this instance.
    pub hub: Hub,
    /// Server ping interval of queue WebSockets.
    pub ws_ping_interval: std::time::Duration,
    /// Proxies whose `X-Forwarded-For` is believed (see [`crate::client`]).
    pub trusted: TrustedProxies,
    /// Per-client budgets.
    pub limits: Limits,
    /// Methods, denied paths and WebSocket origins of the public listener.
    pub policy: Policy,
    /// Graceful shutdown: connections in flight and the draining flag.
    pub drain: Arc<Drain>,
    /// The catalog of queues as applied here (`catalog.rs`).
    pub catalog: crate::queues::CatalogLocal,
}

impl State {
    /// State for these queues and keys.
    pub fn new(queues: Queues, keys: KeyDir, cookie_secure: bool) -> Self {
        let gate = EntryGate::new(keys.verifier.clone(), TOKEN_CACHE);
        let hub = Hub::new(queues.all().iter().map(|q| q.id()));
        let ws_ping_interval = std::time::Duration::from_secs(15);
        let challenges = crate::challenge::Keys::new(&keys.cookies);
        let tickets = crate::ticket::Tickets::new(&keys.cookies);
        State {
            queues,
            store: OnceLock::new(),
            keys,
            challenges,
            tickets,
            gate,
            cookie_secure,
            hub,
            ws_ping_interval,
            trusted: TrustedProxies::default(),
            limits: Limits::default(),
            policy: Policy::default(),
            drain: Arc::default(),
            catalog: Default::default(),
        }
    }

    /// Apply this policy on the public listener.
    pub fn with_policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Believe these proxies and apply these limits.
    pub fn with_edge(mut self, trusted: TrustedProxies, limits: crate::config::LimitsConfig) -> Self {
        self.trusted = trusted;
        self.limits = Limits::new(limits);
        self
    }

    /// The client of a request Pingora serves (see [`crate::client`]).
    pub fn client_of(&self, session: &pingora::prelude::Session) -> std::net::IpAddr {
        self.client_at(session.client_addr(), &session.req_header().headers)
    }

    /// The client of a request with these headers from `peer`.
    pub fn client_at(
        &self,
        peer: Option<&pingora::protocols::l4::socket::SocketAddr>,
        headers: &http::HeaderMap,
    ) -> std::net::IpAddr {
        let peer =
            peer.and_then(|a| a.as_inet()).map_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let xff = headers.get_all("x-forwarded-for");
        crate::client::address(peer, xff.iter().map(|v| v.as_bytes()), &self.trusted)
    }

    /// Use this WebSocket ping interval.
    pub fn with_ws_ping_interval(mut self, every: std::time::Duration) -> Self {
        self.ws_ping_interval = every;
        self
    }

    /// The store, once connected.
    pub fn store(&self) -> Option<&Arc<dyn QueueStore>> {
        self.store.get()
    }

    /// Install the store (first call wins).
    pub fn set_store(&self, store: Arc<dyn QueueStore>) {
        let _ = self.store.set(store);
    }
}
