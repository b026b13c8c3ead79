//! Distributed tracing: W3C Trace Context in, OTLP (HTTP/protobuf) spans out.
//!
//! When `telemetry.otlp` is set, each request is sampled (the caller's `traceparent` decides when
//! it has one — parent-based — otherwise `sample_ratio` of trace ids), and a sampled request gets
//! a server span with two children: `policies` (the policy chain) and `backend` (the call, a
//! client span). The backend receives a `traceparent` naming that client span as its parent, so
//! its own spans hang below the gateway's; `tracestate` passes through untouched. An unsampled
//! request passes the caller's `traceparent` on as it came.
//!
//! Spans are built when the response body ends and handed to the exporter over a bounded queue
//! (`export`); when the queue is full the span is dropped and counted, never waited for.

mod export;
pub mod proto;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use tokio::sync::mpsc;

use super::metrics::RequestFacts;
use proto::{kv, KeyValue, Span, Status};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Spans waiting for the exporter before new ones are dropped.
const QUEUE_SPANS: usize = 8192;

/// `telemetry.otlp` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSpec {
    pub endpoint: Uri,
    pub sample_ratio: f64,
    pub service_name: String,
    pub timeout: Duration,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// A parsed `traceparent` (version 00 layout; later versions are read by the same prefix, as
/// the spec asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

pub fn parse_traceparent(v: &[u8]) -> Option<Parent> {
    if v.len() < 55 || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = hex::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (version > 0 && v.len() > 55 && v[55] != b'-') {
        return None;
    }
    let trace_id = hex::<16>(&v[3..35])?;
    let span_id = hex::<8>(&v[36..52])?;
    let flags = hex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent { trace_id, span_id, sampled: flags & 1 == 1 })
}

fn hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let mut out = [0; N];
    for (i, pair) in s.chunks_exact(2).enumerate().take(N) {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    (s.len() == 2 * N).then_some(out)
}

