//! The OTLP/HTTP exporter task: gathers spans for up to a second (or 512 spans), encodes one
//! `ExportTraceServiceRequest` and POSTs it as `application/x-protobuf`. A failed export is
//! logged (at most once a minute) and its spans are dropped: traces are best-effort and must
//! never hold memory or a request hostage.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio::sync::mpsc;

use super::proto::{kv, ExportTraceServiceRequest, InstrumentationScope, Resource, ResourceSpans, ScopeSpans, Span};
use super::OtlpSpec;

const BATCH_SPANS: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_secs(1);

pub(super) async fn run(
    spec: OtlpSpec,
    mut rx: mpsc::Receiver<Vec<Span>>,
    dropped: Arc<AtomicU64>,
    exported: Arc<AtomicU64>,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = first;
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_SPANS {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(more)) => batch.extend(more),
                // The tracer is gone (reload or shutdown): send what is left, then stop.
                Ok(None) => {
                    send(&spec, batch, &dropped, &exported, &mut last_warning).await;
                    return;
                }
                Err(_) => break,
            }
        }
        send(&spec, batch, &dropped, &exported, &mut last_warning).await;
    }
}

async fn send(
    spec: &OtlpSpec,
    spans: Vec<Span>,
    dropped: &AtomicU64,
    exported: &AtomicU64,
    last_warning: &mut Option<Instant>,
) {
    let n = spans.len() as u64;
    let body = encode(spec, spans);
    match tokio::time::timeout(spec.timeout, post(spec, body)).await {
        Ok(Ok(())) => {
            exported.fetch_add(n, Ordering::Relaxed);
        }
        outcome => {
            dropped.fetch_add(n, Ordering::Relaxed);
            let why = match outcome {
                Ok(Err(e)) => e,
                _ => "timed out".to_owned(),
            };
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                *last_warning = Some(Instant::now());
                tracing::warn!(endpoint = %spec.endpoint, error = %why, spans = n, "OTLP export failed; spans dropped.");
            }
        }
    }
}

pub fn encode(spec: &OtlpSpec, spans: Vec<Span>) -> Bytes {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", spec.service_name.as_str()),
                    kv("service.version", env!("CARGO_PKG_VERSION")),
                    kv("telemetry.sdk.name", "gatehouse"),
                    kv("telemetry.sdk.language", "rust"),
                ],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "gatehouse".to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                spans,
            }],
        }],
    };
    Bytes::from(req.encode_to_vec())
}

async fn post(spec: &OtlpSpec, body: Bytes) -> Result<(), String> {
    let authority = spec.endpoint.authority().ok_or("the endpoint has no host")?.clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port)).await.map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let path = spec.endpoint.path_and_query().map_or("/v1/traces", |p| p.as_str());
    let mut req = Request::post(path)
        .header(header::HOST, authority.as_str())
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    for (name, value) in &spec.headers {
        req.headers_mut().insert(name.clone(), value.clone());
    }
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Read the (small) answer so the connection ends cleanly.
    let _ = resp.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the collector answered {status}"))
    }
}
