//! The life of one request, in order: edge → route → policies → upstream → response → log.
//!
//! [`handle`] is the hyper service of every client connection. It reads the active snapshot
//! once, so a reload never changes the rules half-way through a request. Every failure becomes
//! a [`Problem`] and goes out through `respond`, tagged with its layer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;

use crate::body::{ClientBody, ResponseBody, UpstreamBody};
use crate::compress;
use crate::edge::guard::ConnShared;
use crate::edge::{self, Downstream};
use crate::observe::access_log::format::{redact_named, strip_port};
use crate::observe::timing::{self as server_timing, SERVER_TIMING};
use crate::observe::trace::{StartInfo, TRACEPARENT};
use crate::observe::RequestTail;
use crate::policy::{run_section, RetryPlan, Stage};
use crate::respond::{Layer, Problem};
use crate::route::{Lookup, Route};
use crate::server::Active;
use crate::upstream::balance::Balance;
use crate::upstream::Outbound;

mod pipeline;

use crate::hop::is_upgrade;
pub use crate::hop::strip_hop_by_hop;
use pipeline::pipeline_boxed;

/// What the proxy knows about the client connection.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local_port: u16,
    pub tls: bool,
    pub shared: Arc<ConnShared>,
    /// Forwarding-header strings for this peer, built once per connection.
    pub forwarded: edge::Peer,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local_port: u16, tls: bool, shared: Arc<ConnShared>) -> ConnInfo {
        ConnInfo { peer, local_port, tls, shared, forwarded: edge::Peer::new(peer.ip(), tls) }
    }
}

/// Facts gathered along the way, for the access log. Names stay behind `Arc`s until a log line
/// actually needs them.
#[derive(Default)]
struct Trace {
    route: Option<Arc<Route>>,
    layer: Option<Layer>,
    policy: Option<&'static str>,
    upstream_status: Option<u16>,
    time_policy: Duration,
    time_backend: Option<Duration>,
    edge_done: Option<Instant>,
    /// The backend called, once one was chosen.
    backend: Option<Arc<str>>,
    /// The subscription that called, when the API is in a product.
    caller: Option<Arc<crate::policy::Caller>>,
    /// Policies' callbacks for when the response body has gone out (bandwidth quotas).
    on_sent: Vec<crate::policy::SentHook>,
}

