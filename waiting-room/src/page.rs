//! The queue page served at `/wr/{q}`.

use crate::api::StatusMessage;
use crate::queues::Queue;

/// Only same-origin relative paths may be returned to; anything else is `/`.
pub fn safe_return_to(raw: Option<&str>) -> String {
    match raw {
        Some(p)
            if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Escape text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Render the page for a visitor's current standing.
pub fn render(queue: &Queue, m: &StatusMessage, return_to: &str) -> String {
    let name = escape(queue.config.display_name());
    let target = escape(return_to);
    let (refresh, body) = match m.status {
        "READY" => (format!("0;url={target}"), format!("<p>You're in. <a href=\"{target}\">Continue</a></p>")),
        _ => (
            format!("{}", m.retry_after_seconds.unwrap_or(5)),
            format!(
                "<p>Your position: <strong>{}</strong></p><p>Estimated wait: {} s</p>",
                m.position.unwrap_or(0),
                m.eta_seconds.unwrap_or(0)
            ),
        ),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"{refresh}\"><title>{name}</title></head><body><h1>{name}</h1>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_same_origin_paths_are_returned_to() {
        assert_eq!(safe_return_to(Some("/api/events/42?x=1")), "/api/events/42?x=1");
        assert_eq!(safe_return_to(Some("//evil.example/x")), "/");
        assert_eq!(safe_return_to(Some("https://evil.example/")), "/");
        assert_eq!(safe_return_to(Some("/\\evil")), "/");
        assert_eq!(safe_return_to(None), "/");
    }
}
