//! The own HTTP/1 server on an in-memory stream, with handlers written in the test: requests
//! built from the guard's positions, answers written whole and in order, a client's hang-up
//! cancelling its handler.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::edge::guard::{ConnShared, GuardLimits, Wake};
use http::header;

fn guard(server: DuplexStream) -> H1Guard<DuplexStream> {
    let limits = GuardLimits {
        header_bytes: 4096,
        headers: 50,
        uri_bytes: 1024,
        body_bytes: 1024,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        body_timeout: Duration::from_secs(5),
        body_min_rate: 0,
    };
    H1Guard::new(server, limits, Arc::new(ConnShared::default()), None, false)
}

async fn next_request(g: &mut H1Guard<DuplexStream>) -> Request<ClientBody> {
    next_request_and_keep_alive(g).await.0
}

/// The next request, and whether its client lets the connection stay open.
async fn next_request_and_keep_alive(g: &mut H1Guard<DuplexStream>) -> (Request<ClientBody>, bool) {
    let wake = tokio::time::timeout(Duration::from_secs(2), poll_fn(|cx| g.poll_wake(cx))).await;
    assert_eq!(wake.expect("timely").expect("wake"), Wake::Http1);
    let (head, fields) = g.take_plain_head().expect("a body-less head");
    let keep_alive = fields.keeps_alive();
    (request(&head, fields, None).expect("a request"), keep_alive)
}

async fn read_until(client: &mut DuplexStream, end: &[u8]) -> String {
    read_until_n(client, end, 1).await
}

/// Reads until `end` has been seen `n` times.
async fn read_until_n(client: &mut DuplexStream, end: &[u8], n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while got.windows(end.len()).filter(|w| *w == end).count() < n {
        let n =
            tokio::time::timeout(Duration::from_secs(2), client.read(&mut buf)).await.expect("timely").expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).expect("utf-8")
}

fn without_date(text: &str) -> String {
    text.split("\r\n").filter(|l| !l.starts_with("date: ")).collect::<Vec<_>>().join("\r\n")
}

#[tokio::test]
async fn a_request_is_built_from_the_guards_positions() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client
        .write_all(b"\r\nDELETE /orders/7?x=1 HTTP/1.1\r\nHost: api.test\r\nX-Two: a\r\nx-two:  b \r\nEmpty:\r\n\r\n")
        .await
        .expect("send");
    let req = next_request(&mut g).await;
    assert_eq!(req.method(), Method::DELETE);
    assert_eq!(req.uri().path(), "/orders/7");
    assert_eq!(req.uri().query(), Some("x=1"));
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "api.test");
    let two: Vec<_> = req.headers().get_all("x-two").iter().map(|v| v.to_str().unwrap_or("")).collect();
    assert_eq!(two, ["a", "b"]);
    assert_eq!(req.headers()["empty"], "");
}

#[tokio::test]
async fn http10_keeps_alive_only_when_asked() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("send");
    let (req, keep_alive) = next_request_and_keep_alive(&mut g).await;
    assert_eq!(req.version(), Version::HTTP_10);
    assert!(!keep_alive);
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client.write_all(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").await.expect("send");
    assert!(next_request_and_keep_alive(&mut g).await.1);
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n").await.expect("send");
    assert!(!next_request_and_keep_alive(&mut g).await.1);
}

async fn answer_with(
    g: &mut H1Guard<DuplexStream>,
    req: &Request<ClientBody>,
    handler: impl Future<Output = Result<Response<ResponseBody>, Infallible>>,
) -> Next {
    let mut slot = std::pin::pin!(Some(handler));
    let mut out = Vec::new();
    let http10 = req.version() == Version::HTTP_10;
    let mut spare = None;
    answer(g, slot.as_mut(), req.method(), http10, req.version() == Version::HTTP_11, || true, &mut out, &mut spare)
        .await
}

/// Two pipelined requests: the slow first answer is written before the fast second one, each
/// whole (head and body), and the connection stays open.
#[tokio::test]
async fn pipelined_answers_keep_their_order() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nHEAD /fast HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("send");
    let first = next_request(&mut g).await;
    let slow = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(Response::new(ResponseBody::full(Bytes::from_static(b"slow"))))
    };
    assert_eq!(answer_with(&mut g, &first, slow).await, Next::KeepAlive);
    let second = next_request(&mut g).await;
    assert_eq!(second.uri().path(), "/fast");
    let fast = async {
        let mut r = Response::new(ResponseBody::empty());
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        Ok(r)
    };
    assert_eq!(answer_with(&mut g, &second, fast).await, Next::KeepAlive);
    let text = read_until_n(&mut client, b"\r\n\r\n", 2).await;
    assert_eq!(
        without_date(&text),
        "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslowHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"
    );
}

/// A client that hangs up while its request is being handled: the handler is dropped (its
/// backend call with it) and the connection closes without an answer.
#[tokio::test]
async fn a_hang_up_cancels_the_handler() {
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("send");
    let req = next_request(&mut g).await;
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = Dropped(dropped.clone());
    let never = async move {
        let _flag = flag;
        std::future::pending::<()>().await;
        Ok(Response::new(ResponseBody::empty()))
    };
    let hang_up = async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(client);
    };
    let (next, ()) =
        tokio::time::timeout(Duration::from_secs(2), async { tokio::join!(answer_with(&mut g, &req, never), hang_up) })
            .await
            .expect("the hang-up was noticed");
    assert_eq!(next, Next::Close);
    assert!(dropped.load(Ordering::SeqCst), "the handler was not dropped");
}

