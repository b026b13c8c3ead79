//! The client against a scripted origin on loopback: each accepted request gets the next canned
//! reply, and the test sees the raw requests the origin received.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::pool::{Pool, PoolConfig, SendError};
use super::super::{tls, BackendBody, Protocol, ServerSpec};
use super::Error;
use crate::body::UpstreamBody;

/// What the origin does for one request.
#[derive(Clone, Copy)]
enum Reply {
    /// Send these bytes and wait for the next request.
    Send(&'static [u8]),
    /// Send these bytes and close the connection.
    SendClose(&'static [u8]),
    /// Read only the head, answer at once, never read the body, close later.
    Early(&'static [u8]),
    /// Answer with a chunked head at once, then read the whole body (by its length) and send
    /// its size as the only chunk: a server that answers while it reads.
    Echo,
    /// Read the request, say nothing for three seconds, close.
    Silent,
}

struct Origin {
    spec: ServerSpec,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    accepts: Arc<AtomicUsize>,
}

async fn origin(replies: Vec<Reply>) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let requests = Arc::new(Mutex::new(Vec::new()));
    let accepts = Arc::new(AtomicUsize::new(0));
    let replies = Arc::new(replies);
    let next = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (requests.clone(), accepts.clone());
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(sock, replies.clone(), next.clone(), seen.clone()));
        }
    });
    let url = format!("http://{addr}");
    Origin {
        spec: ServerSpec {
            scheme: http::uri::Scheme::HTTP,
            authority: addr.to_string().parse().expect("authority"),
            url,
            base_path: String::new(),
            weight: 1,
        },
        requests,
        accepts,
    }
}

async fn serve(mut sock: TcpStream, replies: Arc<Vec<Reply>>, next: Arc<AtomicUsize>, seen: Arc<Mutex<Vec<Vec<u8>>>>) {
    let mut buf = Vec::new();
    loop {
        // The head.
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let reply = replies.get(next.fetch_add(1, Ordering::SeqCst)).copied();
        if let Some(Reply::Early(bytes)) = reply {
            seen.lock().push(buf[..end].to_vec());
            let _ = sock.write_all(bytes).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            return;
        }
        if let Some(Reply::Echo) = reply {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if sock.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").await.is_err() {
                return;
            }
            let mut got = buf.len() - end;
            while got < len {
                let mut chunk = [0u8; 65536];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let size = got.to_string();
            let _ = sock.write_all(format!("{:x}\r\n{size}\r\n0\r\n\r\n", size.len()).as_bytes()).await;
            seen.lock().push(buf[..end].to_vec());
            return;
        }
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        // The body: by length, or chunked up to the last chunk.
        let total = if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length: ")) {
            end + cl.trim().parse::<usize>().unwrap_or(0)
        } else if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(i) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    break end + i + 5;
                }
                let mut chunk = [0u8; 4096];
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        } else {
            end
        };
        while buf.len() < total {
            let mut chunk = [0u8; 65536];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        seen.lock().push(buf.drain(..total).collect());
        match reply {
            Some(Reply::Send(bytes)) => {
                if sock.write_all(bytes).await.is_err() {
                    return;
                }
            }
            Some(Reply::SendClose(bytes)) => {
                let _ = sock.write_all(bytes).await;
                return;
            }
            Some(Reply::Silent) => {
                tokio::time::sleep(Duration::from_secs(3)).await;
                return;
            }
            _ => return,
        }
    }
}

fn pool() -> Pool {
    let tls = tls::client_config(&tls::ClientTlsOptions { ca: None, verify: false, client_cert: None }).expect("tls");
    Pool::new(
        PoolConfig {
            protocol: Protocol::Http1,
            connect_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(30),
            tls: Arc::new(tls),
            server_name: None,
        },
        1,
    )
}

fn get(path: &str) -> Request<UpstreamBody> {
    request(Method::GET, path, UpstreamBody::empty())
}

