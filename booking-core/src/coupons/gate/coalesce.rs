//! Many visitors' gate steps of one campaign in one script call.
//!
//! Under a sale's burst every claim asks the gate, and a Redis script call
//! costs the server (and this process) far more than the few hash operations
//! it runs for one visitor. So calls of one script on one campaign queue
//! here, and a task per (script, campaign) sends whatever has queued as one
//! call of the script's batched form, with at most [`IN_FLIGHT`] calls out
//! at once. As with the database's group commit ([`crate::coupons::batch`]),
//! nothing waits for a batch to fill: a lone claim is sent at once, alone.
//! The batched script runs each visitor's step in arrival order inside one
//! atomic script, so its answers are exactly those of the single calls in
//! that order.
//!
//! A call's `redis.response_timeout` bounds each batch; a claim that queued
//! while both calls were out waits for one of them first, so at worst twice
//! that. A stalled Redis trips the breaker as before: each failed batch
//! counts once.

use std::sync::Arc;

use redis::{RedisError, Script, Value};
use tokio::sync::oneshot;

use crate::group::Groups;
use crate::redis_breaker::RedisLink;

/// Most visitors one call carries; bounds the script's run (Redis runs
/// nothing else meanwhile) to well under a millisecond.
pub const MAX_BATCH: usize = 128;

/// Calls of one script and campaign out at once: while Redis runs one, this
/// process encodes the next and decodes the last (one at a time left both
/// idle a quarter of the time under a burst).
const IN_FLIGHT: usize = 2;

struct Job {
    args: Vec<String>,
    reply: oneshot::Sender<Result<Value, RedisError>>,
}

/// The queues of one batched script, per campaign.
pub struct Coalescer {
    link: RedisLink,
    script: Script,
    /// Arguments every call carries before the visitors' (e.g. the lease).
    head: Vec<String>,
    groups: Groups<i64, Job>,
}

impl Coalescer {
    /// Calls of `script` (KEYS: `keys` of the campaign; ARGV: `head`, then
    /// each job's arguments in turn), which answers one array with an item
    /// per job, in order.
    pub fn new(link: RedisLink, script: Script, head: Vec<String>) -> Coalescer {
        Coalescer { link, script, head, groups: Groups::new(MAX_BATCH, IN_FLIGHT) }
    }

    /// Run one job (`args`, a fixed number per job for a given script) on
    /// `campaign_id`, whose keys are `keys`; its item of the batch's answer.
    /// A batch whose answer is not an array of one item per job gives each
    /// of its jobs `Value::Nil`, which no single step answers.
    pub async fn call(
        &self,
        campaign_id: i64,
        keys: impl FnOnce() -> Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        let (reply, answer) = oneshot::channel();
        let job = Job { args, reply };
        let batch = || {
            let call = Arc::new(Batch {
                link: self.link.clone(),
                script: self.script.clone(),
                head: self.head.clone(),
                keys: keys(),
            });
            move |jobs| {
                let call = call.clone();
                async move { call.run(jobs).await }
            }
        };
        if self.groups.submit(&campaign_id, job, batch).is_err() {
            // No task could take it (the runtime is ending): this claim goes
            // unguarded (the database decides alone).
            return Ok(Value::Nil);
        }
        answer.await.unwrap_or(Ok(Value::Nil))
    }
}

/// One campaign's batched calls of one script.
struct Batch {
    link: RedisLink,
    script: Script,
    head: Vec<String>,
    keys: Vec<String>,
}

impl Batch {
    /// One call for `jobs`; each hears its item of the answer.
    async fn run(&self, jobs: Vec<Job>) {
        let mut invocation = self.script.prepare_invoke();
        for key in &self.keys {
            invocation.key(key);
        }
        for a in &self.head {
            invocation.arg(a);
        }
        for job in &jobs {
            for a in &job.args {
                invocation.arg(a);
            }
        }
        let invocation = &invocation;
        let answer = self.link.run(|mut conn| async move { invocation.invoke_async::<Value>(&mut conn).await }).await;
        match answer {
            Ok(Value::Array(items)) if items.len() == jobs.len() => {
                for (job, item) in jobs.into_iter().zip(items) {
                    let _ = job.reply.send(Ok(item));
                }
            }
            Ok(other) => {
                tracing::warn!(answer = ?other, size = jobs.len(), "unexpected batched claim gate answer");
                for job in jobs {
                    let _ = job.reply.send(Ok(Value::Nil));
                }
            }
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(e.clone()));
                }
            }
        }
    }
}
