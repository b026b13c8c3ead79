//! A backend that records the raw bytes of every connection the gateway opens to it, and the
//! strict parse of those bytes. It answers each request it can parse with `200` and keeps the
//! connection; it answers `/early…` as soon as the head is in, before reading the body (as a
//! server may, RFC 9112 §9.3), and then reads and discards the body as a correct server does.
//!
//! The decisive smuggling check reads this record: what went over the gateway→backend wire.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request as a strict HTTP/1.1 server parsed it off the backend wire.
#[derive(Debug, Clone)]
pub struct WireRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    /// The raw head, as sent.
    pub head: Vec<u8>,
}

impl WireRequest {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<String> {
        self.header(name).map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }
}

/// One backend connection: every byte received, and what parsed.
#[derive(Debug, Default, Clone)]
pub struct WireConn {
    pub raw: Vec<u8>,
    pub requests: Vec<WireRequest>,
    /// Why parsing stopped before the end of `raw`, if it did.
    pub error: Option<String>,
}

pub struct RawBackend {
    pub addr: SocketAddr,
    pub conns: Arc<Mutex<Vec<Arc<Mutex<WireConn>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    pub async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let conns: Arc<Mutex<Vec<Arc<Mutex<WireConn>>>>> = Arc::default();
        let conns2 = conns.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { return };
                let c: Arc<Mutex<WireConn>> = Arc::default();
                conns2.lock().push(c.clone());
                tokio::spawn(serve(s, c));
            }
        });
        RawBackend { addr, conns, task }
    }

    /// A copy of every connection so far.
    pub fn connections(&self) -> Vec<WireConn> {
        self.conns.lock().iter().map(|c| c.lock().clone()).collect()
    }

    pub fn requests(&self) -> Vec<WireRequest> {
        self.connections().into_iter().flat_map(|c| c.requests).collect()
    }
}

enum Parsed {
    Need,
    Done(WireRequest, usize),
    Bad(String),
}

/// Parses one request strictly (RFC 9112): CRLF only, one framing header, canonical chunks.
fn parse(b: &[u8], early: &mut bool) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(b) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Need,
        Err(e) => return Parsed::Bad(format!("head: {e}")),
    };
    let head = &b[..head_len];
    if head.windows(2).enumerate().any(|(i, w)| w[1] == b'\n' && w[0] != b'\r' && i + 1 < head_len) || head[0] == b'\n'
    {
        return Parsed::Bad("bare LF in a head".into());
    }
    let mut w = WireRequest {
        method: req.method.unwrap_or_default().to_owned(),
        target: req.path.unwrap_or_default().to_owned(),
        headers: req.headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect(),
        body: Vec::new(),
        head: head.to_vec(),
    };
    let cl = w.count("content-length");
    let te = w.count("transfer-encoding");
    if cl > 1 || te > 1 || (cl == 1 && te == 1) {
        return Parsed::Bad(format!("ambiguous framing: {cl} Content-Length, {te} Transfer-Encoding"));
    }
    *early = w.target.starts_with("/early");
    let rest = &b[head_len..];
    if let Some(v) = w.header("content-length") {
        let Some(n) = std::str::from_utf8(v).ok().and_then(|s| s.parse::<usize>().ok()) else {
            return Parsed::Bad("Content-Length is not a number".into());
        };
        if rest.len() < n {
            return Parsed::Need;
        }
        w.body = rest[..n].to_vec();
        return Parsed::Done(w, head_len + n);
    }
    if let Some(v) = w.header("transfer-encoding") {
        if !v.eq_ignore_ascii_case(b"chunked") {
            return Parsed::Bad(format!("Transfer-Encoding {:?}", String::from_utf8_lossy(v)));
        }
        let mut at = 0;
        loop {
            let Some(nl) = rest[at..].windows(2).position(|x| x == b"\r\n") else { return Parsed::Need };
            let line = &rest[at..at + nl];
            if line.contains(&b'\n') || line.contains(&b'\r') {
                return Parsed::Bad("bare CR/LF in a chunk line".into());
            }
            if line.contains(&b';') {
                // The gateway re-frames chunks; it has no reason to forward a client's extensions.
                return Parsed::Bad(format!("chunk extension forwarded: {:?}", String::from_utf8_lossy(line)));
            }
            let Some(size) = std::str::from_utf8(line).ok().and_then(|s| usize::from_str_radix(s, 16).ok()) else {
                return Parsed::Bad(format!("chunk size {:?}", String::from_utf8_lossy(line)));
            };
            at += nl + 2;
            if size == 0 {
                loop {
                    let Some(nl) = rest[at..].windows(2).position(|x| x == b"\r\n") else { return Parsed::Need };
                    let line = &rest[at..at + nl];
                    at += nl + 2;
                    if nl == 0 {
                        break;
                    }
                    let name = line.split(|c| *c == b':').next().unwrap_or_default().to_ascii_lowercase();
                    if matches!(&name[..], b"content-length" | b"transfer-encoding" | b"host") {
                        return Parsed::Bad(format!("framing field in trailers: {:?}", String::from_utf8_lossy(line)));
                    }
                }
                return Parsed::Done(w, head_len + at);
            }
            if rest.len() < at + size + 2 {
                return Parsed::Need;
            }
            if &rest[at + size..at + size + 2] != b"\r\n" {
                return Parsed::Bad("chunk data longer than its size".into());
            }
            w.body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
        }
    }
    Parsed::Done(w, head_len)
}

async fn serve(mut s: TcpStream, c: Arc<Mutex<WireConn>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut answered_early = false;
    loop {
        loop {
            let mut early = false;
            match parse(&buf, &mut early) {
                Parsed::Done(req, used) => {
                    buf.drain(..used);
                    let answer = format!("backend saw {} {}", req.method, req.target);
                    c.lock().requests.push(req);
                    if !std::mem::take(&mut answered_early) {
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}", answer.len());
                        if s.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                Parsed::Need => {
                    // A head for `/early` is answered before its body.
                    if early && !answered_early && buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered_early = true;
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly").await;
                    }
                    break;
                }
                Parsed::Bad(why) => {
                    c.lock().error = Some(why);
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    // Keep recording what else arrives on this connection, answering nothing.
                    loop {
                        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => c.lock().raw.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                }
            }
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                c.lock().raw.extend_from_slice(&chunk[..n]);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}
