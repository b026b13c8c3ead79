//! `edge.limits` on the wire (reliability.md §2.9): head and body limits answer 414/431/413 before
//! any backend is contacted, the header deadline answers 408, idle keep-alive connections are
//! closed, busy ones are not, and the connection cap holds.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::framing::{framing_config, one_shot, settle, Conn, WAIT};
use crate::support::*;

fn limits_config(addr: SocketAddr, limits: &str) -> String {
    framing_config(addr, &format!("  limits: {{ {limits} }}"))
}

/// Sends on a fresh connection; expects exactly one edge problem with `status`, then a close.
async fn expect_status(addr: SocketAddr, bytes: &[u8], status: u16) {
    let case = String::from_utf8_lossy(&bytes[..bytes.len().min(60)]).into_owned();
    let (responses, closed, rest) = one_shot(addr, bytes).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(responses.len(), 1, "{case:?}: {statuses:?} (unparsed {rest:?})");
    let r = &responses[0];
    r.check_problem(&[status]).unwrap_or_else(|e| panic!("{case:?}: {e}"));
    assert_eq!(r.header("connection"), Some("close"), "{case:?}");
    assert!(closed, "{case:?}: the connection stayed open");
}

/// Sends on a fresh connection and expects a 200 from the backend.
async fn expect_ok(addr: SocketAddr, bytes: &[u8]) {
    let mut c = Conn::open(addr).await;
    c.send(bytes).await;
    let r = c.response(WAIT).await.unwrap_or_else(|| panic!("no response: {}", c.leftover()));
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_is_431() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "headers: 5")).await;
    // Host plus four: exactly the limit.
    let four: String = (0..4).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_ok(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n{four}\r\n").as_bytes()).await;
    let ten: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_status(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n{ten}\r\n").as_bytes(), 431).await;
    // Many headers without the end of the head yet: refused without waiting for it.
    let started = Instant::now();
    let many: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    expect_status(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n{many}").as_bytes(), 431).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    settle().await;
    assert_eq!(b.count(), 1);
}

/// A head for the gateway-answered `POST /hello/` with exactly `fields` header fields.
fn hello_with_fields(fields: usize) -> Vec<u8> {
    let extra: String = (0..fields - 2).map(|i| format!("X-H{i}: v\r\n")).collect();
    format!("POST /hello/ HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n{extra}\r\n").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_count_limit_holds_at_and_beyond_a_hundred() {
    // hyper's own parser takes 100 fields unless told otherwise; the configured limit decides,
    // at the default (100) and above it, and the answer beyond it is the gateway's 431.
    let b = backend().await;
    for (limit, config) in [(100, "header_bytes: 64KiB"), (200, "headers: 200, header_bytes: 64KiB")] {
        let g = gateway(&limits_config(b.addr, config)).await;
        let mut c = Conn::open(g.addr).await;
        c.send(&hello_with_fields(limit)).await;
        let r = c.response(WAIT).await.unwrap_or_else(|| panic!("limit {limit}: no response: {}", c.leftover()));
        assert_eq!(r.status, 201, "limit {limit}: {}", r.text());
        expect_status(g.addr, &hello_with_fields(limit + 1), 431).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_too_large_is_431() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "header_bytes: 1KiB")).await;
    let fits = "v".repeat(600);
    expect_ok(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {fits}\r\n\r\n").as_bytes()).await;
    let big = "v".repeat(2000);
    expect_status(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {big}\r\n\r\n").as_bytes(), 431)
        .await;
    // Several headers that together exceed the limit.
    let sum: String = (0..6).map(|i| format!("X-H{i}: {}\r\n", "v".repeat(300))).collect();
    expect_status(g.addr, format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n{sum}\r\n").as_bytes(), 431).await;
    // A head that never ends is refused once it is too large, not when the deadline passes.
    let started = Instant::now();
    let endless = format!("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-Big: {}", "v".repeat(8000));
    expect_status(g.addr, endless.as_bytes(), 431).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    settle().await;
    assert_eq!(b.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_uri_is_414() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "uri_bytes: 256")).await;
    let fits = format!("/api/{}", "a".repeat(240));
    expect_ok(g.addr, format!("GET {fits} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes()).await;
    let long = format!("/api/{}", "a".repeat(300));
    expect_status(g.addr, format!("GET {long} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes(), 414).await;
    // A long query counts too.
    let query = format!("/api/x?q={}", "a".repeat(300));
    expect_status(g.addr, format!("GET {query} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes(), 414).await;
    // A request line that never ends is refused as soon as it is too long.
    let started = Instant::now();
    expect_status(g.addr, format!("GET /api/{}", "a".repeat(5000)).as_bytes(), 414).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    settle().await;
    assert_eq!(b.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_413_before_the_backend() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "body_bytes: 100")).await;
    expect_ok(
        g.addr,
        format!("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\n{}", "a".repeat(100)).as_bytes(),
    )
    .await;
    // Only the head is sent: the answer must not wait for the body.
    let started = Instant::now();
    expect_status(g.addr, b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 101\r\n\r\n", 413).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    expect_status(g.addr, b"POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 9999999999999\r\n\r\n", 413).await;
    settle().await;
    assert_eq!(b.count(), 1);
    assert_eq!(b.requests()[0].body.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_refused() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "body_bytes: 100")).await;
    let chunk = format!("3c\r\n{}\r\n", "a".repeat(60));
    let head = "POST /api/big HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let follow = "GET /api/after HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
    // 120 bytes in two chunks, in one write and chunk by chunk; a request follows on the same
    // connection. The answer is 413 (or a closed connection); if the gateway keeps the
    // connection, it knew where the body ended and serves the next request.
    for split in [false, true] {
        let mut c = Conn::open(g.addr).await;
        if split {
            c.send(head.as_bytes()).await;
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                c.send(chunk.as_bytes()).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.send(format!("0\r\n\r\n{follow}").as_bytes()).await;
        } else {
            c.send(format!("{head}{chunk}{chunk}0\r\n\r\n{follow}").as_bytes()).await;
        }
        if let Some(r) = c.response(WAIT).await {
            r.check_problem(&[413]).unwrap_or_else(|e| panic!("split {split}: {e}"));
            if let Some(next) = c.response(WAIT).await {
                assert_eq!(next.status, 200, "split {split}: {}", next.text());
                assert_eq!(next.text(), "backend saw GET /after");
            }
        }
        assert!(c.closed_within(WAIT).await, "split {split}: the connection stayed open");
    }
    // Within the limit, chunked passes.
    expect_ok(
        g.addr,
        format!("POST /api/small HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n")
            .as_bytes(),
    )
    .await;
    settle().await;
    for s in b.requests() {
        let complete = s.uri == "/small" || s.uri == "/after" || s.body.is_empty();
        assert!(complete, "the backend got a body over the limit: {} {}", s.uri, s.body.len());
    }
    assert!(b.requests().iter().any(|s| s.uri == "/small" && s.body.len() == 60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_head_gets_408_while_others_are_served() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 600ms, idle_timeout: 5s")).await;
    let started = Instant::now();
    let mut slow = Conn::open(g.addr).await;
    slow.send(b"GET /api/slow HTTP/1.1\r\nHost: gw.test\r\n").await;
    // Meanwhile another client is served at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = get(&g.url("/api/fast")).await;
    assert_eq!(got.status, 200);
    assert!(started.elapsed() < Duration::from_millis(550), "the normal client waited {:?}", started.elapsed());

    let r = slow.response(Duration::from_secs(3)).await.expect("a 408");
    let took = started.elapsed();
    r.check_problem(&[408]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(took >= Duration::from_millis(500), "408 after only {took:?}");
    assert!(took < Duration::from_millis(2000), "408 after {took:?}");
    assert!(slow.closed_within(Duration::from_secs(1)).await, "the connection stayed open after 408");

    // Trickling bytes does not extend the deadline.
    let started = Instant::now();
    let mut trickle = Conn::open(g.addr).await;
    trickle.send(b"GET /api/trickle HTTP/1.1\r\n").await;
    let mut answered = None;
    for i in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trickle.send(format!("X-T{i}: v\r\n").as_bytes()).await;
        if let Some(r) = trickle.response(Duration::from_millis(1)).await {
            answered = Some(r);
            break;
        }
    }
    let r = match answered {
        Some(r) => r,
        None => trickle.response(Duration::from_secs(1)).await.expect("a 408 for the trickling client"),
    };
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_millis(2000), "408 after {:?}", started.elapsed());
    settle().await;
    let uris: Vec<String> = b.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/fast"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 5s, idle_timeout: 500ms")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let r = c.response(WAIT).await.expect("a response");
    assert_eq!(r.status, 200);
    let idle_from = Instant::now();
    // Still open shortly before the idle timeout…
    assert!(!c.closed_within(Duration::from_millis(300)).await, "closed after {:?}", idle_from.elapsed());
    // …closed shortly after, quietly.
    assert!(c.closed_within(Duration::from_secs(2)).await, "the idle connection was not closed");
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(450), "closed after {took:?}");
    assert!(took < Duration::from_millis(1500), "closed after {took:?}");
    assert!(c.leftover().is_empty(), "an idle close writes nothing: {:?}", c.leftover());

    // A connection that never sends anything is closed too (after the header deadline).
    let g = gateway(&limits_config(b.addr, "header_timeout: 500ms, idle_timeout: 500ms")).await;
    let mut c = Conn::open(g.addr).await;
    assert!(c.closed_within(Duration::from_secs(2)).await, "a silent connection was not closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_response_is_not_cut_by_the_idle_timeout() {
    let b = slow_backend(Duration::from_millis(1200)).await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 300ms, idle_timeout: 300ms")).await;
    let started = Instant::now();
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/slow HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let r = c.response(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("cut after {:?}", started.elapsed()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "backend saw GET /slow");
    assert!(started.elapsed() >= Duration::from_millis(1100));
    // The connection is still usable right after the slow answer.
    c.send(b"GET /api/again HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let r = c.response(Duration::from_secs(5)).await.expect("a second response on the same connection");
    assert_eq!(r.status, 200);

    // A slow upload-then-answer with a body on the same terms.
    let mut c = Conn::open(g.addr).await;
    c.send(b"POST /api/slow HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello").await;
    let r = c.response(Duration::from_secs(5)).await.expect("a response");
    assert_eq!(r.status, 200);
}

/// The idle period starts when the last response is complete, not when its request arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_time_counts_from_the_end_of_the_last_response() {
    let b = slow_backend(Duration::from_millis(400)).await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 5s, idle_timeout: 600ms")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    let r = c.response(WAIT).await.expect("a response");
    assert_eq!(r.status, 200);
    let idle_from = Instant::now();
    assert!(!c.closed_within(Duration::from_millis(400)).await, "closed {:?} after the response", idle_from.elapsed());
    // Still usable: a request sent now is served.
    c.send(b"GET /api/y HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a second response").status, 200);
    let idle_from = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)).await, "the idle connection was not closed");
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(550), "closed {took:?} after the response");
}

/// `idle_timeout` above hyper's own 30 s header-read timeout must still hold: the guard owns
/// the head and idle deadlines. It waits 31 s, in parallel with the rest of the suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_above_30s_is_honoured() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 60s, idle_timeout: 60s")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a response").status, 200);
    assert!(!c.closed_within(Duration::from_secs(31)).await, "an idle connection was closed before idle_timeout");
    c.send(b"GET /api/y HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a second response").status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_a_third_connection_until_one_closes() {
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "max_connections: 2, header_timeout: 10s, idle_timeout: 10s")).await;
    let req = b"GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    let mut c1 = Conn::open(g.addr).await;
    c1.send(req).await;
    assert_eq!(c1.response(WAIT).await.expect("c1 served").status, 200);
    let mut c2 = Conn::open(g.addr).await;
    c2.send(req).await;
    assert_eq!(c2.response(WAIT).await.expect("c2 served").status, 200);

    // The third connection gets through the kernel's backlog but is not served.
    let mut c3 = Conn::open(g.addr).await;
    c3.send(req).await;
    assert!(c3.response(Duration::from_millis(700)).await.is_none(), "a third connection was served");
    // Both held connections still work.
    c1.send(req).await;
    assert_eq!(c1.response(WAIT).await.expect("c1 again").status, 200);

    drop(c2);
    let started = Instant::now();
    let r = c3.response(Duration::from_secs(3)).await.expect("c3 served once c2 closed");
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(b.count(), 4);
}

/// A keep-alive connection idle for longer than the guard's park delay (250 ms) lets go of
/// hyper's connection and buffers, and picks up where it was when the client sends again:
/// pipelined requests are answered in order, the header deadline and the framing checks hold
/// as on a connection that never paused, and the idle timeout still counts from the last
/// response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_keep_alive_connection_resumes_as_before() {
    const PARKED: Duration = Duration::from_millis(400);
    let b = backend().await;
    let g = gateway(&limits_config(b.addr, "header_timeout: 600ms, idle_timeout: 1500ms")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/one HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a response").text(), "backend saw GET /one");
    tokio::time::sleep(PARKED).await;
    c.send(b"GET /api/two HTTP/1.1\r\nHost: gw.test\r\n\r\nGET /api/three HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("the first pipelined response").text(), "backend saw GET /two");
    assert_eq!(c.response(WAIT).await.expect("the second pipelined response").text(), "backend saw GET /three");
    // A head split across the pause and what follows it.
    tokio::time::sleep(PARKED).await;
    c.send(b"GET /api/four HTTP/1.1\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.send(b"Host: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a response").text(), "backend saw GET /four");
    // A head that stalls after a pause gets its 408 from the header deadline.
    tokio::time::sleep(PARKED).await;
    let started = Instant::now();
    c.send(b"GET /api/stalled HTTP/1.1\r\n").await;
    let r = c.response(Duration::from_secs(3)).await.expect("a 408");
    r.check_problem(&[408]).unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_millis(1500), "408 after {took:?}");
    assert!(c.closed_within(WAIT).await, "the connection stayed open after 408");

    // Ambiguous framing after a pause: refused, closed, never forwarded.
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/five HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a response").status, 200);
    tokio::time::sleep(PARKED).await;
    c.send(b"POST /api/smuggle HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let r = c.response(WAIT).await.expect("a 400");
    r.check_problem(&[400]).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.closed_within(WAIT).await, "the connection stayed open after 400");

    // Parked, the idle timeout still closes the connection, quietly.
    let mut c = Conn::open(g.addr).await;
    c.send(b"GET /api/six HTTP/1.1\r\nHost: gw.test\r\n\r\n").await;
    assert_eq!(c.response(WAIT).await.expect("a response").status, 200);
    let idle_from = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)).await, "the idle connection was not closed");
    let took = idle_from.elapsed();
    assert!(took >= Duration::from_millis(1400), "closed after {took:?}");
    assert!(c.leftover().is_empty(), "an idle close writes nothing: {:?}", c.leftover());

    settle().await;
    let uris: Vec<String> = b.requests().into_iter().map(|s| s.uri).collect();
    assert_eq!(uris, ["/one", "/two", "/three", "/four", "/five", "/six"]);
}
