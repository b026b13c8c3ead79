//! The writer task: every `flush_interval` it closes the minutes that have ended and, with a
//! store, writes them in batched transactions; without one it trims the in-memory history. It
//! deletes rows past `retention` every hour, and on shutdown writes everything, the current
//! minute too. A failed write leaves the rows queued for the next round (bounded by
//! `MAX_DONE_ROWS`); requests never wait for any of this.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{current_minute, Analytics, AnalyticsSpec, Row, MEMORY_WINDOW_S};
use crate::observe::metrics::LAYERS;
use crate::observe::telemetry::Telemetry;
use crate::server::Gateway;
use crate::store::{Store, StoredAggregate};

/// Rows per transaction.
const BATCH: usize = 5_000;
/// A write that takes longer is abandoned (and retried); queries wait for writes, so this
/// bounds how long a lost store can hold `/analytics` up.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often rows past retention are deleted from the store.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// The final write on shutdown gives up after this.
const FINAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The running writer; [`AnalyticsTask::stop`] makes it write what is left and waits for it.
pub struct AnalyticsTask {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl AnalyticsTask {
    /// Starts the writer for `gw` (read for the current `telemetry.analytics` settings).
    pub fn start(gw: Weak<Gateway>, telemetry: Arc<Telemetry>, store: Option<Store>) -> AnalyticsTask {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(gw, telemetry, store, stop.clone()));
        AnalyticsTask { stop, task }
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(gw: Weak<Gateway>, telemetry: Arc<Telemetry>, store: Option<Store>, stop: CancellationToken) {
    let analytics = &telemetry.analytics;
    let mut writer = Writer { store, failing: false, pruned: None };
    let mut spec = AnalyticsSpec::default();
    loop {
        match gw.upgrade() {
            Some(g) => spec = g.active().observe.spec.analytics.clone(),
            None => break,
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(spec.flush_interval) => {}
        }
        writer.flush(analytics, &spec, Some(current_minute())).await;
    }
    if tokio::time::timeout(FINAL_TIMEOUT, writer.flush(analytics, &spec, None)).await.is_err() {
        tracing::warn!(queued = analytics.queued(), "Analytics not written at shutdown: the store did not answer.");
    }
}

struct Writer {
    store: Option<Store>,
    /// The last write failed (log the change, not every attempt).
    failing: bool,
    pruned: Option<Instant>,
}

impl Writer {
    /// Closes the minutes before `before` (all when `None`) and writes or trims what is queued.
    async fn flush(&mut self, analytics: &Analytics, spec: &AnalyticsSpec, before: Option<i64>) {
        let retention = i64::try_from(spec.retention.as_secs()).unwrap_or(i64::MAX);
        let _io = analytics.io.lock().await;
        analytics.finish_minutes(before);
        let Some(store) = &self.store else {
            analytics.forget_before(current_minute().saturating_sub(retention.min(MEMORY_WINDOW_S)));
            return;
        };
        loop {
            let (seq, rows) = analytics.peek(BATCH);
            if rows.is_empty() {
                break;
            }
            let stored: Vec<StoredAggregate> = rows.iter().map(|r| stored(&spec.node, r)).collect();
            let result = match tokio::time::timeout(WRITE_TIMEOUT, store.insert_aggregates(&stored)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {WRITE_TIMEOUT:?}")),
            };
            match result {
                Ok(()) => {
                    analytics.confirm(seq, rows.len());
                    if std::mem::take(&mut self.failing) {
                        tracing::info!("Analytics are written to the store again.");
                    }
                }
                Err(e) => {
                    analytics.write_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if !self.failing {
                        tracing::warn!(error = %e, queued = analytics.queued(), "Cannot write analytics to the store; they are kept and retried.");
                    }
                    self.failing = true;
                    return;
                }
            }
        }
        if self.pruned.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
            let before = current_minute().saturating_sub(retention);
            match tokio::time::timeout(WRITE_TIMEOUT, store.delete_aggregates_before(before)).await {
                Ok(Ok(n)) => {
                    self.pruned = Some(Instant::now());
                    if n > 0 {
                        tracing::info!(rows = n, "Analytics past their retention deleted.");
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "Deleting old analytics failed; retried next round."),
                Err(_) => tracing::warn!("Deleting old analytics timed out; retried next round."),
            }
        }
    }
}

/// The store's form of a row.
pub fn stored(node: &str, r: &Row) -> StoredAggregate {
    StoredAggregate {
        node: node.to_owned(),
        minute: r.minute,
        api: r.key.api.to_string(),
        operation: r.key.operation.to_string(),
        product: r.key.product.as_deref().unwrap_or("").to_owned(),
        subscription: r.key.subscription.as_deref().unwrap_or("").to_owned(),
        status_class: i64::from(r.key.status) + 1,
        layer: LAYERS.get(usize::from(r.key.layer)).copied().unwrap_or("").to_owned(),
        requests: i64::try_from(r.agg.requests).unwrap_or(i64::MAX),
        bytes_sent: i64::try_from(r.agg.bytes_sent).unwrap_or(i64::MAX),
        latency: r.agg.latency.encode(),
    }
}
