//! Response compression (`edge.compression`) through a real gateway: what a client that asks for
//! gzip or br receives decodes to exactly the backend's bytes, and every response that must not
//! be compressed is passed through as it was.

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::support::*;

/// Compressible JSON of about `n` bytes.
fn json_text(n: usize) -> String {
    let mut s = String::from("[");
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("{{\"id\":{i},\"name\":\"item number {i}\",\"tags\":[\"a\",\"b\"]}},"));
        i += 1;
    }
    s.push_str("{}]");
    s
}

/// Text that compresses but not trivially (a repeated string would hide framing mistakes).
fn big_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x: u32 = 12345;
    while out.len() < len {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(format!("line {} value {}\n", out.len(), (x >> 16) % 1000).as_bytes());
    }
    out.truncate(len);
    out
}

const BIG: usize = 4 * 1024 * 1024;

type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

/// A body fed by a channel, sent as it arrives.
fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    StreamBody::new(stream).boxed_unsync()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, data).expect("gzip");
    e.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("valid gzip");
    out
}

fn unbrotli(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(data, 4096).read_to_end(&mut out).expect("valid brotli");
    out
}

/// A backend answering by path; `/sse` sends a second event only after `next` is notified.
struct Origin {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn origin(next: Arc<Notify>) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let next = next.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let next = next.clone();
                    async move { Ok::<_, Infallible>(answer(req.uri().path(), next)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Origin { addr, task }
}

fn answer(path: &str, next: Arc<Notify>) -> Response<Body> {
    let json =
        |body: String| Response::builder().header("content-type", "application/json; charset=utf-8").body(full(body));
    let r = match path.trim_start_matches("/api").trim_start_matches("/off") {
        "/json" => json(json_text(20_000)).map(|mut r| {
            r.headers_mut().insert("etag", "\"v42\"".parse().expect("hv"));
            r.headers_mut().insert("vary", "Origin".parse().expect("hv"));
            r
        }),
        "/small" => json("{\"ok\":true}".into()),
        "/png" => Response::builder().header("content-type", "image/png").body(full(big_text(5000))),
        "/encoded" => Response::builder()
            .header("content-type", "application/json")
            .header("content-encoding", "gzip")
            .body(full(gzip(json_text(5000).as_bytes()))),
        "/no-transform" => json(json_text(5000)).map(|mut r| {
            r.headers_mut().insert("cache-control", "public, no-transform".parse().expect("hv"));
            r
        }),
        "/big" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for chunk in big_text(BIG).chunks(64 * 1024) {
                    if tx.send(Bytes::copy_from_slice(chunk)).await.is_err() {
                        return;
                    }
                }
            });
            Response::builder().header("content-type", "text/plain").body(channel_body(rx))
        }
        "/sse" => {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"data: one\n\n")).await;
                next.notified().await;
                let _ = tx.send(Bytes::from_static(b"data: two\n\n")).await;
            });
            Response::builder().header("content-type", "text/event-stream").body(channel_body(rx))
        }
        _ => Response::builder().status(404).body(full("no such test path")),
    };
    r.expect("response")
}

/// `simple_config` (API `/api` → origin) with `compression` in `edge:`, plus `/off` with
/// compression turned off and `/answer` answered at the gateway with compressible HTML.
fn config(origin: SocketAddr, compression: &str) -> String {
    simple_config(origin, "", compression)
        + &format!(
            r#"  off:
    path: /off
    backend: b
    compression: false
  answers:
    path: /answer
    policies:
      inbound:
        - return-response: {{ status: 200, headers: {{ content-type: text/html }}, body: "{html}" }}
"#,
            html = "<p>hello</p>".repeat(200)
        )
}

const ON: &str = "  compression: { algorithms: [br, gzip], min_size: 1KiB }";

async fn setup() -> (Origin, TestGateway, Arc<Notify>) {
    let next = Arc::new(Notify::new());
    let o = origin(next.clone()).await;
    let g = gateway(&config(o.addr, ON)).await;
    (o, g, next)
}

