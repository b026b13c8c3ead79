//! Upstream: route → backend → server (linkerd's logical → concrete → endpoint).
//!
//! A [`BackendSpec`] is the compiled, immutable description from the config. A [`Backend`] is
//! its runtime: a keep-alive connection pool (`pool.rs`; HTTP/1.1, or HTTP/2 when
//! configured), the balancer, the retry budget and the health state of each server. Server
//! health is kept in a [`HealthRegistry`] keyed by (backend, server URL), outside any snapshot,
//! so a reload neither forgets an ejected server nor resets a recovering one.

pub mod balance;
pub mod h1;
pub mod health;
pub mod pool;
pub mod tls;

use std::collections::HashMap;
use std::error::Error as _;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;

use parking_lot::Mutex;

use self::balance::{Balance, Candidates, Picker};
use crate::body::{BodyError, UpstreamBody};
use crate::respond::{Layer, Problem};

/// One server of a backend, compiled.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The URL's path without a trailing slash ("" for none); the API prefix is replaced by it.
    pub base_path: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

#[derive(Debug, Clone)]
pub struct HealthSpec {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

#[derive(Debug, Clone)]
pub struct RetrySpec {
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_status: Vec<u16>,
    pub budget_percent: u32,
    pub min_per_second: u32,
}

/// A backend, compiled from `backends.NAME`.
#[derive(Debug)]
pub struct BackendSpec {
    /// Equal fingerprints mean an identical backend: a reload keeps its runtime (pool, budget).
    pub fingerprint: u64,
    pub name: String,
    pub servers: Vec<ServerSpec>,
    pub balance: Balance,
    pub health: Option<HealthSpec>,
    pub passive_failures: u32,
    pub ejection_time: Duration,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub idle_timeout: Duration,
    pub retry: RetrySpec,
    pub protocol: Protocol,
    /// Always present (servers may be https); built with the configured CA or the system roots.
    pub tls: Arc<rustls::ClientConfig>,
    pub tls_server_name: Option<rustls::pki_types::ServerName<'static>>,
    pub preserve_host: bool,
}

/// Health of one server, shared across snapshots.
#[derive(Debug)]
pub struct ServerState {
    /// Active health verdict (true until a check says otherwise).
    pub up: AtomicBool,
    pub active: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Milliseconds since `epoch` until which the server is ejected (passive health).
    ejected_until: AtomicU64,
    pub(crate) check_successes: AtomicU32,
    pub(crate) check_failures: AtomicU32,
}

impl ServerState {
    fn new() -> Self {
        ServerState {
            up: AtomicBool::new(true),
            active: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            check_successes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
        }
    }
}

/// Where server health lives between snapshots.
#[derive(Default)]
pub struct HealthRegistry {
    epoch: once_epoch::Epoch,
    states: Mutex<HashMap<(String, String), Weak<ServerState>>>,
}

mod once_epoch {
    use std::time::Instant;

    /// A fixed origin for the millisecond timestamps kept in atomics.
    pub struct Epoch(pub Instant);

    impl Default for Epoch {
        fn default() -> Self {
            Epoch(Instant::now())
        }
    }
}

impl HealthRegistry {
    fn state(&self, backend: &str, url: &str) -> Arc<ServerState> {
        let mut map = self.states.lock();
        map.retain(|_, w| w.strong_count() > 0);
        let key = (backend.to_owned(), url.to_owned());
        if let Some(s) = map.get(&key).and_then(Weak::upgrade) {
            return s;
        }
        let s = Arc::new(ServerState::new());
        map.insert(key, Arc::downgrade(&s));
        s
    }

    fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    fn ms_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch.0).as_millis() as u64
    }
}

/// Retries may add at most `budget_percent` of the requests of the current second, or
/// `min_per_second`, whichever is larger, so a failing backend is not hit by a retry storm.
#[derive(Debug, Default)]
struct RetryBudget {
    second: AtomicU64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    fn roll(&self, now_s: u64) {
        let prev = self.second.load(Ordering::Relaxed);
        if prev != now_s && self.second.compare_exchange(prev, now_s, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.requests.store(0, Ordering::Relaxed);
            self.retries.store(0, Ordering::Relaxed);
        }
    }

