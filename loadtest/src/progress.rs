//! The live progress line: arrivals, waiting, admitted, errors and the p99 of
//! the requests since the previous line. An indicatif spinner on a terminal;
//! plain lines on stderr otherwise (bench logs), nothing with `--quiet`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::{Live, Metrics};

/// The running progress reporter; [`Progress::finish`] stops it.
pub struct Progress {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

fn line(m: &Metrics, planned: usize, start: Instant, last: &mut (u64, Instant)) -> String {
    let l = &m.live;
    let arrivals = Live::get(&l.arrivals);
    let now = Instant::now();
    let rate = (arrivals - last.0) as f64 / now.duration_since(last.1).as_secs_f64().max(1e-3);
    *last = (arrivals, now);
    let p99 = m.take_recent_p99_ms().map_or("-".to_owned(), |p| format!("{p:.1} ms"));
    format!(
        "{:>6.1}s arrivals {arrivals}/{planned} ({rate:.0}/s) waiting {} (sockets {}) admitted {} finished {} errors {} (5xx {}) p99 {p99}",
        start.elapsed().as_secs_f64(),
        Live::get(&l.waiting),
        Live::get(&l.sockets),
        Live::get(&l.admitted),
        Live::get(&l.finished),
        Live::get(&l.errors),
        Live::get(&l.server_errors),
    )
}

impl Progress {
    /// Start reporting every `every` (unless `quiet`).
    pub fn start(metrics: Arc<Metrics>, planned: usize, every: Duration, quiet: bool) -> Progress {
        let (stop, mut stopped) = watch::channel(false);
        if quiet {
            return Progress { stop, task: None };
        }
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let bar = std::io::stderr().is_terminal().then(|| {
                let bar = ProgressBar::new_spinner();
                if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                    bar.set_style(style);
                }
                bar
            });
            let mut last = (0, start);
            let mut ticker = tokio::time::interval(every.max(Duration::from_millis(100)));
            ticker.tick().await;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.wait_for(|s| *s) => break,
                }
                let text = line(&metrics, planned, start, &mut last);
                match &bar {
                    Some(b) => b.set_message(text),
                    None => eprintln!("{text}"),
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear();
            }
        });
        Progress { stop, task: Some(task) }
    }

    /// Stop and wait for the last line.
    pub async fn finish(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}
