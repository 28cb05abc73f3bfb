//! Operator control: live admission settings shared by every instance on the
//! store, changed through the admin API or by reloading the config file on
//! SIGHUP, and applied without dropping connections or tokens.
//!
//! A change is saved to the store first (which bumps its version and, on
//! Redis, tells every instance), then applied locally; instances apply a
//! version only if it is newer than the one they hold. Stored settings win
//! over each instance's config file at start, so restarting one instance does
//! not undo live tuning; the next SIGHUP or admin change replaces them. Two
//! operators changing the same queue at once: the last save wins, whole.

use std::path::PathBuf;
use std::sync::Arc;

use shared::config::{ConfigError, ProcessEnv};

use crate::config::Config;
use crate::metrics::METRICS;
use crate::push;
use crate::queues::Queue;
use crate::state::State;
use crate::store::{SharedSettings, StoreError};

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The new settings are invalid (the key names the field).
    #[error("{0}")]
    Invalid(ConfigError),
    /// The store did not take the change; nothing was applied.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The change contradicts the state it would apply to (a queue that
    /// already exists, a change that lost every race).
    #[error("{0}")]
    Conflict(String),
}

/// Change a queue's settings with `edit`, save them for all instances, apply
/// them here. `actor` and `action` go to the log and the metric.
pub async fn change(
    state: &Arc<State>,
    queue: &Arc<Queue>,
    actor: &str,
    action: &'static str,
    edit: impl FnOnce(&mut SharedSettings),
) -> Result<SharedSettings, ChangeError> {
    let before = queue.settings();
    let mut next = before.clone();
    edit(&mut next);
    next.admission.validate("settings").map_err(ChangeError::Invalid)?;
    let store = state.store().ok_or_else(|| StoreError("the queue store is not connected yet".into()))?;
    let saved = store.save_settings(queue.id(), &next).await?;
    queue.apply(&saved);
    METRICS.admin_changes.with_label_values(&[queue.id(), action]).inc();
    tracing::info!(
        queue = queue.id(),
        actor,
        action,
        version = saved.version,
        before = %serde_json::to_string(&before).unwrap_or_default(),
        after = %serde_json::to_string(&saved).unwrap_or_default(),
        "queue settings changed"
    );
    push::refresh_all(state, queue).await;
    Ok(saved)
}

/// The store lost the line, and the live settings with it: count versions
/// from 0 again, and write back the settings this instance runs with (all
/// instances ran the same), so the operator's last change — a pause, a new
/// rate — outlives the loss and later instances pick it up.
pub async fn restore(state: &Arc<State>, queue: &Arc<Queue>) {
    queue.forget_settings_version();
    let Some(store) = state.store() else { return };
    let saved = match store.load_settings(queue.id()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => store.save_settings(queue.id(), &queue.settings()).await,
        Err(e) => Err(e),
    };
    match saved {
        Ok(s) => {
            queue.apply(&s);
        }
        Err(e) => {
            tracing::warn!(queue = queue.id(), error = %e, "cannot restore the live settings; the next sync will")
        }
    }
}

/// Pick up settings another instance saved (a pub/sub message, or the
/// periodic check). Returns whether anything changed here.
pub async fn sync(state: &Arc<State>, queue: &Arc<Queue>) -> bool {
    let Some(store) = state.store() else { return false };
    match store.load_settings(queue.id()).await {
        Ok(Some(s)) if queue.apply(&s) => {
            tracing::info!(queue = queue.id(), version = s.version, "applied shared settings");
            push::refresh_all(state, queue).await;
            true
        }
        Ok(_) => false,
        Err(e) => {
            tracing::warn!(queue = queue.id(), error = %e, "cannot read shared settings");
            false
        }
    }
}

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
            change(state, queue, "sighup", "reload", |s| {
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
