//! The behaviour every backend must show. Times are short (ticks of 100-300 ms)
//! and every wait is followed by an assertion on state, never on timing.

mod adaptive;
mod catalog;
mod checks;
mod line;
mod modes;

use std::sync::Arc;
use std::time::Duration;

use shared::visitor::VisitorId;
use waiting_room::config::QueueMode;
use waiting_room::store::{JoinChecks, Params, Proof, QueueStore, Standing};

pub use adaptive::*;
pub use catalog::*;
pub use checks::*;
pub use line::*;
pub use modes::*;

/// No places cap, no challenge.
const OPEN: JoinChecks = JoinChecks { client: None, max_per_client: 0, proof: Proof::NotRequired, ticket: None };

pub fn params() -> Params {
    Params {
        release_per_tick: 5,
        tick_ms: 200,
        session_ms: 60_000,
        free_entry: 0,
        max_active: 0,
        abandon_after_ms: 0,
        paused: false,
        queue_all: false,
        adaptive: None,
        arrival_grace_ms: 0,
        entrants_until_ms: 0,
        mode: QueueMode::Fifo,
        release_cap: 0,
    }
}

fn ids(n: usize) -> Vec<VisitorId> {
    (0..n).map(|_| VisitorId::random()).collect()
}

async fn position(store: &Arc<dyn QueueStore>, q: &str, v: VisitorId, p: &Params) -> Option<u64> {
    match store.status(q, v, p).await.unwrap() {
        Standing::Waiting { position, .. } => Some(position),
        _ => None,
    }
}

/// Call release until a tick happens (the store decides when one is due).
async fn tick(store: &Arc<dyn QueueStore>, q: &str, p: &Params) -> waiting_room::store::Release {
    for _ in 0..100 {
        let r = store.release(q, p).await.unwrap();
        if r.ticked {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(r.next_due_in_ms.clamp(1, 50))).await;
    }
    panic!("no tick happened within 100 calls");
}

fn now_ms() -> i64 {
    waiting_room::clock::now_ms()
}
