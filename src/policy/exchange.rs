//! One request's mutable state as it passes through the policy sections.
//!
//! The proxy builds an `Exchange` only for routes that have policies; routes without any take
//! the direct path. Policies read and change the request (`request`, `body`), the plan for the
//! backend call (`backend`), and in outbound/on-error the response. Values they compute for later
//! policies (claims, the caller, variables) live here too, so nothing is global per request.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use super::{Chain, Stage};
use crate::body::{ResponseBody, UpstreamBody};
use crate::respond::{Layer, Problem};
use crate::route::{Api, Route};

/// Who is calling, once a subscription key was accepted.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subscription_id: Arc<str>,
    pub subscription_name: Arc<str>,
    pub product: Option<Arc<str>>,
}

/// `retry` around the backend call.
#[derive(Debug, Clone)]
pub struct RetryPlan {
    /// Attempts after the first.
    pub count: u32,
    pub interval: Duration,
    /// Retry when the backend answers with one of these statuses (connect failures always).
    pub statuses: Vec<u16>,
}

/// How the backend will be called; policies change it (`set-backend-service`, `rewrite-uri`,
/// `forward-request`, `retry`).
#[derive(Debug, Clone, Default)]
pub struct BackendPlan {
    /// Another configured backend by name.
    pub service: Option<Arc<str>>,
    /// Path and query sent to the backend, below the server URL's path (`rewrite-uri`).
    pub target: Option<String>,
    /// Deadline for the backend's response head.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPlan>,
}

/// The failure on-error sees.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: u16,
    pub layer: Layer,
    pub policy: Option<&'static str>,
    pub kind: &'static str,
    pub detail: String,
}

impl ErrorInfo {
    pub fn of(p: &Problem) -> ErrorInfo {
        ErrorInfo {
            status: p.status.as_u16(),
            layer: p.layer,
            policy: p.policy,
            kind: p.kind,
            detail: p.detail.clone(),
        }
    }
}

/// A miss that `cache-lookup` recorded so `cache-store` can store the response under its key.
#[derive(Debug, Clone)]
pub struct CacheTicket {
    /// The entry's key in the store (the hashed request key).
    pub key: String,
    pub store: crate::cache::Store,
    pub honor_cache_control: bool,
    pub allow_private: bool,
    /// The request carried `Authorization` and it is not part of the key (RFC 9111 §3.5).
    pub authorized: bool,
    /// Why the backend is called, as `Cache-Status` says it (`gatehouse; fwd=uri-miss`).
    pub status: &'static str,
}

/// A callback run once the final status is known.
pub type Deferred = Box<dyn FnOnce(u16) + Send>;

/// A callback run when the response body has ended, with the final status and the body bytes
/// sent to the client (bandwidth quotas).
pub type SentHook = Box<dyn FnOnce(u16, u64) + Send>;

/// One request in the pipeline.
pub struct Exchange {
    pub stage: Stage,
    /// Method, URI as received (the query may be changed), headers.
    pub request: http::request::Parts,
    pub body: UpstreamBody,
    /// The normalised public path that was routed.
    pub path: String,
    /// Route template parameters.
    pub params: Vec<(Arc<str>, String)>,
    /// The client's address after `edge.trusted_proxies`.
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    pub route: Arc<Route>,
    /// Variables from `set-variable`.
    pub vars: Vec<(Arc<str>, String)>,
    /// The validated token's payload (`validate-jwt`).
    pub jwt: Option<Arc<crate::identity::jwt::claims::Verified>>,
    pub caller: Option<Arc<Caller>>,
    pub backend: BackendPlan,
    /// Outbound / on-error: the response so far.
    pub response: Option<Response<ResponseBody>>,
    /// On-error: what failed.
    pub error: Option<ErrorInfo>,
    /// Added to whatever response goes out (`RateLimit-*`, CORS).
    pub extra_response_headers: HeaderMap,
    /// Run with the final status (count only 2xx, release a concurrency permit).
    pub deferred: Vec<Deferred>,
    /// Run with the status and the response bytes once the body has gone out.
    pub on_sent: Vec<SentHook>,
    /// The largest body a policy may buffer.
    pub body_limit: u64,
    /// What `cache-lookup` hands to `cache-store` after a miss.
    pub cache: Option<CacheTicket>,
    /// When the request was routed: a clock reading the request path takes anyway, from which
    /// policies that need the time of day to the second take it ([`Exchange::unix_now`]).
    pub routed_at: Instant,
}

