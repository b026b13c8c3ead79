//! HTTP/1 framing on the wire (reliability.md §2.1–2.3): raw TCP against the gateway.
//!
//! The decisive check for smuggling is what the backend received: every rejected request must
//! leave the backend's record untouched, and a smuggled request hidden in a body must never
//! appear there.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// How long any single read on a raw connection may take before the test gives up.
pub const WAIT: Duration = Duration::from_secs(3);

/// Lets anything the gateway might still forward reach the backend before its record is read.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

/// One HTTP/1 response parsed off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Checks a problem+json answer written by the edge; returns what is wrong, if anything.
    pub fn check_problem(&self, statuses: &[u16]) -> Result<serde_json::Value, String> {
        if !statuses.contains(&self.status) {
            return Err(format!("status {} not in {statuses:?}: {}", self.status, self.text()));
        }
        if self.header("content-type") != Some("application/problem+json") {
            return Err(format!("content-type {:?}", self.header("content-type")));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&self.body).map_err(|e| format!("body is not JSON ({e}): {}", self.text()))?;
        if v["layer"] != "edge" {
            return Err(format!("layer is not edge: {v}"));
        }
        if v["status"] != self.status {
            return Err(format!("status field {} != {}", v["status"], self.status));
        }
        match self.header("x-request-id") {
            Some(id) if v["request_id"] == id => Ok(v),
            other => Err(format!("x-request-id {other:?} does not match the body's request_id {}", v["request_id"])),
        }
    }
}

/// Parses one complete response at the start of `b`; returns it and its length.
fn parse_response(b: &[u8], eof: bool) -> Option<(RawResponse, usize)> {
    let head_end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..head_end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let rest = &b[head_end..];
    let no_body = status == 204 || status == 304 || (100..200).contains(&status);
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().ok()?;
        if rest.len() < len {
            return None;
        }
        (rest[..len].to_vec(), len)
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let nl = rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let line = std::str::from_utf8(&rest[at..at + nl]).ok()?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            at += nl + 2;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    let nl = rest[at..].windows(2).position(|w| w == b"\r\n")?;
                    at += nl + 2;
                    if nl == 0 {
                        break;
                    }
                }
                break;
            }
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
        (body, at)
    } else {
        // Close-delimited.
        if !eof {
            return None;
        }
        (rest.to_vec(), rest.len())
    };
    Some((RawResponse { status, headers, body }, head_end + used))
}

/// A raw client connection.
pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        let s = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.expect("timely connect").expect("connect");
        Conn { s, buf: Vec::new(), eof: false }
    }

    /// Writes bytes; a peer that already closed is not an error here (the reads will tell).
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.s.write_all(bytes).await;
        let _ = self.s.flush().await;
    }

    /// Reads once into the buffer; false on EOF, reset, or when `deadline` passes.
    async fn fill(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 8192];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes the next complete response, reading for at most `within`.
    pub async fn response(&mut self, within: Duration) -> Option<RawResponse> {
        let deadline = Instant::now() + within;
        loop {
            if let Some((r, used)) = parse_response(&self.buf, self.eof) {
                self.buf.drain(..used);
                return Some(r);
            }
            if !self.fill(deadline).await {
                return parse_response(&self.buf, self.eof).map(|(r, used)| {
                    self.buf.drain(..used);
                    r
                });
            }
        }
    }

    /// True when the gateway closes the connection within `within`; bytes read meanwhile stay
    /// buffered.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while !self.eof {
            if !self.fill(deadline).await && !self.eof {
                return false;
            }
        }
        true
    }

    /// Everything still buffered, for assertion messages.
    pub fn leftover(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// Sends `bytes` on a fresh connection and reads until the gateway closes it (or [`WAIT`]).
pub async fn one_shot(addr: SocketAddr, bytes: &[u8]) -> (Vec<RawResponse>, bool, String) {
    let mut c = Conn::open(addr).await;
    c.send(bytes).await;
    let closed = c.closed_within(WAIT).await;
    let mut out = Vec::new();
    while let Some((r, used)) = parse_response(&c.buf, true) {
        c.buf.drain(..used);
        out.push(r);
    }
    (out, closed, c.leftover())
}

/// Expects exactly one edge problem with a status in `statuses`, `connection: close`, and a
/// closed connection.
pub async fn expect_rejected(addr: SocketAddr, case: &str, bytes: &[u8], statuses: &[u16]) -> Result<(), String> {
    let (responses, closed, rest) = one_shot(addr, bytes).await;
    let fail = |why: String| Err(format!("{case}: {why}"));
    if responses.len() != 1 {
        return fail(format!(
            "expected one response, got {}: {:?} (unparsed: {rest:?})",
            responses.len(),
            responses.iter().map(|r| r.status).collect::<Vec<_>>()
        ));
    }
    let r = &responses[0];
    if let Err(why) = r.check_problem(statuses) {
        return fail(why);
    }
    if !r.header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        return fail(format!("no `connection: close` ({:?})", r.header("connection")));
    }
    if !closed {
        return fail("the connection stayed open".into());
    }
    if !rest.is_empty() {
        return fail(format!("bytes after the response: {rest:?}"));
    }
    Ok(())
}