/// The head and a body that is ready go out in one write; a `Connection: close` from the
/// handler ends the connection after the answer.
#[tokio::test]
async fn a_close_from_the_handler_ends_the_connection() {
    let (mut client, server) = tokio::io::duplex(4096);
    let mut g = guard(server);
    client.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("send");
    let req = next_request(&mut g).await;
    let closing = async {
        let mut r = Response::new(ResponseBody::full(Bytes::from_static(b"bye")));
        *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        Ok(r)
    };
    assert_eq!(answer_with(&mut g, &req, closing).await, Next::Close);
    let text = read_until(&mut client, b"bye").await;
    assert_eq!(
        without_date(&text),
        "HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 3\r\n\r\nbye"
    );
}

/// Makes the handler's response for one differential case.
type Respond = fn() -> Response<ResponseBody>;

/// The bytes a client reads for one request and one response: through hyper's HTTP/1 server
/// (`hyper: true`, what served these requests before) or through this one.
async fn wire(request: &'static [u8], respond: Respond, hyper: bool) -> String {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    client.write_all(request).await.expect("send");
    let served = if hyper {
        let svc = hyper::service::service_fn(move |_req| async move { Ok::<_, Infallible>(respond()) });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        tokio::spawn(async move {
            let _ = conn.await;
        })
    } else {
        tokio::spawn(async move {
            let mut g = guard(server);
            let (req, keep_alive) = next_request_and_keep_alive(&mut g).await;
            let mut slot = std::pin::pin!(Some(async move { Ok::<_, Infallible>(respond()) }));
            let (mut out, mut spare) = (Vec::new(), None);
            let http10 = req.version() == Version::HTTP_10;
            if answer(&mut g, slot.as_mut(), req.method(), http10, keep_alive, || true, &mut out, &mut spare).await
                == Next::Close
            {
                let _ = g.shutdown().await;
            } else {
                // Kept open, as hyper keeps it: the client stops reading when it has all.
                std::future::pending::<()>().await;
            }
        })
    };
    // Everything the server sends until it closes or goes quiet.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(Duration::from_millis(150), client.read(&mut buf)).await {
        got.extend_from_slice(&buf[..n]);
    }
    served.abort();
    String::from_utf8(got).expect("utf-8")
}

/// A response as a comparable value: the status line, the header lines sorted (a `Date`
/// value masked), the body.
fn normalized(wire: &str) -> (String, Vec<String>, String) {
    let (head, body) = wire.split_once("\r\n\r\n").unwrap_or((wire, ""));
    let mut lines =
        head.split("\r\n").map(|l| if l.starts_with("date: ") { "date: *".to_owned() } else { l.to_owned() });
    let status = lines.next().unwrap_or_default();
    let mut fields: Vec<String> = lines.collect();
    fields.sort();
    (status, fields, body.to_owned())
}

/// Differential: for each kind of request and response these requests get, the own server
/// writes what hyper's wrote (status line, the same header lines in any order, the same body
/// and framing), so clients see no difference.
#[tokio::test]
async fn answers_match_hypers_on_the_wire() {
    fn with(status: u16, body: &'static [u8], fields: &[(&'static str, &'static str)]) -> Response<ResponseBody> {
        let mut r = Response::new(ResponseBody::full(Bytes::from_static(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
        for (n, v) in fields {
            r.headers_mut().append(*n, HeaderValue::from_static(v));
        }
        r
    }
    let get11: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: [(&[u8], Respond); 11] = [
        (get11, || with(200, b"hello", &[("x-a", "1"), ("x-b", "2")])),
        (get11, || with(404, b"", &[])),
        (b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", || with(200, b"", &[("content-length", "1234")])),
        (get11, || with(204, b"", &[])),
        (get11, || with(304, b"", &[("etag", "\"v1\"")])),
        (b"GET / HTTP/1.0\r\n\r\n", || with(200, b"x", &[])),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", || with(200, b"x", &[])),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", || with(200, b"bye", &[])),
        (get11, || with(503, b"down", &[("connection", "close")])),
        (get11, || {
            let mut r = with(418, b"", &[]);
            r.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(b"Short and stout"));
            r
        }),
        (get11, || with(200, b"dated", &[("date", "Tue, 01 Jan 2030 00:00:00 GMT")])),
    ];
    for (request, respond) in cases {
        let theirs = wire(request, respond, true).await;
        let ours = wire(request, respond, false).await;
        assert!(theirs.starts_with("HTTP/1."), "hyper answered nothing to {:?}", String::from_utf8_lossy(request));
        assert_eq!(
            normalized(&ours),
            normalized(&theirs),
            "for {:?}:\nours:   {ours:?}\nhyper's: {theirs:?}",
            String::from_utf8_lossy(request)
        );
    }
}

/// A handler future per request answers through the same trait as the listener's loop.
impl<F> super::Respond for Option<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    fn poll_response(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<ResponseBody>> {
        let Some(handler) = self.as_mut().as_pin_mut() else {
            return Poll::Pending;
        };
        let Poll::Ready(Ok(response)) = handler.poll(cx) else {
            return Poll::Pending;
        };
        self.set(None);
        Poll::Ready(response)
    }

    fn cancel(mut self: Pin<&mut Self>) {
        self.set(None);
    }
}
