//! Reading docker-compose.yml and the Dockerfile the way compose and
//! docker build read them (enough of it for the checks in `compose.rs`), and
//! loading the config of each service that runs one of our binaries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

/// What a service of ours runs, what it was configured with, and whether it
/// serves (false for one-shot subcommands such as `rotate-key`).
pub enum Loaded {
    Proxy(Box<waiting_room::config::Config>, bool),
    Booking(Box<booking_core::Config>, bool),
}

impl Loaded {
    /// (address, health path or "") of every listener.
    pub fn listeners(&self) -> Vec<(String, &'static str)> {
        match self {
            Loaded::Proxy(c, _) => {
                let mut l = vec![(c.server.listen.clone(), "/wr/healthz"), (c.server.metrics_listen.clone(), "")];
                if !c.admin.listen.is_empty() && !c.admin.token.is_empty() {
                    l.push((c.admin.listen.clone(), ""));
                }
                l
            }
            Loaded::Booking(c, _) => {
                let mut l = vec![(c.server.listen.clone(), "")];
                if !c.admin.listen.is_empty() {
                    l.push((c.admin.listen.clone(), "/healthz"));
                }
                l
            }
        }
    }

    pub fn ports(&self) -> BTreeSet<u16> {
        self.listeners().iter().filter_map(|(a, _)| a.parse::<SocketAddr>().ok()).map(|a| a.port()).collect()
    }
}

/// One Dockerfile stage: `FROM base AS name`, its COPYs, RUNs and ENTRYPOINT.
#[derive(Default)]
pub struct Stage {
    pub name: String,
    pub base: String,
    pub copies: Vec<(Option<String>, Vec<String>, String)>,
    pub runs: Vec<String>,
    pub entrypoint: Vec<String>,
}

pub fn root() -> PathBuf {
    e2e::workspace_root()
}

/// Compose's interpolation, from defaults only, so the outcome never depends
/// on the environment of whoever runs the tests.
pub fn interpolate(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or("unclosed ${")?;
            let expr = &inner[..end];
            match expr.split_once(":-").or_else(|| expr.split_once('-')) {
                Some((_, default)) => out.push_str(default),
                None => return Err(format!("${{{expr}}} has no default: a fresh clone would run with it empty")),
            }
            rest = &inner[end + 1..];
        } else {
            return Err(format!("bare ${} reference; write ${{NAME:-default}}", &after[..after.len().min(20)]));
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&interpolate(&text).unwrap()).unwrap()
}

pub fn dockerfile(path: &Path) -> Vec<Stage> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut stages: Vec<Stage> = Vec::new();
    let joined = text.replace("\\\n", " ");
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (op, args) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<String> = args.split_whitespace().map(str::to_owned).collect();
        match op.to_ascii_uppercase().as_str() {
            "FROM" => {
                let name = words.iter().position(|w| w.eq_ignore_ascii_case("as")).map(|i| words[i + 1].clone());
                stages.push(Stage { name: name.unwrap_or_default(), base: words[0].clone(), ..Stage::default() });
            }
            "COPY" => {
                let from = words.iter().find_map(|w| w.strip_prefix("--from=")).map(str::to_owned);
                let paths: Vec<String> = words.iter().filter(|w| !w.starts_with("--")).cloned().collect();
                let (dest, sources) = paths.split_last().unwrap();
                stages.last_mut().unwrap().copies.push((from, sources.to_vec(), dest.clone()));
            }
            "RUN" => stages.last_mut().unwrap().runs.push(args.to_owned()),
            "ENTRYPOINT" => stages.last_mut().unwrap().entrypoint = serde_json::from_str(args).unwrap(),
            _ => {}
        }
    }
    stages
}

/// A stage and its ancestors within the file, nearest first.
pub fn lineage<'a>(stages: &'a [Stage], name: &str) -> Vec<&'a Stage> {
    let mut chain = Vec::new();
    let mut next = stages.iter().find(|s| s.name == name);
    while let Some(stage) = next {
        chain.push(stage);
        next = stages.iter().find(|s| s.name == stage.base);
    }
    chain
}

pub fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_mapping().and_then(|m| m.get(key))
}

pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
    }
}

pub fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(items)) => items.iter().flat_map(|i| words(Some(i))).collect(),
        Some(v) => text(v).split_whitespace().map(str::to_owned).collect(),
        None => Vec::new(),
    }
}

pub fn services(c: &Value) -> Vec<(String, &Value)> {
    get(c, "services").and_then(Value::as_mapping).unwrap().iter().map(|(k, v)| (text(k), v)).collect()
}

