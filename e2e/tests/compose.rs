//! docker-compose.yml and the Dockerfile, checked without a Docker engine:
//! the compose file is read as compose reads it (`${VAR:-default}` resolved
//! from defaults only), each service's config is loaded through the service's
//! own loader with exactly the variables compose sets (an unknown key is an
//! error there), and every mounted file, published port, health check, cross-
//! service address and Dockerfile path is held against what exists and what
//! the services actually listen on. The negative tests prove each check bites.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_yaml::{Mapping, Value};

#[path = "compose/model.rs"]
mod model;
use model::*;

/// `host:port` (or a URL holding one) must name a service listening on that port.
fn check_address(
    c: &Value,
    loaded: &BTreeMap<String, Result<Loaded, String>>,
    what: &str,
    address: &str,
) -> Vec<String> {
    let hostport = address.split("://").last().unwrap().split(['/', '?']).next().unwrap();
    let hostport = hostport.rsplit('@').next().unwrap();
    let Some((host, port)) = hostport.rsplit_once(':') else {
        return vec![format!("{what}: {address:?} names no port")];
    };
    match listening(c, loaded, host) {
        None => vec![format!("{what}: {address:?} names no service of the compose file that loads")],
        Some(ports) if !port.parse().is_ok_and(|p| ports.contains(&p)) => {
            vec![format!("{what}: service {host} does not listen on port {port} (it listens on {ports:?})")]
        }
        Some(_) => Vec::new(),
    }
}

fn check_env(c: &Value) -> Vec<String> {
    load_all(c).into_iter().filter_map(|(name, r)| r.err().map(|e| format!("{name}: {e}"))).collect()
}

fn check_ports(c: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, loaded) in load_all(c) {
        let Ok(loaded) = loaded else { continue };
        let service = get(get(c, "services").unwrap(), &name).unwrap();
        let listeners: Vec<(SocketAddr, &str)> =
            loaded.listeners().iter().filter_map(|(a, h)| Some((a.parse().ok()?, *h))).collect();
        for (_, port) in published(service) {
            match listeners.iter().find(|(a, _)| a.port() == port) {
                None => problems.push(format!("{name}: publishes {port}, but listens on {:?}", loaded.ports())),
                Some((a, _)) if a.ip().is_loopback() => {
                    problems.push(format!("{name}: publishes {port}, but listens on {a}, unreachable from outside"))
                }
                Some(_) => {}
            }
        }
        let health = words(get(service, "healthcheck").and_then(|h| get(h, "test")));
        for url in health.iter().filter(|w| w.starts_with("http://")) {
            let rest = url.trim_start_matches("http://");
            let (hostport, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let port: u16 = hostport.rsplit(':').next().unwrap().parse().unwrap_or(0);
            if !listeners.iter().any(|(a, h)| a.port() == port && *h == path) {
                problems.push(format!("{name}: health check {url} is no health route of a listener ({listeners:?})"));
            }
        }
    }
    problems
}