    fn on_request(&self, now_s: u64) {
        self.roll(now_s);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    fn try_retry(&self, now_s: u64, spec: &RetrySpec) -> bool {
        self.roll(now_s);
        let allowed = (u64::from(self.requests.load(Ordering::Relaxed)) * u64::from(spec.budget_percent) / 100)
            .max(u64::from(spec.min_per_second));
        let used = self.retries.fetch_add(1, Ordering::Relaxed);
        if u64::from(used) < allowed {
            true
        } else {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }
}

/// A backend at run time.
pub struct Backend {
    pub spec: Arc<BackendSpec>,
    pub servers: Vec<Arc<ServerState>>,
    pool: pool::Pool,
    picker: Picker,
    budget: RetryBudget,
    registry: Arc<HealthRegistry>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Backend({})", self.spec.name)
    }
}

struct View<'a>(&'a Backend, u64);

impl Candidates for View<'_> {
    fn len(&self) -> usize {
        self.0.servers.len()
    }
    fn weight(&self, i: usize) -> u32 {
        self.0.spec.servers[i].weight
    }
    fn active(&self, i: usize) -> u32 {
        self.0.servers[i].active.load(Ordering::Relaxed)
    }
    fn available(&self, i: usize) -> bool {
        let s = &self.0.servers[i];
        s.up.load(Ordering::Relaxed) && s.ejected_until.load(Ordering::Relaxed) <= self.1
    }
}

/// What failed when forwarding.
#[derive(Debug)]
pub enum UpstreamError {
    NoHealthyServer,
    Connect {
        kind: ConnectFailure,
        server: String,
    },
    Timeout {
        server: String,
    },
    Broken {
        server: String,
    },
    /// The client's body broke the request (too large, malformed, aborted).
    ClientBody(ClientBodyFailure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyFailure {
    TooLarge,
    Unreadable,
    /// No body bytes for `edge.limits.body_timeout` (HTTP/2).
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    Refused,
    Timeout,
    Dns,
    TlsCertificate,
    TlsProtocol,
    Other,
}

impl UpstreamError {
    /// The problem+json answer for this failure.
    pub fn problem(&self, backend: &str) -> Problem {
        match self {
            UpstreamError::NoHealthyServer => Problem::backend(
                StatusCode::SERVICE_UNAVAILABLE,
                "no-healthy-server",
                "destination_unavailable",
                backend,
                format!("backend `{backend}` has no healthy server"),
            ),
            UpstreamError::Connect { kind, server } => {
                let (status, err, detail) = match kind {
                    ConnectFailure::Refused => {
                        (StatusCode::BAD_GATEWAY, "connection_refused", "the backend refused the connection")
                    }
                    ConnectFailure::Timeout => {
                        (StatusCode::GATEWAY_TIMEOUT, "connection_timeout", "connecting to the backend timed out")
                    }
                    ConnectFailure::Dns => (StatusCode::BAD_GATEWAY, "dns_error", "the backend's name did not resolve"),
                    ConnectFailure::TlsCertificate => (
                        StatusCode::BAD_GATEWAY,
                        "tls_certificate_error",
                        "the backend's TLS certificate was not accepted",
                    ),
                    ConnectFailure::TlsProtocol => {
                        (StatusCode::BAD_GATEWAY, "tls_protocol_error", "the TLS handshake with the backend failed")
                    }
                    ConnectFailure::Other => {
                        (StatusCode::BAD_GATEWAY, "connection_refused", "the gateway could not connect to the backend")
                    }
                };
                Problem::backend(status, "backend-connect", err, server.clone(), detail)
            }
            UpstreamError::Timeout { server } => Problem::backend(
                StatusCode::GATEWAY_TIMEOUT,
                "backend-timeout",
                "http_response_timeout",
                server.clone(),
                "the backend did not answer within its response timeout",
            ),
            UpstreamError::Broken { server } => Problem::backend(
                StatusCode::BAD_GATEWAY,
                "backend-reset",
                "connection_terminated",
                server.clone(),
                "the backend closed or reset the connection before a complete response",
            ),
            UpstreamError::ClientBody(ClientBodyFailure::TooLarge) => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                Layer::Edge,
                "the request body exceeds edge.limits.body_bytes",
            ),
            UpstreamError::ClientBody(ClientBodyFailure::Stalled) => Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                "body-timeout",
                Layer::Edge,
                "the request body stalled for longer than edge.limits.body_timeout",
            ),
            UpstreamError::ClientBody(ClientBodyFailure::Unreadable) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-request-body",
                Layer::Edge,
                "the request body could not be read from the client",
            ),
        }
    }
}

