//! The admin listener (axum): `/healthz`, `/readyz`, and the admin API. Mutations need the
//! admin token (`Authorization: Bearer …`), compared in constant time; without a configured
//! token they are refused. The subscription routes (`/subscriptions…`, all behind the token,
//! reads included) are in `admin/subscriptions.rs`.

mod subscriptions;

pub use subscriptions::{subscription_router, SubscriptionAdmin};

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::server::{Gateway, ReloadError};

pub struct RunningAdmin {
    pub bind: String,
    pub local_addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl RunningAdmin {
    pub fn start(gw: Arc<Gateway>, bind: String, listener: TcpListener) -> std::io::Result<RunningAdmin> {
        let local_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let subscriptions = gw.store().map(|store| SubscriptionAdmin {
            gw: gw.clone(),
            store: store.clone(),
            index: Some(gw.active().snapshot.env.subscriptions.clone()),
        });
        let app = router_with(gw, subscriptions);
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move { s.cancelled().await }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "The admin listener failed.");
            }
        });
        tracing::info!(addr = %local_addr, "Admin API listening.");
        Ok(RunningAdmin { bind, local_addr, stop, task })
    }

    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

pub fn router(gw: Arc<Gateway>) -> Router {
    router_with(gw, None)
}

/// The admin router, with the subscription routes when a store is open.
pub fn router_with(gw: Arc<Gateway>, subscriptions: Option<SubscriptionAdmin>) -> Router {
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/reload", post(reload))
        .merge(crate::observe::admin::routes())
        .with_state(gw);
    match subscriptions {
        Some(s) => base.merge(subscription_router(s)),
        None => base,
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    if gw.is_ready() {
        Json(json!({ "status": "ready", "generation": gw.generation() })).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "not ready" }))).into_response()
    }
}

pub(crate) fn problem(status: StatusCode, kind: &str, detail: &str, extra: Option<serde_json::Value>) -> Response {
    let mut body = json!({
        "type": format!("urn:gatehouse:error:{kind}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        // Refused admin calls and configs are bad input at the perimeter, like a 400 on the
        // data path: `edge`. (`gateway` is reserved for the gateway's own bugs.)
        "layer": "edge",
    });
    if let (Some(extra), Some(obj)) = (extra, body.as_object_mut()) {
        obj.insert("errors".into(), extra);
    }
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}

/// The refusal to send when the caller is not the admin; `None` lets the call through.
pub(crate) fn refusal(gw: &Gateway, headers: &HeaderMap) -> Option<Response> {
    let active = gw.active();
    let Some(expected) = active.snapshot.admin.as_ref().and_then(|a| a.token.as_deref()) else {
        return Some(problem(
            StatusCode::FORBIDDEN,
            "admin-token-missing",
            "this admin endpoint needs a token: set admin.token in the config (without it the admin API, \
             dashboard and analytics are off)",
            None,
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        None
    } else {
        let mut denied = problem(
            StatusCode::UNAUTHORIZED,
            "admin-unauthorized",
            "a valid admin token is required (Authorization: Bearer …)",
            None,
        );
        // RFC 9110 §11.6.1: a 401 names the scheme it wants.
        denied.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        Some(denied)
    }
}

async fn reload(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&gw, &headers) {
        return r;
    }
    match gw.reload().await {
        Ok(generation) => Json(json!({ "status": "reloaded", "generation": generation })).into_response(),
        Err(ReloadError::Invalid(errors)) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "config-invalid",
                "the new config is invalid; the previous one keeps serving",
                Some(json!(list)),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "Reload failed.");
            problem(StatusCode::UNPROCESSABLE_ENTITY, "reload-failed", &e.to_string(), None)
        }
    }
}
