//! The layered config loader both services use: a TOML file, then environment
//! variables `PREFIX_SECTION__KEY` (`__` separates levels, a number indexes an
//! array: `WR_QUEUES__0__TICK=5s`), then deserialization whose errors name the
//! key (`queues[0].tick: expected a duration like "10s", got "ten"`).
//!
//! The environment is read through [`Env`] so tests never touch the process
//! environment and can run in parallel.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use toml::{Table, Value};

/// A config problem, naming the key (or file, or environment variable) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// Dotted path of the key (`queues[0].tick`), or the file / variable name.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl ConfigError {
    /// An error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { key: key.into(), message: message.into() }
    }
}

/// Where environment overrides come from.
pub trait Env {
    /// All variables as (name, value).
    fn vars(&self) -> Vec<(String, String)>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl<const N: usize> Env for [(&str, &str); N] {
    fn vars(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }
}

/// Load `T` from the TOML `file` (absent: start from an empty table, so every
/// key takes its default) with overrides from variables named `<prefix>_…`.
pub fn load<T: DeserializeOwned>(file: Option<&Path>, prefix: &str, env: &dyn Env) -> Result<T, ConfigError> {
    let table = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read config file: {e}")))?;
            parse_toml(&text).map_err(|e| ConfigError::new(path.display().to_string(), e))?
        }
        None => Table::new(),
    };
    from_table(table, prefix, env)
}

/// Like [`load`], from TOML text (used by reload and tests).
pub fn load_str<T: DeserializeOwned>(text: &str, prefix: &str, env: &dyn Env) -> Result<T, ConfigError> {
    let table = parse_toml(text).map_err(|e| ConfigError::new("<config>", e))?;
    from_table(table, prefix, env)
}

fn parse_toml(text: &str) -> Result<Table, String> {
    text.parse::<Table>().map_err(|e| format!("invalid TOML: {}", e.message()))
}

fn from_table<T: DeserializeOwned>(mut table: Table, prefix: &str, env: &dyn Env) -> Result<T, ConfigError> {
    let head = format!("{prefix}_");
    let mut vars: Vec<(String, String)> = env.vars().into_iter().filter(|(k, _)| k.starts_with(&head)).collect();
    // Lower array indexes first, so `…__0__…` exists before `…__1__…` extends it.
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[head.len()..].split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(&name, "empty segment in variable name (use `__` between levels)"));
        }
        set_path(&mut table, &path, &value).map_err(|m| ConfigError::new(&name, m))?;
    }
    serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::new(if key == "." { "<root>".to_owned() } else { key }, e.into_inner().message().to_owned())
    })
}

/// Turn an environment string into a TOML value. Where the file already holds a
/// string, the override stays a string; otherwise numbers and booleans are
/// recognized, and anything else is a string.
fn env_value(raw: &str, existing: Option<&Value>) -> Value {
    if matches!(existing, Some(Value::String(_))) {
        return Value::String(raw.to_owned());
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::Integer(i);
    }
    if let Ok(b) = raw.parse::<bool>() {
        return Value::Boolean(b);
    }
    if raw.contains('.')
        && let Ok(f) = raw.parse::<f64>()
    {
        return Value::Float(f);
    }
    if raw.starts_with('[')
        && let Ok(t) = format!("v = {raw}").parse::<Table>()
        && let Some(v) = t.get("v")
    {
        return v.clone();
    }
    Value::String(raw.to_owned())
}

fn set_path(table: &mut Table, path: &[String], raw: &str) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("no key")?;
    if rest.is_empty() {
        let v = env_value(raw, table.get(first));
        table.insert(first.clone(), v);
        return Ok(());
    }
    let next_is_index = rest[0].parse::<usize>().is_ok();
    let slot = table
        .entry(first.clone())
        .or_insert_with(|| if next_is_index { Value::Array(vec![]) } else { Value::Table(Table::new()) });
    set_in_value(slot, rest, raw)
}

fn set_in_value(slot: &mut Value, path: &[String], raw: &str) -> Result<(), String> {
    match slot {
        Value::Table(t) => set_path(t, path, raw),
        Value::Array(items) => {
            let (first, rest) = path.split_first().ok_or("no key")?;
            let index: usize = first.parse().map_err(|_| format!("`{first}` is not an array index"))?;
            if index > items.len() {
                return Err(format!("array index {index} skips entries (the array has {})", items.len()));
            }
            if index == items.len() {
                items.push(if rest.is_empty() { Value::String(String::new()) } else { Value::Table(Table::new()) });
            }
            if rest.is_empty() {
                let v = env_value(raw, Some(&items[index]));
                items[index] = v;
                Ok(())
            } else {
                set_in_value(&mut items[index], rest, raw)
            }
        }
        _ => Err("cannot set a key inside a plain value".to_owned()),
    }
}