fn request(method: Method, path: &str, body: UpstreamBody) -> Request<UpstreamBody> {
    let mut req = Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().expect("uri");
    req.headers_mut().insert(http::header::HOST, http::HeaderValue::from_static("origin.test"));
    req
}

/// Sends and reads the whole body: status, headers, body, trailers.
async fn exchange(
    pool: &Pool,
    o: &Origin,
    req: Request<UpstreamBody>,
) -> Result<(StatusCode, http::HeaderMap, Bytes, Option<http::HeaderMap>), String> {
    let now = std::time::Instant::now();
    let resp = pool
        .send(0, &o.spec, req, &[], now, super::super::deadline(now, Duration::from_secs(5)))
        .await
        .map_err(|e| match e {
            SendError::Http1(e) => format!("http1: {e}"),
            SendError::Connect(k) => format!("connect: {k:?}"),
            SendError::Failed(e) => format!("hyper: {e}"),
            SendError::Timeout => "timed out".to_owned(),
        })?;
    let (parts, body): (_, BackendBody) = resp.into_parts();
    let collected = tokio::time::timeout(Duration::from_secs(5), body.collect())
        .await
        .map_err(|_| "body timed out".to_owned())?
        .map_err(|e| format!("body: {e}"))?;
    let trailers = collected.trailers().cloned();
    Ok((parts.status, parts.headers, collected.to_bytes(), trailers))
}

#[tokio::test]
async fn a_length_delimited_response_is_read_and_the_connection_reused() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\nhello";
    let o = origin(vec![Reply::Send(ok), Reply::Send(ok), Reply::Send(ok)]).await;
    let p = pool();
    for _ in 0..3 {
        let (status, headers, body, _) = exchange(&p, &o, get("/a?b=c")).await.expect("exchange");
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-a"], "1");
        assert_eq!(headers["content-length"], "5");
        assert!(headers.get("connection").is_none() && headers.get("keep-alive").is_none(), "hop-by-hop");
        assert_eq!(&body[..], b"hello");
    }
    assert_eq!(o.accepts.load(Ordering::SeqCst), 1, "one connection for three requests");
    let first = String::from_utf8(o.requests.lock()[0].clone()).expect("text");
    assert!(first.starts_with("GET /a?b=c HTTP/1.1\r\nhost: origin.test\r\n"), "{first}");
    assert!(!first.contains("content-length") && !first.contains("transfer-encoding"), "{first}");
}

/// One connection, responses whose fields change from one to the next at the same positions
/// (the client remembers names by position): each response keeps its own names, spelled in any
/// case, and its own hop-by-hop fields are the ones left out. The response's map is the
/// request's, emptied: none of the request's fields (its credentials) shows in the response.
#[tokio::test]
async fn field_names_are_read_afresh_when_a_response_changes_them() {
    let first = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nX-One: 1\r\nKeep-Alive: timeout=5\r\n\r\na";
    let second = b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH: 1\r\nKeep-Alive: timeout=5\r\nX-Two: 2\r\nX-Three: 3\r\n\r\nb";
    let third = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\nX-One: 1\r\nX-Four: 4\r\n\r\nc";
    let o = origin(vec![Reply::Send(first), Reply::Send(second), Reply::Send(third)]).await;
    let p = pool();
    let names = |h: &http::HeaderMap| h.keys().map(|k| k.as_str().to_owned()).collect::<Vec<_>>();
    let mut with_credentials = get("/");
    with_credentials.headers_mut().insert(http::header::AUTHORIZATION, http::HeaderValue::from_static("Bearer t"));
    let (_, headers, body, _) = exchange(&p, &o, with_credentials).await.expect("first");
    assert_eq!((names(&headers), &body[..]), (vec!["content-length".to_owned(), "x-one".to_owned()], &b"a"[..]));
    let (_, headers, body, _) = exchange(&p, &o, get("/")).await.expect("second");
    assert_eq!(names(&headers), ["content-length", "x-two", "x-three"]);
    assert_eq!(
        (
            headers["x-two"].to_str().ok().unwrap_or_default(),
            headers["x-three"].to_str().ok().unwrap_or_default(),
            &body[..]
        ),
        ("2", "3", &b"b"[..])
    );
    let (_, headers, body, _) = exchange(&p, &o, get("/")).await.expect("third");
    assert_eq!(names(&headers), ["content-length", "x-one", "x-four"]);
    assert_eq!((headers["x-four"].to_str().ok().unwrap_or_default(), &body[..]), ("4", &b"c"[..]));
    assert_eq!(o.accepts.load(Ordering::SeqCst), 1, "one connection for the three");
}