/// The request as the upstream layer needs it.
pub struct Outbound {
    pub parts: Parts,
    /// Fields written after `parts.headers` (forwarding fields, the request id).
    pub added: crate::edge::AddedFields,
    pub body: UpstreamBody,
    /// Path and query after the API prefix, starting with `/` or `?` (or empty).
    pub rest: bytes::Bytes,
    pub hash_key: Option<Vec<u8>>,
    /// When the call starts: the caller's clock reading, which serves the retry budget, the
    /// balancer, the pool's idle check and the response deadline of the first attempt.
    pub at: Instant,
}

/// `after` past `at`, a clock reading already taken (`tokio::time::timeout` would read the
/// clock again); a timeout too large to add is as good as none.
pub fn deadline(at: Instant, after: Duration) -> tokio::time::Instant {
    let at = tokio::time::Instant::from_std(at);
    at.checked_add(after).unwrap_or_else(|| at + Duration::from_secs(100 * 365 * 86_400))
}

/// What came back.
pub struct Answer {
    pub response: Response<BackendBody>,
}

/// A backend's response body: read by the gateway's own HTTP/1.1 client (whose connection goes
/// back to the pool when the body ends), or by hyper (HTTP/2, upgrades).
pub enum BackendBody {
    Http1(h1::ResponseStream),
    Hyper(Incoming),
}

