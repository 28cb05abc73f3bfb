//! The one place errors become responses: every error type of every area
//! implements [`ApiError`] (its status code and, optionally, extension
//! members), and [`Failure::render`] turns it into an
//! `application/problem+json` body. Server-side failures are logged here and
//! answered without internal detail.

use bytes::Bytes;
use http::StatusCode;
use shared::problem::Problem;

use crate::store::StoreError;

/// An error a handler can answer with.
pub trait ApiError: std::error::Error + Send + Sync + 'static {
    /// The HTTP status it maps to.
    fn status(&self) -> StatusCode;

    /// Add extension members (for example the existing claim on a 409).
    fn extend(&self, problem: Problem) -> Problem {
        problem
    }

    /// The `Allow` header value, for a 405.
    fn allow(&self) -> Option<&'static str> {
        None
    }

    /// Seconds for a `Retry-After` header (429, 503 and "still in flight" 409s).
    fn retry_after(&self) -> Option<u64> {
        None
    }
}

/// Any [`ApiError`], boxed, so handlers can use `?` on every area's errors.
pub struct Failure(Box<dyn ApiError>);

impl<E: ApiError> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(Box::new(e))
    }
}

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Failure({}: {})", self.0.status(), self.0)
    }
}

impl Failure {
    /// The status this failure answers with.
    pub fn status(&self) -> StatusCode {
        self.0.status()
    }

    /// The `Allow` header value, for a 405.
    pub fn allow(&self) -> Option<&'static str> {
        self.0.allow()
    }

    /// Seconds for a `Retry-After` header. Every 503 has one: an outage is
    /// worth retrying shortly.
    pub fn retry_after(&self) -> Option<u64> {
        self.0.retry_after().or_else(|| (self.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(1))
    }

    /// Status and problem+json body. 5xx are logged with their cause chain and
    /// answered with a generic detail, so no internals leak to clients.
    pub fn render(&self) -> (StatusCode, Bytes) {
        let status = self.0.status();
        let problem = if status.is_server_error() {
            tracing::error!(status = status.as_u16(), error = %chain(&*self.0), "request failed");
            let detail = if status == StatusCode::SERVICE_UNAVAILABLE {
                "the service is briefly unable to answer; retry in a moment"
            } else {
                "internal error; quote the x-request-id response header when reporting it"
            };
            self.0.extend(Problem::new(status.as_u16(), detail))
        } else {
            self.0.extend(Problem::new(status.as_u16(), self.0.to_string()))
        };
        (status, Bytes::from(problem.to_json()))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A database failure that no area turned into a client error.
/// Unavailable → 503; anything else (including an unmapped constraint) → 500.
impl ApiError for StoreError {
    fn status(&self) -> StatusCode {
        match self {
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Constraint(_) | StoreError::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A handler task that panicked or was cancelled → 500.
#[derive(Debug, thiserror::Error)]
#[error("handler task failed: {0}")]
pub struct HandlerPanicked(pub String);

impl ApiError for HandlerPanicked {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Problems with the request itself, found before any handler logic.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// → 404: no route has this path.
    #[error("no resource at {0}; see the API routes in the booking-core README")]
    NoRoute(String),
    /// → 405: the path exists but not with this method.
    #[error("{method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods the route accepts.
        allow: &'static str,
    },
    /// → 400: the path is not in its one canonical form (`shared::path`):
    /// the proxy's gate and this router must read every path the same way.
    #[error("{0}; send the path in its plain form")]
    BadPath(shared::path::PathError),
    /// → 400: a path parameter is not what the route expects.
    #[error("{what} must be a positive integer written plainly (1, not 01 or +1), got \"{value}\"")]
    BadId {
        /// Which parameter.
        what: &'static str,
        /// The text found.
        value: String,
    },
    /// → 413: the body is larger than `server.body_limit_bytes`.
    #[error("the request body is larger than {limit} bytes; send a smaller JSON document")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// → 400: the body could not be read.
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
    /// → 415: a body that is not JSON.
    #[error("the request body must be JSON (Content-Type: application/json), got {0}")]
    NotJson(String),
    /// → 400: the body is not well-formed JSON.
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// → 422: well-formed JSON that does not fit the expected shape.
    #[error("invalid request body at `{path}`: {message}")]
    InvalidJson {
        /// Where in the document (`seat_id`, `.`).
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl ApiError for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::NoRoute(_) => StatusCode::NOT_FOUND,
            RequestError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::BadId { .. }
            | RequestError::BadPath(_)
            | RequestError::Unreadable(_)
            | RequestError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            RequestError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::InvalidJson { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn extend(&self, problem: Problem) -> Problem {
        match self {
            RequestError::MethodNotAllowed { allow, .. } => problem.with("allow", *allow),
            RequestError::InvalidJson { path, .. } => problem.with("field", path.as_str()),
            _ => problem,
        }
    }

    fn allow(&self) -> Option<&'static str> {
        match self {
            RequestError::MethodNotAllowed { allow, .. } => Some(allow),
            _ => None,
        }
    }
}
