//! Operator control: live admission settings shared by every instance on the
//! store, changed through the admin API or by reloading the config file
//! (`reload.rs`), and applied without dropping connections or tokens.
//!
//! A change is saved to the store first (which bumps its version and, on
//! Redis, tells every instance), then applied locally; instances apply a
//! version only if it is newer than the one they hold. Stored settings win
//! over each instance's config file at start, so restarting one instance does
//! not undo live tuning; the next SIGHUP or admin change replaces them. Two
//! operators changing the same queue at once: the last save wins, whole.

use std::sync::Arc;

use shared::config::ConfigError;

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
    let store = state.store().ok_or(StoreError::NOT_CONNECTED)?;
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
