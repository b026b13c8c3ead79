//! The gateway's own HTTP/1.1 server (requests without a body) on the wire: framing of HEAD and
//! HTTP/1.0 answers, keep-alive, `max_requests_per_connection`, and a client hanging up on a
//! request still waiting for its backend.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Reads what the gateway sends until it closes the connection (or 5 s pass).
async fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

#[tokio::test]
async fn head_answers_keep_the_length_and_send_no_body() {
    let b = backend().await;
    let gw = gateway(&simple_config(b.addr, "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"HEAD /api/x HTTP/1.1\r\nHost: a\r\n\r\nGET /api/y HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let (text, closed) = read_to_close(&mut s).await;
    assert!(closed, "the connection stayed open after `Connection: close`: {text}");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    // The backend's body would be "backend saw HEAD /x" (the API's prefix is not passed on): its
    // length is stated, and nothing of it follows.
    assert!(head.contains("content-length: 19"), "{head}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n"), "the HEAD answer carried a body: {rest:?}");
    assert!(rest.ends_with("backend saw GET /y"), "{rest}");
    assert!(rest.contains("connection: close"), "{rest}");
    assert_eq!(b.count(), 2);
}

#[tokio::test]
async fn http10_clients_get_http10_and_keep_alive_only_when_asked() {
    let b = backend().await;
    let gw = gateway(&simple_config(b.addr, "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /api/1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /api/2 HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let (text, closed) = read_to_close(&mut s).await;
    assert!(closed, "an HTTP/1.0 request without keep-alive left the connection open: {text}");
    let answers: Vec<&str> = text.split("HTTP/1.0 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(answers[0].contains("connection: keep-alive\r\n"), "{}", answers[0]);
    assert!(answers[0].ends_with("backend saw GET /1"), "{}", answers[0]);
    assert!(!answers[1].contains("keep-alive"), "{}", answers[1]);
    assert!(answers[1].ends_with("backend saw GET /2"), "{}", answers[1]);
}

/// `edge.limits.max_requests_per_connection` on HTTP/1: the last allowed answer says
/// `connection: close`, the connection ends, and a further pipelined request is not served.
#[tokio::test]
async fn max_requests_per_connection_closes_http1_after_the_last() {
    let b = backend().await;
    let gw = gateway(&simple_config(b.addr, "", "  limits: { max_requests_per_connection: 2 }")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    let one = b"GET /api/n HTTP/1.1\r\nHost: a\r\n\r\n";
    s.write_all(&[&one[..], one, one].concat()).await.expect("write");
    let (text, closed) = read_to_close(&mut s).await;
    assert!(closed, "still open after the maximum: {text}");
    let answers: Vec<&str> = text.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 2, "{text}");
    assert!(!answers[0].contains("connection: close"), "{}", answers[0]);
    assert!(answers[1].contains("connection: close"), "{}", answers[1]);
    assert_eq!(b.count(), 2, "the request past the maximum reached the backend");
}

/// A client that hangs up while its body-less request waits for the backend cancels the backend
/// call: the backend sees its connection close (nginx's `proxy_ignore_client_abort off`).
#[tokio::test]
async fn a_client_hang_up_cancels_the_backend_call() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (got_request, request_seen) = tokio::sync::oneshot::channel();
    let (got_eof, backend_closed) = tokio::sync::oneshot::channel();
    // A backend that reads the request, never answers, and reports when its peer hangs up.
    let backend = tokio::spawn(async move {
        let (mut conn, _) = listener.accept().await.expect("accept");
        let mut seen = Vec::new();
        let mut buf = [0u8; 1024];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed before the request");
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = got_request.send(());
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = got_eof.send(());
    });
    let gw = gateway(&simple_config(addr, "", "")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"GET /api/wait HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
    tokio::time::timeout(Duration::from_secs(5), request_seen)
        .await
        .expect("the backend got the request")
        .expect("seen");
    drop(s);
    tokio::time::timeout(Duration::from_secs(5), backend_closed)
        .await
        .expect("the backend call was not cancelled when the client hung up")
        .expect("eof");
    backend.abort();
}

/// A head the guard judged sound but whose target `http` cannot hold (a raw `<`, which a URI
/// path must percent-encode):
/// an edge-layer problem+json 400 that names the target, in the access log too, the connection
/// closed, and nothing reaches the backend. (hyper answered a bare 400.)
#[tokio::test]
async fn a_target_no_uri_can_hold_is_an_edge_400_naming_it() {
    let b = backend().await;
    let gw = gateway(&simple_config(b.addr, "", "")).await;
    let (answers, closed, _) = crate::framing::one_shot(gw.addr, b"GET /api/a<b HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(closed, "the connection stayed open after a refused head");
    assert_eq!(answers.len(), 1, "{answers:?}");
    let problem = answers[0].check_problem(&[400]).unwrap_or_else(|e| panic!("{e}"));
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("request target")), "{problem}");
    crate::framing::settle().await;
    assert_eq!(b.count(), 0);
    assert_eq!(gw.logged(400, "edge").await, 1, "{:?}", gw.log_lines().await);
}
