//! WebSocket fan-out benchmark client (not a test): holds many waiting
//! visitors on one proxy and measures how long each release takes to reach
//! them. Run through `bench/ws.sh`, which starts the proxy; directly:
//!
//! ```text
//! cargo bench -p waiting-room --bench ws_fanout -- --url http://127.0.0.1:18080 \
//!     --queue q --connections 15000 --seconds 30 --pid <proxy pid>
//! ```
//!
//! Delay of an update = time it arrived − time of the release that caused it.
//! Release times come from the server itself: every READY message carries
//! `admitted_at`, shared by everyone released in that tick; a WAITING update
//! belongs to the latest release before it arrived.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    queue: String,
    connections: usize,
    seconds: u64,
    pid: Option<u32>,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8080".into(),
        queue: "q".into(),
        connections: 1000,
        seconds: 20,
        pid: None,
        concurrency: 256,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--url" => a.url = val(),
            "--queue" => a.queue = val(),
            "--connections" => a.connections = val().parse().unwrap(),
            "--seconds" => a.seconds = val().parse().unwrap(),
            "--pid" => a.pid = val().parse().ok(),
            "--concurrency" => a.concurrency = val().parse().unwrap(),
            "--bench" => {}
            other => eprintln!("ignoring {other}"),
        }
    }
    a
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn rfc3339_ms(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[derive(Default)]
struct Log {
    /// (arrival ms, Some(admitted_at) for READY)
    updates: Vec<(i64, Option<i64>)>,
    errors: usize,
}

#[tokio::main]
async fn main() {
    let a = args();
    let ws_url = format!("{}/wr/{}/ws", a.url.replace("http://", "ws://"), a.queue);
    let log: Arc<Mutex<Log>> = Arc::default();
    let rss_before = a.pid.and_then(rss_kib);
    let gate = Arc::new(tokio::sync::Semaphore::new(a.concurrency));
    let connected = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let stop = started + Duration::from_secs(a.seconds);
    let mut tasks = Vec::with_capacity(a.connections);
    for _ in 0..a.connections {
        let (gate, log, url, connected) = (gate.clone(), log.clone(), ws_url.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.unwrap();
            let mut ws = match tokio_tungstenite::connect_async(url.as_str()).await {
                Ok((ws, _)) => ws,
                Err(_) => {
                    log.lock().errors += 1;
                    return;
                }
            };
            // The first message is the answer to connecting, not a push.
            if !matches!(ws.next().await, Some(Ok(Message::Text(_)))) {
                log.lock().errors += 1;
                return;
            }
            drop(permit);
            connected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            loop {
                let left = stop.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => {
                        let at = epoch_ms();
                        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                        let ready = v["admitted_at"].as_str().map(rfc3339_ms);
                        log.lock().updates.push((at, ready));
                        if ready.is_some() {
                            return;
                        }
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => return,
                }
            }
        }));
    }
    // RSS once everyone is connected and idle.
    while connected.load(std::sync::atomic::Ordering::Relaxed) + log.lock().errors < a.connections
        && Instant::now() < stop
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    let all_connected_ms = epoch_ms();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = a.pid.and_then(rss_kib);
    for t in tasks {
        let _ = t.await;
    }

    let log = log.lock();
    let mut releases: Vec<i64> = log.updates.iter().filter_map(|(_, r)| *r).collect();
    releases.sort_unstable();
    releases.dedup();
    // Delays per release (index into `releases`).
    let mut per_release: Vec<Vec<i64>> = vec![Vec::new(); releases.len()];
    for (at, ready) in &log.updates {
        let release = ready.or_else(|| releases.iter().rev().find(|&&r| r <= *at).copied());
        if let Some(i) = release.and_then(|r| releases.binary_search(&r).ok()) {
            per_release[i].push(at - releases[i]);
        }
    }
    fn pct(sorted: &[i64], p: f64) -> i64 {
        sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(-1)
    }
    let mut delays: Vec<i64> = per_release.iter().flatten().copied().collect();
    delays.sort_unstable();
    // Steady state: releases after every connection was open (during the
    // connect storm fewer sockets are held and handshakes compete for CPU).
    let mut steady: Vec<i64> = releases
        .iter()
        .zip(&per_release)
        .filter(|(r, _)| **r >= all_connected_ms)
        .flat_map(|(_, d)| d.clone())
        .collect();
    steady.sort_unstable();
    let per_release_text: Vec<String> = releases
        .iter()
        .zip(per_release.iter_mut())
        .map(|(r, d)| {
            d.sort_unstable();
            let phase = if *r >= all_connected_ms { "" } else { "c" };
            format!("{phase}{}:{}", d.len(), pct(d, 0.99))
        })
        .collect();
    // Messages per second while fanning out: all updates / time from each release to its last update.
    let mut busy_ms = 0i64;
    for (i, r) in releases.iter().enumerate() {
        let next = releases.get(i + 1).copied().unwrap_or(i64::MAX);
        if let Some(last) = log.updates.iter().map(|(at, _)| *at).filter(|at| at >= r && *at < next).max() {
            busy_ms += (last - r).max(1);
        }
    }
    println!("connections_held {}", connected.load(std::sync::atomic::Ordering::Relaxed));
    println!("connect_errors {}", log.errors);
    println!("connect_seconds {connect_secs:.1}");
    println!("releases_seen {}", releases.len());
    println!("updates {}", log.updates.len());
    println!("delay_p50_ms {}", pct(&delays, 0.50));
    println!("delay_p99_ms {}", pct(&delays, 0.99));
    println!("delay_max_ms {}", pct(&delays, 1.0));
    println!("steady_updates {}", steady.len());
    println!("steady_delay_p50_ms {}", pct(&steady, 0.50));
    println!("steady_delay_p99_ms {}", pct(&steady, 0.99));
    println!("steady_delay_max_ms {}", pct(&steady, 1.0));
    // updates:p99 of each release in order; `c` marks releases during the connect phase.
    println!("per_release {}", per_release_text.join(" "));
    println!("messages_per_second {:.0}", log.updates.len() as f64 / (busy_ms as f64 / 1000.0).max(0.001));
    if let (Some(b), Some(af)) = (rss_before, rss_after) {
        let n = connected.load(std::sync::atomic::Ordering::Relaxed).max(1) as f64;
        println!("rss_before_kib {b}");
        println!("rss_after_kib {af}");
        println!("rss_per_connection_kib {:.1}", (af as f64 - b as f64) / n);
    }
}