fn check_mounts(c: &Value) -> Vec<String> {
    let declared: BTreeSet<String> =
        get(c, "volumes").and_then(Value::as_mapping).map(|m| m.keys().map(text).collect()).unwrap_or_default();
    let loaded = load_all(c);
    let mut problems = Vec::new();
    for (name, service) in services(c) {
        for (source, _, _) in mounts(service) {
            if !is_bind(&source) {
                if !declared.contains(&source) {
                    problems.push(format!("{name}: volume {source} is not declared under volumes:"));
                }
                continue;
            }
            let file = root().join(&source);
            if !file.exists() {
                problems.push(format!("{name}: mounts {source}, which does not exist in the repository"));
                continue;
            }
            // Point files at services: Prometheus targets, Grafana datasources and dashboard folders.
            let yamls: Vec<PathBuf> = if file.is_dir() {
                walk(&file).into_iter().filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml")).collect()
            } else {
                vec![file.clone()]
            };
            for path in yamls {
                let Ok(doc) = serde_yaml::from_str::<Value>(&std::fs::read_to_string(&path).unwrap()) else {
                    problems.push(format!("{name}: {} is not YAML", path.display()));
                    continue;
                };
                let what = format!("{name}: {}", path.strip_prefix(root()).unwrap_or(&path).display());
                for job in get(&doc, "scrape_configs").and_then(Value::as_sequence).into_iter().flatten() {
                    for sc in get(job, "static_configs").and_then(Value::as_sequence).into_iter().flatten() {
                        for t in words(get(sc, "targets")) {
                            problems.extend(check_address(c, &loaded, &what, &t));
                        }
                    }
                }
                for ds in get(&doc, "datasources").and_then(Value::as_sequence).into_iter().flatten() {
                    problems.extend(check_address(c, &loaded, &what, &get(ds, "url").map(text).unwrap_or_default()));
                }
                for p in get(&doc, "providers").and_then(Value::as_sequence).into_iter().flatten() {
                    let dir = get(p, "options").and_then(|o| get(o, "path")).map(text).unwrap_or_default();
                    problems.extend(check_inside(service, &name, &dir, true));
                }
            }
        }
        // Absolute paths in variables must exist inside the container when they are bind-mounted.
        for (key, value) in env(service) {
            if value.starts_with('/') && mounts(service).iter().any(|(s, t, _)| is_bind(s) && value.starts_with(t)) {
                problems.extend(check_inside(service, &format!("{name}: {key}"), &value, false));
            }
        }
    }
    problems
}

/// A container path must come from a bind mount of the service, and exist.
fn check_inside(service: &Value, what: &str, inside: &str, want_json: bool) -> Vec<String> {
    let hit = mounts(service).into_iter().find(|(s, t, _)| is_bind(s) && inside.starts_with(t.as_str()));
    let Some((source, target, _)) = hit else { return vec![format!("{what}: {inside} is not mounted")] };
    let path = root().join(source).join(inside[target.len()..].trim_start_matches('/'));
    if !path.exists() {
        return vec![format!("{what}: {inside} is {}, which does not exist", path.display())];
    }
    if want_json && !walk(&path).iter().any(|p| p.extension().is_some_and(|e| e == "json")) {
        return vec![format!("{what}: {} holds no dashboard JSON", path.display())];
    }
    Vec::new()
}

fn check_wiring(c: &Value) -> Vec<String> {
    let loaded = load_all(c);
    let names: BTreeSet<String> = services(c).into_iter().map(|(n, _)| n).collect();
    let mut problems = Vec::new();
    for (name, service) in services(c) {
        if let Some(Value::Mapping(deps)) = get(service, "depends_on") {
            for (dep, how) in deps {
                let (dep, condition) = (text(dep), get(how, "condition").map(text).unwrap_or_default());
                let Some((_, target)) = services(c).into_iter().find(|(n, _)| *n == dep) else {
                    problems.push(format!("{name}: depends on unknown service {dep}"));
                    continue;
                };
                if condition == "service_healthy" && get(target, "healthcheck").is_none() {
                    problems.push(format!("{name}: waits for {dep} to be healthy, but {dep} has no healthcheck"));
                }
            }
        }
    }
    // Where both services keep keys: the proxy's key dir and the booking core's public dir.
    let mut keys: Vec<(String, String, String, bool)> = Vec::new(); // (service, volume, path in volume, read-only)
    for (name, l) in &loaded {
        let Ok(l) = l else { continue };
        let service = get(get(c, "services").unwrap(), name).unwrap();
        let dir = match l {
            Loaded::Proxy(cfg, serving) => {
                if *serving {
                    let upstream = &cfg.server.upstream;
                    problems.extend(check_address(c, &loaded, &format!("{name}: server.upstream"), upstream));
                }
                if *serving && cfg.store.backend == waiting_room::config::Backend::Redis {
                    problems.extend(check_address(c, &loaded, &format!("{name}: store"), &cfg.store.redis_url));
                }
                format!("{}/public", cfg.keys.dir.display())
            }
            Loaded::Booking(cfg, serving) => {
                if *serving {
                    problems.extend(check_address(c, &loaded, &format!("{name}: database.url"), &cfg.database.url));
                }
                if *serving && !cfg.redis.url.is_empty() {
                    problems.extend(check_address(c, &loaded, &format!("{name}: redis.url"), &cfg.redis.url));
                }
                cfg.keys.public_dir.display().to_string()
            }
        };
        match mounts(service).into_iter().find(|(s, t, _)| !is_bind(s) && dir.starts_with(t.as_str())) {
            Some((volume, target, ro)) => keys.push((name.clone(), volume, dir[target.len()..].to_owned(), ro)),
            None => problems.push(format!("{name}: keys at {dir} are on no named volume, so nothing shares them")),
        }
    }
    let places: BTreeSet<(&String, &String)> = keys.iter().map(|(_, v, p, _)| (v, p)).collect();
    if places.len() > 1 {
        problems.push(format!("the services keep their keys in different places: {keys:?}"));
    }
    if !keys.iter().any(|(n, _, _, ro)| !ro && matches!(loaded.get(n), Some(Ok(Loaded::Proxy(..))))) {
        problems.push("no waiting-room service can write the key volume to create the keys".into());
    }
    for want in ["redis", "postgres", "prometheus", "grafana"] {
        if !names.contains(want) {
            problems.push(format!("no {want} service"));
        }
    }
    if let Some((_, redis)) = services(c).into_iter().find(|(n, _)| n == "redis") {
        let cmd = words(get(redis, "command")).join(" ");
        if !cmd.contains("--appendonly yes") {
            problems.push(format!("redis runs without AOF (--appendonly yes): {cmd:?}"));
        }
    }
    problems
}

