//! Raw client sockets bound to a chosen source address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Client number `n` (1-250): source address 127.0.0.n+1... kept away from
/// 127.0.0.1, which the proxy's own test helpers use.
pub fn client_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, n))
}

/// A TCP connection to `base` (`http://127.0.0.1:port`) from `from`.
pub async fn connect_from(from: IpAddr, base: &str) -> std::io::Result<TcpStream> {
    let to: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Everything the server sends until it closes or is silent for `quiet`.
pub async fn read_all(stream: &mut TcpStream, quiet: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Send `request` from `from` and read the whole answer (until the server
/// closes or is quiet for a second).
pub async fn exchange(from: IpAddr, base: &str, request: &[u8]) -> String {
    let mut s = connect_from(from, base).await.unwrap();
    s.write_all(request).await.unwrap();
    String::from_utf8_lossy(&read_all(&mut s, Duration::from_secs(1)).await).into_owned()
}

/// The status code of the first response in `raw`.
pub fn status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// A WebSocket handshake for `/wr/{queue}/ws`, with extra header lines.
pub fn ws_handshake(base: &str, queue: &str, extra: &str) -> Vec<u8> {
    let host = base.trim_start_matches("http://");
    format!(
        "GET /wr/{queue}/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}
