//! Backends: balancing, retries, health (active and passive), timeouts, HTTP/2, upgrades,
//! 100-continue, streaming, and reloads while requests are in flight.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

fn two_server_config(a: SocketAddr, b: SocketAddr, backend_extra: &str) -> String {
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends:
  b:
    servers: [ {{ url: "http://{a}", weight: 2 }}, {{ url: "http://{b}" }} ]
{backend_extra}
apis:
  api: {{ path: /api, backend: b }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_and_hashing() {
    let a = backend().await;
    let b = backend().await;
    let g = gateway(&two_server_config(a.addr, b.addr, "")).await;
    for _ in 0..30 {
        assert_eq!(get(&g.url("/api/x")).await.status, 200);
    }
    assert_eq!((a.count(), b.count()), (20, 10));

    let a = backend().await;
    let b = backend().await;
    let g = gateway(&two_server_config(a.addr, b.addr, "    balance: hash(header:X-User)")).await;
    let c = client();
    for user in ["alice", "bob", "carol", "dave"] {
        let before = (a.count(), b.count());
        for _ in 0..5 {
            let req = Request::get(g.url("/api/x")).header("x-user", user).body(Full::default()).expect("req");
            assert_eq!(send(&c, req).await.status, 200);
        }
        let after = (a.count(), b.count());
        assert!(
            after.0 - before.0 == 5 || after.1 - before.1 == 5,
            "user {user} was not sticky: {before:?} -> {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_avoids_a_busy_server() {
    let slow = slow_backend(Duration::from_millis(400)).await;
    let fast = backend().await;
    let g = gateway(&two_server_config(slow.addr, fast.addr, "    balance: least_request")).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        let url = g.url("/api/x");
        tasks.push(tokio::spawn(async move {
            send(&c, Request::get(url).body(Full::default()).expect("req")).await.status
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 200);
    }
    assert!(fast.count() >= 14, "least_request sent {} of 20 to the busy server", slow.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_idempotent_requests_on_connect_failure_and_503() {
    let good = backend().await;
    let down = closed_port();
    let extra = "    retry: { attempts: 2, budget_percent: 100 }\n    passive_health: { consecutive_failures: 0 }";
    let g = gateway(&two_server_config(down, good.addr, extra)).await;
    for _ in 0..12 {
        assert_eq!(get(&g.url("/api/x")).await.status, 200);
    }
    assert_eq!(good.count(), 12);
    // A request with a body is never replayed: some POSTs meet the closed server.
    let c = client();
    let mut failed = 0;
    for _ in 0..12 {
        let req = Request::post(g.url("/api/x")).body(Full::new(Bytes::from_static(b"payload"))).expect("req");
        let got = send(&c, req).await;
        if got.status == 502 {
            assert_problem(&got, 502, "backend");
            failed += 1;
        }
    }
    assert!(failed > 0, "POST must not be retried");

    let unavailable = backend_with(status_handler(503), false).await;
    let good = backend().await;
    let g = gateway(&two_server_config(unavailable.addr, good.addr, extra)).await;
    for _ in 0..6 {
        assert_eq!(get(&g.url("/api/x")).await.status, 200);
    }
    assert!(unavailable.count() > 0, "the 503 server was tried");
    assert_eq!(good.count(), 6);

    // The retry budget bounds retries: 2 per second here, whatever the failures.
    let good = backend().await;
    let tight = "    retry: { attempts: 2, budget_percent: 0, min_per_second: 2 }\n    passive_health: { consecutive_failures: 0 }";
    let g = gateway(&two_server_config(closed_port(), good.addr, tight)).await;
    let started = Instant::now();
    let mut failed = 0;
    for _ in 0..15 {
        if get(&g.url("/api/x")).await.status == 502 {
            failed += 1;
        }
    }
    if started.elapsed() < Duration::from_millis(900) {
        // 10 of the 15 requests meet the closed server first (weight 2); at most 2 are retried.
        assert!(failed >= 8, "only {failed} failures: the budget did not bound retries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_health_ejects_a_failing_server() {
    let good = backend().await;
    let down = closed_port();
    let extra = "    retry: { attempts: 1 }\n    passive_health: { consecutive_failures: 2, ejection_time: 30s }";
    let g = gateway(&two_server_config(down, good.addr, extra)).await;
    let mut failures = 0;
    for _ in 0..20 {
        if get(&g.url("/api/x")).await.status == 502 {
            failures += 1;
        }
    }
    assert_eq!(failures, 2, "after 2 consecutive failures the server is ejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_health_checks_take_servers_out_and_back() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let flaky = backend_with(
        Arc::new(move |s: &Seen| {
            let mut r = Response::new(Full::new(Bytes::from_static(b"flaky")));
            if s.uri == "/healthz" && !flag.load(Ordering::SeqCst) {
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            r
        }),
        false,
    )
    .await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends:
  b:
    servers: [ {{ url: "http://{}" }} ]
    health: {{ path: /healthz, interval: 100ms, timeout: 1s, healthy_threshold: 2, unhealthy_threshold: 2 }}
apis:
  api: {{ path: /api, backend: b }}
"#,
        flaky.addr
    );
    let g = gateway(&yaml).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let got = loop {
        let got = get(&g.url("/api/x")).await;
        if got.status == 503 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let v = assert_problem(&got, 503, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:no-healthy-server");
    assert!(got.headers["proxy-status"].to_str().expect("ascii").contains("error=destination_unavailable"));

    healthy.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&g.url("/api/x")).await.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the server never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeout_is_504_backend() {
    let slow = slow_backend(Duration::from_secs(3)).await;
    let g = gateway(&simple_config(slow.addr, "    timeouts: { response: 300ms }", "")).await;
    let started = Instant::now();
    let got = get(&g.url("/api/x")).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let v = assert_problem(&got, 504, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:backend-timeout");
    assert!(got.headers["proxy-status"].to_str().expect("ascii").contains("error=http_response_timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_both_ways() {
    let b = backend_with(ok_handler(), true).await;
    let g = gateway(&simple_config(b.addr, "    protocol: http2", "")).await;
    let got = send(&h2c_client(), Request::get(g.url("/api/h2")).body(Full::default()).expect("req")).await;
    assert_eq!(got.status, 200, "{}", got.text());
    let seen = b.requests();
    assert_eq!(seen[0].version, http::Version::HTTP_2);
    assert_eq!(seen[0].uri.rsplit_once(&b.addr.to_string()).map(|x| x.1), Some("/h2"));
    assert!(seen[0].headers.contains_key("x-request-id"));
}

/// A backend that answers an upgrade with 101 and then echoes bytes back, upper-cased.
async fn upgrade_echo_backend() -> SocketAddr {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                    let upgrade = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = upgrade.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 64];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n].to_ascii_uppercase()).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let mut r = Response::new(Full::<Bytes>::default());
                    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    r.headers_mut().insert("connection", "upgrade".parse().expect("hv"));
                    r.headers_mut().insert("upgrade", "websocket".parse().expect("hv"));
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    let addr = upgrade_echo_backend().await;
    let g = gateway(&simple_config(addr, "", "")).await;
    let mut s = TcpStream::connect(g.addr).await.expect("connect");
    s.write_all(b"GET /api/ws HTTP/1.1\r\nHost: gw\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("timely").expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"hello tunnel").await.expect("write");
    let mut echoed = Vec::new();
    while echoed.len() < 12 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("timely").expect("read");
        assert!(n > 0, "tunnel closed early");
        echoed.extend_from_slice(&buf[..n]);
    }
    assert_eq!(echoed, b"HELLO TUNNEL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let b = backend().await;
    let g = gateway(&simple_config(b.addr, "", "")).await;
    let mut s = TcpStream::connect(g.addr).await.expect("connect");
    s.write_all(b"POST /api/upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("timely").expect("read");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(b"hello").await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("timely").expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let seen = b.requests();
    assert_eq!(seen[0].body.as_ref(), b"hello");
    assert!(!seen[0].headers.contains_key("expect"), "Expect is handled at the gateway");
}

/// Peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_with_bounded_memory() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    const TOTAL: u64 = 1 << 30; // 1 GiB
    const CHUNK: usize = 256 * 1024;
    // A backend that counts the body as it streams, never holding it.
    let received = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let mut body = req.into_body();
                        while let Some(Ok(frame)) = body.frame().await {
                            if let Some(d) = frame.data_ref() {
                                counter.fetch_add(d.len() as u64, Ordering::Relaxed);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"got it"))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    let g = gateway(&simple_config(addr, "", "  limits: { body_bytes: 2GiB }")).await;
    let before = peak_rss_kib();
    let sent = Arc::new(AtomicUsize::new(0));
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let stream = futures_util::stream::iter(
        (0..(TOTAL as usize / CHUNK))
            .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))),
    );
    let body = http_body_util::StreamBody::new(stream);
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = Request::post(g.url("/api/upload")).header("content-length", TOTAL.to_string()).body(body).expect("req");
    let resp = tokio::time::timeout(Duration::from_secs(120), c.request(req)).await.expect("timely").expect("response");
    assert_eq!(resp.status(), 200);
    sent.store(1, Ordering::Relaxed);
    assert_eq!(received.load(Ordering::Relaxed), TOTAL);
    let growth_mib = (peak_rss_kib().saturating_sub(before)) / 1024;
    assert!(growth_mib < 64, "peak memory grew by {growth_mib} MiB while streaming 1 GiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing() {
    let b = backend().await;
    let base = simple_config(b.addr, "", "");
    let g = gateway(&base).await;
    let with_extra = format!("{base}  extra:\n    path: /extra\n    backend: b\n");
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (stop, ok, url) = (stop.clone(), ok.clone(), g.url("/api/x"));
        tasks.push(tokio::spawn(async move {
            let c = client();
            let mut failures = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let got = send(&c, Request::get(url.clone()).body(Full::default()).expect("req")).await;
                if got.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.push(got.status);
                }
            }
            failures
        }));
    }
    for i in 0..20 {
        let yaml = if i % 2 == 0 { &with_extra } else { &base };
        g.reload_with(yaml).await.expect("reload");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        assert_eq!(t.await.expect("join"), Vec::<StatusCode>::new());
    }
    assert!(ok.load(Ordering::Relaxed) > 20);
    assert_eq!(g.gw.generation(), 21);
    // An invalid config is refused and the old one keeps serving.
    assert!(g.reload_with("listeners: [ { name: main, bind: nowhere } ]").await.is_err());
    assert_eq!(get(&g.url("/api/x")).await.status, 200);
    assert_eq!(g.gw.generation(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_access_log() {
    let b = backend().await;
    let yaml = simple_config(b.addr, "", "").replace("format: json", "format: combined");
    let g = gateway(&yaml).await;
    let req = Request::get(g.url("/api/x?subscription-key=secret123&a=1"))
        .header("user-agent", "curl/8")
        .header("referer", "http://ref.test/")
        .header("authorization", "Bearer topsecret")
        .body(Full::default())
        .expect("req");
    assert_eq!(send(&client(), req).await.status, 200);
    let lines = g.log_lines().await;
    let line = lines.last().expect("a line");
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(line.contains("\"GET /api/x?subscription-key=[redacted]&a=1 HTTP/1.1\" 200 "), "{line}");
    assert!(line.ends_with("\"http://ref.test/\" \"curl/8\""), "{line}");
    assert!(!line.contains("secret123") && !line.contains("topsecret"));
    let _ = BodyExt::boxed(Full::<Bytes>::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504_with_connection_timeout() {
    // A listener that never accepts, its backlog filled: further SYNs are dropped, so a connect
    // hangs until the gateway's connect timeout (loopback only, no unroutable address needed).
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(s);
        }
    }
    let g = gateway(&simple_config(addr, "    timeouts: { connect: 300ms }\n    retry: { attempts: 1 }", "")).await;
    let started = Instant::now();
    let got = get(&g.url("/api/x")).await;
    let v = assert_problem(&got, 504, "backend");
    assert_eq!(v["type"], "urn:gatehouse:error:backend-connect");
    assert!(got.headers["proxy-status"].to_str().expect("ascii").contains("error=connection_timeout"));
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_until_idle_timeout() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    // A backend that counts the connections it accepts.
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    let g = gateway(&simple_config(addr, "    timeouts: { idle: 400ms }", "")).await;
    for _ in 0..10 {
        assert_eq!(get(&g.url("/api/x")).await.status, 200);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "sequential requests share one pooled connection");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get(&g.url("/api/x")).await.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "a connection idle past timeouts.idle is not reused");

    // A reload that leaves the backend unchanged keeps its pool; one that changes it does not.
    let base = simple_config(addr, "    timeouts: { idle: 400ms }", "");
    g.reload_with(&format!("{base}  extra:\n    path: /extra\n    backend: b\n")).await.expect("reload");
    assert_eq!(get(&g.url("/api/x")).await.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "an unchanged backend keeps its connections across a reload");
    g.reload_with(&simple_config(addr, "    timeouts: { idle: 401ms }", "")).await.expect("reload");
    assert_eq!(get(&g.url("/api/x")).await.status, 200);
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "a changed backend starts with fresh connections");
}

/// An HTTP/1.0 backend (one response per connection, closed after it) behind an HTTP/1.1 client:
/// the client keeps HTTP/1.1 and its keep-alive connection.
#[tokio::test]
async fn an_http10_backend_does_not_downgrade_the_client() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = sock.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello").await;
            });
        }
    });
    let g = gateway(&simple_config(addr, "", "")).await;
    let mut conn = TcpStream::connect(g.addr).await.expect("connect");
    for _ in 0..2 {
        conn.write_all(b"GET /api/x HTTP/1.1\r\nHost: test\r\n\r\n").await.expect("write");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while !got.ends_with(b"hello") {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
                .await
                .expect("timely")
                .expect("read");
            assert!(n > 0, "the gateway closed the client connection: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(!text.contains("connection: close"), "{text}");
    }
}