pub fn env(service: &Value) -> BTreeMap<String, String> {
    match get(service, "environment") {
        Some(Value::Mapping(m)) => m.iter().map(|(k, v)| (text(k), text(v))).collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                let t = text(i);
                let (k, v) = t.split_once('=').unwrap_or((&t, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// (source, target, read_only); a source starting with `.` or `/` is a bind mount.
pub fn mounts(service: &Value) -> Vec<(String, String, bool)> {
    let Some(Value::Sequence(items)) = get(service, "volumes") else { return Vec::new() };
    items
        .iter()
        .map(|v| match v {
            Value::Mapping(_) => {
                let ro = get(v, "read_only").and_then(Value::as_bool).unwrap_or(false);
                (get(v, "source").map(text).unwrap_or_default(), get(v, "target").map(text).unwrap_or_default(), ro)
            }
            v => {
                let t = text(v);
                let parts: Vec<&str> = t.split(':').collect();
                (parts[0].to_owned(), parts.get(1).copied().unwrap_or("").to_owned(), parts.get(2) == Some(&"ro"))
            }
        })
        .collect()
}

pub fn is_bind(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/')
}

/// (host ip, container port) of every published port.
pub fn published(service: &Value) -> Vec<(String, u16)> {
    let Some(Value::Sequence(items)) = get(service, "ports") else { return Vec::new() };
    items
        .iter()
        .map(|p| match p {
            Value::Mapping(_) => {
                (get(p, "host_ip").map(text).unwrap_or_default(), get(p, "target").map(text).unwrap().parse().unwrap())
            }
            p => {
                let t = text(p);
                let t = t.split('/').next().unwrap();
                let parts: Vec<&str> = t.split(':').collect();
                let ip = if parts.len() == 3 { parts[0] } else { "" };
                (ip.to_owned(), parts.last().unwrap().parse().unwrap())
            }
        })
        .collect()
}

/// Which binary the service runs ("waiting-room" / "booking-core"), and the
/// Dockerfile stages of its image, if it is built here.
pub fn image_of<'a>(c: &'a Value, service: &'a Value) -> Option<(String, &'a Value)> {
    let build = get(service, "build").or_else(|| {
        let image = get(service, "image")?;
        services(c)
            .into_iter()
            .find(|(_, s)| get(s, "image") == Some(image) && get(s, "build").is_some())?
            .1
            .get("build")
    })?;
    Some((get(build, "target").map(text).unwrap_or_default(), build))
}

pub fn dockerfile_of(build: &Value) -> PathBuf {
    let context = root().join(get(build, "context").map(text).unwrap_or_else(|| ".".into()));
    context.join(get(build, "dockerfile").map(text).unwrap_or_else(|| "Dockerfile".into()))
}

/// The repo file behind a path inside the service's container.
pub fn repo_path(stages: &[Stage], target: &str, service: &Value, inside: &str) -> Option<PathBuf> {
    for (source, mount, _) in mounts(service) {
        if is_bind(&source)
            && let Some(rest) = inside.strip_prefix(&mount)
        {
            return Some(root().join(source).join(rest.trim_start_matches('/')));
        }
    }
    for stage in lineage(stages, target) {
        for (from, sources, dest) in &stage.copies {
            if from.is_none()
                && sources.len() == 1
                && let Some(rest) = inside.strip_prefix(dest.as_str())
            {
                return Some(root().join(&sources[0]).join(rest.trim_start_matches('/')));
            }
        }
    }
    None
}

/// Load the config of every service running one of our binaries, with
/// exactly its compose environment, through the binary's own loader.
pub fn load_all(c: &Value) -> BTreeMap<String, Result<Loaded, String>> {
    let mut out = BTreeMap::new();
    for (name, service) in services(c) {
        let Some((target, build)) = image_of(c, service) else { continue };
        let stages = dockerfile(&dockerfile_of(build));
        let entry =
            lineage(&stages, &target).into_iter().find(|s| !s.entrypoint.is_empty()).map(|s| s.entrypoint.clone());
        let mut argv = words(get(service, "entrypoint"));
        if argv.is_empty() {
            argv = entry.unwrap_or_default();
        }
        argv.extend(words(get(service, "command")));
        let vars = env(service);
        let result = (|| {
            let binary =
                argv.iter().find(|w| *w == "waiting-room" || *w == "booking-core").ok_or("runs neither binary")?;
            let prefix = if binary == "waiting-room" { "WR_" } else { "BC_" };
            if let Some(stray) =
                vars.keys().find(|k| (k.starts_with("WR_") || k.starts_with("BC_")) && !k.starts_with(prefix))
            {
                return Err(format!("{stray} is set, but {binary} reads only {prefix}… variables"));
            }
            let mut after = argv.iter().skip_while(|w| *w != "--config").skip(1);
            let inside = after.next().ok_or("no --config argument")?;
            // `waiting-room … rotate-key` and the like run once and serve nothing.
            let serving = after.next().is_none();
            let file = repo_path(&stages, &target, service, inside).ok_or(format!("{inside} is not from the repo"))?;
            let file = Some(file.as_path());
            if binary == "waiting-room" {
                waiting_room::config::Config::load(file, &vars).map(|c| Loaded::Proxy(Box::new(c), serving))
            } else {
                booking_core::Config::load(file, &vars).map(|c| Loaded::Booking(Box::new(c), serving))
            }
            .map_err(|e| format!("its config does not load with these variables: {e}"))
        })();
        out.insert(name, result);
    }
    out
}

/// Ports a service listens on: from its loaded config, else what it publishes.
pub fn listening(c: &Value, loaded: &BTreeMap<String, Result<Loaded, String>>, name: &str) -> Option<BTreeSet<u16>> {
    match loaded.get(name) {
        Some(Ok(l)) => Some(l.ports()),
        Some(Err(_)) => None,
        // Images of others: what they publish or `expose`.
        None => services(c).into_iter().find(|(n, _)| n == name).map(|(_, s)| {
            let exposed = words(get(s, "expose")).into_iter().filter_map(|p| p.split('/').next()?.parse().ok());
            published(s).into_iter().map(|p| p.1).chain(exposed).collect()
        }),
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
