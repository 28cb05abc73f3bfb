//! Reloading the config file (SIGHUP, `POST /admin/reload`): the queues it
//! lists are created or redefined in the catalog (`catalog.rs`) and their
//! live settings follow the file (`control.rs`). Queues only the catalog has
//! stay; the admin API deletes them.

use std::path::PathBuf;
use std::sync::Arc;

use shared::config::{ConfigError, ProcessEnv};

use crate::config::Config;
use crate::control::{self, ChangeError};
use crate::metrics::METRICS;
use crate::state::State;

/// Re-read the config file and apply what may change live: queues the file
/// lists are created or redefined in the catalog (queues only the catalog
/// has stay; the admin API deletes them), and their live settings follow
/// the file. Keys that need a restart (listeners, store) are not applied.
/// An invalid file changes nothing.
pub async fn reload(state: &Arc<State>, path: Option<&std::path::Path>) -> Result<Vec<String>, ConfigError> {
    let config = Config::load(path, &ProcessEnv)?;
    let mut entries = Vec::with_capacity(config.queues.len());
    for (i, q) in config.queues.iter().enumerate() {
        let entry = crate::catalog::Entry::from_file(q)
            .map_err(|m| ConfigError::new(format!("queues[{i}].page_template"), m))?;
        entries.push(entry);
    }
    let differs = |e: &crate::catalog::Entry| {
        state.queues.by_id(&e.config.id).is_none_or(|q| crate::catalog::Entry::of(&q) != *e)
    };
    let mut changed: Vec<String> = entries.iter().filter(|e| differs(e)).map(|e| e.config.id.clone()).collect();
    if !changed.is_empty() {
        let edit = |c: &mut crate::catalog::Catalog| {
            for e in &entries {
                match c.queues.iter_mut().find(|o| o.config.id == e.config.id) {
                    Some(o) => *o = e.clone(),
                    None => c.queues.push(e.clone()),
                }
            }
            Ok(())
        };
        crate::catalog::change(state, "*", "sighup", "reload", edit).await.map_err(|e| match e {
            ChangeError::Invalid(e) => e,
            other => ConfigError::new("queues", other.to_string()),
        })?;
    }
    for (i, new) in config.queues.iter().enumerate() {
        let Some(queue) = state.queues.by_id(&new.id) else { continue };
        let queue = &queue;
        let admission = new.admission();
        let message = new.message.clone();
        if admission != queue.admission() || message.as_deref() != queue.message().as_deref() {
            control::change(state, queue, "sighup", "reload", |s| {
                s.admission = admission;
                s.message = message;
            })
            .await
            .map_err(|e| ConfigError::new(format!("queues[{i}]"), e.to_string()))?;
            if !changed.contains(&new.id) {
                changed.push(new.id.clone());
            }
        }
    }
    Ok(changed)
}

/// Reload on every SIGHUP until the process ends.
pub async fn watch_sighup(state: Arc<State>, path: Option<PathBuf>) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; config reload disabled");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match reload(&state, path.as_deref()).await {
            Ok(changed) => {
                METRICS.reloads.with_label_values(&["applied"]).inc();
                tracing::info!(?changed, "config reloaded");
            }
            Err(e) => {
                METRICS.reloads.with_label_values(&["rejected"]).inc();
                tracing::error!(error = %e, "config reload rejected; the previous settings stay");
            }
        }
    }
}
