//! A Prometheus server for the test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Stack, workspace_root};
use serde_json::{Value, json};

pub struct Prometheus {
    pub url: String,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

impl Prometheus {
    /// Start Prometheus with the shipped `configs/prometheus.yml`, its
    /// compose targets replaced by the stack's and scraping every second.
    pub async fn start(stack: &Stack) -> Prometheus {
        let shipped = std::fs::read_to_string(workspace_root().join("configs/prometheus.yml")).unwrap();
        for needle in ["waiting-room:9091", "booking-core:9093", "job_name: waiting-room", "job_name: booking-core"] {
            assert!(shipped.contains(needle), "configs/prometheus.yml lost {needle:?}");
        }
        let config = shipped
            .replace("waiting-room:9091", &host_port(&stack.proxy_metrics))
            .replace("booking-core:9093", &host_port(&stack.booking_admin))
            .replace("scrape_interval: 5s", "scrape_interval: 1s")
            .replace("evaluation_interval: 5s", "evaluation_interval: 1s")
            .replace("scrape_timeout: 4s", "scrape_timeout: 1s");
        assert!(config.contains("scrape_interval: 1s"), "configs/prometheus.yml: expected scrape_interval: 5s");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "/usr/bin/prometheus".into());
        let port = e2e::free_port();
        let log = dir.path().join("prometheus.log");
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin} ({e}); scripts/ensure-deps.sh installs Debian's prometheus"));
        let mut p = Prometheus { url: format!("http://127.0.0.1:{port}"), child, log, _dir: dir };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/-/ready", p.url)).send().await
                && r.status().is_success()
            {
                break;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}:\n{}", p.log());
            }
            assert!(Instant::now() < deadline, "prometheus never became ready:\n{}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run an instant query: the result vector (a scalar as one sample), or
    /// Prometheus's error.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let r = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = r.json().await.map_err(|e| e.to_string())?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match body["data"]["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(body["data"]["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar") => Ok(vec![json!({"metric": {}, "value": body["data"]["result"]})]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// The sample values of `expr` (NaN for unparsable ones).
    pub async fn values(&self, expr: &str) -> Vec<f64> {
        let result = self.query(expr).await.unwrap_or_else(|e| panic!("{expr}: {e}"));
        result.iter().map(|s| s["value"][1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN)).collect()
    }

    /// Poll until `expr` has a sample satisfying `ok`.
    pub async fn wait_for(&self, expr: &str, ok: impl Fn(f64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let values = self.values(expr).await;
            if values.iter().any(|v| ok(*v)) {
                return;
            }
            assert!(Instant::now() < deadline, "{expr} never matched; last {values:?}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Wait until both targets are up and were last scraped after `since`
    /// (Unix seconds).
    pub async fn wait_scraped_after(&self, since: f64) {
        self.wait_for("count(up == 1)", |v| v == 2.0).await;
        self.wait_for("min(timestamp(up))", |v| v > since).await;
    }

    /// Both active targets are healthy, as the targets page reports them.
    pub async fn wait_targets_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body: Value = reqwest::get(format!("{}/api/v1/targets", self.url)).await.unwrap().json().await.unwrap();
            let targets = body["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
            let jobs: BTreeSet<&str> = targets.iter().filter_map(|t| t["labels"]["job"].as_str()).collect();
            if targets.len() == 2 && targets.iter().all(|t| t["health"] == "up") {
                assert_eq!(jobs, BTreeSet::from(["booking-core", "waiting-room"]));
                return;
            }
            assert!(Instant::now() < deadline, "targets never all up: {targets:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn now_secs() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}