/// The service of every client connection (the own HTTP/1 server's and hyper's).
///
/// A plain function around an `async` block: what is read of the request before it is routed
/// is read before the future exists, which then holds the request once (an `async fn` keeps a
/// `mut` argument twice, and every move of the future copies both). For HTTP/2 that prelude
/// runs in the connection's task as hyper takes the stream, the rest in the stream's task.
#[inline(always)]
pub fn handle(
    active: Arc<Active>,
    conn: Arc<ConnInfo>,
    mut req: Request<ClientBody>,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Infallible>> + Send {
    let started = Instant::now();
    let snap = &active.snapshot;
    let peer_trusted = snap.edge.trusted.contains(conn.peer.ip());
    let request_id = edge::request_id(req.headers(), peer_trusted);
    let mut tail = RequestTail::new(conn.shared.clone());
    // A sampled request's backend sees the gateway's backend-call span as its parent.
    let span = active.observe.tracer.as_ref().and_then(|t| {
        t.begin(&StartInfo {
            headers: req.headers(),
            method: req.method(),
            path: req.uri().path(),
            tls: conn.tls,
            host: req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(strip_port),
            client_ip: edge::client_ip(conn.peer.ip(), req.headers(), &snap.edge.trusted),
            request_id: &request_id,
            version: req.version(),
        })
    });
    if let Some(s) = &span {
        req.headers_mut().insert(TRACEPARENT, s.backend_traceparent());
    }

    // What the access log needs of the request, taken before the request is consumed.
    if let Some(log) = &active.access_log {
        let needs = log.needs();
        let record = tail.begin_log(log.clone(), started);
        // An IPv4 peer is its own canonical form, so `peer_trusted` already says whether
        // `X-Forwarded-For` counts.
        record.client_ip = match conn.peer.ip() {
            ip @ std::net::IpAddr::V4(_) if !peer_trusted => ip,
            ip => edge::client_ip(ip, req.headers(), &snap.edge.trusted),
        };
        record.peer_port = conn.peer.port();
        record.local_port = conn.local_port;
        // A format that prints only the second (`%t`) gets it from the thread's clock of
        // seconds, mostly without a clock read.
        record.time = if needs.time_ms { SystemTime::now() } else { crate::observe::clock::second_of(started) };
        record.method = req.method().clone();
        record.version = req.version();
        let head = &mut record.head;
        head.set_path(req.uri().path());
        match (req.uri().query(), &snap.access_log.secret_query_params[..]) {
            (Some(q), names @ [_, ..]) => head.set_query(Some(&redact_named(q, names))),
            (q, _) => head.set_query(q),
        }
        if needs.request_id {
            head.set_request_id_value(&request_id);
        }
        let host = match (needs.host, &active.log_request_headers[..]) {
            (false, []) => None,
            (_, names) => head.pick_request_headers(names, req.headers()),
        };
        // The Host header (when it is text), else the :authority of an HTTP/2 request.
        if needs.host {
            head.set_host(
                match host {
                    Some(h) => h.to_str().ok(),
                    None => req.uri().authority().map(|a| a.as_str()),
                }
                .map(strip_port),
            );
        }
    }

    // What the client accepts, read before `serve` consumes the request; only when configured.
    let accept = snap.compression.any().then(|| compress::Accept::of(req.method(), req.headers()));
    async move {
        let snap = &active.snapshot;
        let mut trace = Trace::default();
        let mut resp = match serve(&active, &conn, req, &request_id, peer_trusted, &mut trace).await {
            Ok(r) => r,
            Err(problem) => {
                trace.layer = Some(problem.layer);
                if problem.policy.is_some() {
                    trace.policy = problem.policy;
                }
                problem.into_response(request_id.to_str().unwrap_or("-"))
            }
        };
        resp.headers_mut().insert(edge::X_REQUEST_ID, request_id.clone());
        if trace.route.as_ref().is_some_and(|r| r.api.server_timing) {
            let edge = trace.edge_done.unwrap_or(started).duration_since(started);
            let policy = (!trace.time_policy.is_zero()).then_some(trace.time_policy);
            resp.headers_mut().insert(SERVER_TIMING, server_timing::header_value(edge, policy, trace.time_backend));
        }
        if let Some(accept) = accept {
            compress::apply(&snap.compression, trace.route.as_deref().map(|r| r.api.name.as_str()), accept, &mut resp);
        }

        let time_edge = match trace.edge_done {
            Some(t) if active.access_log.is_some() || active.observe.active() => t.duration_since(started),
            _ => Duration::ZERO,
        };
        if let Some(record) = tail.finish_log() {
            record.status = resp.status().as_u16();
            record.head.pick_headers(true, &active.log_response_headers, resp.headers());
            // The gateway's names and timings only for a format that prints them (`common` and
            // `combined` do not): each name is a reference count taken now and dropped with the
            // record.
            if active.access_log.as_ref().is_some_and(|l| l.needs().gateway) {
                record.route = trace.route.clone();
                record.product = trace.caller.as_ref().and_then(|c| c.product.clone());
                record.subscription = trace.caller.as_ref().map(|c| c.subscription_name.clone());
                record.backend = trace.backend.clone();
                record.layer = trace.layer.map(Layer::as_str);
                record.policy = trace.policy;
                record.upstream_status = trace.upstream_status;
                record.time_edge = time_edge;
                record.time_policy = trace.time_policy;
                record.time_backend = trace.time_backend;
            }
        }
        // Filled in place, in the tail's one allocation, like the record.
        if let Some(facts) = active.observe.finish(&mut tail, started, span) {
            facts.backend = trace.backend.clone();
            facts.product = trace.caller.as_ref().and_then(|c| c.product.clone());
            facts.subscription = trace.caller.as_ref().map(|c| c.subscription_name.clone());
            facts.route = trace.route;
            facts.status = resp.status().as_u16();
            facts.layer = trace.layer;
            facts.policy = trace.policy;
            facts.upstream_status = trace.upstream_status;
            facts.time_edge = time_edge;
            facts.time_policy = (!trace.time_policy.is_zero()).then_some(trace.time_policy);
            facts.time_backend = trace.time_backend;
        }
        if !trace.on_sent.is_empty() {
            tail.on_sent(resp.status().as_u16(), std::mem::take(&mut trace.on_sent));
        }
        resp.body_mut().set_tail(tail);
        Ok(resp)
    }
}

/// The Host header, or the :authority of an HTTP/2 request.
fn host_of<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.headers().get(header::HOST) {
        Some(h) => Some(h.clone()),
        None => req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    }
}

