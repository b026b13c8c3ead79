//! Unit tests of the guard's head and chunk judges, and of parking.

use super::head::{judge_chunk, judge_head};
use super::*;

fn limits() -> GuardLimits {
    GuardLimits {
        header_bytes: 1024,
        headers: 10,
        uri_bytes: 64,
        body_bytes: 100,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        body_timeout: Duration::from_secs(1),
        body_min_rate: 500,
    }
}

fn status(head: &str) -> Result<State, u16> {
    match judge_head(head.as_bytes(), &limits(), &mut HeadFields::default()) {
        Ok(Some((_, s))) => Ok(s),
        Ok(None) => Err(0),
        Err(p) => Err(p.status.as_u16()),
    }
}

/// Non-ASCII bytes in the target where the absolute-form check looks (bytes 7 and 8): judged,
/// not a panic (a fuzz finding). `http` refuses such a target later, with 400.
#[test]
fn a_target_with_non_ascii_bytes_is_judged_without_a_panic() {
    assert_eq!(status("GET /EEEEE\u{130}EEEE HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(State::Head));
    assert_eq!(status("GET /EEEEEE\u{130}EEEE HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(State::Head));
    assert_eq!(status("GET http:/\u{130}x HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
}

#[test]
fn framing_verdicts() {
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(State::Head));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"), Ok(State::Body(5)));
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Ok(State::Chunked(Chunk::Size))
    );
    assert_eq!(
        status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err(400)
    );
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"), Err(400));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n"), Err(400));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n"), Err(400));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n"), Err(501));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), Err(501));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"), Err(400));
    assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\nHost: a\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n"), Err(400));
    assert_eq!(status(&format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100))), Err(414));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n"), Err(413));
    let many: String = (0..12).map(|i| format!("X-{i}: v\r\n")).collect();
    assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")), Err(431));
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n"), Err(0));
    assert_eq!(status("CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n"), Err(405));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer_Encoding: chunked\r\n\r\n"), Err(400));
    assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\ncontent_length: 5\r\n\r\n"), Err(400));
    assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nX_Other: 1\r\n\r\n"), Ok(State::Head));
    assert_eq!(status("GET http://a/x HTTP/1.1\r\nHost: A\r\n\r\n"), Ok(State::Head));
    assert_eq!(status("GET http://b/x HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
    assert_eq!(status("GET http://u@a/x HTTP/1.1\r\nHost: a\r\n\r\n"), Err(400));
    // An unfinished head is refused as soon as its fields exceed the limit.
    assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(1100))), Err(431));
    assert_eq!(status(&format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}", "v".repeat(900))), Err(0));
    assert_eq!(status(&format!("GET /{}", "a".repeat(200))), Err(414));
    assert_eq!(
        status("GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"),
        Ok(State::Passthrough)
    );
}

#[test]
fn chunk_verdicts() {
    let ok = |s: &str| judge_chunk(s.as_bytes(), Chunk::Size);
    assert_eq!(ok("5\r\nhello\r\n0\r\n\r\n"), Ok((15, State::Head)));
    assert_eq!(ok("5;name=v\r\nhello\r\n0\r\n\r\n").map(|r| r.1), Ok(State::Head));
    assert!(ok("5\nhello\r\n0\r\n\r\n").is_err());
    assert!(ok("0x5\r\nhello\r\n0\r\n\r\n").is_err());
    assert!(ok("-5\r\nhello\r\n").is_err());
    assert!(ok("10000000000000005\r\nhello\r\n").is_err());
    assert!(ok("5\r\nhelloXX\r\n").is_err());
    assert!(ok("5;\nx\r\nhello\r\n").is_err());
    assert!(ok("0\r\nContent-Length: 5\r\n\r\n").is_err());
    assert_eq!(ok("5\r\nhel"), Ok((6, State::Chunked(Chunk::Data(2)))));
}

async fn wake(g: &mut H1Guard<tokio::io::DuplexStream>) -> Wake {
    let fut = std::future::poll_fn(|cx| g.poll_wake(cx));
    tokio::time::timeout(Duration::from_secs(2), fut).await.expect("timely").expect("wake")
}

/// Parking (`set_parking`): a busy connection is never parked; an idle one ends hyper's reads
/// with EOF after `PARK_AFTER` while the socket stays open (hyper's shutdown is not passed on);
/// `poll_wake` then reports the next request, or the end of the connection with a refusal
/// written by the guard's own shutdown.
#[tokio::test]
async fn an_idle_connection_parks_and_wakes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(4096);
    let shared = Arc::new(ConnShared::default());
    let mut g = H1Guard::new(server, limits(), shared.clone(), None, false);
    g.set_parking(true);
    let first = b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(first).await.expect("send");
    assert_eq!(wake(&mut g).await, Wake::Http1);
    assert!(!g.is_parked());
    let mut buf = [0u8; 512];
    let n = g.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], first);

    // In flight: hyper's read just waits, however long.
    shared.in_flight.fetch_add(1, Ordering::AcqRel);
    assert!(tokio::time::timeout(PARK_AFTER * 2, g.read(&mut buf)).await.is_err(), "a busy connection parked");
    shared.in_flight.finish_at(1, Ordering::AcqRel, std::time::Instant::now());
    // After its first request, a connection waits without a read buffer.
    assert_eq!(g.core.buf.capacity(), 0, "a first request left its read buffer behind");
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    g.write_all(answer).await.expect("write");
    g.flush().await.expect("flush");
    let idle_from = Instant::now();
    let n =
        tokio::time::timeout(Duration::from_secs(2), g.read(&mut buf)).await.expect("parked in time").expect("read");
    assert_eq!(n, 0, "parking reads as EOF");
    assert!(g.is_parked());
    assert_eq!(g.core.buf.capacity(), 0, "a parked connection holds no read buffer");
    assert!(idle_from.elapsed() + Duration::from_millis(20) >= PARK_AFTER, "parked after {:?}", idle_from.elapsed());
    g.shutdown().await.expect("hyper's shutdown");
    let n = client.read(&mut buf).await.expect("client read");
    assert_eq!(&buf[..n], answer);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), client.read(&mut buf)).await.is_err(),
        "the socket was shut down while parked"
    );

    // The next request wakes the parked connection; a refused one closes it with the refusal.
    let second = b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    client.write_all(second).await.expect("send");
    assert_eq!(wake(&mut g).await, Wake::Http1);
    let n = g.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], second);
    shared.in_flight.fetch_add(1, Ordering::AcqRel);
    // A connection that carried more than one request keeps its read buffer until it parks.
    assert!(tokio::time::timeout(Duration::from_millis(50), g.read(&mut buf)).await.is_err(), "busy");
    assert!(g.core.buf.capacity() > 0, "a busy connection dropped its read buffer");
    shared.in_flight.finish_at(1, Ordering::AcqRel, std::time::Instant::now());
    g.flush().await.expect("flush");
    assert_eq!(tokio::time::timeout(Duration::from_secs(2), g.read(&mut buf)).await.expect("parked").expect("read"), 0);
    client
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("send");
    assert_eq!(wake(&mut g).await, Wake::Close);
    g.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.expect("client read");
    assert!(rest.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&rest));
}
