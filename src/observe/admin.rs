//! The observability routes of the admin listener: `GET /metrics` (Prometheus text, open like
//! `/healthz`: it carries no keys, IPs or paths), and, behind the admin token, the analytics
//! API and the dashboard.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::server::Gateway;

/// Routes merged into the admin router.
pub fn routes() -> Router<Arc<Gateway>> {
    Router::new().route("/metrics", get(metrics)).merge(super::dashboard::routes())
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
    let text = active.observe.telemetry.metrics.render(
        &servers(&gw),
        &[("gatehouse_access_log_dropped_total", "Access log lines dropped because the writer fell behind.", dropped)],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