fn to_hex(bytes: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// What a sampled request's spans need from its start.
#[derive(Debug)]
pub struct SpanStart {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The backend call's span: the parent the backend sees.
    pub backend_span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub trace_state: String,
    pub wall: SystemTime,
    pub method: Method,
    pub path: String,
    pub scheme: &'static str,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    pub client_ip: IpAddr,
    pub request_id: String,
    pub protocol: &'static str,
}

impl SpanStart {
    /// The `traceparent` sent to the backend.
    pub fn backend_traceparent(&self) -> HeaderValue {
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        to_hex(&self.trace_id, &mut s);
        s.push('-');
        to_hex(&self.backend_span_id, &mut s);
        s.push_str("-01");
        HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// One snapshot's tracer: the sampling decision and the queue to the exporter.
#[derive(Debug)]
pub struct Tracer {
    pub spec: OtlpSpec,
    /// `sample_ratio` of the u64 range: a trace id whose last 8 bytes fall below it is sampled.
    threshold: u64,
    queue: mpsc::Sender<Vec<Span>>,
    pub dropped: Arc<AtomicU64>,
    pub exported: Arc<AtomicU64>,
}

/// Request facts the caller knows at the start (kept out of the signature's way).
pub struct StartInfo<'a> {
    pub headers: &'a HeaderMap,
    pub method: &'a Method,
    pub path: &'a str,
    pub tls: bool,
    pub host: Option<&'a str>,
    pub client_ip: IpAddr,
    pub request_id: &'a HeaderValue,
    pub version: http::Version,
}

impl Tracer {
    /// Starts the exporter task (on the current tokio runtime).
    pub fn start(spec: OtlpSpec) -> Tracer {
        let (queue, rx) = mpsc::channel(QUEUE_SPANS / 4);
        let dropped = Arc::new(AtomicU64::new(0));
        let exported = Arc::new(AtomicU64::new(0));
        tokio::spawn(export::run(spec.clone(), rx, dropped.clone(), exported.clone()));
        let threshold = if spec.sample_ratio >= 1.0 { u64::MAX } else { (spec.sample_ratio * u64::MAX as f64) as u64 };
        Tracer { spec, threshold, queue, dropped, exported }
    }

    /// Decides sampling; `Some` for a sampled request (the caller then sends the backend
    /// [`SpanStart::backend_traceparent`]).
    pub fn begin(&self, r: &StartInfo<'_>) -> Option<Box<SpanStart>> {
        let parent = r.headers.get(TRACEPARENT).and_then(|v| parse_traceparent(v.as_bytes()));
        let trace_id = match parent {
            Some(p) if !p.sampled => return None,
            Some(p) => p.trace_id,
            None => {
                let id: [u8; 16] = rand::random();
                let low = u64::from_be_bytes([id[8], id[9], id[10], id[11], id[12], id[13], id[14], id[15]]);
                if self.threshold != u64::MAX && low >= self.threshold {
                    return None;
                }
                id
            }
        };
        let trace_state = match (parent, r.headers.get(TRACESTATE).and_then(|v| v.to_str().ok())) {
            (Some(_), Some(s)) => s.to_owned(),
            _ => String::new(),
        };
        Some(Box::new(SpanStart {
            trace_id,
            span_id: rand::random(),
            backend_span_id: rand::random(),
            parent: parent.map(|p| p.span_id),
            trace_state,
            wall: SystemTime::now(),
            method: r.method.clone(),
            path: r.path.to_owned(),
            scheme: if r.tls { "https" } else { "http" },
            host: r.host.map(str::to_owned),
            user_agent: r.headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned),
            client_ip: r.client_ip,
            request_id: r.request_id.to_str().unwrap_or("-").to_owned(),
            protocol: match r.version {
                http::Version::HTTP_2 => "2",
                http::Version::HTTP_10 => "1.0",
                _ => "1.1",
            },
        }))
    }

    /// Builds the request's spans and queues them; never waits.
    pub fn end(&self, s: &SpanStart, f: &RequestFacts) {
        let spans = spans(s, f);
        if self.queue.try_send(spans).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The server span and its children, with OpenTelemetry HTTP semantic-convention attributes.
pub fn spans(s: &SpanStart, f: &RequestFacts) -> Vec<Span> {
    let start = nanos(s.wall);
    let at = |d: Duration| start + u64::try_from(d.as_nanos()).unwrap_or(0);
    let route = f.route.as_deref();
    let api = route.map_or("", |r| r.api.name.as_str());
    let operation = route.and_then(|r| r.operation.as_deref());

    let mut attrs: Vec<KeyValue> = vec![
        kv("http.request.method", s.method.as_str()),
        kv("url.path", s.path.as_str()),
        kv("url.scheme", s.scheme),
        kv("network.protocol.name", "http"),
        kv("network.protocol.version", s.protocol),
        kv("client.address", s.client_ip.to_string()),
        kv("http.response.status_code", i64::from(f.status)),
        kv("gatehouse.request_id", s.request_id.as_str()),
    ];
    if let Some(h) = &s.host {
        attrs.push(kv("server.address", h.as_str()));
    }
    if let Some(ua) = &s.user_agent {
        attrs.push(kv("user_agent.original", ua.as_str()));
    }
    if route.is_some() {
        attrs.push(kv("gatehouse.api", api));
    }
    if let Some(op) = operation {
        attrs.push(kv("gatehouse.operation", op));
    }
    if let Some(p) = &f.product {
        attrs.push(kv("gatehouse.product", &**p));
    }
    if let Some(sub) = &f.subscription {
        attrs.push(kv("gatehouse.subscription", &**sub));
    }
    if let Some(layer) = f.layer {
        attrs.push(kv("gatehouse.layer", layer.as_str()));
        attrs.push(kv("error.type", if f.status >= 400 { f.status.to_string() } else { layer.as_str().to_owned() }));
    }
    if let Some(p) = f.policy {
        attrs.push(kv("gatehouse.policy", p));
    }
    // Server spans are errors for 5xx only (semantic conventions: 4xx is the client's doing).
    let status = (f.status >= 500).then(|| Status { message: String::new(), code: proto::STATUS_ERROR });
    let name = match operation {
        Some(op) => format!("{} {api}/{op}", s.method),
        None if route.is_some() => format!("{} {api}", s.method),
        None => s.method.to_string(),
    };
    let server = Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent.map(|p| p.to_vec()).unwrap_or_default(),
        name,
        kind: proto::KIND_SERVER,
        start_time_unix_nano: start,
        end_time_unix_nano: at(f.duration),
        attributes: attrs,
        status,
        flags: 1,
    };
    let mut out = vec![server];
    let child = |id: [u8; 8], name: &str, kind, from: Duration, took: Duration, attributes, status| Span {
        trace_id: s.trace_id.to_vec(),
        span_id: id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.span_id.to_vec(),
        name: name.to_owned(),
        kind,
        start_time_unix_nano: at(from),
        end_time_unix_nano: at(from + took),
        attributes,
        status,
        flags: 1,
    };
    if let Some(t) = f.time_policy {
        let mut a = vec![kv("gatehouse.layer", "policy")];
        if let Some(p) = f.policy {
            a.push(kv("gatehouse.policy", p));
        }
        let failed = f.layer == Some(crate::respond::Layer::Policy);
        let st = failed.then(|| Status { message: String::new(), code: proto::STATUS_ERROR });
        out.push(child(rand::random(), "policies", proto::KIND_INTERNAL, f.time_edge, t, a, st));
    }
    if let Some(t) = f.time_backend {
        let mut a = vec![kv("http.request.method", s.method.as_str()), kv("gatehouse.layer", "backend")];
        if let Some(b) = &f.backend {
            a.push(kv("gatehouse.backend", &**b));
        }
        if let Some(code) = f.upstream_status {
            a.push(kv("http.response.status_code", i64::from(code)));
        }
        let failed = f.layer == Some(crate::respond::Layer::Backend);
        let st = failed.then(|| Status { message: String::new(), code: proto::STATUS_ERROR });
        let from = f.time_edge + f.time_policy.unwrap_or_default();
        out.push(child(s.backend_span_id, "backend", proto::KIND_CLIENT, from, t, a, st));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_strictly() {
        let p = parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id[7], 0xb7);
        assert!(p.sampled);
        assert!(!parse_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid").sampled);
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse_traceparent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn backend_traceparent_names_the_backend_span() {
        let s = SpanStart {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            backend_span_id: [0x0c; 8],
            parent: None,
            trace_state: String::new(),
            wall: SystemTime::now(),
            method: Method::GET,
            path: "/".into(),
            scheme: "http",
            host: None,
            user_agent: None,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_id: "r".into(),
            protocol: "1.1",
        };
        assert_eq!(s.backend_traceparent(), "00-abababababababababababababababab-0c0c0c0c0c0c0c0c-01");
    }
}
