//! Unit tests of loading and validating the configuration, kept apart from the code they check.

use super::*;

const GOOD: &str = r#"
    [server]
    listen = "127.0.0.1:8080"
    [[queues]]
    id = "concert-42"
    paths = ["/api/events/42"]
    free_entry = 1000
    release_per_tick = 3000
    tick = "10s"
    session = "10m"
    [[queues]]
    id = "coupons"
    paths = ["/api/coupons"]
    release_per_tick = 10
    tick = "1s"
    session = "1m"
"#;

fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let env: std::collections::BTreeMap<String, String> =
        env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let c: Config = config::load_str(text, ENV_PREFIX, &env)?;
    c.validate()?;
    Ok(c)
}

#[test]
fn the_documented_shape_loads_with_defaults() {
    let c = load(GOOD, &[]).unwrap();
    assert_eq!(c.queues[0].tick, Duration::from_secs(10));
    assert_eq!(c.queues[0].abandon_after, Duration::from_secs(60));
    assert_eq!(c.queues[1].free_entry, 0);
    assert_eq!(c.store.backend, Backend::Memory);
    assert_eq!(c.server.threads, 2);
}

#[test]
fn env_switches_the_backend_and_tunes_a_queue() {
    let c = load(GOOD, &[("WR_STORE__BACKEND", "redis"), ("WR_QUEUES__1__RELEASE_PER_TICK", "50")]).unwrap();
    assert_eq!(c.store.backend, Backend::Redis);
    assert_eq!(c.queues[1].release_per_tick, 50);
}

