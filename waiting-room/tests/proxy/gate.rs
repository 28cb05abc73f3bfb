//! The gate: only valid tokens for the path's queue reach the upstream.

use base64::Engine;
use shared::keys::KeyDir;
use shared::token::{EntryClaims, TokenSigner};

use crate::helpers::*;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn claims(queue: &str, exp: i64) -> EntryClaims {
    EntryClaims { sub: "ab".repeat(16), aud: queue.into(), iat: now(), exp, jti: "t".into() }
}

async fn proxy_with_keys(upstream: &Upstream, keys: &std::path::Path) -> Proxy {
    let queues = format!("{}{}", queue("a", "/a", 10, "1s", "10m", 0), queue("b", "/b", 10, "1s", "10m", 0));
    Proxy::start(ProxySpec {
        queues: &queues,
        upstream: upstream.addr,
        redis_prefix: None,
        keys_dir: Some(keys),
        redis_url: None,
        store: None,
        limits: ONE_ADDRESS_LIMITS,
        open_files: None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_alg_none_unknown_kid_and_other_queue_tokens_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let keys = KeyDir::open_or_create(dir.path()).unwrap();
    let proxy = proxy_with_keys(&upstream, dir.path()).await;

    let other_dir = tempfile::tempdir().unwrap();
    let other = KeyDir::open_or_create(other_dir.path()).unwrap();
    let other_pem = std::fs::read(other_dir.path().join("signing.pem")).unwrap();
    let impostor = TokenSigner::from_pkcs8_pem(keys.signer.kid(), &other_pem).unwrap();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let alg_none = format!(
        "{}.{}.",
        b64.encode(format!(r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#, keys.signer.kid())),
        b64.encode(serde_json::to_vec(&claims("a", now() + 600)).unwrap())
    );
    let bad = [
        ("forged", impostor.sign(&claims("a", now() + 600)).unwrap()),
        ("unknown kid", other.signer.sign(&claims("a", now() + 600)).unwrap()),
        ("expired", keys.signer.sign(&claims("a", now() - 5)).unwrap()),
        ("alg none", alg_none),
        ("other queue", keys.signer.sign(&claims("b", now() + 600)).unwrap()),
        ("garbage", "not.a.token".to_owned()),
    ];
    let c = client();
    for (what, token) in &bad {
        let r =
            c.get(proxy.url("/a/seats")).bearer_auth(token).header("accept", "application/json").send().await.unwrap();
        assert_eq!(r.status(), 401, "{what}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["queue"], "a", "{what}");
        assert_eq!(body["join_url"], "/wr/a/join", "{what}");

        let r = c
            .get(proxy.url("/a/seats?x=1"))
            .header("cookie", format!("wr_entry={token}"))
            .header("accept", "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{what}");
        assert_eq!(r.headers()["location"], "/wr/a?return_to=/a/seats%3Fx%3D1", "{what}");
        assert_eq!(upstream.carrying(token), 0, "{what} token reached the upstream");
    }
    assert_eq!(upstream.count(), 0);
    let r = c.get(proxy.url("/a")).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token at all");

    // A valid token passes, with the verified visitor id (a spoofed one is replaced).
    let good = keys.signer.sign(&claims("a", now() + 600)).unwrap();
    let r = c.get(proxy.url("/a/seats")).bearer_auth(&good).header("x-visitor-id", "spoofed").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = upstream.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.visitor.as_deref(), Some("ab".repeat(16).as_str()));
    assert_eq!(seen.authorization, Some(format!("Bearer {good}")), "the token is passed through");
    assert!(seen.request_id.is_some_and(|id| id.len() >= 8));
    // Cached now: the same token keeps working, and still only for its queue.
    assert_eq!(c.get(proxy.url("/a/x")).bearer_auth(&good).send().await.unwrap().status(), 200);
    assert_eq!(c.get(proxy.url("/b/x")).bearer_auth(&good).send().await.unwrap().status(), 401);
    assert_eq!(upstream.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_every_queue_pass_straight_through_without_a_visitor_id() {
    let upstream = Upstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = proxy_with_keys(&upstream, dir.path()).await;
    let c = client();
    for path in ["/", "/public/x", "/ab", "/a2/seats"] {
        let r = c.get(proxy.url(path)).header("x-visitor-id", "spoofed").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let seen = upstream.seen.lock().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/", "/public/x", "/ab", "/a2/seats"]);
    assert!(seen.iter().all(|s| s.visitor.is_none()), "x-visitor-id must be stripped: {seen:?}");
}
