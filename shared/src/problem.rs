//! RFC 9457 problem details: the one error body both services answer with.

use serde::Serialize;
use serde_json::{Map, Value};

/// Media type of a problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An `application/problem+json` body. `detail` must tell a person what to do.
///
/// Its OpenAPI schema (both services' documents refer to it) lists the four
/// standard members; extension members are allowed and named per response.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(example = json!({
    "type": "about:blank", "title": "Not Found", "status": 404,
    "detail": "there is no event 7; GET /api/events lists them"
}))]
pub struct Problem {
    /// A URI naming the problem type; `about:blank` when the status says it all.
    #[serde(rename = "type")]
    #[schema(example = "about:blank")]
    pub kind: String,
    /// Short summary of the problem type (the status reason phrase by default).
    pub title: String,
    /// The HTTP status code (the same as the response's).
    #[schema(minimum = 400, maximum = 599)]
    pub status: u16,
    /// What was wrong with this request, and how to fix it.
    pub detail: String,
    /// Extension members (for example `join_url`, `queue`).
    #[serde(flatten)]
    #[schema(ignore)]
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

/// An OpenAPI response whose body is a [`Problem`] (referenced as
/// `#/components/schemas/Problem`), showing real bodies as named examples.
/// The description is `description` followed by each example's `detail`.
pub fn openapi_response(description: &str, examples: Vec<(&str, Value)>) -> utoipa::openapi::Response {
    use utoipa::openapi::example::ExampleBuilder;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let mut text = description.to_owned();
    for (name, body) in &examples {
        text.push_str(&format!("\n- `{name}`: {}", body["detail"].as_str().unwrap_or_default()));
    }
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("Problem")))
        .examples_from_iter(
            examples.into_iter().map(|(name, body)| (name, ExampleBuilder::new().value(Some(body)).build())),
        )
        .build();
    ResponseBuilder::new().description(text).content(CONTENT_TYPE, content).build()
}

/// Reason phrase for the status codes these services use.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
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
    fn the_schema_requires_the_four_standard_members_and_allows_extensions() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(Problem::schema()).unwrap();
        let mut required: Vec<&str> = schema["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        required.sort_unstable();
        assert_eq!(required, ["detail", "status", "title", "type"], "{schema}");
        assert!(schema.get("additionalProperties").is_none_or(|a| a != false), "{schema}");
    }

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
