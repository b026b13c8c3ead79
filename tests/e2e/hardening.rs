//! Hardening (issue 6, reliability.md §2): what `framing`, `limits` and `h2abuse` leave out.
//!
//! - smuggling judged on the backend wire: a raw backend records every byte the gateway sends
//!   it and parses it strictly ([`wire`]), for requests the guard refuses, requests it accepts
//!   and re-frames, bodies that break off half-way, and HTTP/2 requests downgraded to HTTP/1;
//! - path normalisation against route-level auth ([`paths`]);
//! - Host validation and host routing, spoofed forwarding headers, nominated hop-by-hop headers;
//! - HTTP/2 control-frame floods (PING, SETTINGS) bounded;
//! - slowloris heads and slow bodies closed within `edge.limits` while others are served.

mod h2raw;
mod paths;
mod slow;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use crate::framing::{one_shot, settle, Conn, WAIT};
use crate::support::*;
use wire::{RawBackend, WireConn};

/// `/api` → the raw backend `b`; `/hello` answered by the gateway.
fn wire_config(addr: SocketAddr, edge: &str) -> String {
    crate::framing::framing_config(addr, edge)
}

const SMUGGLED: &str = "GET /api/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\n";

/// Every backend connection parsed cleanly and nothing named `smuggled` ever reached the wire.
fn assert_clean_wire(conns: &[WireConn]) {
    for (i, c) in conns.iter().enumerate() {
        assert!(c.error.is_none(), "backend connection {i}: {:?}\nraw: {:?}", c.error, String::from_utf8_lossy(&c.raw));
        for r in &c.requests {
            assert!(!r.target.contains("smuggled"), "a smuggled request reached the backend: {}", r.target);
            let te = r.header("transfer-encoding");
            assert!(te.is_none() || te == Some(b"chunked".as_slice()), "{:?}", r.header_str("transfer-encoding"));
        }
    }
    let all: Vec<u8> = conns.iter().flat_map(|c| c.raw.clone()).collect();
    assert!(
        !all.windows(8).any(|w| w == b"smuggled"),
        "`smuggled` on the backend wire: {:?}",
        String::from_utf8_lossy(&all)
    );
}

