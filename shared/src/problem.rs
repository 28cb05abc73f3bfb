//! RFC 9457 problem details: the one error body both services answer with.

use serde::Serialize;
use serde_json::{Map, Value};

/// Media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An `application/problem+json` body. `detail` must tell a person what to do.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the problem type (the status reason phrase by default).
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What was wrong with this request, and how to fix it.
    pub detail: String,
    /// Extension members (for example `join_url`, `queue`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Problem {
    /// A problem with `type: about:blank` and the status's reason phrase as title.
    pub fn new(status: u16, detail: impl Into<String>) -> Self {
        Problem {
            kind: "about:blank".to_owned(),
            title: reason(status).to_owned(),
            status,
            detail: detail.into(),
            extra: Map::new(),
        }
    }

    /// Set a specific problem type URI and title.
    pub fn typed(mut self, kind: impl Into<String>, title: impl Into<String>) -> Self {
        self.kind = kind.into();
        self.title = title.into();
        self
    }

    /// Add an extension member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// The JSON body.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a struct of strings and a JSON map cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// Reason phrase for the status codes these services use.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_serializes_type_title_status_detail_and_extensions() {
        let p = Problem::new(401, "join the queue first").with("join_url", "/wr/q/join");
        let v: Value = serde_json::from_slice(&p.to_json()).unwrap();
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["title"], "Unauthorized");
        assert_eq!(v["status"], 401);
        assert_eq!(v["detail"], "join the queue first");
        assert_eq!(v["join_url"], "/wr/q/join");
    }
}