impl http_body::Body for BackendBody {
    type Data = bytes::Bytes;
    type Error = crate::body::BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.get_mut() {
            BackendBody::Http1(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            BackendBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            BackendBody::Http1(b) => b.is_end_stream(),
            BackendBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            BackendBody::Http1(b) => b.size_hint(),
            BackendBody::Hyper(b) => b.size_hint(),
        }
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

impl Backend {
    pub fn new(spec: Arc<BackendSpec>, registry: &Arc<HealthRegistry>) -> Backend {
        let pool = pool::Pool::new(
            pool::PoolConfig {
                protocol: spec.protocol,
                connect_timeout: spec.connect_timeout,
                idle_timeout: spec.idle_timeout,
                tls: spec.tls.clone(),
                server_name: spec.tls_server_name.clone(),
            },
            spec.servers.len(),
        );
        let servers = spec.servers.iter().map(|s| registry.state(&spec.name, &s.url)).collect();
        let weights: Vec<u32> = spec.servers.iter().map(|s| s.weight).collect();
        Backend {
            picker: Picker::new(&weights),
            spec,
            servers,
            pool,
            budget: RetryBudget::default(),
            registry: registry.clone(),
        }
    }

    fn uri(&self, server: &ServerSpec, rest: &bytes::Bytes) -> Result<Uri, http::Error> {
        let pq = if server.base_path.is_empty() && rest.first() == Some(&b'/') {
            // The common case: no base path, so the request's own bytes are reused.
            PathAndQuery::from_maybe_shared(rest.clone())?
        } else {
            let mut pq = Vec::with_capacity(server.base_path.len() + rest.len() + 1);
            pq.extend_from_slice(server.base_path.as_bytes());
            if (rest.is_empty() || rest.first() == Some(&b'?')) && server.base_path.is_empty() {
                pq.push(b'/');
            }
            pq.extend_from_slice(rest);
            PathAndQuery::from_maybe_shared(bytes::Bytes::from(pq))?
        };
        if self.spec.protocol == Protocol::Http1 {
            // HTTP/1.1 request line: origin-form; the authority travels in Host.
            return Ok(Uri::from(pq));
        }
        Uri::builder().scheme(server.scheme.clone()).authority(server.authority.clone()).path_and_query(pq).build()
    }

    /// Sends the request to a server, retrying idempotent body-less requests on another server
    /// when a connection fails or a configured status comes back, within the retry budget.
    ///
    /// A plain function around an `async` block: the call is taken apart before the future
    /// exists, so the future holds each part once (an `async fn` keeps its argument besides
    /// the parts, and every move of the future copies both).
    #[inline(always)]
    pub fn forward(
        &self,
        out: Outbound,
    ) -> impl std::future::Future<Output = Result<Answer, UpstreamError>> + Send + '_ {
        let Outbound { parts, added, body, rest, hash_key, at: started } = out;
        let parts_method = parts.method;
        let started_ms = self.registry.ms_at(started);
        let now_s = started_ms / 1000;
        self.budget.on_request(now_s);
        let retryable = idempotent(&parts_method) && http_body::Body::is_end_stream(&body);
        // Headers are cloned per attempt only when another attempt is possible at all.
        let may_retry = retryable && self.spec.retry.attempts > 1 && self.servers.len() > 1;
        let mut headers = Some(parts.headers);
        let mut body = Some(body);
        async move {
            // Servers already tried by this request; `retry.attempts` is at most 10 (checked when
            // the config compiles), so a fixed array avoids an allocation per request.
            let mut tried = [0usize; 10];
            let mut tried_len = 0usize;
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                // The clock read above serves the first attempt; a retry reads it again.
                let view = View(self, if attempt == 1 { started_ms } else { self.registry.now_ms() });
                let Some(i) = self.picker.pick(&self.spec.balance, &view, hash_key.as_deref(), &tried[..tried_len])
                else {
                    return Err(UpstreamError::NoHealthyServer);
                };
                if tried_len < tried.len() {
                    tried[tried_len] = i;
                    tried_len += 1;
                }
                let server = &self.spec.servers[i];
                // The first attempt uses the request's clock read; a retry reads the clock again.
                let now = if attempt == 1 { started } else { Instant::now() };
                let uri = self.uri(server, &rest).map_err(|_| UpstreamError::Broken { server: server.url.clone() })?;
                let state = &self.servers[i];
                state.active.fetch_add(1, Ordering::Relaxed);
                // The request is made in this block, so it is not part of the future's state while
                // the send is awaited (the send holds it); and the send's future is made where it
                // is awaited, so it is built in place rather than copied there.
                let sent = {
                    let mut req = Request::new(body.take().unwrap_or_else(UpstreamBody::empty));
                    *req.method_mut() = parts_method.clone();
                    *req.uri_mut() = uri;
                    *req.headers_mut() = match (&headers, may_retry) {
                        (Some(h), true) => h.clone(),
                        _ => headers.take().unwrap_or_default(),
                    };
                    *req.version_mut() = http::Version::HTTP_11;
                    if !self.spec.preserve_host || self.spec.protocol == Protocol::Http2 {
                        req.headers_mut().remove(http::header::HOST);
                    }
                    if self.spec.protocol == Protocol::Http1 && !req.headers().contains_key(http::header::HOST) {
                        if let Ok(v) = http::HeaderValue::from_str(server.authority.as_str()) {
                            req.headers_mut().insert(http::header::HOST, v);
                        }
                    }
                    self.pool.send(i, server, req, &added, now, deadline(now, self.spec.response_timeout))
                }
                .await;
                state.active.fetch_sub(1, Ordering::Relaxed);
                let can_retry = |this: &Self| {
                    retryable
                        && attempt < this.spec.retry.attempts
                        && tried_len < this.servers.len()
                        && this.budget.try_retry(now_s, &this.spec.retry)
                };
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        if self.spec.retry.on_status.contains(&status) && can_retry(self) {
                            self.record(i, false);
                            continue;
                        }
                        self.record(i, !matches!(status, 502..=504));
                        return Ok(Answer { response });
                    }
                    Err(pool::SendError::Connect(kind)) => {
                        self.record(i, false);
                        if self.spec.retry.on_connect_failure && can_retry(self) {
                            continue;
                        }
                        return Err(UpstreamError::Connect { kind, server: server.authority.to_string() });
                    }
                    Err(pool::SendError::Failed(e)) => {
                        if let Some(body_err) = find_body_error(&e) {
                            return Err(UpstreamError::ClientBody(body_err));
                        }
                        self.record(i, false);
                        return Err(UpstreamError::Broken { server: server.authority.to_string() });
                    }
                    Err(pool::SendError::Http1(h1::Error::ClientBody(e))) => {
                        return Err(UpstreamError::ClientBody(client_body_failure(&e)));
                    }
                    // The gateway's own fault: not held against the server.
                    Err(pool::SendError::Http1(h1::Error::BodyLength)) => {
                        return Err(UpstreamError::Broken { server: server.authority.to_string() });
                    }
                    Err(pool::SendError::Http1(e)) => {
                        tracing::debug!(backend = %self.spec.name, server = %server.url, error = %e, "Backend exchange failed.");
                        self.record(i, false);
                        return Err(UpstreamError::Broken { server: server.authority.to_string() });
                    }
                    Err(pool::SendError::Timeout) => {
                        self.record(i, false);
                        return Err(UpstreamError::Timeout { server: server.authority.to_string() });
                    }
                }
            }
        }
    }

    /// Passive health: consecutive failures eject a server for `ejection_time`.
    fn record(&self, i: usize, ok: bool) {
        let s = &self.servers[i];
        if ok {
            if s.consecutive_failures.load(Ordering::Relaxed) != 0 {
                s.consecutive_failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let n = s.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if self.spec.passive_failures > 0 && n >= self.spec.passive_failures {
            let until = self.registry.now_ms() + self.spec.ejection_time.as_millis() as u64;
            s.ejected_until.store(until, Ordering::Relaxed);
            s.consecutive_failures.store(0, Ordering::Relaxed);
            tracing::warn!(backend = %self.spec.name, server = %self.spec.servers[i].url, failures = n, "Server ejected after consecutive failures.");
        }
    }

    /// For active health checks: a GET of `path` on server `i`.
    pub(crate) async fn probe(&self, i: usize, path: &str, timeout: Duration) -> bool {
        let server = &self.spec.servers[i];
        let Ok(pq) = PathAndQuery::try_from(path) else { return false };
        let uri = if self.spec.protocol == Protocol::Http1 {
            Uri::from(pq)
        } else {
            match Uri::builder()
                .scheme(server.scheme.clone())
                .authority(server.authority.clone())
                .path_and_query(pq)
                .build()
            {
                Ok(u) => u,
                Err(_) => return false,
            }
        };
        let mut req = Request::new(UpstreamBody::empty());
        *req.uri_mut() = uri;
        let h = req.headers_mut();
        h.insert(http::header::USER_AGENT, http::HeaderValue::from_static("gatehouse-health-check"));
        if let Ok(v) = http::HeaderValue::from_str(server.authority.as_str()) {
            h.insert(http::header::HOST, v);
        }
        let now = Instant::now();
        match self.pool.send(i, server, req, &[], now, deadline(now, timeout)).await {
            Ok(resp) => {
                let ok = resp.status().is_success() || resp.status().is_redirection();
                // Read the body to its end so the connection goes back to the pool.
                let _ = tokio::time::timeout(timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
                ok
            }
            _ => false,
        }
    }
}

fn client_body_failure(e: &BodyError) -> ClientBodyFailure {
    match e {
        BodyError::TooLarge { .. } => ClientBodyFailure::TooLarge,
        BodyError::Hyper(_) => ClientBodyFailure::Unreadable,
        BodyError::Stalled(_) => ClientBodyFailure::Stalled,
    }
}

fn find_body_error(e: &hyper::Error) -> Option<ClientBodyFailure> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return Some(client_body_failure(b));
        }
        source = s.source();
    }
    None
}