/// Routes the request and sends it on. A plain function: a route without policies gets the
/// backend call's future itself, so its request carries no routing state across the call; a
/// route with policies gets an `async` block that awaits its sections and the call.
#[inline(always)]
fn serve<'a>(
    active: &'a Active,
    conn: &'a ConnInfo,
    req: Request<ClientBody>,
    request_id: &'a HeaderValue,
    peer_trusted: bool,
    trace: &'a mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'a {
    use futures_util::future::Either;
    let Routed { route, params, uri, normalized, call } = match route_request(active, req, trace) {
        Ok(routed) => routed,
        Err(problem) => return Either::Left(Either::Left(std::future::ready(Err(*problem)))),
    };
    if route.chain.is_empty() {
        let path = normalized.as_deref().unwrap_or(uri.path());
        // No policies: the backend call starts from the reading that ended routing.
        let call = Call { at: trace.edge_done, ..call };
        return Either::Left(Either::Right(forward(active, conn, &route, path, call, request_id, peer_trusted, trace)));
    }
    Either::Right(async move {
        let path = normalized.as_deref().unwrap_or(uri.path());
        if !route.chain.is_inbound_only() {
            // Boxed: the pipeline's state (policy futures, the backend call's) would otherwise
            // make every request's future larger. The exchange lives in a box of its own, reused
            // (`policy::Held`).
            return pipeline_boxed(active, conn, route, params, path, call, request_id, peer_trusted, trace).await;
        }
        // Inbound policies only (keys, tokens, limits, headers: the common case) run here rather
        // than in the boxed pipeline: their section's future is small, and their backend call is
        // the very await a plain route's is. The exchange is the pipeline's, in its reused box,
        // kept for the response.
        let Call { parts, body, raw_host, upgrade, .. } = call;
        // Policy time runs from the end of routing to the end of the section, whose clock read
        // also starts the backend call (one read per boundary, not two).
        let t = trace.edge_done.unwrap_or_else(Instant::now);
        let mut x =
            pipeline::exchange_for(active, conn, &route, params, path, parts, body, request_id, peer_trusted, t);
        let flow = run_section(&mut x, Stage::Inbound, &route.chain.inbound).await;
        let end = Instant::now();
        trace.time_policy = end.saturating_duration_since(t);
        let call = match pipeline::inbound_only(&mut x, flow, &route.chain, raw_host, upgrade, trace) {
            pipeline::AfterInbound::Call(call) => Call { at: Some(end), ..call },
            pipeline::AfterInbound::Answered(response) => return Ok(response),
        };
        let sent = forward(active, conn, &route, path, call, request_id, peer_trusted, trace).await;
        Ok(pipeline::inbound_only_response(&mut x, sent, trace))
    })
}

/// A routed request, ready for its policies and its backend call.
struct Routed {
    route: Arc<Route>,
    params: crate::route::Params,
    /// The request's URI, whose path is the normalised one unless `normalized` holds another.
    uri: http::Uri,
    normalized: Option<String>,
    call: Call,
}