impl Exchange {
    /// An exchange holding no request: what a reused box holds between requests (and where
    /// tests start theirs).
    pub(crate) fn blank() -> Exchange {
        Exchange {
            stage: Stage::Inbound,
            request: http::Request::new(()).into_parts().0,
            body: UpstreamBody::empty(),
            path: String::new(),
            params: Vec::new(),
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            request_id: HeaderValue::from_static(""),
            route: blank_route(),
            vars: Vec::new(),
            jwt: None,
            caller: None,
            backend: BackendPlan::default(),
            response: None,
            error: None,
            extra_response_headers: HeaderMap::new(),
            deferred: Vec::new(),
            on_sent: Vec::new(),
            body_limit: 0,
            cache: None,
            routed_at: Instant::now(),
        }
    }

    /// Unix seconds when the request was routed, mostly without reading the clock
    /// (`observe::clock`).
    pub fn unix_now(&self) -> u64 {
        crate::observe::clock::unix_second(self.routed_at)
    }

    /// Back to [`Exchange::blank`], keeping only the capacity of the path, the variables and
    /// the extra response headers (text of no request: they are emptied). Every field is named,
    /// so a field added to `Exchange` does not compile until it is reset here too: nothing of
    /// one request may reach the next one that gets this box.
    fn reset(&mut self) {
        let Exchange {
            stage,
            request,
            body,
            path,
            params,
            client_ip,
            request_id,
            route,
            vars,
            jwt,
            caller,
            backend,
            response,
            error,
            extra_response_headers,
            deferred,
            on_sent,
            body_limit,
            cache,
            routed_at: _,
        } = self;
        *stage = Stage::Inbound;
        *request = http::Request::new(()).into_parts().0;
        *body = UpstreamBody::empty();
        if path.capacity() > KEEP_BYTES {
            *path = String::new();
        } else {
            path.clear();
        }
        *params = Vec::new();
        *client_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        *request_id = HeaderValue::from_static("");
        // The route holds its snapshot's policies: a spare box must not keep them alive.
        *route = blank_route();
        empty(vars);
        *jwt = None;
        *caller = None;
        *backend = BackendPlan::default();
        *response = None;
        *error = None;
        if extra_response_headers.capacity() > KEEP_ITEMS {
            *extra_response_headers = HeaderMap::new();
        } else {
            extra_response_headers.clear();
        }
        // Callbacks not run by now belong to a request that ended early; they are dropped
        // unrun, as they were when the exchange itself was dropped.
        empty(deferred);
        empty(on_sent);
        *body_limit = 0;
        *cache = None;
    }

    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.iter().rev().find(|(n, _)| &**n == name).map(|(_, v)| v.as_str())
    }

    pub fn set_var(&mut self, name: &Arc<str>, value: String) {
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.vars.push((name.clone(), value)),
        }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| &**n == name).map(|(_, v)| v.as_str())
    }

    /// The request body, read whole (bounded by `edge.limits.body_bytes`); it is still sent on.
    pub async fn request_bytes(&mut self) -> Result<Bytes, Problem> {
        self.body.buffer().await.map_err(|e| match e {
            crate::body::BodyError::TooLarge { .. } => Problem::edge(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "the request body exceeds edge.limits.body_bytes",
            ),
            crate::body::BodyError::Stalled(_) => Problem::edge(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                "the request body stalled for longer than edge.limits.body_timeout",
            ),
            crate::body::BodyError::Hyper(_) => {
                Problem::edge(StatusCode::BAD_REQUEST, "body-read-failed", "the request body could not be read")
            }
        })
    }

    /// The response body, read whole and put back as a fixed body (outbound, on-error).
    pub async fn response_bytes(&mut self) -> Result<Bytes, Problem> {
        use http_body_util::BodyExt;
        let Some(resp) = self.response.take() else {
            return Ok(Bytes::new());
        };
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, usize::try_from(self.body_limit).unwrap_or(usize::MAX));
        match limited.collect().await {
            Ok(c) => {
                let data = c.to_bytes();
                let mut parts = parts;
                parts.headers.remove(http::header::CONTENT_LENGTH);
                self.response = Some(Response::from_parts(parts, ResponseBody::full(data.clone())));
                Ok(data)
            }
            Err(_) => Err(Problem::backend(
                StatusCode::BAD_GATEWAY,
                "response-read-failed",
                "http_response_incomplete",
                String::new(),
                "the backend's response body could not be read whole (too large or cut off)",
            )),
        }
    }
}

