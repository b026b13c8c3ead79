//! The policy pipeline of a route that has policies: inbound and backend sections, the backend
//! call, outbound, and on-error when anything fails. Routes with backend, outbound or on-error
//! policies come here whole (`serve` calls [`pipeline_boxed`]); a route with inbound policies
//! only has `serve` await its inbound section and its backend call itself, and this module
//! judge the outcomes ([`inbound_only`], [`inbound_only_response`]). Plain routes go straight to `forward` and carry none of this state.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response};

use super::{forward, gateway_bug, Call, ConnInfo, Trace};
use crate::body::{ResponseBody, UpstreamBody};
use crate::edge;
use crate::policy::{run_section, Chain, ErrorInfo, Exchange, Flow, Held, Stage};
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
    path: &'a str,
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
/// is filled before the state exists, so the state holds the exchange's box and the call's
/// parts once. That state is boxed and copied once per request.
#[allow(clippy::too_many_arguments)]
fn pipeline<'a>(
    active: &'a Active,
    conn: &'a ConnInfo,
    route: Arc<Route>,
    params: crate::route::Params,
    path: &'a str,
    call: Call,
    request_id: &'a HeaderValue,
    peer_trusted: bool,
    trace: &'a mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'a {
    let Call { parts, body, raw_host, upgrade, .. } = call;
    let routed_at = trace.edge_done.unwrap_or_else(Instant::now);
    let mut x = exchange_for(active, conn, &route, params, path, parts, body, request_id, peer_trusted, routed_at);
    async move {
        let chain = &*route.chain;
        // Policy time counts from the end of routing, as on inline inbound chains.
        let t = routed_at;
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
                let sent =
                    to_backend(&mut x, chain, active, conn, &route, raw_host, upgrade, request_id, peer_trusted, trace)
                        .await;
                after_backend(&mut x, chain, sent, trace).await?
            }
        };
        finish(&mut x, &mut response, trace);
        Ok(response)
    }
}

/// How the inbound section of a route whose chain has nothing else ended (`serve` runs it and
/// the backend call itself, so that call is the plain route's await): the call the policies
/// planned, or the response they ended the request with — their answer, or their failure, with
/// the policies' response fields, as the pipeline gives them (on-error being empty).
pub(super) fn inbound_only(
    x: &mut Exchange,
    flow: Flow,
    chain: &Chain,
    raw_host: Option<HeaderValue>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    trace: &mut Trace,
) -> AfterInbound {
    let mut response = match flow {
        Flow::Continue => return AfterInbound::Call(call_from(x, chain, raw_host, upgrade)),
        // Like APIM's return-response: the answer goes out as it is.
        Flow::Respond(r, kind) => {
            trace.policy = Some(kind);
            *r
        }
        Flow::Reject(p) => failed(x, *p, trace),
    };
    finish(x, &mut response, trace);
    AfterInbound::Answered(response)
}

/// See [`inbound_only`].
pub(super) enum AfterInbound {
    Call(Call),
    Answered(Response<ResponseBody>),
}

/// The response to an [`inbound_only`] route's backend call: the backend's, or the failure's,
/// with the policies' response fields.
pub(super) fn inbound_only_response(
    x: &mut Exchange,
    sent: Result<Response<ResponseBody>, Problem>,
    trace: &mut Trace,
) -> Response<ResponseBody> {
    let mut response = sent.unwrap_or_else(|problem| failed(x, problem, trace));
    finish(x, &mut response, trace);
    response
}

/// The exchange of a request whose route has policies, filled in place in a box reused from
/// this thread's spares: a future that keeps it holds only the box, and the exchange is neither
/// allocated nor copied per request.
#[allow(clippy::too_many_arguments)]
pub(super) fn exchange_for(
    active: &Active,
    conn: &ConnInfo,
    route: &Arc<Route>,
    params: crate::route::Params,
    path: &str,
    parts: http::request::Parts,
    body: UpstreamBody,
    request_id: &HeaderValue,
    peer_trusted: bool,
    routed_at: Instant,
) -> Held {
    let snap = &active.snapshot;
    let mut x = Held::take();
    // An IPv4 peer is its own canonical form, so `peer_trusted` already says whether
    // `X-Forwarded-For` counts (as in `handle`).
    x.client_ip = match conn.peer.ip() {
        ip @ std::net::IpAddr::V4(_) if !peer_trusted => ip,
        ip => edge::client_ip(ip, &parts.headers, &snap.edge.trusted),
    };
    x.request = parts;
    x.body = body;
    x.path.push_str(path);
    x.params = params;
    x.request_id = request_id.clone();
    x.body_limit = snap.edge.limits.body_bytes;
    // The route is kept in the exchange too: it lends the chain while policies borrow the exchange.
    x.route = route.clone();
    x.routed_at = routed_at;
    x
}

