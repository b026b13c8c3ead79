//! The policy pipeline of a route that has policies: inbound and backend sections, the backend
//! call, outbound, and on-error when anything fails. Only routes with policies come here
//! (`serve` calls [`pipeline_boxed`]); plain routes go straight to `forward` and carry none of
//! this state.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};

use super::{forward, gateway_bug, Call, ConnInfo, Trace};
use crate::body::{ResponseBody, UpstreamBody};
use crate::edge;
use crate::policy::{run_section, BackendPlan, Chain, ErrorInfo, Exchange, Flow, Stage};
use crate::respond::Problem;
use crate::route::Route;
use crate::server::Active;

pub(super) type PipelineFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'a>>;

/// `pipeline`, boxed in a plain function so its state never becomes part of `serve`'s.
#[allow(clippy::too_many_arguments)]
pub(super) fn pipeline_boxed<'a>(
    active: &'a Active,
    conn: &'a ConnInfo,
    route: Arc<Route>,
    params: crate::route::Params,
    path: String,
    call: Call,
    request_id: &'a HeaderValue,
    peer_trusted: bool,
    trace: &'a mut Trace,
) -> PipelineFuture<'a> {
    Box::pin(pipeline(active, conn, route, params, path, call, request_id, peer_trusted, trace))
}

/// The route's policies around the backend call: inbound, backend, the call, outbound, and
/// on-error when anything fails.
///
/// A plain function around an `async move` block rather than an `async fn`: an `async fn`'s
/// state keeps its arguments twice (as passed, and as moved into its body), and the exchange
/// is built before the state exists, so the state holds one exchange and the call's parts once.
/// That state is boxed and copied once per request.
#[allow(clippy::too_many_arguments)]
fn pipeline<'a>(
    active: &'a Active,
    conn: &'a ConnInfo,
    route: Arc<Route>,
    params: crate::route::Params,
    path: String,
    call: Call,
    request_id: &'a HeaderValue,
    peer_trusted: bool,
    trace: &'a mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'a {
    let snap = &active.snapshot;
    let Call { parts, body, raw_host, upgrade, .. } = call;
    let client_ip = edge::client_ip(conn.peer.ip(), &parts.headers, &snap.edge.trusted);
    let mut x = Exchange {
        stage: Stage::Inbound,
        request: parts,
        body,
        path,
        params,
        client_ip,
        request_id: request_id.clone(),
        route,
        vars: Vec::new(),
        jwt: None,
        caller: None,
        backend: BackendPlan::default(),
        response: None,
        error: None,
        extra_response_headers: HeaderMap::new(),
        deferred: Vec::new(),
        on_sent: Vec::new(),
        body_limit: snap.edge.limits.body_bytes,
        cache: None,
    };
    async move {
        // The exchange's handle on the route lends the chain; the route itself is cloned only
        // for the backend call, which runs while policies may still borrow the exchange.
        let route = x.route.clone();
        let chain = &*route.chain;
        let t = Instant::now();
        let mut flow = run_section(&mut x, Stage::Inbound, &chain.inbound).await;
        if matches!(flow, Flow::Continue) && !chain.backend.is_empty() {
            flow = run_section(&mut x, Stage::Backend, &chain.backend).await;
        }
        trace.time_policy = t.elapsed();

        let mut response = match flow {
            // Like APIM's return-response: the answer goes out as it is, outbound does not run.
            Flow::Respond(r, kind) => {
                trace.policy = Some(kind);
                *r
            }
            Flow::Reject(p) => on_error(&mut x, chain, *p, trace).await,
            Flow::Continue => {
                // The request as the policies left it (without the client request's
                // extensions). Outbound and on-error policies may read the request (cache keys,
                // conditions), so `x.request` keeps it only when such a section exists;
                // otherwise it moves to the backend call uncopied.
                let parts = if chain.outbound.is_empty() && chain.on_error.is_empty() {
                    let (empty, ()) = Request::new(()).into_parts();
                    let mut parts = std::mem::replace(&mut x.request, empty);
                    parts.extensions.clear();
                    parts
                } else {
                    let mut out = Request::new(());
                    *out.method_mut() = x.request.method.clone();
                    *out.uri_mut() = x.request.uri.clone();
                    *out.version_mut() = x.request.version;
                    *out.headers_mut() = x.request.headers.clone();
                    out.into_parts().0
                };
                let body = std::mem::replace(&mut x.body, UpstreamBody::empty());
                let call = Call {
                    parts,
                    body,
                    target: x.backend.target.clone(),
                    service: x.backend.service.clone(),
                    timeout: x.backend.timeout,
                    retry: x.backend.retry.clone(),
                    raw_host,
                    upgrade,
                };
                match forward(active, conn, &route, &x.path, call, request_id, peer_trusted, trace).await {
                    Err(p) => on_error(&mut x, chain, p, trace).await,
                    Ok(resp) if chain.outbound.is_empty() => resp,
                    Ok(resp) => {
                        x.response = Some(resp);
                        let t = Instant::now();
                        let flow = run_section(&mut x, Stage::Outbound, &chain.outbound).await;
                        trace.time_policy += t.elapsed();
                        match flow {
                            Flow::Respond(r, _) => *r,
                            Flow::Reject(p) => on_error(&mut x, chain, *p, trace).await,
                            Flow::Continue => match x.response.take() {
                                Some(r) => r,
                                None => return Err(gateway_bug("an outbound policy took the response")),
                            },
                        }
                    }
                }
            }
        };
        if !x.extra_response_headers.is_empty() {
            // A policy's field replaces the response's, except `Vary`, which lists every reason
            // the response varies (the backend's and, say, CORS's `Origin`).
            let mut last: Option<HeaderName> = None;
            for (name, value) in x.extra_response_headers.drain() {
                let headers = response.headers_mut();
                match name {
                    Some(name) => {
                        if name == header::VARY {
                            headers.append(name.clone(), value);
                        } else {
                            headers.insert(name.clone(), value);
                        }
                        last = Some(name);
                    }
                    // Further values of the same field.
                    None => {
                        if let Some(name) = &last {
                            headers.append(name.clone(), value);
                        }
                    }
                }
            }
        }
        trace.caller = x.caller.take();
        let status = response.status().as_u16();
        for f in x.deferred.drain(..) {
            f(status);
        }
        if !x.on_sent.is_empty() {
            trace.on_sent = std::mem::take(&mut x.on_sent);
        }
        Ok(response)
    }
}

/// A failure in a policy or at the backend: the problem becomes the response, then on-error may
/// change or replace it. The log keeps the original failure's layer and policy. (A plain
/// function for the reason `pipeline` is one: the problem is kept once.)
fn on_error<'a>(
    x: &'a mut Exchange,
    chain: &'a Chain,
    problem: Problem,
    trace: &'a mut Trace,
) -> impl std::future::Future<Output = Response<ResponseBody>> + Send + 'a {
    trace.layer = Some(problem.layer);
    trace.policy = problem.policy;
    async move {
        let rid = x.request_id.to_str().unwrap_or("-").to_owned();
        if chain.on_error.is_empty() {
            return problem.into_response(&rid);
        }
        x.error = Some(ErrorInfo::of(&problem));
        x.response = Some(problem.into_response(&rid));
        let t = Instant::now();
        let flow = run_section(x, Stage::OnError, &chain.on_error).await;
        trace.time_policy += t.elapsed();
        match flow {
            Flow::Respond(r, _) => *r,
            Flow::Reject(p) => p.into_response(&rid),
            Flow::Continue => {
                x.response.take().unwrap_or_else(|| gateway_bug("on-error took the response").into_response(&rid))
            }
        }
    }
}
