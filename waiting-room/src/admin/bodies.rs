//! The request bodies of the operator API: a settings `PATCH` and a queue's
//! definition as JSON, parsed and checked before any change; apart from the
//! routing in `admin.rs`.

use serde::Deserialize;
use shared::config::{ConfigError, parse_duration};

use crate::catalog::Entry;
use crate::config::QueueConfig;
use crate::reply::Reply;
use crate::store::SharedSettings;

/// The keys of a PATCH that are live settings ([`Patch`]); every other key
/// belongs to the queue's definition (the catalog).
pub(super) const SETTINGS_KEYS: [&str; 17] = [
    "free_entry",
    "release_per_tick",
    "tick",
    "session",
    "max_active",
    "abandon_after",
    "paused",
    "queue_all",
    "admission",
    "min_per_tick",
    "max_per_tick",
    "target_p99",
    "target_error_rate",
    "arrival_grace",
    "pin_per_tick",
    "mode",
    "message",
];

/// A settings change: every field optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Patch {
    free_entry: Option<u64>,
    release_per_tick: Option<u64>,
    tick: Option<String>,
    session: Option<String>,
    max_active: Option<u64>,
    abandon_after: Option<String>,
    paused: Option<bool>,
    queue_all: Option<bool>,
    admission: Option<crate::config::AdmissionMode>,
    min_per_tick: Option<u64>,
    max_per_tick: Option<u64>,
    target_p99: Option<String>,
    target_error_rate: Option<f64>,
    arrival_grace: Option<String>,
    pin_per_tick: Option<u64>,
    mode: Option<crate::config::QueueMode>,
    /// The operator's message; "" removes it.
    message: Option<String>,
}

impl Patch {
    pub(super) fn apply(&self, s: &mut SharedSettings) -> Result<(), Reply> {
        let duration = |key: &str, v: &Option<String>, into: &mut std::time::Duration| -> Result<(), Reply> {
            if let Some(text) = v {
                *into = parse_duration(text).map_err(|m| Reply::error(422, format!("{key}: {m}")))?;
            }
            Ok(())
        };
        let a = &mut s.admission;
        if let Some(v) = self.free_entry {
            a.free_entry = v;
        }
        if let Some(v) = self.release_per_tick {
            a.release_per_tick = v;
        }
        if let Some(v) = self.max_active {
            a.max_active = v;
        }
        duration("tick", &self.tick, &mut a.tick)?;
        duration("session", &self.session, &mut a.session)?;
        duration("abandon_after", &self.abandon_after, &mut a.abandon_after)?;
        duration("target_p99", &self.target_p99, &mut a.target_p99)?;
        duration("arrival_grace", &self.arrival_grace, &mut a.arrival_grace)?;
        if let Some(v) = self.admission {
            a.mode = v;
        }
        if let Some(v) = self.min_per_tick {
            a.min_per_tick = v;
        }
        if let Some(v) = self.max_per_tick {
            a.max_per_tick = v;
        }
        if let Some(v) = self.target_error_rate {
            a.target_error_rate = v;
        }
        if let Some(v) = self.pin_per_tick {
            a.pin_per_tick = v;
        }
        if let Some(v) = self.mode {
            a.queue_mode = v;
        }
        if let Some(m) = &self.message {
            crate::config::validate_message(m).map_err(|e| Reply::error(422, format!("message: {e}")))?;
            s.message = (!m.trim().is_empty()).then(|| m.clone());
        }
        if let Some(v) = self.paused {
            s.paused = v;
        }
        if let Some(v) = self.queue_all {
            s.queue_all = v;
        }
        Ok(())
    }
}

/// A queue's definition from a JSON object of `[[queues]]` keys (plus
/// `template`, the page template inline), as the config file would parse
/// it; an error names the key.
pub(super) fn parse_entry(mut doc: serde_json::Map<String, serde_json::Value>) -> Result<Entry, ConfigError> {
    let template = match doc.remove("template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(t)) => Some(t),
        Some(_) => return Err(ConfigError::new("template", "expected the page template as a string of HTML")),
    };
    let config: QueueConfig = serde_json::from_value(serde_json::Value::Object(doc.clone())).map_err(|e| {
        let text = e.to_string();
        // serde names a missing or unknown key between backticks; a value
        // of the wrong shape is found by trying each key on its own.
        let named = text.split('`').nth(1).filter(|k| doc.contains_key(*k) || text.starts_with("missing field"));
        let key = named.map(str::to_owned).or_else(|| culprit(&doc)).unwrap_or_else(|| "queue".into());
        ConfigError::new(key, text)
    })?;
    Ok(Entry { config, template })
}

/// The key of `doc` whose value alone fails to parse over a minimal queue.
fn culprit(doc: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let base = serde_json::json!({"id": "q", "paths": ["/q"], "release_per_tick": 1, "tick": "1s", "session": "1m"});
    doc.iter()
        .find(|(k, v)| {
            let mut one = base.clone();
            one[k.as_str()] = (*v).clone();
            serde_json::from_value::<QueueConfig>(one).is_err()
        })
        .map(|(k, _)| k.clone())
}

/// `doc`'s keys laid over `entry`'s definition (a key set to `null` removes
/// an optional one). The id never changes.
pub(super) fn redefined(entry: &Entry, doc: &serde_json::Map<String, serde_json::Value>) -> Result<Entry, ConfigError> {
    let mut whole = match serde_json::to_value(&entry.config) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => return Err(ConfigError::new("queue", "the stored definition cannot be read")),
    };
    if let Some(id) = doc.get("id")
        && id.as_str() != Some(entry.config.id.as_str())
    {
        return Err(ConfigError::new("id", "a queue's id never changes; create a new queue and delete this one"));
    }
    whole.insert("template".into(), entry.template.clone().map_or(serde_json::Value::Null, Into::into));
    for (k, v) in doc {
        whole.insert(k.clone(), v.clone());
    }
    // Optional keys sent as null: as if absent (the defaults apply).
    whole.retain(|_, v| !v.is_null());
    parse_entry(whole)
}
