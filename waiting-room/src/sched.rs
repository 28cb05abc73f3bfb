//! The proxy workers' CPU scheduling policy (`server.sched_batch`).
//!
//! Under `SCHED_BATCH` a thread that wakes never preempts the task running on
//! its CPU; it waits for that task's slice to end or for it to block. A proxy
//! worker wakes for every upstream response. Under the default policy it
//! preempts the upstream in the middle of writing a batch of responses, if
//! they share a CPU, handles one response, and sleeps again. The host then
//! switches tasks once per response instead of once per batch, and the
//! workers sit idle waiting for an upstream that is not running. Both states
//! are stable, so runs of the same load come out either fast or slow (the
//! upstream preempted far more often per request in the slow ones); under
//! `SCHED_BATCH` no run was slow. The measurements are in BENCHMARKS.md,
//! the reasoning in ARCHITECTURE.md.
//! Nothing changes on an idle host: a waking worker there takes an idle CPU.

use std::io;

use thread_priority::{
    NormalThreadSchedulePolicy, ThreadPriority, ThreadPriorityValue, ThreadSchedulePolicy,
    set_thread_priority_and_policy, thread_native_id,
};

const BATCH: ThreadSchedulePolicy = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Batch);

/// Put the calling thread under `SCHED_BATCH`, keeping its nice value.
pub fn batch_current_thread() -> io::Result<()> {
    let nice = current(NICE)?;
    // The crate sets the nice value with the policy, from a 0..=99 scale of
    // its own; pick the point of that scale that is this thread's nice value.
    let priority = (*ThreadPriorityValue::MIN..=*ThreadPriorityValue::MAX)
        .filter_map(|p| ThreadPriorityValue::try_from(p).ok())
        .map(ThreadPriority::Crossplatform)
        .find(|p| p.to_posix(BATCH).ok() == Some(nice))
        .ok_or_else(|| io::Error::other(format!("no priority maps to nice {nice}")))?;
    set_thread_priority_and_policy(thread_native_id(), priority, BATCH).map_err(|e| io::Error::other(format!("{e:?}")))
}

/// Field number of the nice value in `/proc/<pid>/task/<tid>/stat` (proc(5)).
pub const NICE: usize = 19;
/// Field number of the scheduling policy there (`SCHED_OTHER` = 0,
/// `SCHED_BATCH` = 3).
pub const POLICY: usize = 41;

/// Numeric field `field` of a thread's `stat` text.
pub fn stat_field(stat: &str, field: usize) -> Option<i32> {
    // Field 2 (the command) is parenthesised and may hold spaces.
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(field.checked_sub(3)?)?.parse().ok()
}

/// A numeric field of the calling thread's `stat`.
fn current(field: usize) -> io::Result<i32> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    stat_field(&stat, field).ok_or_else(|| io::Error::other(format!("/proc/thread-self/stat: no field {field}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHED_BATCH: i32 = 3;

    fn on_new_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::spawn(f).join().expect("test thread")
    }

    #[test]
    fn batch_keeps_nice_zero() {
        let (before, after, nice) = on_new_thread(|| {
            let before = current(POLICY).expect("policy");
            batch_current_thread().expect("batch");
            (before, current(POLICY).expect("policy"), current(NICE).expect("nice"))
        });
        assert_eq!(before, 0, "a new thread starts under SCHED_OTHER");
        assert_eq!(after, SCHED_BATCH);
        assert_eq!(nice, 0);
    }

    #[test]
    fn batch_keeps_a_raised_nice_value() {
        // Raising nice needs no privilege; the worker must not undo it.
        let (after, nice) = on_new_thread(|| {
            let five = ThreadPriority::Crossplatform(ThreadPriorityValue::try_from(40u8).expect("in range"));
            let other = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
            set_thread_priority_and_policy(thread_native_id(), five, other).expect("nice");
            let niced = current(NICE).expect("nice");
            assert!(niced > 0, "nice {niced}");
            batch_current_thread().expect("batch");
            (current(POLICY).expect("policy"), (niced, current(NICE).expect("nice")))
        });
        assert_eq!(after, SCHED_BATCH);
        assert_eq!(nice.0, nice.1, "nice before and after");
    }
}