#[test]
fn a_bad_tick_names_the_key() {
    let err = load(&GOOD.replace(r#"tick = "10s""#, r#"tick = "ten""#), &[]).unwrap_err();
    assert_eq!(err.to_string(), r#"queues[0].tick: expected a duration like "10s", got "ten""#);
}

#[test]
fn overlapping_prefixes_across_queues_are_rejected() {
    let err = load(&GOOD.replace(r#"["/api/coupons"]"#, r#"["/api/events"]"#), &[]).unwrap_err();
    assert_eq!(err.key, "queues[1].paths[0]");
    assert!(err.message.contains("overlaps queues[0].paths[0]"), "{err}");
}

#[test]
fn duplicate_ids_reserved_paths_and_silly_values_are_rejected() {
    assert_eq!(load(&GOOD.replace("\"coupons\"", "\"concert-42\""), &[]).unwrap_err().key, "queues[1].id");
    assert_eq!(load(&GOOD.replace("/api/coupons", "/wr/x"), &[]).unwrap_err().key, "queues[1].paths[0]");
    assert_eq!(load(GOOD, &[("WR_QUEUES__0__RELEASE_PER_TICK", "0")]).unwrap_err().key, "queues[0].release_per_tick");
    assert_eq!(load(GOOD, &[("WR_SERVER__LISTEN", "nowhere")]).unwrap_err().key, "server.listen");
    assert_eq!(load(GOOD, &[("WR_QUEUES__0__ID", "a b")]).unwrap_err().key, "queues[0].id");
    assert_eq!(load(GOOD, &[("WR_STORE__BACKEND", "disk")]).unwrap_err().key, "store.backend");
}

#[test]
fn the_challenge_is_off_by_default_and_its_bounds_are_checked() {
    let c = load(GOOD, &[]).unwrap();
    assert_eq!(c.queues[0].challenge, ChallengeMode::Off);
    let on = load(GOOD, &[("WR_QUEUES__1__CHALLENGE", "pow"), ("WR_QUEUES__1__CHALLENGE_MIN_BITS", "8")]).unwrap();
    assert_eq!((on.queues[1].challenge, on.queues[1].challenge_min_bits), (ChallengeMode::Pow, 8));
    assert_eq!(load(GOOD, &[("WR_QUEUES__0__CHALLENGE", "captcha")]).unwrap_err().key, "queues[0].challenge");
    assert_eq!(
        load(GOOD, &[("WR_QUEUES__0__CHALLENGE_MIN_BITS", "0")]).unwrap_err().key,
        "queues[0].challenge_min_bits"
    );
    let backwards = [("WR_QUEUES__0__CHALLENGE_MIN_BITS", "18"), ("WR_QUEUES__0__CHALLENGE_MAX_BITS", "16")];
    assert_eq!(load(GOOD, &backwards).unwrap_err().key, "queues[0].challenge_max_bits");
    assert_eq!(
        load(GOOD, &[("WR_QUEUES__0__CHALLENGE_MAX_BITS", "33")]).unwrap_err().key,
        "queues[0].challenge_max_bits"
    );
    assert_eq!(load(GOOD, &[("WR_QUEUES__0__CHALLENGE_TTL", "1s")]).unwrap_err().key, "queues[0].challenge_ttl");
}

#[test]
fn prefixes_match_on_segment_boundaries() {
    assert!(prefix_covers("/api/events/42", "/api/events/42"));
    assert!(prefix_covers("/api/events/42", "/api/events/42/seats"));
    assert!(prefix_covers("/api/events/42/", "/api/events/42/seats"));
    assert!(!prefix_covers("/api/events/42", "/api/events/420"));
    assert!(prefix_covers("/", "/anything"));
}

fn store(lines: &str) -> Result<Config, ConfigError> {
    load(&format!("[store]\nbackend = \"redis\"\n{lines}\n{GOOD}"), &[])
}

#[test]
fn a_cluster_is_named_by_its_seed_nodes() {
    let c = store(r#"cluster_nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]"#).unwrap();
    assert_eq!(
        c.store.topology(),
        RedisTopology::Cluster(&["redis://10.0.0.1:7000".to_owned(), "redis://10.0.0.2:7000".to_owned()])
    );
    assert_eq!(c.store.wait_replicas, 0);
    let err = store(r#"cluster_nodes = ["redis://10.0.0.1:7000", "10.0.0.2:7000"]"#).unwrap_err();
    assert_eq!(err.key, "store.cluster_nodes[1]");
}

#[test]
fn a_sentinel_deployment_needs_a_master_name_and_sentinels() {
    let c = store(
        r#"sentinel = { master_name = "wr", nodes = ["redis://10.0.0.1:26379"] }
           wait_replicas = 1"#,
    )
    .unwrap();
    assert_eq!(
        c.store.topology(),
        RedisTopology::Sentinel { master_name: "wr", nodes: &["redis://10.0.0.1:26379".to_owned()] }
    );
    assert_eq!(c.store.wait_replicas, 1);
    assert_eq!(
        store(r#"sentinel = { master_name = "", nodes = ["redis://a:1"] }"#).unwrap_err().key,
        "store.sentinel.master_name"
    );
    assert_eq!(store(r#"sentinel = { master_name = "wr", nodes = [] }"#).unwrap_err().key, "store.sentinel.nodes");
    assert_eq!(
        store(r#"sentinel = { master_name = "wr", nodes = ["tcp://a:1"] }"#).unwrap_err().key,
        "store.sentinel.nodes[0]"
    );
    assert!(store(r#"sentinel = { nodes = ["redis://a:1"] }"#).unwrap_err().message.contains("master_name"));
}

#[test]
fn cluster_and_sentinel_exclude_each_other() {
    let err = store(
        r#"cluster_nodes = ["redis://a:1"]
           sentinel = { master_name = "wr", nodes = ["redis://b:2"] }"#,
    )
    .unwrap_err();
    assert_eq!(err.key, "store.cluster_nodes");
    assert!(err.message.contains("not both"), "{err}");
}

#[test]
fn wait_replicas_is_bounded() {
    assert_eq!(store("wait_replicas = 17").unwrap_err().key, "store.wait_replicas");
    assert_eq!(store("wait_replicas = -1").unwrap_err().key, "store.wait_replicas");
}