/// Runs every case against one gateway and fails once, listing every case that failed.
async fn expect_all_rejected(addr: SocketAddr, cases: &[(&str, Vec<u8>)], statuses: &[u16]) -> Vec<String> {
    let mut failures = Vec::new();
    for (case, bytes) in cases {
        if let Err(e) = expect_rejected(addr, case, bytes, statuses).await {
            failures.push(e);
        }
    }
    failures
}

fn assert_no_failures(failures: Vec<String>) {
    assert!(failures.is_empty(), "{} case(s) failed:\n  {}", failures.len(), failures.join("\n  "));
}

/// The config for most framing tests: `/api` → backend `b`, `/hello` answered by the gateway.
pub fn framing_config(addr: SocketAddr, edge: &str) -> String {
    simple_config(addr, "", edge)
        + r#"  hello:
    path: /hello
    operations:
      - id: hi
        method: POST
        template: /
        policies:
          inbound:
            - return-response: { status: 201, headers: { content-type: text/plain }, body: "hi there" }
"#
}

/// A smuggled request that must never reach the backend.
const SMUGGLED: &str = "GET /api/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

fn req(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn assert_backend_never_saw_smuggled(b: &Backend) {
    let seen = b.requests();
    assert!(
        seen.iter().all(|s| !s.uri.contains("smuggled") && !s.body.windows(8).any(|w| w == b"smuggled")),
        "the backend saw a smuggled request: {:?}",
        seen.iter().map(|s| (&s.method, &s.uri)).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_is_rejected_and_the_connection_closed() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let cases = [
        (
            "CL.TE",
            req("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "CL.TE with a smuggled request",
            format!(
                "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        ),
        (
            "CL.TE, CL shorter than the chunked body, smuggled prefix",
            format!(
                "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nZ\r\nQ{SMUGGLED}"
            )
            .into_bytes(),
        ),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());
    assert_backend_never_saw_smuggled(&b);
    // Each refusal is in the access log, as an edge-layer 400.
    assert_eq!(g.logged(400, "edge").await, cases.len(), "{:?}", g.log_lines().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_cl_variants_are_rejected() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let cases = [
        (
            "TE.CL",
            format!(
                "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\n{SMUGGLED}\r\n0\r\n\r\n"
            )
            .into_bytes(),
        ),
        ("TE.CL with CL 0", req("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n0\r\n\r\n")),
        (
            "TE.CL, TE obfuscated",
            req("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"),
        ),
        (
            "CL between two TE",
            req("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ),
    ];
    // 501 is the answer to an unknown coding; ambiguity itself is 400.
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400, 501]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_invalid_content_length_are_rejected() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let with_cl = |case: &'static str, headers: &str| {
        (
            case,
            format!("POST /api/x HTTP/1.1\r\nHost: gw.test\r\n{headers}\r\nhelloGET /api/smuggled HTTP/1.1\r\n\r\n")
                .into_bytes(),
        )
    };
    let cases = [
        with_cl("duplicate, same value", "Content-Length: 5\r\nContent-Length: 5\r\n"),
        with_cl("duplicate, different values", "Content-Length: 5\r\nContent-Length: 6\r\n"),
        with_cl("list in one header", "Content-Length: 5, 5\r\n"),
        with_cl("plus sign", "Content-Length: +5\r\n"),
        with_cl("negative", "Content-Length: -1\r\n"),
        with_cl("hex", "Content-Length: 0x10\r\n"),
        with_cl("exponent", "Content-Length: 1e1\r\n"),
        with_cl("empty", "Content-Length: \r\n"),
        with_cl("20 digits", "Content-Length: 00000000000000000005\r\n"),
        with_cl("overflow", "Content-Length: 99999999999999999999\r\n"),
        with_cl("inner space", "Content-Length: 1 0\r\n"),
        with_cl("space before colon", "Content-Length : 5\r\n"),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_obfuscations_are_rejected() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let te = |case: &'static str, headers: &str| {
        (case, format!("POST /api/x HTTP/1.1\r\nHost: gw.test\r\n{headers}\r\n0\r\n\r\n{SMUGGLED}").into_bytes())
    };
    let cases = [
        te("xchunked", "Transfer-Encoding: xchunked\r\n"),
        te("chunk", "Transfer-Encoding: chunk\r\n"),
        te("chunked, identity", "Transfer-Encoding: chunked, identity\r\n"),
        te("identity", "Transfer-Encoding: identity\r\n"),
        te("gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n"),
        te("quoted", "Transfer-Encoding: \"chunked\"\r\n"),
        te("duplicate TE", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        te("duplicate TE, identity second", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n"),
        te("space before colon", "Transfer-Encoding : chunked\r\n"),
        te("tab before colon", "Transfer-Encoding\t: chunked\r\n"),
        te("vertical tab before value", "Transfer-Encoding:\x0bchunked\r\n"),
        te("vertical tab after value", "Transfer-Encoding: chunked\x0b\r\n"),
        te("NUL in value", "Transfer-Encoding: chunked\0\r\n"),
        te("obs-fold continuation", "Transfer-Encoding:\r\n chunked\r\n"),
        te("obs-fold after another header", "X-A: 1\r\n Transfer-Encoding: chunked\r\n"),
        te("leading space line", " Transfer-Encoding: chunked\r\n"),
        te("underscore name", "Transfer_Encoding: chunked\r\n"),
        te("bare LF before TE", "X-A: 1\nTransfer-Encoding: chunked\r\n"),
        te("empty TE", "Transfer-Encoding: \r\n"),
        te("comma only", "Transfer-Encoding: ,chunked\r\n"),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400, 501]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_line_endings_and_control_bytes_are_rejected() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let cases = [
        ("bare LF everywhere", req("GET /api/x HTTP/1.1\nHost: gw.test\n\n")),
        ("bare LF after the request line", req("GET /api/x HTTP/1.1\nHost: gw.test\r\n\r\n")),
        ("bare LF ending the head", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\n")),
        ("bare CR in a value", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-A: 1\rX-B: 2\r\n\r\n")),
        ("bare CR ending a line", req("GET /api/x HTTP/1.1\r\nHost: gw.test\rX-B: 2\r\n\r\n")),
        ("bare CR in the target", req("GET /api/x\r HTTP/1.1\r\nHost: gw.test\r\n\r\n")),
        ("NUL in a value", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-A: a\0b\r\n\r\n")),
        ("NUL in a name", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX\0A: ab\r\n\r\n")),
        ("NUL in the target", req("GET /api/x\0 HTTP/1.1\r\nHost: gw.test\r\n\r\n")),
        ("empty header name", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\n: v\r\n\r\n")),
        ("non-ASCII header name", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-\u{e9}: v\r\n\r\n")),
        ("header without colon", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nX-A\r\n\r\n")),
        ("HTTP/0.9", req("GET /api/x\r\n\r\n")),
        ("bad version", req("GET /api/x HTTP/1.2\r\nHost: gw.test\r\n\r\n")),
        ("lower-case version", req("GET /api/x http/1.1\r\nHost: gw.test\r\n\r\n")),
        ("relative target", req("GET api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n")),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400, 505]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_with_transfer_encoding_is_rejected() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let cases = [
        ("HTTP/1.0 TE", format!("POST /api/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").into_bytes()),
        (
            "HTTP/1.0 TE and CL",
            req("POST /api/x HTTP/1.0\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());

    // An HTTP/1.0 request without CL or TE has an empty body: what follows is a new request
    // (which HTTP/1.0 without keep-alive never gets to).
    let (responses, closed, _) =
        one_shot(g.addr, format!("POST /api/ten HTTP/1.0\r\nHost: gw.test\r\n\r\n{SMUGGLED}").as_bytes()).await;
    assert_eq!(responses.first().map(|r| r.status), Some(200));
    assert!(closed);
    settle().await;
    let seen = b.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/ten");
    assert!(seen[0].body.is_empty(), "{:?}", seen[0].body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_header_rules() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let cases = [
        ("missing Host on HTTP/1.1", req("GET /api/x HTTP/1.1\r\nX-A: 1\r\n\r\n")),
        ("duplicate Host", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nHost: other.test\r\n\r\n")),
        ("duplicate identical Host", req("GET /api/x HTTP/1.1\r\nHost: gw.test\r\nHost: gw.test\r\n\r\n")),
        ("userinfo in Host", req("GET /api/x HTTP/1.1\r\nHost: a@b\r\n\r\n")),
        ("space in Host", req("GET /api/x HTTP/1.1\r\nHost: a b\r\n\r\n")),
        ("slash in Host", req("GET /api/x HTTP/1.1\r\nHost: a/b\r\n\r\n")),
        ("backslash in Host", req("GET /api/x HTTP/1.1\r\nHost: a\\b\r\n\r\n")),
        ("empty Host", req("GET /api/x HTTP/1.1\r\nHost: \r\n\r\n")),
    ];
    assert_no_failures(expect_all_rejected(g.addr, &cases, &[400]).await);
    settle().await;
    assert_eq!(b.count(), 0, "{:?}", b.requests());

    // HTTP/1.0 may omit Host; a valid Host with a port is fine.
    let answer = raw(g.addr, b"GET /api/ten HTTP/1.0\r\n\r\n", WAIT).await;
    assert!(answer.starts_with("HTTP/1.1 200 ") || answer.starts_with("HTTP/1.0 200 "), "{answer}");
    let (r, _, _) =
        one_shot(g.addr, b"GET /api/port HTTP/1.1\r\nHost: gw.test:8080\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.first().map(|r| r.status), Some(200), "{r:?}");
    settle().await;
    assert_eq!(b.count(), 2);
}

/// A chunked request whose body is broken: the backend must never receive it complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_errors_never_reach_the_backend_complete() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let head = "POST /api/chunky HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let bodies: [(&str, String); 11] = [
        ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n".into()),
        ("negative size", "-1\r\nhello\r\n0\r\n\r\n".into()),
        ("64-bit overflow", "10000000000000005\r\nhello\r\n0\r\n\r\n".into()),
        ("bare LF after the size", "5\nhello\r\n0\r\n\r\n".into()),
        ("bare LF in an extension", "5;a\nb\r\nhello\r\n0\r\n\r\n".into()),
        ("bare CR in an extension", "5;a\rb\r\nhello\r\n0\r\n\r\n".into()),
        ("data longer than the size", format!("5\r\nhelloXX\r\n0\r\n\r\n{SMUGGLED}")),
        ("missing CRLF after data", "5\r\nhello0\r\n\r\n".into()),
        ("Content-Length in the trailers", "5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n".into()),
        ("Transfer-Encoding in the trailers", "5\r\nhello\r\n0\r\nTransfer-Encoding: chunked\r\n\r\n".into()),
        ("space inside the size", "5 5\r\nhello\r\n0\r\n\r\n".into()),
    ];
    let mut failures = Vec::new();
    for (case, body) in &bodies {
        // Once in one write, once with the head first (the request is then already in flight).
        for split in [false, true] {
            let mut c = Conn::open(g.addr).await;
            if split {
                c.send(head.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                c.send(body.as_bytes()).await;
            } else {
                c.send(format!("{head}{body}").as_bytes()).await;
            }
            let first = c.response(WAIT).await;
            let closed = c.closed_within(WAIT).await;
            let label = format!("{case} (split: {split})");
            // The request is already the proxy's when its body breaks: it answers 400 (a body
            // that could not be read), and the guard adds nothing after it.
            match &first {
                None => failures.push(format!("{label}: no answer")),
                Some(r) if r.status == 400 => {
                    if let Err(e) = r.check_problem(&[400]) {
                        failures.push(format!("{label}: {e}"));
                    }
                }
                Some(r) => failures.push(format!("{label}: answered {} {}", r.status, r.text())),
            }
            if !closed {
                failures.push(format!("{label}: the connection stayed open"));
            }
            if let Some(extra) = c.response(Duration::from_millis(10)).await {
                failures.push(format!("{label}: a second response {} {}", extra.status, extra.text()));
            }
        }
    }
    settle().await;
    for s in b.requests() {
        // The backend may have seen the head of a split request, but never a body.
        if !s.body.is_empty() {
            failures.push(format!("the backend received a body: {:?}", s.body));
        }
    }
    assert_backend_never_saw_smuggled(&b);
    assert_no_failures(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_chunked_with_extensions_and_trailers_passes_through() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(
        b"POST /api/chunky HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
          5;name=value\r\nhello\r\n1 ; quoted=\"a b\"\r\n \r\nA;x\r\n0123456789\r\n0;last\r\nX-Sum: 42\r\n\r\n",
    )
    .await;
    let r = c.response(WAIT).await.expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    // Keep-alive: a second request on the same connection is served too.
    c.send(b"POST /api/second HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        .await;
    let r = c.response(WAIT).await.expect("a second response");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = b.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].uri, "/chunky");
    assert_eq!(&seen[0].body[..], b"hello 0123456789");
    assert_eq!(&seen[1].body[..], b"abc");
    assert!(!seen[0].headers.contains_key("content-length") || seen[0].headers["content-length"] == "16");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_reach_the_backend_in_order() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let mut c = Conn::open(g.addr).await;
    c.send(
        b"GET /api/one HTTP/1.1\r\nHost: gw.test\r\n\r\n\
          POST /api/two HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\n\r\nhello\
          POST /api/three HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /api/four HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    )
    .await;
    for want in ["/one", "/two", "/three", "/four"] {
        let r = c.response(WAIT).await.unwrap_or_else(|| panic!("no response for {want}: {}", c.leftover()));
        assert_eq!(r.status, 200, "{want}: {}", r.text());
        assert!(r.text().ends_with(want), "responses out of order: {want} got {}", r.text());
    }
    let seen = b.requests();
    let uris: Vec<&str> = seen.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["/one", "/two", "/three", "/four"]);
    assert_eq!(&seen[1].body[..], b"hello");
    assert_eq!(&seen[2].body[..], b"abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_pipelined_request_is_refused_after_the_valid_one() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let mut failures = Vec::new();
    let bad = [
        ("CL.TE", format!("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("bare LF", "GET /api/smuggled HTTP/1.1\nHost: gw.test\n\n".to_owned()),
        ("duplicate CL", "POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab".to_owned()),
    ];
    for (case, second) in &bad {
        let before = b.count();
        let mut c = Conn::open(g.addr).await;
        c.send(format!("GET /api/first HTTP/1.1\r\nHost: gw.test\r\n\r\n{second}").as_bytes()).await;
        let first = c.response(WAIT).await;
        let then = c.response(WAIT).await;
        let closed = c.closed_within(WAIT).await;
        match (&first, &then) {
            (Some(a), Some(z)) if a.status == 200 => {
                if let Err(e) = z.check_problem(&[400]) {
                    failures.push(format!("{case}: second answer: {e}"));
                }
            }
            _ => failures.push(format!(
                "{case}: expected 200 then 400, got {:?} then {:?} (unparsed {:?})",
                first.as_ref().map(|r| (r.status, r.text())),
                then.as_ref().map(|r| (r.status, r.text())),
                c.leftover()
            )),
        }
        if !closed {
            failures.push(format!("{case}: the connection stayed open"));
        }
        settle().await;
        if b.count() != before + 1 {
            failures.push(format!("{case}: the backend saw {} requests, not 1", b.count() - before));
        }
    }
    assert_backend_never_saw_smuggled(&b);
    assert_no_failures(failures);
}

/// When the gateway answers by itself, the body it did not need is still a body (CVE-2025-4366).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_the_gateway_answers_itself_is_not_parsed_as_a_request() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let mut failures = Vec::new();
    let chunked_smuggle = format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n", SMUGGLED.len());
    let cases = [
        (
            "404 no route, Content-Length body",
            format!("POST /nowhere HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            404,
        ),
        (
            "404 no route, chunked body",
            format!("POST /nowhere HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}"),
            404,
        ),
        (
            "405 wrong method",
            format!("PUT /hello HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            405,
        ),
        (
            "return-response policy, Content-Length body",
            format!("POST /hello HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            201,
        ),
        (
            "return-response policy, chunked body",
            format!("POST /hello HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_smuggle}"),
            201,
        ),
        (
            "GET with a body",
            format!("GET /nowhere HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
            404,
        ),
    ];
    for (case, first, status) in &cases {
        for split in [false, true] {
            let label = format!("{case} (body sent late: {split})");
            let before = b.count();
            let mut c = Conn::open(g.addr).await;
            let follow = "GET /api/real HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n";
            if split {
                // The gateway answers before the body arrives.
                let at = first.find("\r\n\r\n").expect("head") + 4;
                c.send(&first.as_bytes()[..at]).await;
                let early = c.response(WAIT).await;
                if early.as_ref().map(|r| r.status) != Some(*status) {
                    failures.push(format!("{label}: early answer {:?}", early.map(|r| (r.status, r.text()))));
                }
                c.send(format!("{}{follow}", &first[at..]).as_bytes()).await;
            } else {
                c.send(format!("{first}{follow}").as_bytes()).await;
                let r = c.response(WAIT).await;
                if r.as_ref().map(|r| r.status) != Some(*status) {
                    failures.push(format!("{label}: answer {:?}", r.map(|r| (r.status, r.text()))));
                }
            }
            // Either the follow-up request is served, or the gateway closed instead of reading
            // the body; never is the body parsed as a request.
            let next = c.response(WAIT).await;
            if let Some(r) = &next {
                if r.status != 200 || !r.text().ends_with("/real") {
                    failures.push(format!("{label}: follow-up answered {} {}", r.status, r.text()));
                }
            }
            let _ = c.closed_within(WAIT).await;
            settle().await;
            let seen = b.requests();
            let new: Vec<&str> = seen[before..].iter().map(|s| s.uri.as_str()).collect();
            let want: &[&str] = if next.is_some() { &["/real"] } else { &[] };
            if new != want {
                failures.push(format!("{label}: the backend saw {new:?}, expected {want:?}"));
            }
        }
    }
    assert_backend_never_saw_smuggled(&b);
    assert_no_failures(failures);
}

/// An upgrade the gateway or the backend does not accept leaves the connection in HTTP/1: what
/// follows is still judged by the guard (Pingora CVE-2026-2833).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_does_not_open_a_tunnel_past_the_guard() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let smuggle_cl_te =
        format!("POST /api/x HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}");
    let cases = [
        ("no route, Connection: upgrade", "GET /nowhere HTTP/1.1\r\nHost: gw.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 404),
        ("no route, Upgrade alone", "GET /nowhere HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n\r\n", 404),
        ("backend says 200, Upgrade alone", "GET /api/up HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n\r\n", 200),
        (
            "backend says 200, Connection: upgrade",
            "GET /api/up HTTP/1.1\r\nHost: gw.test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            200,
        ),
        ("h2c upgrade", "GET /api/up HTTP/1.1\r\nHost: gw.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n", 200),
    ];
    let mut failures = Vec::new();
    for (case, first, status) in &cases {
        for second in [smuggle_cl_te.as_str(), SMUGGLED] {
            let label = format!("{case} then {}", if second == SMUGGLED { "a plain request" } else { "CL.TE" });
            let mut c = Conn::open(g.addr).await;
            c.send(format!("{first}{second}").as_bytes()).await;
            let r = c.response(WAIT).await;
            if r.as_ref().map(|r| r.status) != Some(*status) {
                failures.push(format!("{label}: first answer {:?}", r.map(|r| (r.status, r.text()))));
            }
            // The second request is refused (CL.TE), served as a normal request, or not read.
            let next = c.response(WAIT).await;
            let _ = c.closed_within(WAIT).await;
            if let Some(n) = next {
                if second != SMUGGLED && n.status != 400 {
                    failures.push(format!("{label}: CL.TE answered {} {}", n.status, n.text()));
                }
            }
        }
    }
    settle().await;
    // A plain request after a refused upgrade may be served (it was judged by the guard);
    // the CL.TE one never.
    let seen = b.requests();
    let smuggled_posts = seen.iter().filter(|s| s.method == http::Method::POST).count();
    if smuggled_posts > 0 {
        failures.push(format!("the backend saw {smuggled_posts} CL.TE request(s)"));
    }
    assert_no_failures(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_absolute_form_never_reach_another_host() {
    let b = backend().await;
    // A canary that must never be contacted.
    let canary = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let c = canary.addr;
    let connect = [
        ("CONNECT authority", format!("CONNECT {c} HTTP/1.1\r\nHost: {c}\r\n\r\n")),
        ("CONNECT to a name", "CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n".to_owned()),
    ];
    let connect: Vec<(&str, Vec<u8>)> = connect.iter().map(|(n, s)| (*n, s.clone().into_bytes())).collect();
    assert_no_failures(expect_all_rejected(g.addr, &connect, &[405]).await);

    let mut failures = Vec::new();
    let absolute = [
        format!("GET http://{c}/api/x HTTP/1.1\r\nHost: {c}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{c}/api/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"),
        "GET http://other.test/api/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n".to_owned(),
        "GET http://other.test/api/x HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n".to_owned(),
        format!("GET https://{c}/api/x HTTP/1.1\r\nHost: {c}\r\nConnection: close\r\n\r\n"),
        format!("GET http://gw.test@{c}/api/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n"),
    ];
    for (i, raw) in absolute.iter().enumerate() {
        let before = b.count();
        let (responses, closed, _) = one_shot(g.addr, raw.as_bytes()).await;
        let Some(r) = responses.first() else {
            failures.push(format!("absolute #{i}: no answer"));
            continue;
        };
        settle().await;
        match r.status {
            200 => {
                // Served: by the configured backend, for the path only.
                let seen = b.requests();
                if seen.len() != before + 1 || seen[before].uri != "/x" {
                    failures.push(format!("absolute #{i}: served but the backend saw {:?}", &seen[before..]));
                }
            }
            400 | 404 | 421 => {
                if let Err(e) = r.check_problem(&[400, 404, 421]) {
                    failures.push(format!("absolute #{i}: {e}"));
                }
            }
            s => failures.push(format!("absolute #{i}: answered {s} {}", r.text())),
        }
        if !closed {
            failures.push(format!("absolute #{i}: the connection stayed open after Connection: close"));
        }
    }
    settle().await;
    assert_eq!(canary.count(), 0, "the canary was contacted: {:?}", canary.requests());
    assert_eq!(b.requests().iter().filter(|s| s.uri.contains("http")).count(), 0, "{:?}", b.requests());
    assert_no_failures(failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_empty_lines_are_tolerated_but_bounded() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "  limits: { header_timeout: 10s, header_bytes: 1KiB }")).await;
    // RFC 9112 §2.2: at least one empty line before a request line is ignored.
    let (r, _, _) =
        one_shot(g.addr, b"\r\n\r\nGET /api/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r.first().map(|r| r.status), Some(200), "{r:?}");

    // An endless stream of empty lines is not buffered: it is refused long before the deadline.
    let started = Instant::now();
    let mut c = Conn::open(g.addr).await;
    c.send(&b"\r\n".repeat(16 * 1024)).await;
    let r = c.response(WAIT).await;
    assert!(c.closed_within(WAIT).await, "the connection stayed open");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    if let Some(r) = r {
        r.check_problem(&[400, 431]).expect("a problem");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_works_on_the_plain_listener() {
    let b = backend().await;
    let g = gateway(&framing_config(b.addr, "")).await;
    let h2 = h2c_client();
    for path in ["/api/h2/one", "/api/h2/two"] {
        let got = send(
            &h2,
            http::Request::post(g.url(path))
                .body(http_body_util::Full::new(bytes::Bytes::from_static(b"h2 body")))
                .expect("req"),
        )
        .await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    let seen = b.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri, "/h2/one");
    assert_eq!(&seen[1].body[..], b"h2 body");

    // And HTTP/1 on the same listener right after.
    let got = get(&g.url("/api/h1")).await;
    assert_eq!(got.status, 200);
}

/// A backend that accepts any upgrade with 101 and then echoes the tunnel's bytes.
async fn echo_upgrade_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match s.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// The success path of the upgrade rules above: a 101 opens the tunnel, bytes sent before the
/// 101 arrive in it, and an upgrade pipelined behind a normal request waits for that answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_upgrade_tunnels_bytes_both_ways() {
    let b = backend().await;
    let (echo, task) = echo_upgrade_backend().await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends:
  b: {{ servers: [ {{ url: "http://{}" }} ] }}
  echo: {{ servers: [ {{ url: "http://{echo}" }} ] }}
apis:
  api: {{ path: /api, backend: b }}
  ws: {{ path: /ws, backend: echo }}
"#,
        b.addr
    );
    let g = gateway(&yaml).await;
    let upgrade = "GET /ws/chat HTTP/1.1\r\nHost: gw.test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n";
    for pipelined in [false, true] {
        let mut c = Conn::open(g.addr).await;
        let first = if pipelined { "GET /api/before HTTP/1.1\r\nHost: gw.test\r\n\r\n" } else { "" };
        // Early data: sent before the 101 arrives; it belongs to the tunnel.
        c.send(format!("{first}{upgrade}early bytes|").as_bytes()).await;
        if pipelined {
            let r = c.response(WAIT).await.expect("the answer to the first request");
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.text(), "backend saw GET /before");
        }
        let deadline = Instant::now() + WAIT;
        while !c.buf.windows(4).any(|w| w == b"\r\n\r\n") && c.fill(deadline).await {}
        let head_end = c.buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a 101 head") + 4;
        let head = String::from_utf8_lossy(&c.buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "pipelined {pipelined}: {head}");
        c.buf.drain(..head_end);
        c.send(b"more bytes").await;
        let want = b"early bytes|more bytes";
        while c.buf.len() < want.len() && c.fill(deadline).await {}
        assert_eq!(String::from_utf8_lossy(&c.buf), String::from_utf8_lossy(want), "pipelined {pipelined}");
    }
    task.abort();
}
