//! The dashboard: one page on the admin listener showing traffic, latency percentiles, failures
//! by layer, top APIs and subscriptions of the last hour (from `/analytics`), and backend
//! health, refreshed every two seconds.
//!
//! The page and its assets (uPlot, MIT, vendored from npm `uplot` 1.6.32 with its licence) are
//! compiled into the binary and carry no data, so they are served without the token; the data
//! (`/dashboard/data`) needs the admin token like every other admin read of this kind. The page
//! takes the token from its URL fragment (`/dashboard#token=…`, never sent to the server or
//! written to a log) or asks for it, and keeps it in the tab's session storage.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::server::Gateway;

const PAGE: &str = include_str!("assets/index.html");
const APP: &str = include_str!("assets/app.js");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");

pub fn routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route("/dashboard", get(|| asset("text/html; charset=utf-8", PAGE)))
        .route("/dashboard/app.js", get(|| asset("text/javascript; charset=utf-8", APP)))
        .route("/dashboard/uPlot.iife.min.js", get(|| asset("text/javascript; charset=utf-8", UPLOT_JS)))
        .route("/dashboard/uPlot.min.css", get(|| asset("text/css; charset=utf-8", UPLOT_CSS)))
        .route("/dashboard/data", get(data))
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::HeaderName::from_static("content-security-policy"),
                "default-src 'self'; style-src 'self' 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response()
}

/// Everything the page draws, in one JSON document.
async fn data(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = crate::admin::refusal(&gw, &headers) {
        return refused;
    }
    let active = gw.active();
    let telemetry = &active.observe.telemetry;
    let backends: Vec<_> = super::admin::servers(&gw)
        .into_iter()
        .map(|(b, s, up)| json!({ "backend": b, "server": s, "up": up }))
        .collect();
    Json(json!({
        "generation": active.generation,
        "seconds": telemetry.recent.series(),
        "backends": backends,
    }))
    .into_response()
}