fn check_dockerfile(c: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let ignored: Vec<String> = std::fs::read_to_string(root().join(".dockerignore"))
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let members = std::fs::read_to_string(root().join("Cargo.toml")).unwrap().parse::<toml::Table>().unwrap();
    let members: Vec<String> = members["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m.as_str())
        .map(|m| std::fs::read_to_string(root().join(m).join("Cargo.toml")).unwrap())
        .map(|t| t.parse::<toml::Table>().unwrap()["package"]["name"].as_str().unwrap().to_owned())
        .collect();
    let mut files = BTreeSet::new();
    for (name, service) in services(c) {
        let Some(build) = get(service, "build") else { continue };
        let file = dockerfile_of(build);
        if !file.is_file() {
            problems.push(format!("{name}: build uses {}, which does not exist", file.display()));
            continue;
        }
        let target = get(build, "target").map(text).unwrap_or_default();
        if !dockerfile(&file).iter().any(|s| s.name == target) {
            problems.push(format!("{name}: build target {target:?} is no stage of {}", file.display()));
        }
        files.insert(file);
    }
    for file in files {
        let stages = dockerfile(&file);
        for (i, stage) in stages.iter().enumerate() {
            for (from, sources, _) in &stage.copies {
                match from {
                    Some(f) if !stages[..i].iter().any(|s| &s.name == f) => {
                        problems.push(format!("{}: COPY --from={f} names no earlier stage", stage.name))
                    }
                    Some(_) => {}
                    None => {
                        for s in sources {
                            let first = s.trim_start_matches("./").trim_end_matches('/');
                            if !root().join(first).exists() {
                                problems.push(format!("{}: COPY {s}: no such path in the repository", stage.name));
                            }
                            if ignored.iter().any(|p| p.trim_end_matches('/') == first) {
                                problems.push(format!("{}: COPY {s}, but .dockerignore leaves it out", stage.name));
                            }
                        }
                    }
                }
            }
            let commands = stage.runs.iter().flat_map(|r| r.split("&&").flat_map(|c| c.split(';')));
            for command in commands.filter(|c| c.split_whitespace().next() == Some("cargo")) {
                let w: Vec<&str> = command.split_whitespace().collect();
                for pkg in w.windows(2).filter(|p| p[0] == "-p").map(|p| p[1]) {
                    if !members.iter().any(|m| m == pkg) {
                        problems.push(format!("{}: cargo -p {pkg} is no workspace package", stage.name));
                    }
                }
            }
        }
    }
    problems
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "docker-compose.yml / Dockerfile:\n  {}", problems.join("\n  "));
}