/// Edge checks left for HTTP/2, the path normalised, the route found: the request becomes the
/// call its route sends.
fn route_request(active: &Active, mut req: Request<ClientBody>, trace: &mut Trace) -> Result<Routed, Box<Problem>> {
    let snap = &active.snapshot;
    let limits = &snap.edge.limits;

    // Edge: limits that HTTP/2 requests have not met in the guard, then the path.
    if req.version() == Version::HTTP_2 {
        if req.headers().len() > limits.headers {
            return Err(Box::new(Problem::edge(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too-many-headers",
                "more headers than edge.limits.headers",
            )));
        }
        if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > limits.uri_bytes {
            return Err(Box::new(Problem::edge(
                StatusCode::URI_TOO_LONG,
                "uri-too-long",
                "the request target is longer than edge.limits.uri_bytes",
            )));
        }
        if req.method() == http::Method::CONNECT {
            return Err(Box::new(Problem::edge(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "CONNECT is not served: this is a reverse proxy",
            )));
        }
        // HTTP/1 declared lengths were judged by the guard already; streamed bodies of both
        // versions are bounded by `UpstreamBody`.
        if let Some(len) =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        {
            if len > limits.body_bytes {
                return Err(Box::new(Problem::edge(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body-too-large",
                    "the request body exceeds edge.limits.body_bytes",
                )));
            }
        }
    }
    // A cheap clone (shared bytes) so the normalised path can borrow from it past `into_parts`.
    let uri = req.uri().clone();
    let path = edge::normalize::normalize_path(uri.path())
        .map_err(|why| Box::new(Problem::edge(StatusCode::BAD_REQUEST, "bad-path", why)))?;
    let raw_host = host_of(&req);
    let host = raw_host.as_ref().and_then(|h| h.to_str().ok()).map(strip_port);

    // Route.
    let (route, params) = match snap.routes.lookup(host, &path, req.method()) {
        Lookup::Found(r, params) => (r.clone(), params),
        Lookup::MethodNotAllowed(allow) => {
            let p = Problem::edge(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                format!("{} is not allowed here", req.method()),
            );
            return Err(Box::new(match HeaderValue::from_str(&allow) {
                Ok(v) => p.with_header(header::ALLOW, v),
                Err(_) => p,
            }));
        }
        Lookup::NotFound => {
            return Err(Box::new(Problem::edge(StatusCode::NOT_FOUND, "no-route", "no API matches this host and path")))
        }
    };
    trace.route = Some(route.clone());
    trace.edge_done = Some(Instant::now());

    let version_is_h2 = req.version() == Version::HTTP_2;
    let upgrade = req.version() == Version::HTTP_11 && is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = match body.into_stream() {
        None => UpstreamBody::empty(),
        // The HTTP/1 guard bounds slow bodies on its connections; HTTP/2 streams are bounded here.
        Some(body) if version_is_h2 && !limits.body_timeout.is_zero() => {
            UpstreamBody::streaming_with_stall(body, limits.body_bytes, limits.body_timeout)
        }
        Some(body) => UpstreamBody::streaming(body, limits.body_bytes),
    };
    let call = Call {
        parts,
        body,
        target: None,
        service: None,
        timeout: None,
        retry: None,
        raw_host,
        upgrade: client_upgrade,
        at: None,
    };
    Ok(Routed {
        route,
        params,
        normalized: match path {
            std::borrow::Cow::Owned(p) => Some(p),
            std::borrow::Cow::Borrowed(_) => None,
        },
        uri,
        call,
    })
}

/// A request on its way to the backend.
struct Call {
    parts: http::request::Parts,
    body: UpstreamBody,
    /// Path and query below the server URL (`rewrite-uri`); by default the public path's tail
    /// after the API prefix, plus the query.
    target: Option<String>,
    /// Another backend than the API's (`set-backend-service`).
    service: Option<Arc<str>>,
    timeout: Option<Duration>,
    retry: Option<RetryPlan>,
    raw_host: Option<HeaderValue>,
    /// The client side of an upgrade the client asked for.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// A clock reading taken as the request became ready to send (the end of its policies),
    /// if there is one: the backend call starts from it instead of reading the clock again.
    at: Option<Instant>,
}

fn gateway_bug(detail: &'static str) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "gateway-error", Layer::Gateway, detail)
}

