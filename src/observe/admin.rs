//! The observability routes of the admin listener: `GET /metrics` (Prometheus text, open like
//! `/healthz`: it carries no keys, IPs or paths), and, behind the admin token, the analytics
//! API and the dashboard.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::analytics::query::{Grouping, Params, MAX_GROUPS};
use super::analytics::writer::WRITE_TIMEOUT;
use crate::server::Gateway;

/// Routes merged into the admin router.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new().route("/metrics", get(metrics)).route("/analytics", get(analytics)).merge(super::dashboard::routes())
}

/// Every backend server with its health verdict: (backend, server URL, up).
pub fn servers(gw: &Gateway) -> Vec<(String, String, bool)> {
    let active = gw.active();
    let mut out = Vec::new();
    let mut names: Vec<&String> = active.upstreams.backends.keys().collect();
    names.sort();
    for name in names {
        let Some(b) = active.upstreams.backends.get(name) else { continue };
        for (spec, state) in b.spec.servers.iter().zip(&b.servers) {
            out.push((name.clone(), spec.url.clone(), state.up.load(Ordering::Relaxed)));
        }
    }
    out
}

async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let active = gw.active();
    let dropped = active.access_log.as_ref().map_or(0, |l| l.dropped());
    let a = &active.observe.telemetry.analytics;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let text = active.observe.telemetry.metrics.render(
        &servers(&gw),
        &[
            ("gatehouse_access_log_dropped_total", "Access log lines dropped because the writer fell behind.", dropped),
            (
                "gatehouse_analytics_overflow_total",
                "Requests counted under the ~other analytics key because their minute had too many keys.",
                n(&a.overflowed),
            ),
            (
                "gatehouse_analytics_dropped_rows_total",
                "Analytics rows dropped because the unwritten backlog (or the in-memory history) was full.",
                n(&a.dropped),
            ),
            (
                "gatehouse_analytics_write_failures_total",
                "Failed attempts to write analytics to the store.",
                n(&a.write_failures),
            ),
            ("gatehouse_analytics_rows_written_total", "Analytics rows written to the store.", n(&a.rows_written)),
        ],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// `GET /analytics` (admin token): aggregates from the store plus those not yet written, so the
/// answer is current to the request.
async fn analytics(State(gw): State<Arc<Gateway>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    if let Some(refused) = crate::admin::refusal(&gw, &headers) {
        return refused;
    }
    let params = match Params::parse(query.as_deref(), crate::store::unix_now()) {
        Ok(p) => p,
        Err(e) => {
            let detail = format!("parameter `{}`: {}", e.param, e.message);
            return crate::admin::problem(StatusCode::BAD_REQUEST, "analytics-parameter", &detail, None);
        }
    };
    let active = gw.active();
    let telemetry = &active.observe.telemetry;
    let this_node = active.observe.spec.analytics.node.clone();
    let (from, to, node) = (params.from, params.to, params.node.clone());
    let mut grouping = Grouping::new(params);
    // Held while reading both places: the writer moves rows from memory to the store under it.
    let _io = telemetry.analytics.io.lock().await;
    if let Some(store) = gw.store() {
        let scan = store.scan_aggregates(from, to, node.as_deref(), |row| {
            grouping.add_stored(&row);
            match grouping.too_many {
                true => Err(crate::store::StoreError::Invalid("too many rows".into())),
                false => Ok(()),
            }
        });
        let result = tokio::time::timeout(WRITE_TIMEOUT, scan).await;
        if !grouping.too_many && !matches!(result, Ok(Ok(()))) {
            if let Ok(Err(e)) = &result {
                tracing::warn!(error = %e, "Reading analytics from the store failed.");
            }
            return crate::admin::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "store-unavailable",
                "the analytics store is unavailable",
                None,
            );
        }
    }
    if node.as_deref().is_none_or(|n| n == this_node) {
        telemetry.analytics.visit(from, to, |minute, key, agg| grouping.add(minute, key, agg));
    }
    drop(_io);
    if grouping.too_many {
        let detail = format!("more than {MAX_GROUPS} rows: narrow `from`/`to` or use a coarser `interval`");
        return crate::admin::problem(StatusCode::BAD_REQUEST, "analytics-parameter", &detail, None);
    }
    let source = if gw.store().is_some() { "store" } else { "memory" };
    axum::Json(grouping.into_json(source)).into_response()
}
