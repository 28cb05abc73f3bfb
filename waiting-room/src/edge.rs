//! The rules of the public listener that decide what reaches the upstream,
//! in one place: which methods are passed, which upstream paths are never
//! served, which pages may open a queue WebSocket. Both lanes and the
//! WebSocket endpoint call these; none of them has its own copy.

/// What the edge refuses, from `[server]`.
#[derive(Debug, Clone)]
pub struct Policy {
    methods: Vec<String>,
    deny_paths: Vec<String>,
    origins: Vec<String>,
}

/// Why a method was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodRefusal {
    /// A method HTTP defines that this proxy does not pass.
    NotAllowed,
    /// A method HTTP does not define.
    NotImplemented,
}

/// The methods of RFC 9110 (and PATCH, RFC 5789).
const KNOWN_METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

impl Default for Policy {
    fn default() -> Self {
        let server = crate::config::ServerConfig::default();
        Policy::new(&server.allowed_methods, &server.deny_paths, &server.allowed_origins)
    }
}

impl Policy {
    /// The policy from validated config values.
    pub fn new(methods: &[String], deny_paths: &[String], origins: &[String]) -> Self {
        Policy {
            methods: methods.to_vec(),
            deny_paths: deny_paths.to_vec(),
            origins: origins.iter().map(|o| o.trim_end_matches('/').to_ascii_lowercase()).collect(),
        }
    }

    /// May a request with `method` go upstream?
    pub fn method(&self, method: &str) -> Result<(), MethodRefusal> {
        if self.methods.iter().any(|m| m == method) {
            Ok(())
        } else if KNOWN_METHODS.contains(&method) {
            Err(MethodRefusal::NotAllowed)
        } else {
            Err(MethodRefusal::NotImplemented)
        }
    }

    /// The `Allow` header value of a 405.
    pub fn allow(&self) -> String {
        self.methods.join(", ")
    }

    /// Is `path` (canonical) one of the upstream's internal endpoints?
    pub fn denied(&self, path: &str) -> bool {
        self.deny_paths.iter().any(|p| crate::config::prefix_covers(p, path))
    }

    /// May a page from `origin` open a WebSocket on `host`? Requests
    /// without `Origin` are not from a browser page and are allowed; a
    /// browser always sends it on a WebSocket handshake.
    pub fn origin(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if !self.origins.is_empty() {
            return self.origins.contains(&origin);
        }
        // Same host: the origin's authority equals the Host the page was
        // served from ("null", file:// and the like never match).
        let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
        match (authority, host) {
            (Some(a), Some(h)) => !a.is_empty() && a.eq_ignore_ascii_case(h.trim()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_list_are_refused_and_unknown_ones_not_implemented() {
        let p = Policy::default();
        assert_eq!(p.method("GET"), Ok(()));
        assert_eq!(p.method("PATCH"), Ok(()));
        assert_eq!(p.method("CONNECT"), Err(MethodRefusal::NotAllowed));
        assert_eq!(p.method("TRACE"), Err(MethodRefusal::NotAllowed));
        assert_eq!(p.method("BREW"), Err(MethodRefusal::NotImplemented));
        assert_eq!(p.method("get"), Err(MethodRefusal::NotImplemented));
        assert_eq!(p.allow(), "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
    }

    #[test]
    fn internal_paths_are_denied_on_segment_boundaries() {
        let p = Policy::default();
        assert!(p.denied("/metrics") && p.denied("/admin/stats") && p.denied("/healthz/"));
        assert!(!p.denied("/metricsx") && !p.denied("/api/admin"));
    }

    #[test]
    fn websocket_origins_must_be_this_host_or_listed() {
        let p = Policy::default();
        assert!(p.origin(None, Some("tickets.example")));
        assert!(p.origin(Some("https://tickets.example"), Some("tickets.example")));
        assert!(p.origin(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!p.origin(Some("https://evil.example"), Some("tickets.example")));
        assert!(!p.origin(Some("null"), Some("tickets.example")));
        assert!(!p.origin(Some("https://tickets.example"), None));
        let p = Policy::new(&[], &[], &["https://Shop.example/".into()]);
        assert!(p.origin(Some("https://shop.example"), Some("edge.example")));
        assert!(!p.origin(Some("https://edge.example"), Some("edge.example")));
    }
}