/// Sends the request to its backend and prepares the response for the client.
///
/// A plain function around an `async` block: the request is turned into the backend call
/// before the future exists, so the future holds only what lives across the call (an `async fn`
/// would keep its `Call` argument and everything made from it side by side).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward<'a>(
    active: &'a Active,
    conn: &ConnInfo,
    route: &Route,
    path: &str,
    call: Call,
    request_id: &HeaderValue,
    peer_trusted: bool,
    trace: &'a mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'a {
    use futures_util::future::Either;
    // Taken apart here, so the async block captures each part once.
    let BackendCall { backend, called, out, timeout, retry, client_upgrade } =
        match prepare_backend_call(active, conn, route, path, call, request_id, peer_trusted, trace) {
            Ok(c) => c,
            Err(problem) => return Either::Left(std::future::ready(Err(*problem))),
        };
    Either::Right(async move {
        let backend_name: &str = &called;
        let upgrade = client_upgrade.is_some();
        let t = out.at;
        let result = match retry {
            None => call_backend(backend, out, timeout, backend_name).await,
            Some(plan) => {
                let attempts = with_retries(backend, out, plan, timeout, backend_name);
                match attempts.await {
                    Ok(r) => r,
                    Err(problem) => {
                        trace.time_backend = Some(t.elapsed());
                        return Err(problem);
                    }
                }
            }
        };
        trace.time_backend = Some(t.elapsed());
        let answer = result?;
        let mut response = answer.response;
        trace.upstream_status = Some(response.status().as_u16());
        if response.status().is_server_error() {
            // The backend's own error passes through untouched; the log still says where it came from.
            trace.layer = Some(Layer::Backend);
        }

        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(tunnel(client_upgrade, upstream_upgrade));
            }
            let (parts, body) = response.into_parts();
            return Ok(Response::from_parts(parts, ResponseBody::upstream(body)));
        }
        strip_hop_by_hop(response.headers_mut());
        // The client's response is the gateway's message: an HTTP/1.0 backend must not turn the
        // client's HTTP/1.1 keep-alive connection into a closing HTTP/1.0 one (hyper still
        // answers an HTTP/1.0 client in HTTP/1.0).
        *response.version_mut() = Version::HTTP_11;
        if upgrade {
            // The guard passed the rest of this connection through as upgraded bytes; a refused
            // upgrade must therefore end the connection rather than parse them as a new request.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let (parts, body) = response.into_parts();
        Ok(Response::from_parts(parts, ResponseBody::upstream(body)))
    })
}

/// What `forward` sends, once the request has become the backend call.
struct BackendCall<'a> {
    backend: &'a crate::upstream::Backend,
    /// The backend actually called (a policy may have chosen another than the API's).
    called: Arc<str>,
    out: Outbound,
    timeout: Option<Duration>,
    retry: Option<RetryPlan>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
}

/// The backend call for `call`: backend chosen, target path, balancing key, hop-by-hop fields
/// removed, forwarding headers and the request id set.
#[allow(clippy::too_many_arguments)]
fn prepare_backend_call<'a>(
    active: &'a Active,
    conn: &ConnInfo,
    route: &Route,
    path: &str,
    call: Call,
    request_id: &HeaderValue,
    peer_trusted: bool,
    trace: &mut Trace,
) -> Result<BackendCall<'a>, Box<Problem>> {
    let snap = &active.snapshot;
    let Call { mut parts, body, target, service, timeout, retry, raw_host, upgrade: client_upgrade, at } = call;
    // The backend actually called (a policy may have chosen another), for the log and metrics.
    let Some(called) = service.or_else(|| route.api.backend.clone()) else {
        return Err(Box::new(gateway_bug("the route has no backend")));
    };
    trace.backend = Some(called.clone());
    let backend_name: &str = &called;
    let Some(backend) = active.upstreams.backends.get(backend_name) else {
        return Err(Box::new(gateway_bug("the route's backend is not running")));
    };
    let upgrade = client_upgrade.is_some();

    let rest = match target {
        Some(t) => Bytes::from(t),
        None => {
            let tail = &path[route.api.prefix.len().min(path.len())..];
            let query = parts.uri.query();
            let mut rest = Vec::with_capacity(tail.len() + query.map_or(0, |q| q.len() + 1));
            rest.extend_from_slice(tail.as_bytes());
            if let Some(q) = query {
                rest.push(b'?');
                rest.extend_from_slice(q.as_bytes());
            }
            Bytes::from(rest)
        }
    };
    let hash_key = match &backend.spec.balance {
        Balance::HashHeader(name) => parts.headers.get(name).map(|v| v.as_bytes().to_vec()),
        Balance::HashClientIp => {
            Some(edge::client_ip(conn.peer.ip(), &parts.headers, &snap.edge.trusted).to_string().into_bytes())
        }
        _ => None,
    };

    let upgrade_value = if upgrade { parts.headers.get(header::UPGRADE).cloned() } else { None };
    strip_hop_by_hop(&mut parts.headers);
    if let Some(v) = upgrade_value {
        // An h2c upgrade is never honoured (RFC 9113 dropped it; a smuggling vector).
        if !v.as_bytes().eq_ignore_ascii_case(b"h2c") {
            parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, v);
        }
    }
    if parts.version == Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
        if let Some(h) = &raw_host {
            parts.headers.insert(header::HOST, h.clone());
        }
    }
    let added = edge::forwarding_fields(
        &mut parts.headers,
        &Downstream { peer: &conn.forwarded, peer_trusted, host: raw_host.as_ref() },
        request_id,
    );

    let out = Outbound { parts, added, body, rest, hash_key, at: at.unwrap_or_else(Instant::now) };
    Ok(BackendCall { backend, called, out, timeout, retry, client_upgrade })
}

