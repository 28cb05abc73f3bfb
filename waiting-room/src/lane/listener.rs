//! The proxy's listening service: one `SO_REUSEPORT` socket and one
//! single-threaded runtime per worker thread, and the admission of
//! connections against the descriptor budget and the per-client cap.
//!
//! Over a cap a connection is refused at once and cheaply: one non-blocking
//! write of a canned 503 or 429 (whatever fits in the socket buffer) and a
//! close, before a byte of the request is read. Nothing is allocated per
//! refused connection, so a flood of them costs the accept loop only.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::Service;
use tokio::net::{TcpListener, TcpStream};

use super::{FLUSH, FastLane, flush_local, forget_expired_local};
use crate::client::ClientKey;
use crate::limits::{Held, Refused};

/// Sent to a connection refused by the descriptor budget.
const FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 5\r\n\
connection: close\r\ncontent-length: 95\r\n\r\n{\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"the proxy is at its connection limit\"}";
/// Sent to a client over its connection cap.
const CLIENT_FULL: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/problem+json\r\nretry-after: 5\r\n\
connection: close\r\ncontent-length: 112\r\n\r\n{\"title\":\"Too Many Requests\",\"status\":429,\"detail\":\"too many open connections from your address; close some\"}";

/// The proxy's listening service: `threads` workers, each with its own
/// `SO_REUSEPORT` listener and single-threaded runtime.
pub struct LaneService {
    lane: Arc<FastLane>,
    listeners: Vec<std::net::TcpListener>,
    sched_batch: bool,
    grace: Duration,
}

impl LaneService {
    /// Bind `threads` listeners on `addr` now, so a taken port fails the
    /// start instead of a worker.
    /// `sched_batch`: run the workers under `SCHED_BATCH` (see [`crate::sched`]).
    pub fn bind(lane: FastLane, addr: SocketAddr, threads: usize, sched_batch: bool) -> io::Result<Self> {
        // `SO_REUSEPORT` would let a second instance on the same port share
        // the traffic silently; a plain bind first fails if anyone listens.
        drop(probe(addr)?);
        let listeners = (0..threads.max(1)).map(|_| reuseport_listener(addr)).collect::<io::Result<_>>()?;
        Ok(LaneService { lane: Arc::new(lane), listeners, sched_batch, grace: Duration::from_secs(10) })
    }

    /// Give connections in flight this long to finish after a shutdown signal.
    pub fn with_grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

fn probe(addr: SocketAddr) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn reuseport_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Pingora's backlog: a sale opens with a burst of connections.
    socket.listen(65535)?;
    Ok(socket.into())
}

#[async_trait]
impl Service for LaneService {
    async fn start_service(&mut self, _fds: Option<ListenFds>, mut shutdown: ShutdownWatch, _per_fd: usize) {
        let mut workers = Vec::new();
        // One per-client count for all workers: a client's connections land
        // on any of them.
        let per_client = Held::new(self.lane.state.limits.config.max_connections_per_client);
        for (i, listener) in self.listeners.drain(..).enumerate() {
            let lane = self.lane.clone();
            let shutdown = shutdown.clone();
            let sched_batch = self.sched_batch;
            let per_client = per_client.clone();
            let grace = self.grace;
            let worker = std::thread::Builder::new().name(format!("proxy-{i}")).spawn(move || {
                if sched_batch && let Err(e) = crate::sched::batch_current_thread() {
                    tracing::warn!(error = %e, "server.sched_batch: proxy worker stays under the default policy");
                }
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build() {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "proxy worker runtime");
                        return;
                    }
                };
                let drain = lane.state.drain.clone();
                runtime.block_on(async move {
                    accept_loop(lane, listener, per_client, shutdown).await;
                    // Not accepting any more (the listener is closed): the
                    // connections of this and the other workers finish.
                    drain.start();
                    if tokio::time::timeout(grace, drain.idle()).await.is_err() {
                        tracing::warn!(open = drain.active(), "server.grace_period over with connections open");
                    }
                });
                runtime.shutdown_timeout(Duration::from_millis(100));
                flush_local();
            });
            match worker {
                Ok(w) => workers.push(w),
                Err(e) => tracing::error!(error = %e, "starting a proxy worker"),
            }
        }
        // Joined by a blocking task started now, not after the shutdown
        // signal: Pingora's runtime shutdown cancels this service's task
        // but waits for its blocking tasks, so the process stays up until
        // the workers have drained.
        let joined = tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join())));
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        ServerApp::cleanup(&*self.lane.pingora).await;
        let _ = joined.await;
    }

    fn name(&self) -> &str {
        "waiting room proxy"
    }

    /// The Pingora runtime only waits for shutdown; the workers run on
    /// threads of their own.
    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}

async fn accept_loop(
    lane: Arc<FastLane>,
    listener: std::net::TcpListener,
    per_client: Arc<Held>,
    mut shutdown: ShutdownWatch,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "proxy listener");
            return;
        }
    };
    // Runs on this worker's thread (a single-threaded runtime), so it
    // flushes this worker's tallies and forgets its expired token copies;
    // it ends with the runtime. The shared gate cache is swept here too.
    let sweeping = lane.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(FLUSH);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 0u64.. {
            every.tick().await;
            flush_local();
            if n % 10 == 0 {
                let now = crate::clock::now_ms();
                sweeping.state.gate.sweep(now);
                forget_expired_local(now);
            }
        }
    });
    loop {
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => admit(&lane, &per_client, tcp, peer.ip(), &shutdown),
                Err(e) => {
                    // Only reachable if something else used up the
                    // descriptors the budget keeps in reserve.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Serve `tcp` if the descriptor budget and the client's cap allow it.
fn admit(lane: &Arc<FastLane>, per_client: &Arc<Held>, tcp: TcpStream, peer: IpAddr, shutdown: &ShutdownWatch) {
    let Some(descriptor) = lane.descriptors.acquire_for_client() else {
        refuse(&tcp, FULL, Refused::Connections);
        return;
    };
    // A trusted proxy carries many clients: it is never capped as one.
    let held = if lane.state.trusted.contains(peer) {
        None
    } else {
        match per_client.acquire(ClientKey::from(peer)) {
            Some(held) => held,
            None => {
                refuse(&tcp, CLIENT_FULL, Refused::ClientConnections);
                return;
            }
        }
    };
    let _ = tcp.set_nodelay(true);
    let lane = lane.clone();
    let shutdown = shutdown.clone();
    let tracked = lane.state.drain.track();
    tokio::spawn(async move {
        lane.serve(tcp, peer, shutdown).await;
        drop((descriptor, held, tracked));
    });
}

fn refuse(tcp: &TcpStream, reply: &[u8], why: Refused) {
    why.count();
    let _ = tcp.try_write(reply);
}
