//! `/subscriptions` on the admin API: the operations of `gatehouse subscription …` over HTTP.
//!
//! ```text
//! GET  /subscriptions                       list (never with keys)
//! POST /subscriptions                       create: {"name", "product"|"api"|"all_apis": true,
//!                                           "primary_key"?, "secondary_key"?, "expires"?} → 201 with
//!                                           the generated keys, shown this once
//! GET  /subscriptions/{id}                  one, by id or name
//! POST /subscriptions/{id}/regenerate       {"key": "primary"|"secondary", "value"?} → the new key
//! POST /subscriptions/{id}/suspend|resume|cancel
//! PUT  /subscriptions/{id}/expiry           {"expires": "2027-01-31T00:00:00Z" | "90d" | null}
//! ```
//! Every route needs the admin token, reads included (names and scopes are not public). After a
//! change the node's own index is refreshed at once; other nodes see it within their poll interval.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{problem, refusal};
use crate::identity::subscription::SubscriptionIndex;
use crate::server::Gateway;
use crate::store::{KeySlot, NewSubscription, Scope, Store, StoreError, SubscriptionKey};

/// What the subscription routes need: the gateway (for the admin token), the store, and this
/// node's index (refreshed after each change).
#[derive(Clone)]
pub struct SubscriptionAdmin {
    pub gw: Arc<Gateway>,
    pub store: Store,
    pub index: Option<Arc<SubscriptionIndex>>,
}

pub fn subscription_router(state: SubscriptionAdmin) -> Router {
    Router::new()
        .route("/subscriptions", get(list).post(create))
        .route("/subscriptions/{id}", get(show))
        .route("/subscriptions/{id}/regenerate", post(regenerate))
        .route("/subscriptions/{id}/suspend", post(suspend))
        .route("/subscriptions/{id}/resume", post(resume))
        .route("/subscriptions/{id}/cancel", post(cancel))
        .route("/subscriptions/{id}/expiry", put(expiry))
        .with_state(state)
}

fn store_error(e: &StoreError) -> Response {
    match e {
        StoreError::NotFound(_) => problem(StatusCode::NOT_FOUND, "subscription-not-found", &e.to_string(), None),
        StoreError::Conflict(_) => problem(StatusCode::CONFLICT, "subscription-conflict", &e.to_string(), None),
        StoreError::Invalid(_) => problem(StatusCode::BAD_REQUEST, "subscription-invalid", &e.to_string(), None),
        _ => {
            tracing::error!(error = %e, "Subscription store operation failed.");
            problem(StatusCode::SERVICE_UNAVAILABLE, "store-unavailable", "the subscription store is unavailable", None)
        }
    }
}

fn bad_request(detail: &str) -> Response {
    problem(StatusCode::BAD_REQUEST, "subscription-invalid", detail, None)
}

/// Parses a JSON body into `T`; the error becomes a 400 problem+json (not axum's plain text).
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    let text = if bytes.is_empty() { &b"{}"[..] } else { &bytes[..] };
    serde_json::from_slice(text).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn refreshed(s: &SubscriptionAdmin) {
    if let Some(index) = &s.index {
        if let Err(e) = index.refresh(&s.store).await {
            tracing::warn!(error = %e, "Subscription index refresh after an admin change failed; the poller will retry.");
        }
    }
}

async fn list(State(s): State<SubscriptionAdmin>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    match s.store.list_subscriptions().await {
        Ok(list) => Json(json!({ "subscriptions": list })).into_response(),
        Err(e) => store_error(&e),
    }
}

async fn show(State(s): State<SubscriptionAdmin>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    match s.store.find_subscription(&id).await {
        Ok(sub) => Json(json!(sub)).into_response(),
        Err(e) => store_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    product: Option<String>,
    api: Option<String>,
    #[serde(default)]
    all_apis: bool,
    primary_key: Option<String>,
    secondary_key: Option<String>,
    expires: Option<String>,
}

fn key(text: Option<String>) -> Result<Option<SubscriptionKey>, String> {
    text.map(|t| SubscriptionKey::parse(&t)).transpose()
}

fn expiry_of(text: Option<&str>) -> Result<Option<i64>, String> {
    text.map(|t| crate::cli::subscription::parse_expiry(t, crate::store::unix_now())).transpose()
}

async fn create(State(s): State<SubscriptionAdmin>, headers: HeaderMap, bytes: Bytes) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    let b: CreateBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let scope = match (b.product, b.api, b.all_apis) {
        (Some(p), None, false) => Scope::Product(p),
        (None, Some(a), false) => Scope::Api(a),
        (None, None, true) => Scope::AllApis,
        _ => return bad_request("give exactly one scope: \"product\", \"api\" or \"all_apis\": true"),
    };
    let (primary_key, secondary_key, expires_at) =
        match (key(b.primary_key), key(b.secondary_key), expiry_of(b.expires.as_deref())) {
            (Ok(p), Ok(s), Ok(e)) => (p, s, e),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return bad_request(&e),
        };
    let new = NewSubscription { name: b.name, scope, primary_key, secondary_key, expires_at };
    match s.store.create_subscription(new).await {
        Ok((sub, keys)) => {
            refreshed(&s).await;
            let body = json!({
                "subscription": sub,
                "primary_key": keys.primary.as_ref().map(|k| k.expose()),
                "secondary_key": keys.secondary.as_ref().map(|k| k.expose()),
            });
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Err(e) => store_error(&e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegenerateBody {
    key: String,
    value: Option<String>,
}

async fn regenerate(
    State(s): State<SubscriptionAdmin>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    let b: RegenerateBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let slot = match b.key.as_str() {
        "primary" => KeySlot::Primary,
        "secondary" => KeySlot::Secondary,
        _ => return bad_request("\"key\" is \"primary\" or \"secondary\""),
    };
    let explicit = match key(b.value) {
        Ok(k) => k,
        Err(e) => return bad_request(&e),
    };
    match s.store.regenerate_key(&id, slot, explicit).await {
        Ok((sub, issued)) => {
            refreshed(&s).await;
            Json(json!({ "subscription": sub, "slot": slot.as_str(), "key": issued.as_ref().map(|k| k.expose()) }))
                .into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn set_state(s: SubscriptionAdmin, id: String, headers: HeaderMap, to: crate::store::State) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    match s.store.set_state(&id, to).await {
        Ok(sub) => {
            refreshed(&s).await;
            Json(json!(sub)).into_response()
        }
        Err(e) => store_error(&e),
    }
}

async fn suspend(State(s): State<SubscriptionAdmin>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    set_state(s, id, headers, crate::store::State::Suspended).await
}

async fn resume(State(s): State<SubscriptionAdmin>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    set_state(s, id, headers, crate::store::State::Active).await
}

async fn cancel(State(s): State<SubscriptionAdmin>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    set_state(s, id, headers, crate::store::State::Cancelled).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpiryBody {
    expires: Option<String>,
}

async fn expiry(
    State(s): State<SubscriptionAdmin>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    if let Some(r) = refusal(&s.gw, &headers) {
        return r;
    }
    let b: ExpiryBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return bad_request(&e),
    };
    let when = match expiry_of(b.expires.as_deref()) {
        Ok(w) => w,
        Err(e) => return bad_request(&e),
    };
    match s.store.set_expiry(&id, when).await {
        Ok(sub) => {
            refreshed(&s).await;
            Json(json!(sub)).into_response()
        }
        Err(e) => store_error(&e),
    }
}