fn service_mut<'a>(c: &'a mut Value, name: &str) -> &'a mut Mapping {
    c.get_mut("services").unwrap().get_mut(name).unwrap().as_mapping_mut().unwrap()
}

#[test]
fn every_file_the_compose_file_mounts_exists_and_points_at_compose_services() {
    assert_none(check_mounts(&compose()));
}

#[test]
fn every_service_variable_is_a_key_the_service_reads() {
    let c = compose();
    assert_eq!(load_all(&c).len(), 3, "keys-init, booking-core and waiting-room run our binaries");
    assert_none(check_env(&c));
}

#[test]
fn every_published_port_and_health_check_is_one_the_service_listens_on() {
    assert_none(check_ports(&compose()));
}

#[test]
fn services_reach_each_other_by_name_and_share_the_key_volume() {
    assert_none(check_wiring(&compose()));
}

#[test]
fn the_dockerfile_copies_paths_that_exist_and_builds_workspace_packages() {
    assert_none(check_dockerfile(&compose()));
}

#[test]
fn a_misspelt_or_misplaced_variable_fails_the_check() {
    let mut c = compose();
    let env = service_mut(&mut c, "waiting-room").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("WR_SERVER__LISTN".into(), "0.0.0.0:8080".into());
    let problems = check_env(&c);
    assert!(problems.iter().any(|p| p.contains("listn")), "{problems:?}");

    let mut c = compose();
    let env = service_mut(&mut c, "waiting-room").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("BC_DATABASE__URL".into(), "postgres://x@postgres/booking".into());
    assert!(check_env(&c).iter().any(|p| p.contains("reads only WR_")));

    let mut c = compose();
    let env = service_mut(&mut c, "booking-core").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("BC_SERVER__LISTEN".into(), "0.0.0.0:8000".into());
    assert!(!check_ports(&c).is_empty(), "published 8081 but listening on 8000");
}

#[test]
fn wrong_ports_mounts_and_addresses_fail_the_checks() {
    let mut c = compose();
    let wr = service_mut(&mut c, "waiting-room");
    wr.insert("ports".into(), serde_yaml::from_str("[\"8080:8000\"]").unwrap());
    assert!(check_ports(&c).iter().any(|p| p.contains("publishes 8000")));

    let mut c = compose();
    let env = service_mut(&mut c, "waiting-room").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("WR_SERVER__METRICS_LISTEN".into(), "127.0.0.1:9091".into());
    assert!(check_ports(&c).iter().any(|p| p.contains("unreachable")));

    let mut c = compose();
    let env = service_mut(&mut c, "waiting-room").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("WR_SERVER__UPSTREAM".into(), "booking:8081".into());
    assert!(check_wiring(&c).iter().any(|p| p.contains("server.upstream")));

    let mut c = compose();
    let vols = service_mut(&mut c, "prometheus").get_mut("volumes").unwrap().as_sequence_mut().unwrap();
    vols.push("./configs/no-such-file.yml:/etc/x.yml:ro".into());
    assert!(check_mounts(&c).iter().any(|p| p.contains("no-such-file")));

    // Prometheus keeps scraping the old port: the mounted config no longer matches.
    let mut c = compose();
    let env = service_mut(&mut c, "waiting-room").get_mut("environment").unwrap().as_mapping_mut().unwrap();
    env.insert("WR_SERVER__METRICS_LISTEN".into(), "0.0.0.0:9095".into());
    assert!(check_mounts(&c).iter().any(|p| p.contains("prometheus.yml") && p.contains("9091")));

    assert!(interpolate("a ${SECRET} b").is_err());
    assert_eq!(interpolate("${A:-x}-${B-y}-$$").unwrap(), "x-y-$");
}
