//! Responses the waiting room writes itself (queue API, page, gate refusals)
//! and the one place they are written to a Pingora session.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::Session;
use serde::Serialize;
use shared::problem::{self, Problem};

/// A complete response: status, headers, body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (name, value); `content-length` is added when sending.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// A JSON body.
    pub fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Reply { status, headers: vec![("content-type", "application/json".into())], body: body.into() }
    }

    /// An `application/problem+json` body.
    pub fn problem(p: Problem) -> Reply {
        Reply {
            status: p.status,
            headers: vec![("content-type", problem::CONTENT_TYPE.into())],
            body: p.to_json().into(),
        }
    }

    /// The 502 for an upstream that did not answer (both proxy lanes). The
    /// cause goes to the log only: it names internal addresses.
    pub fn bad_gateway() -> Reply {
        Reply::error(502, "the protected service did not answer; try again in a moment").header("retry-after", "1")
    }

    /// 431: a request head over `max` bytes (the lane's, on any path).
    pub fn head_too_large(max: usize) -> Reply {
        Reply::error(431, format!("the request head is larger than {max} bytes"))
    }

    /// 431: more than `max` header fields.
    pub fn too_many_headers(max: usize) -> Reply {
        Reply::error(431, format!("the request has more than {max} header fields"))
    }

    /// A problem from status and detail.
    pub fn error(status: u16, detail: impl Into<String>) -> Reply {
        Reply::problem(Problem::new(status, detail))
    }

    /// An HTML page.
    pub fn html(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply { status, headers: vec![("content-type", "text/html; charset=utf-8".into())], body: body.into() }
    }

    /// A 302 redirect.
    pub fn redirect(location: String) -> Reply {
        Reply { status: 302, headers: vec![("location", location)], body: Bytes::new() }
    }

    /// Add a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Never cache (positions and tokens are per visitor and change every tick).
    pub fn no_store(self) -> Reply {
        self.header("cache-control", "no-store")
    }
}

impl Reply {
    /// The whole response as HTTP/1.1 bytes (the fast lane writes to the
    /// socket itself); `head_only` for a HEAD request, `close` adds
    /// `connection: close`.
    pub fn to_http1(&self, head_only: bool, close: bool) -> Vec<u8> {
        let reason = http::StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// Write `reply` as the whole response.
pub async fn send(session: &mut Session, reply: Reply) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(reply.status, Some(reply.headers.len() + 2))?;
    for (name, value) in reply.headers {
        header.append_header(name, value)?;
    }
    header.insert_header("content-length", reply.body.len().to_string())?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(header), head_only || reply.body.is_empty()).await?;
    if !head_only && !reply.body.is_empty() {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}

/// A `Set-Cookie` value: `Path=/`, `HttpOnly`, `SameSite=Lax`, `Secure` when asked.
pub fn set_cookie(name: &str, value: &str, max_age_secs: Option<i64>, secure: bool) -> String {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age_secs {
        c.push_str(&format!("; Max-Age={}", age.max(0)));
    }
    if secure {
        c.push_str("; Secure");
    }
    c
}

/// The value of cookie `name` in each `Cookie` header of the request.
pub fn cookie_values<'a>(session: &'a Session, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    session
        .req_header()
        .headers
        .get_all("cookie")
        .iter()
        .filter_map(|h| h.to_str().ok())
        .filter_map(move |h| shared::cookie_value(h, name))
}

/// Whether the request is a GET or a HEAD.
pub fn is_get(session: &Session) -> bool {
    let method = &session.req_header().method;
    method == http::Method::GET || method == http::Method::HEAD
}

/// A header of the request as text, if present and valid UTF-8.
pub fn header_str<'a>(session: &'a Session, name: &str) -> Option<&'a str> {
    session.req_header().headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of `name` in a query string.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| shared::percent::decode_query_value(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::percent::{decode_query_value, encode_path_and_query};

    #[test]
    fn components_round_trip_and_bad_escapes_survive() {
        let path = "/api/events/42?x=1&y=a b";
        assert_eq!(decode_query_value(&encode_path_and_query(path)), path);
        assert_eq!(decode_query_value("%zz%4"), "%zz%4");
        assert_eq!(query_param(Some("a=1&return_to=%2Fx%3Fy%3D1"), "return_to").as_deref(), Some("/x?y=1"));
        assert_eq!(query_param(Some("a=1"), "return_to"), None);
    }

    #[test]
    fn cookies_carry_the_flags() {
        let c = set_cookie("wr_visitor", "v", None, true);
        assert_eq!(c, "wr_visitor=v; Path=/; HttpOnly; SameSite=Lax; Secure");
        assert!(set_cookie("wr_entry", "t", Some(60), false).ends_with("Max-Age=60"));
    }
}
