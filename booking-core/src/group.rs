//! Work that arrives together, done together: the one queue-and-drain loop
//! behind the claims' group commit ([`crate::coupons::batch`]), the claim
//! gate's batched script calls ([`crate::coupons::gate`]) and the holds'
//! group commit ([`crate::holds::batch`]).
//!
//! Jobs queue per key (a campaign, an event). A task per key takes whatever
//! has queued, up to `max_batch`, and hands it to the key's runner as one
//! batch, with at most `in_flight` batches of that key running at once.
//! Nothing waits for a batch to fill: a lone job runs at once, alone; jobs
//! pile up only while every slot is busy, so the batch grows with the load
//! and a burst costs one round trip (and one commit) per batch instead of
//! one per job.
//!
//! A key's task ends after [`IDLE`] without work, so a closed campaign or a
//! past event keeps nothing alive. It closes its queue before it goes and
//! runs whatever was still in it; a job sent after that comes back to its
//! sender ([`Groups::submit`] then starts a new task), so no job is dropped.
//! Each job carries its own reply channel: a runner that fails a batch must
//! answer each job (the callers fall back to doing the job alone).

use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::{Semaphore, mpsc};

/// How long a key's task waits for work before it ends.
pub const IDLE: Duration = Duration::from_secs(60);

type Runner<J> = Arc<dyn Fn(Vec<J>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One key's queue, tagged so that only its own task removes it.
struct Queue<J> {
    id: u64,
    jobs: mpsc::UnboundedSender<J>,
}

/// Per-key queues of jobs of type `J`.
pub struct Groups<K, J> {
    queues: Arc<DashMap<K, Queue<J>>>,
    next_id: AtomicU64,
    max_batch: usize,
    in_flight: usize,
    idle: Duration,
}

impl<K, J> Groups<K, J>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    J: Send + 'static,
{
    /// Batches of at most `max_batch` jobs, `in_flight` of them per key at once.
    pub fn new(max_batch: usize, in_flight: usize) -> Groups<K, J> {
        Groups {
            queues: Arc::new(DashMap::new()),
            next_id: AtomicU64::new(0),
            max_batch: max_batch.max(1),
            in_flight: in_flight.max(1),
            idle: IDLE,
        }
    }

    #[cfg(test)]
    fn idle_after(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Queue `job` on `key`. The key's task, started when it has none, runs
    /// batches with the runner that `runner` makes (asked only then).
    /// `Err(job)`: no task could take it (the runtime is shutting down); the
    /// caller does the job alone.
    pub fn submit<R, F>(&self, key: &K, job: J, runner: impl FnOnce() -> R) -> Result<(), J>
    where
        R: Fn(Vec<J>) -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut job = match self.queues.get(key) {
            Some(queue) => match queue.jobs.send(job) {
                Ok(()) => return Ok(()),
                Err(back) => back.0,
            },
            None => job,
        };
        let runner: Runner<J> = {
            let run = runner();
            Arc::new(move |jobs| Box::pin(run(jobs)))
        };
        // At most twice: a queue found closed is one whose task just ended.
        for _ in 0..2 {
            let sent = self.queues.entry(key.clone()).or_insert_with(|| self.spawn(key.clone(), runner.clone()));
            match sent.jobs.send(job) {
                Ok(()) => return Ok(()),
                Err(back) => {
                    job = back.0;
                    let id = sent.id;
                    drop(sent);
                    self.queues.remove_if(key, |_, q| q.id == id);
                }
            }
        }
        Err(job)
    }

    fn spawn(&self, key: K, run: Runner<J>) -> Queue<J> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (jobs, mut rx) = mpsc::unbounded_channel::<J>();
        let queues = self.queues.clone();
        let (max_batch, idle, slots) = (self.max_batch, self.idle, Arc::new(Semaphore::new(self.in_flight)));
        tokio::spawn(async move {
            loop {
                let first = match tokio::time::timeout(idle, rx.recv()).await {
                    Ok(Some(job)) => job,
                    // Every sender is gone: nothing more can come.
                    Ok(None) => break,
                    Err(_) => {
                        // Idle: leave the map, refuse new jobs, run what slipped in.
                        queues.remove_if(&key, |_, q| q.id == id);
                        rx.close();
                        let mut rest = Vec::new();
                        while let Ok(job) = rx.try_recv() {
                            rest.push(job);
                        }
                        for batch in chunks(rest, max_batch) {
                            run(batch).await;
                        }
                        break;
                    }
                };
                // Jobs queue while every slot is busy, so the next batch takes them all.
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let mut batch = Vec::with_capacity(max_batch);
                batch.push(first);
                while batch.len() < max_batch {
                    match rx.try_recv() {
                        Ok(job) => batch.push(job),
                        Err(_) => break,
                    }
                }
                let run = run.clone();
                tokio::spawn(async move {
                    run(batch).await;
                    drop(slot);
                });
            }
        });
        Queue { id, jobs }
    }
}