async fn fetch(c: &Client, method: &str, url: &str, accept: Option<&str>) -> Got {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(a) = accept {
        req = req.header("accept-encoding", a);
    }
    send(c, req.body(Full::default()).expect("req")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_and_br_decode_to_the_backend_bytes() {
    let (_o, g, _) = setup().await;
    let want = json_text(20_000);
    for (accept, coding) in [("gzip", "gzip"), ("br", "br"), ("gzip, deflate, br", "br"), ("br;q=0.5, gzip", "gzip")] {
        let got = fetch(&client(), "GET", &g.url("/api/json"), Some(accept)).await;
        assert_eq!(got.status, 200);
        let h = &got.headers;
        assert_eq!(h["content-encoding"], coding, "Accept-Encoding: {accept}");
        assert!(!h.contains_key("content-length"), "the body streams");
        assert_eq!(h["vary"], "Origin, Accept-Encoding", "merged with the backend's");
        assert_eq!(h["etag"], "W/\"v42\"", "a strong ETag is weakened");
        assert_eq!(h["content-type"], "application/json; charset=utf-8");
        assert!(got.body.len() < want.len() / 4, "{accept}: {} bytes", got.body.len());
        let plain = if coding == "gzip" { gunzip(&got.body) } else { unbrotli(&got.body) };
        assert_eq!(plain, want.as_bytes(), "{accept}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_when_the_client_does_not_accept_a_coding() {
    let (_o, g, _) = setup().await;
    let want = json_text(20_000);
    for accept in [None, Some("gzip;q=0, br;q=0"), Some("identity"), Some("deflate"), Some("*;q=0")] {
        let got = fetch(&client(), "GET", &g.url("/api/json"), accept).await;
        assert!(!got.headers.contains_key("content-encoding"), "{accept:?}");
        assert_eq!(got.headers["content-length"], want.len().to_string().as_str(), "{accept:?}");
        assert_eq!(got.body, want.as_bytes(), "{accept:?}");
        // It could have been compressed, so a cache must know it varies.
        assert_eq!(got.headers["vary"], "Origin, Accept-Encoding", "{accept:?}");
        assert_eq!(got.headers["etag"], "\"v42\"", "{accept:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_that_must_not_be_compressed_pass_as_they_are() {
    let (_o, g, _) = setup().await;
    let c = client();
    let small = fetch(&c, "GET", &g.url("/api/small"), Some("gzip, br")).await;
    assert!(!small.headers.contains_key("content-encoding"), "below min_size");
    assert_eq!(small.body, "{\"ok\":true}");
    let png = fetch(&c, "GET", &g.url("/api/png"), Some("gzip, br")).await;
    assert!(!png.headers.contains_key("content-encoding") && !png.headers.contains_key("vary"), "not in types");
    assert_eq!(png.body, big_text(5000));
    let encoded = fetch(&c, "GET", &g.url("/api/encoded"), Some("gzip, br")).await;
    assert_eq!(encoded.headers["content-encoding"], "gzip", "already encoded: kept, not encoded twice");
    assert_eq!(gunzip(&encoded.body), json_text(5000).as_bytes());
    let nt = fetch(&c, "GET", &g.url("/api/no-transform"), Some("gzip, br")).await;
    assert!(!nt.headers.contains_key("content-encoding"), "Cache-Control: no-transform");
    assert_eq!(nt.body, json_text(5000).as_bytes());
    let head = fetch(&c, "HEAD", &g.url("/api/json"), Some("gzip, br")).await;
    assert!(!head.headers.contains_key("content-encoding"), "HEAD");
    assert_eq!(head.headers["content-length"], json_text(20_000).len().to_string().as_str());
    assert_eq!(head.headers["etag"], "\"v42\"");
    let off = fetch(&c, "GET", &g.url("/off/json"), Some("gzip, br")).await;
    assert!(!off.headers.contains_key("content-encoding"), "apis.off.compression: false");
    assert_eq!(off.headers["vary"], "Origin");
    assert_eq!(off.body, json_text(20_000).as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_written_answers_are_compressed_too() {
    let (_o, g, _) = setup().await;
    let got = fetch(&client(), "GET", &g.url("/answer/x"), Some("gzip")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-encoding"], "gzip");
    assert_eq!(gunzip(&got.body), "<p>hello</p>".repeat(200).as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_stream_compresses_and_the_log_counts_what_was_sent() {
    let (_o, g, _) = setup().await;
    for (accept, decode) in [("gzip", gunzip as fn(&[u8]) -> Vec<u8>), ("br", unbrotli)] {
        let got = fetch(&client(), "GET", &g.url("/api/big"), Some(accept)).await;
        assert_eq!(got.headers["content-encoding"], accept);
        assert!(got.body.len() < BIG / 2, "{accept}: {} bytes", got.body.len());
        assert!(decode(&got.body) == big_text(BIG), "{accept}: decodes to the backend's {BIG} bytes");
        // The line is written when the body ends; give the server a moment to drop it.
        let mut lines = Vec::new();
        let mut logged = None;
        for _ in 0..50 {
            lines = g.log_lines().await;
            let hit = lines
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| v["path"] == "/api/big" && v["bytes_sent"] == got.body.len());
            if hit.is_some() {
                logged = hit;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let v = logged.unwrap_or_else(|| panic!("no log line with bytes_sent {}: {lines:#?}", got.body.len()));
        assert_eq!(v["status"], 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_event_stream_arrives_event_by_event() {
    let (_o, g, next) = setup().await;
    for coding in ["gzip", "br"] {
        let req = Request::get(g.url("/api/sse")).header("accept-encoding", coding).body(Full::default());
        let resp = tokio::time::timeout(Duration::from_secs(10), client().request(req.expect("req")))
            .await
            .expect("timely")
            .expect("response");
        assert_eq!(resp.headers()["content-encoding"], coding);
        let mut body = resp.into_body();
        let mut received = Vec::new();
        // The first event must decode before the backend sends the second.
        let first = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let frame = body.frame().await.expect("more").expect("ok");
                received.extend_from_slice(&frame.into_data().unwrap_or_default());
                let mut partial = Vec::new();
                if coding == "gzip" {
                    let _ = flate2::read::GzDecoder::new(&received[..]).read_to_end(&mut partial);
                } else {
                    let _ = brotli::Decompressor::new(&received[..], 4096).read_to_end(&mut partial);
                }
                if partial == b"data: one\n\n" {
                    return;
                }
            }
        })
        .await;
        assert!(first.is_ok(), "{coding}: the first event was held back");
        next.notify_one();
        let rest = body.collect().await.expect("rest").to_bytes();
        received.extend_from_slice(&rest);
        let all = if coding == "gzip" { gunzip(&received) } else { unbrotli(&received) };
        assert_eq!(all, b"data: one\n\ndata: two\n\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_compressed_responses() {
    let (_o, g, _) = setup().await;
    let h2 = h2c_client();
    let got = fetch(&h2, "GET", &g.url("/api/json"), Some("br")).await;
    assert_eq!(got.headers["content-encoding"], "br");
    assert_eq!(unbrotli(&got.body), json_text(20_000).as_bytes());
    let got = fetch(&h2, "GET", &g.url("/api/big"), Some("gzip")).await;
    assert_eq!(got.headers["content-encoding"], "gzip");
    assert!(gunzip(&got.body) == big_text(BIG));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_configuration_nothing_changes() {
    let next = Arc::new(Notify::new());
    let o = origin(next).await;
    let g = gateway(&config(o.addr, "")).await;
    let got = fetch(&client(), "GET", &g.url("/api/json"), Some("gzip, br")).await;
    assert!(!got.headers.contains_key("content-encoding"));
    assert_eq!(got.headers["vary"], "Origin");
    assert_eq!(got.headers["etag"], "\"v42\"");
    assert_eq!(got.body, json_text(20_000).as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_compressed_gets_the_original_bytes() {
    let (_o, g, _) = setup().await;
    for (url, want) in [(g.url("/api/json"), json_text(20_000).into_bytes()), (g.url("/api/big"), big_text(BIG))] {
        for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
            let (url2, extra2) = (url.clone(), extra.to_vec());
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new("curl")
                    .args(["-sS", "--compressed", "--max-time", "20", "-D", "/dev/stderr"])
                    .args(extra2)
                    .arg(&url2)
                    .output()
            })
            .await
            .expect("join")
            .expect("curl runs (curl is required for this test)");
            let headers = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
            assert!(out.status.success(), "curl {extra:?} {url}: {headers}");
            assert!(headers.contains("content-encoding: br"), "curl {extra:?} asked for br: {headers}");
            assert!(out.stdout == want, "curl {extra:?} {url}: {} bytes, want {}", out.stdout.len(), want.len());
        }
    }
}
