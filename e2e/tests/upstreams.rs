//! Several booking cores behind one proxy: when one is killed mid-sale the
//! requests move to the others without an error; a 502 only comes when
//! none is left, and a restarted one takes traffic again. On both lanes.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e::{ONE_ADDRESS_LIMITS, binaries, free_port};

/// A booking core on `port` with its own SQLite database, trusting `keys`.
fn booking_core(bin: &Path, dir: &Path, port: u16, keys: &Path) -> Child {
    let config = dir.join(format!("booking-{port}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n\
             [database]\nurl = \"sqlite://{}\"\n[keys]\npublic_dir = \"{}\"\n[[queues]]\nid = \"q\"\nall_events = true\n",
            free_port(),
            dir.join(format!("booking-{port}.db")).display(),
            keys.join("public").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join(format!("booking-{port}.log"))).unwrap();
    Command::new(bin).arg("--config").arg(&config).stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

async fn wait_ok(url: &str) {
    let c = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c.get(url).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "{url} never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests from 16 clients until `stop`; every status seen, in order.
fn load(url: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<u16>>> {
    (0..16)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let c = reqwest::Client::new();
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seen.push(c.get(&url).send().await.map_or(0, |r| r.status().as_u16()));
                }
                seen
            })
        })
        .collect()
}

async fn statuses(load: Vec<tokio::task::JoinHandle<Vec<u16>>>) -> Vec<u16> {
    let mut all = Vec::new();
    for l in load {
        all.extend(l.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_booking_cores_mid_sale_loses_no_request() {
    let (proxy_bin, booking_bin) = binaries().unwrap();
    for (lane, extra) in [("fast", ""), ("pingora", "fast_lane = false")] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let keys = dir.join("keys");
        shared::keys::KeyDir::open_or_create(&keys).unwrap();
        let (b1, b2, pport, mport) = (free_port(), free_port(), free_port(), free_port());
        let mut first = booking_core(&booking_bin, dir, b1, &keys);
        let mut second = booking_core(&booking_bin, dir, b2, &keys);
        wait_ok(&format!("http://127.0.0.1:{b1}/api/openapi.json")).await;
        wait_ok(&format!("http://127.0.0.1:{b2}/api/openapi.json")).await;
        let config = dir.join("waiting-room.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:{pport}\"\nmetrics_listen = \"127.0.0.1:{mport}\"\n\
                 upstreams = [\"127.0.0.1:{b1}\", \"127.0.0.1:{b2}\"]\nupstream_check_interval = \"200ms\"\n{extra}\n\
                 [keys]\ndir = \"{}\"\n[admin]\nlisten = \"\"\n{ONE_ADDRESS_LIMITS}\n\
                 [[queues]]\nid = \"q\"\npaths = [\"/events\"]\nrelease_per_tick = 1\ntick = \"1s\"\nsession = \"1m\"\n",
                keys.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("waiting-room.log")).unwrap();
        let mut proxy =
            Command::new(&proxy_bin).arg("--config").arg(&config).stdout(Stdio::null()).stderr(log).spawn().unwrap();
        let url = format!("http://127.0.0.1:{pport}/api/openapi.json");
        wait_ok(&url).await;

        // Both serve; one is killed mid-run; not one request fails.
        let stop = Arc::new(AtomicBool::new(false));
        let running = load(url.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(700)).await;
        first.kill().unwrap();
        first.wait().unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        let seen = statuses(running).await;
        let failed = seen.iter().filter(|s| **s != 200).count();
        assert!(seen.len() > 100, "{lane}: only {} requests", seen.len());
        assert_eq!(failed, 0, "{lane}: {failed} of {} failed", seen.len());
        // Both had their share before the kill.
        for port in [b1, b2] {
            let served = std::fs::read_to_string(dir.join(format!("booking-{port}.log"))).unwrap();
            assert!(served.matches("/api/openapi.json").count() > 10, "{lane}: {port} served nothing");
        }

        // None left: a generic 502.
        second.kill().unwrap();
        second.wait().unwrap();
        let r = reqwest::get(&url).await.unwrap();
        assert_eq!(r.status(), 502, "{lane}");
        assert!(!r.text().await.unwrap().contains("127.0.0.1"), "{lane}");

        // One comes back: served again once its check passes.
        let mut again = booking_core(&booking_bin, dir, b2, &keys);
        wait_ok(&format!("http://127.0.0.1:{b2}/api/openapi.json")).await;
        wait_ok(&url).await;
        let _ = (again.kill(), again.wait(), proxy.kill(), proxy.wait());
    }
}
