//! A visitor's side: a client without redirects, cookies kept by hand, and the queue's WebSocket.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::Proxy;

/// A client without redirects or a cookie jar: tests see every 302 and
/// decide which cookies to send.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A visitor: the cookies the proxy gave them.
#[derive(Debug, Default, Clone)]
pub struct Visitor {
    pub cookies: Vec<(String, String)>,
}

impl Visitor {
    pub fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn absorb(&mut self, r: &reqwest::Response) {
        for h in r.headers().get_all("set-cookie") {
            let Some((pair, _)) = h.to_str().unwrap().split_once(';') else { continue };
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            self.cookies.push((k.to_owned(), v.to_owned()));
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub async fn join(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str) -> Value {
        let r = c
            .post(proxy.url(&format!("/wr/{queue}/join")))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "join failed");
        self.absorb(&r);
        r.json().await.unwrap()
    }

    pub async fn status(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str) -> Value {
        let r = c
            .get(proxy.url(&format!("/wr/{queue}/status")))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "status failed");
        self.absorb(&r);
        r.json().await.unwrap()
    }

    /// Poll status until READY (or panic after `limit`).
    pub async fn until_ready(&mut self, c: &reqwest::Client, proxy: &Proxy, queue: &str, limit: Duration) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let s = self.status(c, proxy, queue).await;
            if s["status"] == "READY" {
                return s;
            }
            assert!(Instant::now() < deadline, "not admitted in time: {s}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
pub type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open `/wr/{queue}/ws` with the visitor's cookies; the visitor absorbs any
/// cookie set on the 101.
pub async fn connect_ws(proxy: &Proxy, queue: &str, visitor: &mut Visitor) -> WsStream {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/wr/{queue}/ws", proxy.base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if !visitor.cookies.is_empty() {
        req.headers_mut().insert("cookie", visitor.cookie_header().parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.expect("websocket handshake");
    for h in resp.headers().get_all("set-cookie") {
        let Some((pair, _)) = h.to_str().unwrap().split_once(';') else { continue };
        let (k, v) = pair.split_once('=').unwrap();
        visitor.cookies.retain(|(name, _)| name != k);
        visitor.cookies.push((k.to_owned(), v.to_owned()));
    }
    ws
}

/// The next JSON message (skipping pings), or `None` when the socket closed
/// or nothing came within `wait`.
pub async fn next_json(ws: &mut WsStream, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next()).await.ok()??;
        match frame {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// The close code the server sends next (skipping data frames).
pub async fn close_code(ws: &mut WsStream, wait: Duration) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await.ok()?? {
            Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}