/// Parse a human duration (`"10s"`, `"250ms"`, `"1h 30m"`); the error is the
/// message config errors use.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|_| format!(r#"expected a duration like "10s", got "{text}""#))
}

/// `#[serde(with = "shared::config::duration")]` for [`Duration`] fields written
/// as `"10s"`, `"250ms"`, `"1h 30m"`.
pub mod duration {
    use super::*;

    /// Deserialize a human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    /// Serialize as a human duration.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration like "10s""#)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!(r#"expected a duration like "10s", got {v} (add a unit)"#)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Err(E::custom(format!(r#"expected a duration like "10s", got {v} (add a unit)"#)))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Err(E::custom(format!(r#"expected a duration like "10s", got {v} (add a unit)"#)))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Duration, E> {
            Err(E::custom(format!(r#"expected a duration like "10s", got {v}"#)))
        }
    }
}

/// A secret from config (tokens, passwords): never printed by `Debug`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// True when unset.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "Secret(<empty>)" } else { "Secret(<redacted>)" })
    }
}

/// Compare two byte strings (bearer-token checks) in time that tells an
/// attacker neither where they differ nor how long the secret is: both are
/// hashed to 32 bytes first and the digests compared without an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        server: Server,
        #[serde(default)]
        queues: Vec<Queue>,
    }
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct Server {
        listen: String,
        threads: usize,
        secure: bool,
        token: Secret,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Queue {
        id: String,
        #[serde(with = "duration")]
        tick: Duration,
    }

    const FILE: &str = r#"
        [server]
        listen = "0.0.0.0:8080"
        threads = 2
        token = "1234"
        [[queues]]
        id = "a"
        tick = "10s"
    "#;

    #[test]
    fn file_values_load_and_env_overrides_win() {
        let env = [
            ("WR_SERVER__THREADS", "8"),
            ("WR_SERVER__SECURE", "true"),
            ("WR_QUEUES__0__TICK", "250ms"),
            ("WR_SERVER__TOKEN", "999"),
            ("OTHER_X", "1"),
        ];
        let c: Cfg = load_str(FILE, "WR", &env).unwrap();
        assert_eq!(c.server.threads, 8);
        assert!(c.server.secure);
        assert_eq!(c.server.token.expose(), "999");
        assert_eq!(c.queues[0].tick, Duration::from_millis(250));
        assert_eq!(format!("{:?}", c.server.token), "Secret(<redacted>)");
    }

    #[test]
    fn env_can_add_an_array_entry() {
        let env = [("WR_QUEUES__1__ID", "b"), ("WR_QUEUES__1__TICK", "1m")];
        let c: Cfg = load_str(FILE, "WR", &env).unwrap();
        assert_eq!(c.queues[1].id, "b");
        assert_eq!(c.queues[1].tick, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_duration_names_the_key_and_the_value() {
        let err = load_str::<Cfg>(&FILE.replace("10s", "ten"), "WR", &[]).unwrap_err();
        assert_eq!(err.to_string(), r#"queues[0].tick: expected a duration like "10s", got "ten""#);
        let err = load_str::<Cfg>(FILE, "WR", &[("WR_QUEUES__0__TICK", "ten")]).unwrap_err();
        assert_eq!(err.key, "queues[0].tick");
    }

    #[test]
    fn unknown_keys_and_bad_types_name_the_key() {
        let err = load_str::<Cfg>(FILE, "WR", &[("WR_SERVER__THREDS", "2")]).unwrap_err();
        assert_eq!(err.key, "server.threds");
        let err = load_str::<Cfg>(FILE, "WR", &[("WR_SERVER__THREADS", "many")]).unwrap_err();
        assert_eq!(err.key, "server.threads");
        let err = load_str::<Cfg>(FILE, "WR", &[("WR_QUEUES__5__ID", "x")]).unwrap_err();
        assert_eq!(err.key, "WR_QUEUES__5__ID");
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let err = load::<Cfg>(Some(Path::new("/nonexistent/wr.toml")), "WR", &[]).unwrap_err();
        assert_eq!(err.key, "/nonexistent/wr.toml");
    }

    #[test]
    fn constant_time_eq_compares_bytes() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
