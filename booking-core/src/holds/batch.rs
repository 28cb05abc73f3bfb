//! Group commit for holds on PostgreSQL.
//!
//! A hold is one short function call, but on its own it is also one
//! transaction and one WAL flush, and under a sale's burst the flushes and
//! round trips, not the seat checks, set the pace. So attempts on one event
//! queue here ([`crate::group`]) and go to the database together: one
//! `take_holds` call per batch decides each attempt exactly as `take_hold`
//! would, in one transaction and one commit. Several batches of an event
//! run at once ([`IN_FLIGHT`]), on as many connections, so more than one
//! backend works; the function takes its locks in one global order (the
//! visitors' advisory locks by key, then the seats by id), so they never
//! deadlock.
//!
//! Each attempt is answered only after its batch has committed, so a 201 is
//! as durable as before. A batch that fails as a whole (a lost connection,
//! a statement timeout, a deadlock PostgreSQL broke anyway) answers
//! [`Batched::Undecided`] to each attempt, which then runs alone through `take_hold`, where the
//! exact outcome (held, taken, limit, error) is decided. A kill -9 mid-batch
//! rolls the batch back: none of its attempts was answered.

use tokio::sync::oneshot;

use crate::group::Groups;
use crate::store::Store;
use crate::store::holds::{HoldBatch, NewHold};

/// Most attempts one call takes. Each is still a few statements inside the
/// function, so the batch holds its seats' locks a few milliseconds at most.
pub const MAX_BATCH: usize = 64;

/// Batches of one event out at once. Distinct seats never wait for each
/// other, so each batch keeps a backend busy; two cores are filled by a few.
const IN_FLIGHT: usize = 4;

struct Job {
    seat_id: i64,
    hold_id: String,
    visitor: String,
    session_ends_at: i64,
    reply: oneshot::Sender<Batched>,
}

/// What a batch said of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batched {
    /// Held until this time (epoch ms; the batch read the clock when it ran).
    Held(i64),
    /// Refused: taken, over the limit, not a seat of the event, session over.
    Refused,
    /// No batch decided it (off, or the batch failed): try it alone.
    Undecided,
}

/// Per-event hold queues; off on SQLite (one writer: nothing to group).
pub struct HoldBatches {
    store: Store,
    enabled: bool,
    length_ms: i64,
    groups: Groups<i64, Job>,
}

impl HoldBatches {
    /// Batching on PostgreSQL, pass-through elsewhere; holds last
    /// `length_ms` unless the session ends first.
    pub fn new(store: Store, length_ms: i64) -> HoldBatches {
        let enabled = store.is_postgres();
        HoldBatches { store, enabled, length_ms, groups: Groups::new(MAX_BATCH, IN_FLIGHT) }
    }

    /// Try `attempt` (its `now` and `expires_at` are not used: the batch
    /// reads the clock when its statement runs) for a visitor whose session
    /// ends at `session_ends_at`.
    pub async fn hold(&self, attempt: &NewHold<'_>, session_ends_at: i64) -> Batched {
        if !self.enabled {
            return Batched::Undecided;
        }
        let (reply, answer) = oneshot::channel();
        let job = Job {
            seat_id: attempt.seat_id,
            hold_id: attempt.hold_id.to_owned(),
            visitor: attempt.visitor_id.to_owned(),
            session_ends_at,
            reply,
        };
        let (store, event_id, max) = (self.store.clone(), attempt.event_id, attempt.max_per_visitor);
        let length_ms = self.length_ms;
        let submitted =
            self.groups.submit(&event_id, job, move || move |jobs| run(store.clone(), event_id, length_ms, max, jobs));
        if submitted.is_err() {
            return Batched::Undecided;
        }
        answer.await.unwrap_or(Batched::Undecided)
    }
}

/// One `take_holds` call for `jobs`; each hears its answer.
async fn run(store: Store, event_id: i64, length_ms: i64, max_per_visitor: i64, jobs: Vec<Job>) {
    let mut batch = HoldBatch { event_id, length_ms, max_per_visitor, ..HoldBatch::default() };
    for job in &jobs {
        batch.seats.push(job.seat_id);
        batch.hold_ids.push(job.hold_id.clone());
        batch.visitors.push(job.visitor.clone());
        batch.session_ends.push(job.session_ends_at);
    }
    let answers = match store.try_holds(&batch).await {
        Ok(granted) if granted.len() == jobs.len() => {
            granted.into_iter().map(|until| until.map_or(Batched::Refused, Batched::Held)).collect()
        }
        Ok(granted) => {
            tracing::warn!(asked = jobs.len(), answered = granted.len(), "hold batch answered the wrong count");
            vec![Batched::Undecided; jobs.len()]
        }
        Err(e) => {
            tracing::debug!(error = %e, size = jobs.len(), "hold batch failed; holding one by one");
            vec![Batched::Undecided; jobs.len()]
        }
    };
    for (job, answer) in jobs.into_iter().zip(answers) {
        let _ = job.reply.send(answer);
    }
}
