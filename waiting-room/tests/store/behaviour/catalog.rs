//! The stored catalog (saved only over the version read) and purging a queue.

use std::sync::Arc;

use shared::visitor::VisitorId;
use waiting_room::store::QueueStore;

use super::{OPEN, ids, params, position, tick};

pub async fn the_catalog_saves_only_over_the_version_read_and_a_purge_forgets_a_queue(store: Arc<dyn QueueStore>) {
    assert_eq!(store.load_catalog().await.unwrap(), None);
    assert_eq!(store.save_catalog(1, "{}").await.unwrap(), None, "nothing stored: only version 0 saves");
    assert_eq!(store.save_catalog(0, r#"{"queues":[]}"#).await.unwrap(), Some(1));
    assert_eq!(store.load_catalog().await.unwrap(), Some((1, r#"{"queues":[]}"#.to_owned())));
    // 20 savers that all read version 1: exactly one wins.
    let saves = (0..20).map(|i| {
        let store = store.clone();
        async move { store.save_catalog(1, &format!(r#"{{"n":{i}}}"#)).await.unwrap() }
    });
    let outcomes = futures_util::future::join_all(saves).await;
    assert_eq!(outcomes.iter().filter(|o| **o == Some(2)).count(), 1, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| o.is_none()).count(), 19, "{outcomes:?}");
    let (version, json) = store.load_catalog().await.unwrap().unwrap();
    assert_eq!(version, 2);
    assert!(json.starts_with(r#"{"n":"#), "{json}");

    // A purge empties the queue's line, sessions and counters; others keep theirs.
    let p = params();
    for v in ids(12) {
        store.join("gone", v, &p, &OPEN).await.unwrap();
        store.join("kept", v, &p, &OPEN).await.unwrap();
    }
    tick(&store, "gone", &p).await;
    let before = store.stats("gone").await.unwrap();
    assert_eq!((before.waiting, before.active), (7, 5));
    store.purge("gone").await.unwrap();
    let after = store.stats("gone").await.unwrap();
    assert_eq!((after.waiting, after.active, after.released_total), (0, 0, 0), "{after:?}");
    assert_eq!(store.stats("kept").await.unwrap().waiting, 12);
    let fresh = VisitorId::random();
    store.join("gone", fresh, &p, &OPEN).await.unwrap();
    assert_eq!(position(&store, "gone", fresh, &p).await, Some(1), "a new line starts at the front");
}