/// Refused framing (one variant of each class the guard knows, in one place) leaves the backend
/// wire empty — not even a connection is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_framing_never_reaches_the_backend_wire() {
    let b = RawBackend::start().await;
    let g = gateway(&wire_config(b.addr, "")).await;
    let post = "POST /api/x HTTP/1.1\r\nHost: gw.test\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("CL.TE", format!("{post}Content-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        (
            "TE.CL",
            format!("{post}Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2d\r\n{SMUGGLED}\r\n0\r\n\r\n"),
        ),
        ("TE with a trailing comma", format!("{post}Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        (
            "TE upper-case then CL",
            format!("{post}TRANSFER-ENCODING: CHUNKED\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{SMUGGLED}"),
        ),
        ("TE with a tab value", format!("{post}Transfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n")),
        ("TE chunked, chunked", format!("{post}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n{SMUGGLED}")),
        ("CL with a leading zero list", format!("{post}Content-Length: 05, 5\r\n\r\nhello{SMUGGLED}")),
        ("CL twice, differing case", format!("{post}content-length: 5\r\nCONTENT-LENGTH: 45\r\n\r\nhello{SMUGGLED}")),
        ("CL with a trailing tab and garbage", format!("{post}Content-Length: 5\tx\r\n\r\nhello{SMUGGLED}")),
        ("bare LF terminating the head", format!("{post}Content-Length: 5\n\nhello")),
        ("bare LF in the request line", "GET /api/x HTTP/1.1\nHost: gw.test\r\n\r\n".to_owned()),
        ("request line with two spaces", "GET  /api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_owned()),
        ("request line with a tab", "GET\t/api/x HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_owned()),
        (
            "encoded CRLF is not a line end",
            "GET /api/x%0d%0aX-Injected:%201 HTTP/1.1\r\nHost: gw.test\rX: y\r\n\r\n".to_owned(),
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes) in &cases {
        if let Err(e) = crate::framing::expect_rejected(g.addr, case, bytes.as_bytes(), &[400, 501]).await {
            failures.push(e);
        }
    }
    settle().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let conns = b.connections();
    assert!(conns.iter().all(|c| c.raw.is_empty()), "the backend wire carried: {conns:?}");
}

/// Requests the guard accepts are re-framed canonically: one framing header, chunk extensions
/// gone, no framing field in trailers, every body exact, and nothing that followed a body parsed
/// as a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_bodies_are_reframed_canonically_on_the_backend_wire() {
    let b = RawBackend::start().await;
    let g = gateway(&wire_config(b.addr, "")).await;
    let mut c = Conn::open(g.addr).await;
    // Bodies that look like requests; chunk sizes with leading zeros and upper-case hex; an
    // extension with a quoted string holding CRLF-looking text; trailers; pipelining.
    let body_like_request = SMUGGLED.replace("smuggled", "inner");
    let sends = [
        format!("POST /api/one HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {}\r\n\r\n{body_like_request}", body_like_request.len()),
        format!(
            "POST /api/two HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n\
             0005;a=b\r\nhello\r\n000A ; q=\"x;y\"\r\n0123456789\r\n{:X}\r\n{body_like_request}\r\n0\r\nX-Trailer: t\r\n\r\n",
            body_like_request.len()
        ),
        "GET /api/three HTTP/1.1\r\nHost: gw.test\r\n\r\n".to_owned(),
        "POST /api/four HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n".to_owned(),
    ];
    c.send(sends.concat().as_bytes()).await;
    for want in ["/one", "/two", "/three", "/four"] {
        let r = c.response(WAIT).await.unwrap_or_else(|| panic!("no response for {want}: {}", c.leftover()));
        assert_eq!(r.status, 200, "{want}: {}", r.text());
        assert!(r.text().ends_with(want), "{want}: {}", r.text());
    }
    settle().await;
    let conns = b.connections();
    assert_clean_wire(&conns);
    let reqs = b.requests();
    let targets: Vec<&str> = reqs.iter().map(|r| r.target.as_str()).collect();
    assert_eq!(targets, ["/one", "/two", "/three", "/four"], "{conns:?}");
    assert_eq!(reqs[0].body, body_like_request.as_bytes());
    let mut two = b"hello0123456789".to_vec();
    two.extend_from_slice(body_like_request.as_bytes());
    assert_eq!(String::from_utf8_lossy(&reqs[1].body), String::from_utf8_lossy(&two));
    for r in &reqs {
        assert!(r.count("content-length") + r.count("transfer-encoding") <= 1, "{}", String::from_utf8_lossy(&r.head));
    }
    assert!(reqs[2].body.is_empty() && reqs[2].header("transfer-encoding").is_none());
}

/// A client that stops half-way through its body must not leave the backend connection waiting
/// for the rest: if the gateway put it back in its pool, the next client's request would be
/// read by the backend as the end of that body (and its own tail as a request).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_never_leaves_a_reused_backend_connection() {
    let b = RawBackend::start().await;
    let g = gateway(&wire_config(b.addr, "")).await;
    let cut = [
        ("Content-Length, cut", "POST /api/cut HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\n0123456789"),
        (
            "chunked, cut inside a chunk",
            "POST /api/cut HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n0123456789",
        ),
        (
            "chunked, cut at a chunk line",
            "POST /api/cut HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ),
        (
            "answered early, then cut",
            "POST /api/early HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 100\r\n\r\n0123456789",
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes) in cut {
        let before = b.connections().len();
        {
            let mut c = Conn::open(g.addr).await;
            c.send(bytes.as_bytes()).await;
            // Let the head and the partial body reach the backend, then hang up.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Another client, right after, on what would be the pooled connection.
        for i in 0..3 {
            let got = get(&g.url(&format!("/api/after{i}"))).await;
            if got.status != 200 || !got.text().ends_with(&format!("/after{i}")) {
                failures.push(format!("{case}: the next client got {} {}", got.status, got.text()));
            }
        }
        settle().await;
        for (n, conn) in b.connections().iter().enumerate().skip(before) {
            let text = String::from_utf8_lossy(&conn.raw);
            if (text.contains("/cut") || text.contains("/early")) && text.contains("/after") {
                failures.push(format!(
                    "{case}: backend connection {n} carried the cut request, then another client's: {text:?}"
                ));
            }
            if let Some(e) = &conn.error {
                failures.push(format!("{case}: backend connection {n}: {e}"));
            }
        }
    }
    let afters = b.requests().iter().filter(|r| r.target.starts_with("/after")).count();
    if afters != 12 {
        failures.push(format!("the backend parsed {afters} of the 12 follow-up requests"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// HTTP/2 requests are re-encoded as HTTP/1.1 for the backend: nothing an h2 client puts in a
/// header name, value or pseudo-header may become framing, a header line or a request line
/// there (Kettle 2021, "HTTP/2: the sequel is always worse"; RFC 9113 §8.2, §8.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_never_become_ambiguous_http1_at_the_backend() {
    use h2raw::*;
    let b = RawBackend::start().await;
    let canary = RawBackend::start().await;
    let g = gateway(&wire_config(b.addr, "")).await;
    let auth = "gw.test";
    let get = |path: &'static [u8], extra: &[(&'static [u8], &'static [u8])]| {
        let mut f: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"GET"), (b":scheme", b"http"), (b":authority", auth.as_bytes()), (b":path", path)];
        f.extend_from_slice(extra);
        vec![frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))]
    };
    let post = |extra: &[(&'static [u8], &'static [u8])], body: &[u8]| {
        let mut f: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", auth.as_bytes()),
            (b":path", b"/api/h2post"),
        ];
        f.extend_from_slice(extra);
        vec![frame(HEADERS, END_HEADERS, 1, &block(&f)), frame(DATA, END_STREAM, 1, body)]
    };
    let smuggled_body = format!("0\r\n\r\n{SMUGGLED}");
    let canary_authority = format!("{}", canary.addr);
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("H2.CL: content-length shorter than DATA", post(&[(b"content-length", b"0")], smuggled_body.as_bytes())),
        ("H2.CL: content-length longer than DATA", post(&[(b"content-length", b"100")], b"short")),
        ("H2.TE: transfer-encoding chunked", post(&[(b"transfer-encoding", b"chunked")], smuggled_body.as_bytes())),
        ("connection header", get(b"/api/h2", &[(b"connection", b"keep-alive")])),
        ("keep-alive header", get(b"/api/h2", &[(b"keep-alive", b"timeout=5")])),
        ("upgrade header", get(b"/api/h2", &[(b"upgrade", b"websocket")])),
        ("te other than trailers", get(b"/api/h2", &[(b"te", b"gzip")])),
        ("CRLF in a value", get(b"/api/h2", &[(b"x-a", b"1\r\nTransfer-Encoding: chunked")])),
        ("LF in a value", get(b"/api/h2", &[(b"x-a", b"1\nX-Injected: 1")])),
        ("CRLF in a name", get(b"/api/h2", &[(b"x-a\r\nx-injected", b"1")])),
        ("colon in a name", get(b"/api/h2", &[(b"x-a:x-injected", b"1")])),
        ("upper-case name", get(b"/api/h2", &[(b"X-Upper", b"1")])),
        ("space in :path", get(b"/api/h2 HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /api/smuggled", &[])),
        ("CRLF in :path", get(b"/api/h2\r\nX-Injected: 1", &[])),
        ("request line in :method", {
            let f: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"GET /api/smuggled HTTP/1.1\r\nHost: gw.test\r\n\r\nGET"),
                (b":scheme", b"http"),
                (b":authority", b"gw.test"),
                (b":path", b"/api/h2"),
            ];
            vec![frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))]
        }),
        ("pseudo-header after a regular one", {
            let f: Vec<(&[u8], &[u8])> =
                vec![(b":method", b"GET"), (b":scheme", b"http"), (b"x-a", b"1"), (b":path", b"/api/h2")];
            vec![frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))]
        }),
        ("duplicate :path", get(b"/api/h2", &[(b":path", b"/api/smuggled")])),
        ("empty :path", get(b"", &[])),
        ("CRLF in :authority", {
            let f: Vec<(&[u8], &[u8])> = vec![
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"gw.test\r\nX-Injected: 1"),
                (b":path", b"/api/h2"),
            ];
            vec![frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))]
        }),
    ];
    let mut failures = Vec::new();
    for (case, frames) in &cases {
        let before = b.requests().len();
        let out = send(g.addr, frames, WAIT).await;
        settle().await;
        let new: Vec<_> = b.requests().into_iter().skip(before).collect();
        // Refused (stream reset, GOAWAY or a 4xx) — or, where RFC 9113 lets a server drop the
        // offending field, forwarded without it.
        let refused = out.reset.is_some() || out.goaway.is_some() || out.status.is_some_and(|s| s >= 400);
        if !refused && new.is_empty() {
            failures.push(format!("{case}: neither refused nor forwarded: {out:?}"));
        }
        for r in &new {
            let head = String::from_utf8_lossy(&r.head).to_ascii_lowercase();
            if head.contains("x-injected") || head.contains("upgrade:") || head.contains("keep-alive:") {
                failures.push(format!("{case}: the backend head carries injected or hop-by-hop fields: {head:?}"));
            }
            if case.starts_with("H2.CL") || case.starts_with("H2.TE") {
                failures.push(format!("{case}: forwarded ({} body bytes) instead of refused", r.body.len()));
            }
        }
    }
    settle().await;
    assert_clean_wire(&b.connections());
    assert!(canary.connections().is_empty(), "{canary_authority} was contacted");
    assert!(failures.is_empty(), "{} case(s):\n{}", failures.len(), failures.join("\n"));
}