/// The response deadline on a connection whose timer an earlier request armed for later: a
/// silent server is given up on at the new, earlier deadline, and that connection is not used
/// again (the next request opens another).
#[tokio::test]
async fn a_response_deadline_holds_on_a_reused_connection() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let o = origin(vec![Reply::Send(ok), Reply::Silent, Reply::Send(ok)]).await;
    let p = pool();
    exchange(&p, &o, get("/")).await.expect("first, with a five-second deadline");
    assert_eq!(p.idle_count(), 1, "the first connection is pooled");
    let now = std::time::Instant::now();
    let sent = p.send(0, &o.spec, get("/"), &[], now, super::super::deadline(now, Duration::from_millis(200))).await;
    let waited = now.elapsed();
    assert!(matches!(sent, Err(SendError::Timeout)), "the silent server was not given up on");
    assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "gave up after {waited:?}");
    assert_eq!(p.idle_count(), 0, "the timed-out connection went back to the pool");
    let (status, _, body, _) = exchange(&p, &o, get("/")).await.expect("third");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(o.accepts.load(Ordering::SeqCst), 2, "the timed-out connection was used again");
}

#[tokio::test]
async fn a_chunked_response_is_decoded_with_extensions_and_trailers() {
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n";
    let o = origin(vec![Reply::Send(chunked), Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n")]).await;
    let p = pool();
    let (_, headers, body, trailers) = exchange(&p, &o, get("/")).await.expect("exchange");
    assert!(headers.get("transfer-encoding").is_none());
    // A `Connection` that names other fields stays for the proxy's hop-by-hop pass.
    assert_eq!(headers["connection"], "X-Hop");
    assert_eq!(&body[..], b"hello world");
    assert_eq!(trailers.expect("trailers")["x-sum"], "11");
    let (status, _, body, _) = exchange(&p, &o, get("/")).await.expect("second");
    assert_eq!((status, body.len()), (StatusCode::NO_CONTENT, 0));
    assert_eq!(o.accepts.load(Ordering::SeqCst), 1, "a chunked body read to its end leaves the connection reusable");
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused() {
    let both = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let o = origin(vec![Reply::Send(both), Reply::Send(ok)]).await;
    let p = pool();
    let (_, headers, body, _) = exchange(&p, &o, get("/")).await.expect("exchange");
    assert_eq!(&body[..], b"hello");
    assert!(headers.get("content-length").is_none(), "the lying length is not passed on");
    exchange(&p, &o, get("/")).await.expect("second");
    assert_eq!(o.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn conflicting_or_invalid_lengths_are_rejected() {
    for reply in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\nhello",
    ] {
        let o = origin(vec![Reply::Send(reply)]).await;
        let err = exchange(&pool(), &o, get("/")).await.expect_err("rejected");
        assert!(err.contains("Content-Length"), "{err}");
    }
    // Equal repeated values are one length.
    let o = origin(vec![Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")]).await;
    assert_eq!(&exchange(&pool(), &o, get("/")).await.expect("same length").2[..], b"ok");
}

#[tokio::test]
async fn malformed_heads_and_chunks_are_errors_not_panics() {
    for (reply, in_head) in [
        (&b"HTTP/1.1 2000 OK\r\n\r\n"[..], true),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", true),
        (b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", true),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", true),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", false),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n", false),
    ] {
        let o = origin(vec![Reply::SendClose(reply)]).await;
        let err = exchange(&pool(), &o, get("/")).await.expect_err("rejected");
        assert_eq!(err.starts_with("http1"), in_head, "{err} for {:?}", String::from_utf8_lossy(reply));
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let o = origin(vec![Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")]).await;
    let err = exchange(&pool(), &o, get("/")).await.expect_err("cut short");
    assert!(err.starts_with("body"), "{err}");
}

#[tokio::test]
async fn a_response_without_framing_is_read_until_close() {
    let o = origin(vec![
        Reply::SendClose(b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ])
    .await;
    let p = pool();
    assert_eq!(&exchange(&p, &o, get("/")).await.expect("exchange").2[..], b"until close");
    exchange(&p, &o, get("/")).await.expect("second");
    assert_eq!(o.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_and_interim_responses_are_skipped() {
    let o = origin(vec![
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
    ])
    .await;
    let p = pool();
    let (status, headers, body, _) =
        exchange(&p, &o, request(Method::HEAD, "/", UpstreamBody::empty())).await.expect("head");
    assert_eq!((status, headers["content-length"].as_bytes(), body.len()), (StatusCode::OK, &b"10"[..], 0));
    let (status, _, body, _) = exchange(&p, &o, get("/")).await.expect("304");
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0));
    let (status, headers, body, _) = exchange(&p, &o, get("/")).await.expect("after 1xx");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert!(headers.get("link").is_none(), "interim fields are not merged into the final response");
    assert_eq!(o.accepts.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_bodies_are_framed_by_their_size() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let o = origin(vec![Reply::Send(ok), Reply::Send(ok)]).await;
    let p = pool();
    exchange(&p, &o, request(Method::POST, "/p", UpstreamBody::full(Bytes::from_static(b"abc")))).await.expect("post");
    // A declared length with no body left to send (a policy emptied it) becomes 0.
    let mut req = request(Method::PUT, "/q", UpstreamBody::empty());
    req.headers_mut().insert(http::header::CONTENT_LENGTH, http::HeaderValue::from_static("7"));
    exchange(&p, &o, req).await.expect("put");
    let seen = o.requests.lock().clone();
    let post = String::from_utf8_lossy(&seen[0]);
    assert!(post.starts_with("POST /p HTTP/1.1\r\n") && post.contains("content-length: 3\r\n"), "{post}");
    assert!(post.ends_with("\r\n\r\nabc"), "{post}");
    assert!(String::from_utf8_lossy(&seen[1]).contains("content-length: 0\r\n"));
}

#[tokio::test]
async fn a_pooled_connection_the_server_closed_is_replaced() {
    let o = origin(vec![
        Reply::SendClose(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nyes"),
    ])
    .await;
    let p = pool();
    exchange(&p, &o, get("/")).await.expect("first");
    // The server's close (FIN) reaches the idle connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, _, body, _) = exchange(&p, &o, get("/")).await.expect("second, on a new connection");
    assert_eq!(&body[..], b"yes");
    assert_eq!(o.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_sweep_closes_idle_connections_the_server_closed() {
    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let closing = origin(vec![Reply::SendClose(ok)]).await;
    let open = origin(vec![Reply::Send(ok)]).await;
    let (p1, p2) = (pool(), pool());
    exchange(&p1, &closing, get("/")).await.expect("closing");
    exchange(&p2, &open, get("/")).await.expect("open");
    assert_eq!((p1.idle_count(), p2.idle_count()), (1, 1), "both responses said nothing about closing");
    // The first server's close reaches its idle connection; no request comes to notice it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    p1.sweep();
    p2.sweep();
    assert_eq!((p1.idle_count(), p2.idle_count()), (0, 1));
}

#[tokio::test]
async fn an_answer_before_the_whole_body_is_heard_and_ends_the_connection() {
    let o = origin(vec![
        Reply::Early(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
    ])
    .await;
    let p = pool();
    // Far more than the socket buffers hold: the upload cannot finish while nobody reads it.
    let big = UpstreamBody::full(Bytes::from(vec![b'x'; 16 * 1024 * 1024]));
    let (status, _, _, _) = exchange(&p, &o, request(Method::POST, "/upload", big)).await.expect("early answer");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    exchange(&p, &o, get("/")).await.expect("next");
    assert_eq!(o.accepts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_server_that_answers_while_it_reads_gets_the_whole_body() {
    let o = origin(vec![Reply::Echo]).await;
    // Far more than the socket buffers: the response head comes long before the upload ends.
    let big = UpstreamBody::full(Bytes::from(vec![b'x'; 4 * 1024 * 1024]));
    let (status, _, body, _) = exchange(&pool(), &o, request(Method::POST, "/echo", big)).await.expect("echo");
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"4194304"[..]));
}

#[tokio::test]
async fn a_request_meeting_closed_connections_is_sent_again_at_most_once() {
    let ok = Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let gone = Reply::SendClose(b"");
    let o = origin(vec![ok, ok, ok, gone, gone, gone, gone, gone]).await;
    let p = pool();
    // Three requests at once: three pooled connections.
    let (a, b, c) = tokio::join!(exchange(&p, &o, get("/")), exchange(&p, &o, get("/")), exchange(&p, &o, get("/")));
    for r in [a, b, c] {
        r.expect("priming");
    }
    assert_eq!(o.accepts.load(Ordering::SeqCst), 3);
    // The server now drops every request without an answer: one pooled try, one new connection.
    let err = exchange(&p, &o, get("/")).await.expect_err("no answer");
    assert!(err.starts_with("http1"), "{err}");
    assert_eq!(o.requests.lock().len(), 5, "sent on one pooled connection and one new one, no more");
}

#[tokio::test]
async fn endless_interim_responses_are_cut_off() {
    let flood: &'static [u8] = Box::leak(b"HTTP/1.1 100 Continue\r\n\r\n".repeat(12_000).into_boxed_slice());
    let o = origin(vec![Reply::SendClose(flood)]).await;
    let err = exchange(&pool(), &o, get("/")).await.expect_err("cut off");
    assert!(err.contains("interim"), "{err}");
}

#[tokio::test]
async fn added_fields_follow_the_requests_own() {
    let o = origin(vec![Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]).await;
    let added = [
        (http::HeaderName::from_static("x-forwarded-for"), http::HeaderValue::from_static("192.0.2.1")),
        (http::HeaderName::from_static("x-request-id"), http::HeaderValue::from_static("rid")),
    ];
    let now = std::time::Instant::now();
    let resp = pool()
        .send(0, &o.spec, get("/"), &added, now, super::super::deadline(now, Duration::from_secs(5)))
        .await
        .map_err(|_| "send")
        .expect("send");
    drop(resp);
    let seen = String::from_utf8(o.requests.lock()[0].clone()).expect("text");
    assert!(seen.ends_with("host: origin.test\r\nx-forwarded-for: 192.0.2.1\r\nx-request-id: rid\r\n\r\n"), "{seen}");
}

#[tokio::test]
async fn errors_name_their_cause() {
    let e = Error::Invalid("invalid or conflicting Content-Length");
    assert!(e.to_string().contains("Content-Length"));
    assert_eq!(super::chunk_size(b"1a;x=y"), Some(26));
    assert_eq!(super::chunk_size(b"1a ;x"), Some(26));
    assert_eq!(super::chunk_size(b"1a x"), None);
    assert_eq!(super::chunk_size(b""), None);
    assert_eq!(super::find_crlf(b"abc\r\nd", 10), Ok(Some(3)));
    assert_eq!(super::find_crlf(b"abc\r", 10), Ok(None));
    assert!(super::find_crlf(b"abc\rd", 10).is_err());
    assert!(super::find_crlf(b"abcdefghijklmnop", 10).is_err());
}
