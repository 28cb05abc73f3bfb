//! Clients that join from a chosen source address, and a solver of the
//! challenge written from its documented format (not from the server's code).

use std::net::IpAddr;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::helpers::{ADMIN_TOKEN, Proxy};

/// An HTTP client whose connections come from `ip`.
pub fn client_from(ip: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).local_address(ip).build().unwrap()
}

/// One answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `wr_visitor=…` pair this answer set, if any.
    pub fn visitor_cookie(&self) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .find(|v| v.starts_with("wr_visitor="))
            .map(str::to_owned)
    }
}

async fn answer(r: reqwest::Response) -> Answer {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

/// `POST /wr/{queue}/join` with an optional cookie and body.
pub async fn join(
    c: &reqwest::Client,
    proxy: &Proxy,
    queue: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut req = c.post(proxy.url(&format!("/wr/{queue}/join")));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    answer(req.send().await.unwrap()).await
}

/// `GET` a path with an optional cookie.
pub async fn get(c: &reqwest::Client, proxy: &Proxy, path: &str, cookie: Option<&str>) -> Answer {
    let mut req = c.get(proxy.url(path));
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    answer(req.send().await.unwrap()).await
}

/// Visitors waiting in `queue`, from the admin API.
pub async fn waiting(proxy: &Proxy, queue: &str) -> u64 {
    let r = reqwest::Client::new()
        .get(format!("{}/admin/queues/{queue}", proxy.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    r.json::<Value>().await.unwrap()["waiting"].as_u64().unwrap()
}

/// A nonce such that SHA-256(challenge ":" nonce) starts with `bits` zero bits.
pub fn solve(challenge: &str, bits: u64) -> String {
    (0u64..).map(|n| n.to_string()).find(|n| zero_bits(challenge, n) >= bits).unwrap()
}

/// Leading zero bits of SHA-256(challenge ":" nonce).
pub fn zero_bits(challenge: &str, nonce: &str) -> u64 {
    let digest = Sha256::digest(format!("{challenge}:{nonce}").as_bytes());
    let mut bits = 0;
    for b in digest {
        bits += u64::from(b.leading_zeros());
        if b != 0 {
            break;
        }
    }
    bits
}

/// The answer body to a 428.
pub fn answer_to(problem: &Value) -> Value {
    let challenge = problem["challenge"].as_str().unwrap();
    let nonce = solve(challenge, problem["difficulty"].as_u64().unwrap());
    serde_json::json!({ "challenge": challenge, "nonce": nonce })
}
