//! Sold-out reaches the line: every instance reads what the booking core has
//! left to sell (`[stock] url`, its `GET /admin/stock`) every
//! `poll_interval`, and each queue with `stop_when_sold_out` follows it:
//!
//! - **sold out** (every listed event without a free seat, every listed
//!   campaign without a code): no release, every waiting visitor is pushed
//!   `SOLD_OUT` at once (socket, poll and page), newcomers are told so
//!   instead of getting a place; places are kept, so stock that comes back
//!   (holds that expire, a booking cancelled) goes to the line in order;
//! - **stock left**: a tick releases at most that many visitors (the
//!   booking core's count, at most one poll interval old).
//!
//! Why poll the booking core rather than have it push: it already knows its
//! stock exactly (its database), the proxy's instances each need it, and a
//! read every half second is nothing next to the sale's traffic; a booking
//! core that does not answer leaves the last reading in force (or none: the
//! line keeps moving at N, and the booking core still never over-sells).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{QueueConfig, StockConfig};
use crate::metrics::METRICS;
use crate::state::State;

/// `GET /admin/stock` as the booking core answers it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Stock {
    /// Free seats per event.
    #[serde(default)]
    pub events: Vec<EventStock>,
    /// Codes left per open campaign.
    #[serde(default)]
    pub campaigns: Vec<CampaignStock>,
}

/// One event's free seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct EventStock {
    /// Event id.
    pub id: i64,
    /// Seats free.
    pub free_seats: i64,
}

/// One campaign's codes left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct CampaignStock {
    /// Campaign id.
    pub id: i64,
    /// Codes left.
    pub codes_left: i64,
}

impl Stock {
    /// What is left of what `queue` sells: the free seats of its events plus
    /// the codes left of its campaigns. An event or campaign the answer does
    /// not list has nothing left (a campaign that closed is not listed).
    pub fn units_for(&self, queue: &QueueConfig) -> u64 {
        let events: HashMap<i64, i64> = self.events.iter().map(|e| (e.id, e.free_seats)).collect();
        let campaigns: HashMap<i64, i64> = self.campaigns.iter().map(|c| (c.id, c.codes_left)).collect();
        let seats = queue.stock_events.iter().map(|id| events.get(id).copied().unwrap_or(0).max(0));
        let codes = queue.stock_campaigns.iter().map(|id| campaigns.get(id).copied().unwrap_or(0).max(0));
        seats.chain(codes).map(|n| u64::try_from(n).unwrap_or(0)).fold(0, u64::saturating_add)
    }
}

/// Read the stock every `poll_interval` and hand it to the queues that
/// follow it; a change between sold out and not is pushed to every socket.
pub async fn poll(state: Arc<State>, config: StockConfig) {
    if config.url.is_empty() {
        return;
    }
    let client = match reqwest::Client::builder().timeout(config.poll_interval.max(Duration::from_secs(2))).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the stock client; sold-out checks are off");
            return;
        }
    };
    let mut every = tokio::time::interval(config.poll_interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let stock = match read(&client, &config).await {
            Ok(s) => s,
            Err(e) => {
                METRICS.stock_read_failures.inc();
                tracing::warn!(error = %e, url = %config.url, "cannot read the stock; the last reading stays");
                continue;
            }
        };
        // Queues come and go (`catalog.rs`): who follows the stock is asked each time.
        for queue in state.queues.all() {
            let def = queue.def();
            if !def.config.stop_when_sold_out {
                continue;
            }
            let units = stock.units_for(&def.config);
            METRICS.stock_left.with_label_values(&[queue.id()]).set(i64::try_from(units).unwrap_or(i64::MAX));
            if queue.note_stock(units) {
                tracing::info!(queue = queue.id(), units, "sold-out state changed");
                crate::push::refresh_all(&state, &queue).await;
            }
        }
    }
}

async fn read(client: &reqwest::Client, config: &StockConfig) -> Result<Stock, String> {
    let mut request = client.get(&config.url);
    if !config.token.is_empty() {
        request = request.bearer_auth(config.token.expose());
    }
    let answer = request.send().await.map_err(|e| e.to_string())?;
    if !answer.status().is_success() {
        return Err(format!("answered {}", answer.status()));
    }
    answer.json::<Stock>().await.map_err(|e| format!("not a stock document: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(events: &[i64], campaigns: &[i64]) -> QueueConfig {
        let toml = format!(
            "id = \"q\"\npaths = [\"/x\"]\nrelease_per_tick = 1\ntick = \"1s\"\nsession = \"1m\"\n\
             stop_when_sold_out = true\nstock_events = {events:?}\nstock_campaigns = {campaigns:?}"
        );
        toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn units_add_up_what_the_queue_sells_and_missing_items_count_as_none() {
        let stock: Stock = serde_json::from_str(
            r#"{"events":[{"id":1,"free_seats":3},{"id":2,"free_seats":40}],"campaigns":[{"id":7,"codes_left":5}]}"#,
        )
        .unwrap_or_default();
        assert_eq!(stock.units_for(&queue(&[1], &[])), 3);
        assert_eq!(stock.units_for(&queue(&[1], &[7])), 8);
        assert_eq!(stock.units_for(&queue(&[9], &[])), 0, "an event the booking core does not list has nothing left");
        assert_eq!(stock.units_for(&queue(&[], &[8])), 0, "a closed campaign is not listed");
        let negative: Stock = serde_json::from_str(r#"{"events":[{"id":1,"free_seats":-4}]}"#).unwrap_or_default();
        assert_eq!(negative.units_for(&queue(&[1], &[])), 0);
    }
}