/// `:authority` and `host` that disagree (RFC 9113 §8.3.1), absolute-form hosts and
/// `X-Forwarded-Host`/`Forwarded` from clients never choose the host-specific API: the host the
/// gateway routes on is the one the backend is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routing_uses_one_validated_host() {
    let public = RawBackend::start().await;
    let vip = RawBackend::start().await;
    let yaml = format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge: {{ access_log: {{ format: off }} }}
backends:
  public: {{ servers: [ {{ url: "http://{}" }} ] }}
  vip: {{ servers: [ {{ url: "http://{}" }} ] }}
apis:
  shop: {{ path: /shop, backend: public }}
  vip:
    path: /shop
    hosts: [ vip.test ]
    backend: vip
    policies:
      inbound:
        - return-response: {{ status: 403, headers: {{ content-type: text/plain }}, body: "vip only" }}
"#,
        public.addr, vip.addr
    );
    let g = gateway(&yaml).await;
    let h1 =
        |host: &str, extra: &str| format!("GET /shop/x HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    // The VIP API answers 403 for any spelling of its host; other hosts reach the public API.
    let vip_spellings = [h1("vip.test", ""), h1("VIP.TEST", ""), h1("vip.test:8080", ""), h1("Vip.Test.", "")];
    let mut failures = Vec::new();
    for raw in &vip_spellings {
        let (r, _, _) = one_shot(g.addr, raw.as_bytes()).await;
        match r.first() {
            Some(r) if r.status == 403 || r.status == 400 => {}
            other => failures.push(format!("{raw:?}: {:?}", other.map(|r| (r.status, r.text())))),
        }
    }
    let spoofs = [
        h1("public.test", "X-Forwarded-Host: vip.test\r\n"),
        h1("public.test", "Forwarded: host=vip.test\r\n"),
        h1("public.test", "X-Host: vip.test\r\nX-Original-Host: vip.test\r\n"),
    ];
    for raw in &spoofs {
        let (r, _, _) = one_shot(g.addr, raw.as_bytes()).await;
        if r.first().map(|r| r.status) != Some(200) {
            failures.push(format!("{raw:?}: {:?}", r.first().map(|r| (r.status, r.text()))));
        }
    }
    // HTTP/2: :authority says vip.test, host says public.test (and the reverse).
    for (authority, host) in [("vip.test", "public.test"), ("public.test", "vip.test")] {
        use h2raw::*;
        let f: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", authority.as_bytes()),
            (b":path", b"/shop/h2"),
            (b"host", host.as_bytes()),
        ];
        let out = send(g.addr, &[frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(&f))], WAIT).await;
        if out.status == Some(200) {
            // Served by the public API: then it was routed on a public host, and the backend
            // must not be told vip.test anywhere.
            let last = public.requests().pop().expect("the public backend saw it");
            if last.header_str("host").is_some_and(|h| h.contains("vip")) {
                failures.push(format!(":authority {authority} / host {host}: routed public, told vip"));
            }
        }
    }
    settle().await;
    assert!(vip.connections().is_empty(), "the VIP backend was reached past its policy");
    for r in public.requests() {
        let told: Vec<String> =
            ["host", "x-forwarded-host", "forwarded"].iter().filter_map(|h| r.header_str(h)).collect();
        if told.iter().any(|v| v.to_ascii_lowercase().contains("vip.test")) {
            failures.push(format!("the public backend was told the VIP host: {told:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A client cannot remove the forwarding headers the gateway adds by naming them in
/// `Connection`, nor pass its own client-address or URL-override headers to the backend
/// (Davison 2019 "Abusing HTTP hop-by-hop request headers"; reliability.md §2.4, §2.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarding_and_nominated_hop_by_hop_headers() {
    let b = RawBackend::start().await;
    let g = gateway(&wire_config(b.addr, "")).await;
    let raw = "GET /api/x HTTP/1.1\r\nHost: gw.test\r\n\
               Connection: keep-alive, X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host, Forwarded, X-Request-Id, Proxy-Connection\r\n\
               X-Forwarded-For: 203.0.113.66\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.test\r\n\
               Forwarded: for=203.0.113.66;host=evil.test;proto=https\r\nX-Request-Id: client-chosen-id\r\n\
               X-Real-IP: 203.0.113.66\r\nTrue-Client-IP: 203.0.113.66\r\n\
               X-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n\
               Proxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade-Insecure-Requests: 1\r\nConnection: close\r\n\r\n";
    let (r, _, _) = one_shot(g.addr, raw.as_bytes()).await;
    let r = r.first().expect("an answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let rid = r.header("x-request-id").expect("x-request-id").to_owned();
    assert_ne!(rid, "client-chosen-id", "an untrusted client chose the request id");
    settle().await;
    let seen = b.requests();
    let s = seen.last().expect("the backend saw the request");
    let head = String::from_utf8_lossy(&s.head).into_owned();
    assert_eq!(s.header_str("x-forwarded-for").as_deref(), Some("127.0.0.1"), "{head}");
    assert_eq!(s.header_str("x-forwarded-proto").as_deref(), Some("http"), "{head}");
    assert_eq!(s.header_str("x-forwarded-host").as_deref(), Some("gw.test"), "{head}");
    assert_eq!(s.header_str("forwarded").as_deref(), Some("for=127.0.0.1;proto=http;host=\"gw.test\""), "{head}");
    assert_eq!(s.header_str("x-request-id"), Some(rid), "{head}");
    for h in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"] {
        assert_eq!(s.count(h), 1, "{h}: {head}");
    }
    for h in ["proxy-connection", "te", "x-real-ip", "true-client-ip", "x-original-url", "x-rewrite-url"] {
        assert!(s.header(h).is_none(), "{h} reached the backend: {head}");
    }
    assert!(!head.contains("203.0.113.66") && !head.contains("evil.test"), "{head}");
    assert_eq!(s.header_str("upgrade-insecure-requests").as_deref(), Some("1"), "an end-to-end header was dropped");
}

/// PING and SETTINGS floods (CVE-2019-9512, CVE-2019-9515) from a client that never reads its
/// ACKs: the gateway's queue of replies stays bounded (it stops reading or closes), memory stays
/// flat, and other clients are served throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_ping_and_settings_floods_are_bounded() {
    use h2raw::*;
    use tokio::io::AsyncWriteExt;
    let b = backend().await;
    let g = gateway(&simple_config(b.addr, "", "")).await;
    let before = slow::rss_kib();
    for kind in [PING, SETTINGS] {
        let mut s = tokio::net::TcpStream::connect(g.addr).await.expect("connect");
        // A small receive buffer: the gateway's ACKs pile up on its side, not in our kernel.
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        s.write_all(&hello).await.expect("preface");
        let one = if kind == PING { frame(PING, 0, 0, &[7; 8]) } else { frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]) };
        let burst: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
        let mut written = 0usize;
        let started = std::time::Instant::now();
        // Up to 200 MB of frames, never reading; stop when the gateway stops reading (our
        // write times out) or closes.
        while written < 200_000_000 && started.elapsed() < Duration::from_secs(10) {
            match tokio::time::timeout(Duration::from_millis(500), s.write_all(&burst)).await {
                Ok(Ok(())) => written += burst.len(),
                _ => break,
            }
        }
        assert_still_served(g.addr).await;
        let grown = slow::rss_kib().saturating_sub(before);
        assert!(grown < 64 * 1024, "kind {kind}: RSS grew {grown} KiB after {written} bytes of frames");
    }
}

async fn assert_still_served(addr: SocketAddr) {
    let got = get(&format!("http://{addr}/api/bystander")).await;
    assert_eq!(got.status, 200);
    let got = send(
        &h2c_client(),
        http::Request::get(format!("http://{addr}/api/bystander")).body(Default::default()).expect("req"),
    )
    .await;
    assert_eq!(got.status, 200);
}
