//! The fast lane's upstream connections: a pool per worker thread, connect
//! with a timeout, and one exchange (send the request, read the response
//! head) that retries once on a pooled connection found closed.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::CHUNK;
use super::response::ResponseHead;
use crate::limits::{DescriptorGuard, Descriptors};

/// Connecting to the upstream (as the Pingora path's peer options).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A pooled upstream connection idle longer than this is not reused.
const POOL_IDLE: Duration = Duration::from_secs(50);
/// Idle upstream connections kept per worker thread.
const POOL_MAX: usize = 512;
/// Longest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// An upstream connection with its share of the descriptor budget.
pub(super) struct Upstream {
    pub(super) stream: TcpStream,
    _descriptor: DescriptorGuard,
}

thread_local! {
    /// Idle upstream connections of this worker thread. Per thread because
    /// with `work_stealing = false` every thread runs its own runtime and a
    /// socket belongs to the runtime that registered it.
    static POOL: RefCell<Vec<(SocketAddr, Upstream, Instant)>> = const { RefCell::new(Vec::new()) };
}

fn pool_take(addr: SocketAddr) -> Option<Upstream> {
    POOL.with_borrow_mut(|pool| {
        while let Some((a, up, since)) = pool.pop() {
            if a == addr && since.elapsed() < POOL_IDLE {
                return Some(up);
            }
        }
        None
    })
}

/// Keep `up` for the next request to `addr`.
pub(super) fn pool_put(addr: SocketAddr, up: Upstream) {
    POOL.with_borrow_mut(|pool| {
        if pool.len() < POOL_MAX {
            pool.push((addr, up, Instant::now()));
        }
    });
}

async fn connect(addr: SocketAddr, descriptors: &Arc<Descriptors>) -> io::Result<Upstream> {
    let descriptor = match descriptors.acquire() {
        Some(d) => d,
        None => {
            // Idle connections hold descriptors too: give this thread's
            // back before refusing the request.
            POOL.with_borrow_mut(Vec::clear);
            descriptors.acquire().ok_or_else(|| io::Error::other("the proxy is at its connection limit"))?
        }
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "timed out"))??;
    stream.set_nodelay(true)?;
    Ok(Upstream { stream, _descriptor: descriptor })
}

/// Why an exchange with the upstream failed.
pub(super) enum UpError {
    /// Nothing came back: the connection may have been closed while idle.
    Stale(io::Error),
    /// A broken or unreadable response.
    Bad(String),
}

/// Why an exchange failed, for the log only.
pub(super) enum Exchange {
    /// No connection: nothing was sent, another instance may take it.
    Connect(String),
    /// Sent on a fresh connection, and nothing came back (the instance died
    /// or closed it): a safe request may go to another instance.
    NoAnswer(String),
    /// A broken answer, or a failure after part of one.
    Failed(String),
}

/// Send the request and read the response head, on a pooled connection
/// when there is one. A pooled connection that turns out closed before
/// answering anything is replaced by the next one (the request is whole in
/// memory, so it can be sent again); a fresh connection is not retried.
pub(super) async fn exchange(
    addr: SocketAddr,
    descriptors: &Arc<Descriptors>,
    out: &[u8],
    rbuf: &mut BytesMut,
) -> Result<(Upstream, ResponseHead), Exchange> {
    loop {
        let (mut up, reused) = match pool_take(addr) {
            Some(up) => (up, true),
            None => {
                let up =
                    connect(addr, descriptors).await.map_err(|e| Exchange::Connect(format!("connect {addr}: {e}")))?;
                (up, false)
            }
        };
        rbuf.clear();
        match send_and_read_head(&mut up.stream, out, rbuf).await {
            Ok(head) => return Ok((up, head)),
            Err(UpError::Stale(_)) if reused => continue,
            Err(UpError::Stale(e)) => return Err(Exchange::NoAnswer(e.to_string())),
            Err(UpError::Bad(e)) => return Err(Exchange::Failed(e)),
        }
    }
}

async fn send_and_read_head(up: &mut TcpStream, out: &[u8], rbuf: &mut BytesMut) -> Result<ResponseHead, UpError> {
    up.write_all(out).await.map_err(UpError::Stale)?;
    loop {
        rbuf.reserve(CHUNK);
        let n = match up.read_buf(rbuf).await {
            Ok(n) => n,
            Err(e) if rbuf.is_empty() => return Err(UpError::Stale(e)),
            Err(e) => return Err(UpError::Bad(format!("reading the response: {e}"))),
        };
        if n == 0 {
            return Err(if rbuf.is_empty() {
                UpError::Stale(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))
            } else {
                UpError::Bad("the connection closed inside the response head".into())
            });
        }
        loop {
            match ResponseHead::parse(rbuf)? {
                None => break,
                // Interim responses (100 Continue and the like) are dropped:
                // the lane never forwards `Expect`.
                Some(head) if (100..200).contains(&head.status) => {
                    if head.status == 101 {
                        return Err(UpError::Bad("unexpected 101 Switching Protocols".into()));
                    }
                    rbuf.advance(head.len);
                }
                Some(head) => return Ok(head),
            }
        }
        if rbuf.len() > MAX_RESPONSE_HEAD {
            return Err(UpError::Bad("response head too long".into()));
        }
    }
}