fn chunks<J>(mut jobs: Vec<J>, size: usize) -> Vec<Vec<J>> {
    let mut out = Vec::new();
    while jobs.len() > size {
        let rest = jobs.split_off(size);
        out.push(std::mem::replace(&mut jobs, rest));
    }
    if !jobs.is_empty() {
        out.push(jobs);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::sync::oneshot;

    type Seen = Arc<Mutex<Vec<usize>>>;
    type TestJob = (u32, oneshot::Sender<u32>);
    type Done = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn recorder(seen: Seen, gate: Arc<Semaphore>) -> impl Fn(Vec<TestJob>) -> Done + Send + Sync {
        move |batch| {
            let (seen, gate) = (seen.clone(), gate.clone());
            Box::pin(async move {
                let _held = gate.acquire().await;
                seen.lock().unwrap().push(batch.len());
                for (n, reply) in batch {
                    let _ = reply.send(n * 2);
                }
            })
        }
    }

    #[tokio::test]
    async fn a_lone_job_runs_at_once_and_jobs_that_queue_behind_busy_slots_share_a_batch() {
        let groups: Groups<i64, TestJob> = Groups::new(4, 1);
        let seen: Seen = Arc::default();
        // The runner blocks until the gate opens, so later jobs must queue.
        let gate = Arc::new(Semaphore::new(0));
        let mut answers = Vec::new();
        for n in 0..10u32 {
            let (tx, rx) = oneshot::channel();
            groups.submit(&7, (n, tx), || recorder(seen.clone(), gate.clone())).map_err(|_| ()).unwrap();
            answers.push(rx);
            if n == 0 {
                // Let the task take the first job alone before the rest arrive.
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
            }
        }
        gate.add_permits(100);
        for (n, rx) in answers.into_iter().enumerate() {
            assert_eq!(rx.await.unwrap(), u32::try_from(n).unwrap() * 2, "each job hears its own answer");
        }
        let sizes = seen.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 10, "every job ran once: {sizes:?}");
        assert_eq!(sizes[0], 1, "the first job did not wait for company: {sizes:?}");
        assert!(sizes.iter().all(|s| *s <= 4), "no batch above max_batch: {sizes:?}");
        assert_eq!(sizes.len(), 4, "the nine queued jobs went in batches of 4, 4, 1: {sizes:?}");
    }

    #[tokio::test]
    async fn no_more_than_in_flight_batches_of_one_key_run_at_once() {
        let groups: Groups<i64, TestJob> = Groups::new(1, 3);
        let running = Arc::new(AtomicU64::new(0));
        let most = Arc::new(AtomicU64::new(0));
        let mut answers = Vec::new();
        for n in 0..50u32 {
            let (tx, rx) = oneshot::channel();
            let (running, most) = (running.clone(), most.clone());
            let runner = move || {
                move |batch: Vec<TestJob>| {
                    let (running, most) = (running.clone(), most.clone());
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        for (n, reply) in batch {
                            let _ = reply.send(n);
                        }
                    }
                }
            };
            groups.submit(&1, (n, tx), runner).map_err(|_| ()).unwrap();
            answers.push(rx);
        }
        for rx in answers {
            rx.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 3, "three batches overlapped, never four");
    }

    #[tokio::test]
    async fn an_idle_key_lets_its_task_go_and_a_later_job_starts_a_new_one() {
        let idle = Duration::from_millis(30);
        let groups: Groups<i64, TestJob> = Groups::new(8, 1).idle_after(idle);
        let seen: Seen = Arc::default();
        let gate = Arc::new(Semaphore::new(1000));
        let (tx, rx) = oneshot::channel();
        groups.submit(&3, (1, tx), || recorder(seen.clone(), gate.clone())).map_err(|_| ()).unwrap();
        assert_eq!(rx.await.unwrap(), 2);
        assert_eq!(groups.queues.len(), 1);
        // The task leaves the map once idle; wait for that, boundedly.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while groups.queues.len() == 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(idle).await;
        }
        assert_eq!(groups.queues.len(), 0, "the idle key's queue is gone");
        let (tx, rx) = oneshot::channel();
        groups.submit(&3, (5, tx), || recorder(seen.clone(), gate.clone())).map_err(|_| ()).unwrap();
        assert_eq!(rx.await.unwrap(), 10, "a new task took the job");
        assert_eq!(groups.queues.len(), 1);
    }

    #[test]
    fn chunks_keep_order_and_size() {
        let out = chunks((0..10).collect::<Vec<_>>(), 4);
        assert_eq!(out, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert!(chunks(Vec::<u8>::new(), 4).is_empty());
    }
}