pub(crate) fn tls_kind(e: &rustls::Error) -> ConnectFailure {
    match e {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => ConnectFailure::TlsCertificate,
        _ => ConnectFailure::TlsProtocol,
    }
}

/// Every few seconds, idle backend connections that expired or that their server closed are
/// closed (without traffic nothing else would notice them); ends with the snapshot's runtime.
fn spawn_idle_sweep(backends: Vec<Arc<Backend>>, cancel: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => backends.iter().for_each(|b| b.pool.sweep()),
            }
        }
    });
}

/// The backends of one snapshot, with their health-check tasks.
pub struct Upstreams {
    pub backends: HashMap<String, Arc<Backend>>,
    _health: tokio_util::sync::DropGuard,
}

impl Upstreams {
    /// Builds the runtime of a snapshot's backends. A backend whose config (and referenced
    /// files) did not change keeps the runtime it had in `previous`, so a reload does not close
    /// and reopen its keep-alive connections.
    pub fn start(
        specs: &std::collections::BTreeMap<String, Arc<BackendSpec>>,
        registry: &Arc<HealthRegistry>,
        previous: Option<&Upstreams>,
    ) -> Upstreams {
        let cancel = tokio_util::sync::CancellationToken::new();
        let mut backends = HashMap::new();
        for (name, spec) in specs {
            let kept =
                previous.and_then(|p| p.backends.get(name)).filter(|b| b.spec.fingerprint == spec.fingerprint).cloned();
            let backend = kept.unwrap_or_else(|| Arc::new(Backend::new(spec.clone(), registry)));
            if let Some(h) = &backend.spec.health {
                health::spawn(backend.clone(), h.clone(), cancel.clone());
            }
            backends.insert(name.clone(), backend);
        }
        spawn_idle_sweep(backends.values().cloned().collect(), cancel.clone());
        Upstreams { backends, _health: cancel.drop_guard() }
    }
}