/// A failure on a route whose chain has no on-error section: the problem is the response, and
/// the log keeps its layer and policy.
fn failed(x: &Exchange, problem: Problem, trace: &mut Trace) -> Response<ResponseBody> {
    trace.layer = Some(problem.layer);
    trace.policy = problem.policy;
    problem.into_response(x.request_id.to_str().unwrap_or("-"))
}

/// What the policies leave for the response, once there is one: their response fields, the
/// callbacks waiting for the status, the caller for the log, the hooks for when the body is sent.
fn finish(x: &mut Exchange, response: &mut Response<ResponseBody>, trace: &mut Trace) {
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
}

/// The backend call of a request that passed inbound and backend: the request as the policies
/// left it, and the plan they made. A plain function, so the call being made is a local of its
/// frame rather than a part of the pipeline's (boxed) state next to the call's future. The
/// call's future is boxed apart: it is large (about 1.7 KiB), and inside the pipeline's state
/// it would take that state out of malloc's per-thread cache (see the test below).
#[allow(clippy::too_many_arguments)]
fn to_backend<'b>(
    x: &'b mut Exchange,
    chain: &Chain,
    active: &'b Active,
    conn: &'b ConnInfo,
    route: &'b Route,
    raw_host: Option<HeaderValue>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    request_id: &'b HeaderValue,
    peer_trusted: bool,
    trace: &'b mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'b {
    let call = call_from(x, chain, raw_host, upgrade);
    let x: &'b Exchange = x;
    Box::pin(forward(active, conn, route, &x.path, call, request_id, peer_trusted, trace))
}

/// The backend call the policies planned: the request as they left it (without the client
/// request's extensions), its body, and their choices of target, backend, timeout and retries.
fn call_from(
    x: &mut Exchange,
    chain: &Chain,
    raw_host: Option<HeaderValue>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Call {
    // Outbound and on-error policies may read the request (cache keys, conditions), so
    // `x.request` keeps it only when such a section exists; otherwise it moves to the backend
    // call uncopied.
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
    Call {
        parts,
        body,
        target: x.backend.target.clone(),
        service: x.backend.service.clone(),
        timeout: x.backend.timeout,
        retry: x.backend.retry.clone(),
        raw_host,
        upgrade,
        at: None,
    }
}

/// What follows the backend call: on-error when it failed, else outbound when the chain has
/// one. A plain function that takes the call's result whole: matched inside the pipeline's
/// state, the result would stay there (a partly moved value keeps its place) while on-error or
/// outbound runs, and the state would be larger than the backend call's future by its size.
fn after_backend<'b>(
    x: &'b mut Exchange,
    chain: &'b Chain,
    sent: Result<Response<ResponseBody>, Problem>,
    trace: &'b mut Trace,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Problem>> + Send + 'b {
    use futures_util::future::Either;
    use futures_util::FutureExt;
    let resp = match sent {
        Err(p) => return Either::Left(Either::Left(on_error(x, chain, p, trace).map(Ok))),
        Ok(resp) if chain.outbound.is_empty() => return Either::Left(Either::Right(std::future::ready(Ok(resp)))),
        Ok(resp) => resp,
    };
    x.response = Some(resp);
    Either::Right(async move {
        let t = Instant::now();
        let flow = run_section(x, Stage::Outbound, &chain.outbound).await;
        trace.time_policy += t.elapsed();
        match flow {
            Flow::Respond(r, _) => Ok(*r),
            Flow::Reject(p) => Ok(on_error(x, chain, *p, trace).await),
            Flow::Continue => x.response.take().ok_or_else(|| gateway_bug("an outbound policy took the response")),
        }
    })
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
    if chain.on_error.is_empty() {
        let response = failed(x, problem, trace);
        return futures_util::future::Either::Left(std::future::ready(response));
    }
    trace.layer = Some(problem.layer);
    trace.policy = problem.policy;
    futures_util::future::Either::Right(async move {
        let rid = x.request_id.to_str().unwrap_or("-").to_owned();
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    #[allow(clippy::type_complexity)]
    fn state_size<'a, R>(
        _: fn(
            &'a Active,
            &'a ConnInfo,
            Arc<Route>,
            crate::route::Params,
            &'a str,
            Call,
            &'a HeaderValue,
            bool,
            &'a mut Trace,
        ) -> R,
    ) -> usize {
        std::mem::size_of::<R>()
    }

    /// The pipeline's state is boxed once per request. Up to 1032 bytes, glibc's malloc serves
    /// the box from its per-thread cache; above, each request pays a search of its bins and a
    /// larger free (callgrind: some 400 instructions). The exchange and the backend call's
    /// future (`to_backend`) have boxes of their own and the call's result is not kept across
    /// on-error or outbound (`after_backend`), so the state is about the policy sections'
    /// futures plus a little: 688 bytes when measured. (Measured in the test profile; the
    /// release layout is close.)
    #[test]
    fn the_pipeline_state_stays_small_enough_for_mallocs_thread_cache() {
        let size = state_size(pipeline);
        assert!(size <= 768, "the pipeline's boxed state grew to {size} bytes");
    }
}
