//! Unit tests of the operator API's request bodies, kept apart from the API.

use super::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn base() -> serde_json::Map<String, Value> {
    let v = json!({"id": "drop", "paths": ["/drop"], "release_per_tick": 5, "tick": "2s", "session": "10m",
                   "opens_at": "2030-01-01T10:00:00Z", "template": "<p>{{queue_name}}</p>"});
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn an_entry_parses_as_the_config_file_would_and_errors_name_the_key() {
    let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(entry.config.tick, std::time::Duration::from_secs(2));
    assert_eq!(entry.template.as_deref(), Some("<p>{{queue_name}}</p>"));
    let with = |k: &str, v: Value| {
        let mut m = base();
        m.insert(k.into(), v);
        parse_entry(m).err().map(|e| e.key)
    };
    assert_eq!(with("tick", json!(5)), Some("tick".into()));
    assert_eq!(with("closes_at", json!("soon")), Some("closes_at".into()));
    assert_eq!(with("shade", json!(1)), Some("shade".into()));
    assert_eq!(with("template", json!(1)), Some("template".into()));
    let mut m = base();
    m.remove("session");
    assert_eq!(parse_entry(m).err().map(|e| e.key), Some("session".into()));
}

#[test]
fn a_redefinition_keeps_what_it_does_not_name_and_null_removes_a_key() {
    let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
    let doc = json!({"paths": ["/drop", "/more"], "opens_at": null});
    let next = redefined(&entry, doc.as_object().unwrap_or(&serde_json::Map::new())).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(next.config.paths, ["/drop", "/more"]);
    assert_eq!(next.config.opens_at, None);
    assert_eq!((next.config.release_per_tick, next.config.session), (5, std::time::Duration::from_secs(600)));
    assert_eq!(next.template, entry.template, "a template not named is kept");
    let renamed = json!({"id": "other"});
    assert_eq!(
        redefined(&entry, renamed.as_object().unwrap_or(&serde_json::Map::new())).err().map(|e| e.key),
        Some("id".into())
    );
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop_oneof![Just("1s"), Just("/x"), Just("2030-01-01T00:00:00Z"), Just("pow"), Just("fifo")]
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(Value::from))
}

const KEYS: [&str; 12] = [
    "id",
    "name",
    "paths",
    "release_per_tick",
    "tick",
    "session",
    "opens_at",
    "closes_at",
    "template",
    "challenge",
    "mode",
    "unknown",
];

proptest! {
    /// Whatever an operator sends, parsing answers a definition or an
    /// error naming a key they sent or one that is missing; never a panic.
    #[test]
    fn any_object_parses_or_names_a_key(pairs in prop::collection::vec((prop::sample::select(&KEYS[..]), value()), 0..10)) {
        let doc: serde_json::Map<String, Value> = pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        match parse_entry(doc.clone()) {
            Ok(e) => {
                for required in ["id", "paths", "release_per_tick", "tick", "session"] {
                    prop_assert!(doc.contains_key(required), "parsed without {required}: {e:?}");
                }
            }
            Err(e) => prop_assert!(
                doc.contains_key(&e.key) || ["id", "paths", "release_per_tick", "tick", "session", "queue"].contains(&e.key.as_str()),
                "{} not among {:?}", e.key, doc.keys().collect::<Vec<_>>()
            ),
        }
        let entry = parse_entry(base()).unwrap_or_else(|e| panic!("{e}"));
        let _ = redefined(&entry, &doc);
    }
}
