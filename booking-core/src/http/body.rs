//! Reading request bodies (bounded) and parsing JSON into typed requests with
//! errors that say where the document went wrong.

use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;

use crate::problem::RequestError;

/// How much of an oversized body is read and thrown away before answering
/// 413, so the client is not reset mid-upload and gets to read the answer.
const DRAIN_LIMIT: usize = 4 * 1024 * 1024;
/// How long that draining may take.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Read the whole body, refusing anything larger than `limit`.
pub async fn read(body: Incoming, headers: &HeaderMap, limit: usize) -> Result<Bytes, RequestError> {
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        drain(body).await;
        return Err(RequestError::TooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(RequestError::TooLarge { limit })
        }
        Err(e) => Err(RequestError::Unreadable(e.to_string())),
    }
}

async fn drain(mut body: Incoming) {
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    })
    .await;
}

/// Parse a JSON body into `T` (which should `deny_unknown_fields`).
/// Syntax errors → 400; shape errors (unknown or missing fields, wrong types)
/// → 422 naming the field.
pub fn json<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8], example: &str) -> Result<T, RequestError> {
    check_content_type(headers, body)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(RequestError::MalformedJson(format!("the body is empty; send a JSON object like {example}")));
    }
    // Parse to a value first: a syntax error is the client's transport, a
    // shape error is their request, and a struct must come as an object (serde
    // would otherwise accept `[17]` for `{"seat_id": 17}`).
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| RequestError::MalformedJson(format!("{e}; expected a JSON object like {example}")))?;
    if !value.is_object() {
        return Err(RequestError::InvalidJson {
            path: ".".into(),
            message: format!("expected a JSON object like {example}"),
        });
    }
    serde_path_to_error::deserialize(value)
        .map_err(|e| RequestError::InvalidJson { path: e.path().to_string(), message: e.into_inner().to_string() })
}

/// Like [`json`] for routes whose body is optional: empty means `T::default()`.
pub fn optional_json<T: DeserializeOwned + Default>(headers: &HeaderMap, body: &[u8]) -> Result<T, RequestError> {
    if body.iter().all(u8::is_ascii_whitespace) { Ok(T::default()) } else { json(headers, body, "{}") }
}

/// The body of a route that takes none: absent, or an empty JSON object.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyObject {}

fn check_content_type(headers: &HeaderMap, body: &[u8]) -> Result<(), RequestError> {
    match headers.get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("")) {
        Some(ct) if !body.is_empty() && !ct.to_ascii_lowercase().contains("json") => {
            Err(RequestError::NotJson(format!("\"{ct}\"")))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Hold {
        #[allow(dead_code)]
        seat_id: i64,
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_name_the_field() {
        let h = HeaderMap::new();
        assert!(matches!(json::<Hold>(&h, b"{\"seat_id\":", "{}"), Err(RequestError::MalformedJson(_))));
        assert!(matches!(json::<Hold>(&h, b"", "{}"), Err(RequestError::MalformedJson(_))));
        assert!(matches!(json::<Hold>(&h, b"{\"seat_id\":1} x", "{}"), Err(RequestError::MalformedJson(_))));
        match json::<Hold>(&h, br#"{"seat_id":"one"}"#, "{}") {
            Err(RequestError::InvalidJson { path, .. }) => assert_eq!(path, "seat_id"),
            other => panic!("{other:?}"),
        }
        match json::<Hold>(&h, br#"{"seat_id":1,"extra":2}"#, "{}") {
            Err(RequestError::InvalidJson { message, .. }) => assert!(message.contains("extra"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