/// A reused box keeps its path's buffer up to this size, its variables and extra response
/// headers up to this many entries; larger ones go with their request.
const KEEP_BYTES: usize = 1024;
const KEEP_ITEMS: usize = 16;
/// Spare boxes kept per thread (one per request in flight at once on the thread is enough).
const SPARE_MAX: usize = 64;

thread_local! {
    // Boxes, not values: a request takes one over as it is, without moving the exchange.
    #[allow(clippy::vec_box)]
    static SPARE: RefCell<Vec<Box<Exchange>>> = const { RefCell::new(Vec::new()) };
    /// What a blank exchange routes to (no API, no policies); one per thread, so taking it
    /// does not contend on one reference count across threads.
    static BLANK_ROUTE: Arc<Route> = new_blank_route();
}

fn new_blank_route() -> Arc<Route> {
    Arc::new(Route {
        api: Arc::new(Api { name: String::new(), prefix: String::new(), backend: None, server_timing: false }),
        operation: None,
        chain: Arc::new(Chain::default()),
        metrics: Default::default(),
    })
}

/// Empties `v`, keeping its buffer unless it is larger than a request usually needs.
fn empty<T>(v: &mut Vec<T>) {
    if v.capacity() > KEEP_ITEMS {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

fn blank_route() -> Arc<Route> {
    // A new one only while the thread is being torn down.
    BLANK_ROUTE.try_with(Arc::clone).unwrap_or_else(|_| new_blank_route())
}

/// One request's exchange in a box reused from its thread's spare list: the pipeline fills it
/// in place and it is reset (emptied of the request) and given back when dropped, so a request
/// with policies neither allocates the exchange nor copies it into its (boxed) future.
pub struct Held(Option<Box<Exchange>>);

impl Held {
    /// A blank exchange: a spare of this thread, else a new one.
    pub fn take() -> Held {
        let spare = SPARE.try_with(|s| s.try_borrow_mut().ok()?.pop()).ok().flatten();
        Held(Some(spare.unwrap_or_else(|| Box::new(Exchange::blank()))))
    }
}

impl Deref for Held {
    type Target = Exchange;
    fn deref(&self) -> &Exchange {
        match &self.0 {
            Some(x) => x,
            None => unreachable!("the exchange leaves its holder only when dropped"),
        }
    }
}

impl DerefMut for Held {
    fn deref_mut(&mut self) -> &mut Exchange {
        match &mut self.0 {
            Some(x) => x,
            None => unreachable!("the exchange leaves its holder only when dropped"),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(mut x) = self.0.take() else { return };
        x.reset();
        let _ = SPARE.try_with(|s| {
            if let Ok(mut spare) = s.try_borrow_mut() {
                if spare.len() < SPARE_MAX {
                    spare.push(x);
                }
            }
        });
    }
}

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
