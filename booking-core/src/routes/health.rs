//! The operator listener's health checks (unauthenticated): `/livez` (the
//! process answers; touches nothing) and `/readyz` (PostgreSQL and, if
//! configured, Redis answer; the checks run concurrently, each bounded, so the
//! answer comes within 500 ms whatever they do; 503 while shutting
//! down), with `/healthz` an alias of `/readyz`.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;
use shared::problem::Problem;

use crate::http::{Input, Success};
use crate::problem::{ApiError, Failure};
use crate::routes::openapi::errors::{BodyRead, ErrorSet, Errors};

/// The bound on each dependency's check (they run concurrently), leaving
/// room to answer within 500 ms.
const CHECK_WITHIN: Duration = Duration::from_millis(300);

/// Why the service is not ready. → 503 with `Retry-After`, and the state of
/// each check as `checks` (`ok`, `failed`, `timeout`, `circuit open`).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// A dependency did not answer in time, or failed.
    #[error("not ready: {}", describe(.0))]
    Dependencies(Checks),
    /// Shutdown has started.
    #[error("not ready: shutting down")]
    ShuttingDown,
}

fn describe(checks: &Checks) -> String {
    checks.iter().map(|(name, state)| format!("{name} {state}")).collect::<Vec<_>>().join(", ")
}

/// Check name → `ok` or what went wrong.
pub type Checks = BTreeMap<&'static str, &'static str>;

impl ApiError for NotReady {
    fn status(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn extend(&self, problem: Problem) -> Problem {
        match self {
            NotReady::Dependencies(checks) => problem.with("checks", serde_json::json!(checks)),
            NotReady::ShuttingDown => problem.with("checks", serde_json::json!({ "shutdown": "started" })),
        }
    }
}

/// 200 while the process answers. Touches nothing (no database, no Redis).
#[utoipa::path(get, path = "/livez", tag = "operations",
    responses(
        (status = 200, description = "The process answers", body = Health),
        Errors<BodyRead>,
    )
)]
pub async fn livez(_cx: &Input) -> Result<Success, Failure> {
    Ok(Success::json(StatusCode::OK, &Health { status: "ok", checks: Checks::new() }))
}

/// 200 when PostgreSQL (or SQLite) answers: `status` `ok`, or `degraded`
/// while Redis (if configured) does not — the service still serves then
/// (claims are decided by the database alone), and `checks` says so. 503
/// when the database does not answer, or while shutting down. Each check is
/// bounded, so the answer comes within 500 ms whatever the dependencies do.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready: the database answers (`degraded` while Redis does not)", body = Health),
        Errors<(BodyRead, Readiness)>,
    )
)]
pub async fn readyz(cx: &Input) -> Result<Success, Failure> {
    if cx.state.shutting_down() {
        return Err(NotReady::ShuttingDown.into());
    }
    let database = bounded(async { cx.state.store().ping().await.map_err(|_| "failed") });
    let redis = async {
        match cx.state.redis() {
            None => None,
            Some(link) => Some(
                bounded(async {
                    link.ping().await.map_err(|e| {
                        if crate::redis_breaker::is_fail_fast(&e) {
                            "circuit open"
                        } else if e.is_timeout() {
                            "timeout"
                        } else {
                            "failed"
                        }
                    })
                })
                .await,
            ),
        }
    };
    let (database, redis) = tokio::join!(database, redis);
    let mut checks = Checks::new();
    checks.insert("database", database.err().unwrap_or("ok"));
    if let Some(redis) = redis {
        checks.insert("redis", redis.err().unwrap_or("ok"));
    }
    // Without the database nothing is served. Without Redis everything is
    // (claims are decided by the database alone): still ready, `degraded` —
    // every instance shares one Redis, so a 503 here would take them all
    // out of rotation at once.
    if checks.get("database") != Some(&"ok") {
        return Err(NotReady::Dependencies(checks).into());
    }
    let status = if checks.values().all(|state| *state == "ok") { "ok" } else { "degraded" };
    Ok(Success::json(StatusCode::OK, &Health { status, checks }))
}

/// The same check as `/readyz` (kept for existing probes).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses(
        (status = 200, description = "Ready (as `/readyz`)", body = Health),
        Errors<(BodyRead, Readiness)>,
    )
)]
pub async fn healthz(cx: &Input) -> Result<Success, Failure> {
    readyz(cx).await
}

async fn bounded(check: impl Future<Output = Result<(), &'static str>>) -> Result<(), &'static str> {
    tokio::time::timeout(CHECK_WITHIN, check).await.unwrap_or(Err("timeout"))
}

/// Body of `GET /livez`, `/readyz` and `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`; from `/readyz`, `degraded` while Redis does not answer.
    #[schema(value_type = String, example = "ok")]
    pub status: &'static str,
    /// Each dependency checked (`database`, and `redis` when configured): `ok`,
    /// `failed`, `timeout` or `circuit open`.
    /// Empty for `/livez`.
    #[schema(value_type = Object, example = json!({"database": "ok", "redis": "ok"}))]
    pub checks: Checks,
}

/// A readiness check failing (503, with the state of each check), or shutdown started.
pub struct Readiness;
impl ErrorSet for Readiness {
    fn samples() -> Vec<(&'static str, Failure)> {
        let checks = [("database", "timeout"), ("redis", "ok")].into_iter().collect();
        vec![
            ("dependency_down", NotReady::Dependencies(checks).into()),
            ("shutting_down", NotReady::ShuttingDown.into()),
        ]
    }
}