type Attempts<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Result<crate::upstream::Answer, Problem>, Problem>> + Send + 'a>,
>;

/// `retry`'s loop around the backend call. Boxed in a plain function: its state (the request
/// kept for every attempt, the pause) would otherwise enlarge every request's future, retried or
/// not. The outer error is a client body that could not be read; the inner result is the last
/// attempt's.
#[allow(clippy::too_many_arguments)]
fn with_retries<'a>(
    backend: &'a crate::upstream::Backend,
    out: Outbound,
    plan: RetryPlan,
    timeout: Option<Duration>,
    backend_name: &'a str,
) -> Attempts<'a> {
    Box::pin(async move {
        let Outbound { parts, added, mut body, rest, hash_key, .. } = out;
        // Every attempt sends the same bytes, so the body is read once.
        if let Err(e) = body.buffer().await {
            let failure = match e {
                crate::body::BodyError::TooLarge { .. } => crate::upstream::ClientBodyFailure::TooLarge,
                crate::body::BodyError::Hyper(_) => crate::upstream::ClientBodyFailure::Unreadable,
                crate::body::BodyError::Stalled(_) => crate::upstream::ClientBodyFailure::Stalled,
            };
            return Err(crate::upstream::UpstreamError::ClientBody(failure).problem(backend_name));
        }
        let mut attempt = 0;
        Ok(loop {
            let mut head = Request::new(());
            *head.method_mut() = parts.method.clone();
            *head.uri_mut() = parts.uri.clone();
            *head.version_mut() = parts.version;
            *head.headers_mut() = parts.headers.clone();
            let (p, ()) = head.into_parts();
            let out = Outbound {
                parts: p,
                added: added.clone(),
                body: body.clone_buffered(),
                rest: rest.clone(),
                hash_key: hash_key.clone(),
                at: Instant::now(),
            };
            let r = call_backend(backend, out, timeout, backend_name).await;
            let again = match &r {
                Ok(a) => plan.statuses.contains(&a.response.status().as_u16()),
                Err(p) => p.layer == Layer::Backend,
            };
            if !again || attempt >= plan.count {
                break r;
            }
            attempt += 1;
            if !plan.interval.is_zero() {
                tokio::time::sleep(plan.interval).await;
            }
        })
    })
}

/// One call to the backend, bounded by a policy's timeout when there is one.
///
/// Neither boxed nor made before it is awaited: the functions on this path are inlined, and a
/// future made where it is awaited is built in place. A box cost an allocation and a 1.3 KiB
/// copy per request; a future made outside an `async` block and awaited inside, one more copy.
#[inline(always)]
async fn call_backend(
    backend: &crate::upstream::Backend,
    out: Outbound,
    timeout: Option<Duration>,
    backend_name: &str,
) -> Result<crate::upstream::Answer, Problem> {
    let at = out.at;
    let result = match timeout {
        None => backend.forward(out).await,
        Some(d) => match tokio::time::timeout_at(crate::upstream::deadline(at, d), backend.forward(out)).await {
            Ok(r) => r,
            Err(_) => {
                return Err(Problem::backend(
                    StatusCode::GATEWAY_TIMEOUT,
                    "backend-timeout",
                    "http_response_timeout",
                    backend_name.to_owned(),
                    format!("the backend did not answer within the forward-request timeout of {d:?}"),
                ))
            }
        },
    };
    // `problem` already says `edge` for a client body that broke the request.
    result.map_err(|e| e.problem(backend_name))
}

async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        return;
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
