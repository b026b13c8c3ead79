//! OTLP trace export against a test receiver that decodes the official OTLP protobuf types
//! (`opentelemetry-proto`), and W3C trace-context propagation to the backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;
use parking_lot::Mutex;
use prost::Message;

use crate::support::*;

/// An OTLP/HTTP receiver: every POST body is decoded as an `ExportTraceServiceRequest`.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let got: Arc<Mutex<Vec<ExportTraceServiceRequest>>> = Arc::default();
        let g = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let g = g.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            assert_eq!(req.headers()["x-collector-key"], "k");
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let decoded = ExportTraceServiceRequest::decode(body).expect("a valid OTLP request");
                            g.lock().push(decoded);
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Receiver { addr, got, task }
    }

    fn spans(&self) -> Vec<Span> {
        self.got
            .lock()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    /// Waits (bounded) until `n` spans have arrived.
    async fn wait_spans(&self, n: usize) -> Vec<Span> {
        for _ in 0..100 {
            if self.spans().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.spans()
    }
}

fn attr(s: &Span, key: &str) -> Option<Value> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.clone()).and_then(|v| v.value)
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v,
        other => panic!("{key}: {other:?} in {s:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn config(backend: SocketAddr, dead: SocketAddr, receiver: SocketAddr, ratio: &str) -> String {
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
telemetry:
  otlp: {{ endpoint: "http://{receiver}/v1/traces", sample_ratio: {ratio}, service_name: edge-gw, headers: {{ x-collector-key: k }} }}
backends:
  b: {{ servers: [ {{ url: "http://{backend}" }} ] }}
  dead: {{ servers: [ {{ url: "http://{dead}" }} ], retry: {{ attempts: 1 }} }}
apis:
  orders:
    path: /orders
    backend: b
    operations: [ {{ id: get-order, method: GET, template: "/{{id}}" }} ]
  hello:
    path: /hello
    policies: {{ inbound: [ {{ return-response: {{ status: 200, body: "hi" }} }} ] }}
  down: {{ path: /down, backend: dead }}
"#
    )
}

async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_and_the_backend_continues_the_trace() {
    let rx = Receiver::start().await;
    let b = backend().await;
    let g = gateway(&config(b.addr, dead_addr().await, rx.addr, "1.0")).await;
    let c = client();

    let req = Request::get(g.url("/orders/7"))
        .header("traceparent", PARENT)
        .header("tracestate", "congo=t61rcWkgMzE")
        .header("user-agent", "trace-test")
        .body(Full::default())
        .expect("req");
    assert_eq!(send(&c, req).await.status, 200);
    let spans = rx.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let server = spans.iter().find(|s| s.kind == SpanKind::Server as i32).expect("a server span");
    let call = spans.iter().find(|s| s.kind == SpanKind::Client as i32).expect("a backend span");
    assert_eq!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736", "the caller's trace continues");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(server.trace_state, "congo=t61rcWkgMzE");
    assert_eq!(server.name, "GET orders/get-order");
    assert_eq!(text(server, "http.request.method"), "GET");
    assert_eq!(text(server, "url.path"), "/orders/7");
    assert_eq!(text(server, "url.scheme"), "http");
    assert_eq!(text(server, "user_agent.original"), "trace-test");
    assert_eq!(text(server, "gatehouse.api"), "orders");
    assert_eq!(text(server, "gatehouse.operation"), "get-order");
    assert_eq!(attr(server, "http.response.status_code"), Some(Value::IntValue(200)));
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert_eq!(call.trace_id, server.trace_id);
    assert_eq!(call.parent_span_id, server.span_id);
    assert_eq!(text(call, "gatehouse.backend"), "b");
    assert!(call.start_time_unix_nano >= server.start_time_unix_nano);
    assert!(call.end_time_unix_nano <= server.end_time_unix_nano);

    // The backend's parent is the gateway's backend-call span; tracestate passes through.
    let seen = &b.requests()[0];
    let tp = seen.headers["traceparent"].to_str().expect("ascii");
    assert_eq!(tp, format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&call.span_id)));
    assert_eq!(seen.headers["tracestate"], "congo=t61rcWkgMzE");

    let resource = rx.got.lock()[0].resource_spans[0].resource.clone().expect("resource");
    let service = resource.attributes.iter().find(|a| a.key == "service.name");
    assert_eq!(service.and_then(|a| a.value.clone()).and_then(|v| v.value), Some(Value::StringValue("edge-gw".into())));

    // A policy answer: server span plus the policy-chain span, no backend span.
    assert_eq!(get(&g.url("/hello")).await.status, 200);
    let spans = rx.wait_spans(4).await;
    let hello: Vec<&Span> = spans.iter().skip(2).collect();
    assert_eq!(hello.len(), 2, "{hello:#?}");
    let root = hello.iter().find(|s| s.kind == SpanKind::Server as i32).expect("server span");
    assert!(root.parent_span_id.is_empty(), "a new trace");
    let policies = hello.iter().find(|s| s.kind == SpanKind::Internal as i32).expect("policies span");
    assert_eq!(policies.name, "policies");
    assert_eq!(policies.parent_span_id, root.span_id);
    assert_eq!(text(policies, "gatehouse.policy"), "return-response");

    // A backend failure: the server span is an error and names the layer.
    assert_problem(&get(&g.url("/down/x")).await, 502, "backend");
    let spans = rx.wait_spans(6).await;
    let root = spans.iter().skip(4).find(|s| s.kind == SpanKind::Server as i32).expect("server span");
    assert_eq!(text(root, "gatehouse.layer"), "backend");
    assert_eq!(root.status.as_ref().map(|s| s.code), Some(StatusCode::Error as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_pass_traceparent_through_and_export_nothing() {
    let rx = Receiver::start().await;
    let b = backend().await;
    let g = gateway(&config(b.addr, dead_addr().await, rx.addr, "0.0")).await;
    let c = client();
    let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    let req = Request::get(g.url("/orders/1")).header("traceparent", unsampled).body(Full::default()).expect("req");
    assert_eq!(send(&c, req).await.status, 200);
    assert_eq!(get(&g.url("/orders/2")).await.status, 200, "ratio 0: a new trace is not sampled");
    // A sampled caller is followed whatever the ratio.
    let req = Request::get(g.url("/orders/3")).header("traceparent", PARENT).body(Full::default()).expect("req");
    assert_eq!(send(&c, req).await.status, 200);
    let spans = rx.wait_spans(2).await;
    assert_eq!(spans.len(), 2, "only the sampled caller's request: {spans:#?}");
    let seen = b.requests();
    assert_eq!(seen[0].headers["traceparent"], unsampled);
    assert!(seen[1].headers.get("traceparent").is_none());
    assert_ne!(seen[2].headers["traceparent"], PARENT);
}
