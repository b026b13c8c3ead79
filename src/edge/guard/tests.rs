//! Unit tests of the guard's head and chunk judges.

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
    match judge_head(head.as_bytes(), &limits()) {
        Ok(Some((_, s))) => Ok(s),
        Ok(None) => Err(0),
        Err(p) => Err(p.status.as_u16()),
    }
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
