//! HTTP/2 abuse (reliability.md §2.2): Rapid Reset, CONTINUATION floods, HPACK bombs, stream
//! floods past SETTINGS_MAX_CONCURRENT_STREAMS, and header lists over `edge.limits`. Each attack
//! must stay bounded — a GOAWAY or a close after a bounded number of frames, a bounded number of
//! requests at the backend, bounded memory — while a bystander on other connections (h2c and
//! HTTP/1.1) keeps getting 200s during and after it.
//!
//! The h2 crate refuses to misbehave, so the attacks are hand-built frames over TCP (h2c prior
//! knowledge): a 9-byte frame header plus payload, HPACK without Huffman.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

const WAIT: Duration = Duration::from_secs(5);
/// How much this test process may grow while an attack runs. Unbounded buffering of any of these
/// floods would cost hundreds of megabytes (or gigabytes, for the HPACK bomb).
const RSS_BUDGET_KIB: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Raw HTTP/2 frames (RFC 9113 §4.1, §6) and HPACK without Huffman (RFC 7541).

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// SETTINGS_MAX_FRAME_SIZE's initial value: what a peer may send before asking for more.
const MAX_FRAME: usize = 16_384;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24);
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// An HPACK header block, built one representation at a time.
#[derive(Default, Clone)]
struct Block(Vec<u8>);

impl Block {
    /// An integer with an `n`-bit prefix; `flags` holds the bits above the prefix (§5.1).
    fn int(mut self, n: u32, flags: u8, mut v: usize) -> Self {
        let max = (1usize << n) - 1;
        if v < max {
            self.0.push(flags | v as u8);
            return self;
        }
        self.0.push(flags | max as u8);
        v -= max;
        while v >= 128 {
            self.0.push((v % 128) as u8 | 0x80);
            v /= 128;
        }
        self.0.push(v as u8);
        self
    }

    /// A string literal without Huffman coding (§5.2).
    fn str(self, s: &[u8]) -> Self {
        let mut b = self.int(7, 0, s.len());
        b.0.extend_from_slice(s);
        b
    }

    /// Indexed header field (§6.1): 62 is the newest dynamic table entry.
    fn indexed(self, index: usize) -> Self {
        self.int(7, 0x80, index)
    }

    /// Literal without indexing, new name (§6.2.2).
    fn literal(self, name: &str, value: &[u8]) -> Self {
        self.int(4, 0, 0).str(name.as_bytes()).str(value)
    }

    /// Literal without indexing, name from the static table.
    fn literal_idx(self, name_index: usize, value: &str) -> Self {
        self.int(4, 0, name_index).str(value.as_bytes())
    }

    /// Literal with incremental indexing, new name (§6.2.1): lands in the dynamic table.
    fn insert(self, name: &str, value: &[u8]) -> Self {
        self.int(6, 0x40, 0).str(name.as_bytes()).str(value)
    }

    /// `GET path` for `authority`: the four pseudo-headers, nothing indexed.
    fn get(authority: &str, path: &str) -> Self {
        // Static table: 2 = :method GET, 6 = :scheme http, 4 = :path, 1 = :authority.
        Block::default().indexed(2).indexed(6).literal_idx(4, path).literal_idx(1, authority)
    }
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Frame { kind: head[3], flags: head[4], stream, payload })
}

#[derive(Debug, Clone)]
struct GoAway {
    last_stream: u32,
    code: u32,
    debug: String,
}

/// What the gateway has sent on a raw connection so far.
#[derive(Debug, Default)]
struct Wire {
    goaway: Option<GoAway>,
    /// (stream, error code) of each RST_STREAM.
    resets: Vec<(u32, u32)>,
    /// Streams that got a response HEADERS frame.
    responses: Vec<u32>,
    /// Streams that got DATA.
    data: Vec<u32>,
    /// EOF or a read error (a reset connection).
    closed: bool,
}

impl Wire {
    fn gone(&self) -> bool {
        self.goaway.is_some() || self.closed
    }

    fn refused(&self) -> usize {
        self.resets.iter().filter(|(_, code)| *code == REFUSED_STREAM).count()
    }

    fn outcome(&self) -> String {
        match &self.goaway {
            Some(g) => format!(
                "GOAWAY(code {:#x}, last stream {}, {:?}){}",
                g.code,
                g.last_stream,
                g.debug,
                if self.closed { " + close" } else { "" }
            ),
            None if self.closed => "close without GOAWAY".to_owned(),
            None => "still open".to_owned(),
        }
    }
}

/// A prior-knowledge h2c connection driven by hand. A reader task records what comes back.
struct Raw {
    w: OwnedWriteHalf,
    wire: Arc<Mutex<Wire>>,
    reader: tokio::task::JoinHandle<()>,
    /// Bytes written successfully.
    sent: usize,
}

impl Drop for Raw {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Raw {
    /// Preface, our SETTINGS, wait for the server's SETTINGS, ACK them.
    async fn open(addr: SocketAddr) -> Raw {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        s.write_all(&hello).await.expect("preface");
        let settings = tokio::time::timeout(WAIT, async {
            loop {
                let f = read_frame(&mut s).await.expect("server SETTINGS");
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    return f.payload;
                }
            }
        })
        .await
        .expect("server SETTINGS in time");
        assert_eq!(settings.len() % 6, 0);
        s.write_all(&frame(SETTINGS, ACK, 0, &[])).await.expect("settings ack");
        let (r, w) = s.into_split();
        let wire: Arc<Mutex<Wire>> = Arc::default();
        let wire2 = wire.clone();
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(r);
            loop {
                let Ok(f) = read_frame(&mut r).await else {
                    wire2.lock().closed = true;
                    return;
                };
                let mut wire = wire2.lock();
                match f.kind {
                    GOAWAY if f.payload.len() >= 8 => {
                        let p = &f.payload;
                        wire.goaway = Some(GoAway {
                            last_stream: u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff,
                            code: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                            debug: String::from_utf8_lossy(&p[8..]).into_owned(),
                        });
                    }
                    RST_STREAM if f.payload.len() == 4 => {
                        let p = &f.payload;
                        wire.resets.push((f.stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]])));
                    }
                    HEADERS => wire.responses.push(f.stream),
                    DATA => wire.data.push(f.stream),
                    _ => {}
                }
            }
        });
        Raw { w, wire, reader, sent: 0 }
    }

    /// Writes; false once the gateway has closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        let ok = tokio::time::timeout(WAIT, self.w.write_all(bytes)).await.is_ok_and(|r| r.is_ok());
        if ok {
            self.sent += bytes.len();
        }
        ok
    }

    fn gone(&self) -> bool {
        self.wire.lock().gone()
    }

    /// Waits until `done` holds for what came back (or `wait` passes); returns whether it did.
    async fn wait_for(&self, wait: Duration, done: impl Fn(&Wire) -> bool) -> bool {
        let until = Instant::now() + wait;
        loop {
            if done(&self.wire.lock()) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for the gateway to be done with this connection: a GOAWAY and then EOF.
    async fn wait_gone(&self) -> bool {
        self.wait_for(WAIT, |w| w.goaway.is_some() && w.closed).await || self.gone()
    }
}

// ---------------------------------------------------------------------------------------------
// A backend that counts requests on `/attack…` paths and how many of them it holds at once.

struct Counting {
    addr: SocketAddr,
    /// Requests under `/attack` that reached the backend.
    attack: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Counting {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements the in-flight count when the request ends, answered or cancelled.
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Counting {
    /// `/attack…` requests are answered after `delay`; everything else at once.
    async fn start(delay: Duration) -> Counting {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let attack: Arc<AtomicUsize> = Arc::default();
        let in_flight: Arc<AtomicUsize> = Arc::default();
        let max_in_flight: Arc<AtomicUsize> = Arc::default();
        let counters = (attack.clone(), in_flight.clone(), max_in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (attack, in_flight, max_in_flight) = counters.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (attack, in_flight, max_in_flight) = (attack.clone(), in_flight.clone(), max_in_flight.clone());
                        async move {
                            if req.uri().path().starts_with("/attack") {
                                attack.fetch_add(1, Ordering::SeqCst);
                                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                let _held = InFlight(in_flight);
                                max_in_flight.fetch_max(now, Ordering::SeqCst);
                                let _ = req.into_body().collect().await;
                                tokio::time::sleep(delay).await;
                            }
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Counting { addr, attack, in_flight, max_in_flight, task }
    }

    fn attack(&self) -> usize {
        self.attack.load(Ordering::SeqCst)
    }

    fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }
}

fn abuse_config(backend: SocketAddr, limits: &str) -> String {
    format!(
        r#"
listeners: [ {{ name: main, bind: "127.0.0.1:0" }} ]
edge:
  access_log: {{ format: off }}
  limits: {{ {limits} }}
backends: {{ b: {{ servers: [ {{ url: "http://{backend}" }} ] }} }}
apis:
  api: {{ path: /api, backend: b }}
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Bystanders and memory.

/// A normal client on its own connections (a pooled h2c connection and HTTP/1.1) that keeps
/// asking for `/api/bystander` while an attack runs.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

async fn get_status(c: &Client, url: &str) -> Result<u16, String> {
    let req = Request::get(url).body(Full::default()).expect("req");
    match tokio::time::timeout(WAIT, c.request(req)).await {
        Err(_) => Err("timed out".to_owned()),
        Ok(Err(e)) => Err(format!("error: {e}")),
        Ok(Ok(r)) => {
            let status = r.status().as_u16();
            r.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
            Ok(status)
        }
    }
}

impl Bystander {
    fn start(addr: SocketAddr) -> Bystander {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let url = format!("http://{addr}/api/bystander");
            let (h2, h1) = (h2c_client(), client());
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop2.load(Ordering::SeqCst) {
                for (name, c) in [("h2c", &h2), ("HTTP/1.1", &h1)] {
                    match get_status(c, &url).await {
                        Ok(200) => ok += 1,
                        other => failed.push(format!("{name}: {other:?}")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        });
        Bystander { stop, task }
    }

    /// Stops; asserts every request got 200 and returns how many did.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (ok, failed) = self.task.await.expect("bystander task");
        assert!(failed.is_empty(), "bystander requests failed during the attack: {failed:?}");
        assert!(ok >= 2, "the bystander got no answers");
        ok
    }
}

/// Fresh h2c and HTTP/1.1 clients both get 200.
async fn assert_still_served(addr: SocketAddr) {
    let url = format!("http://{addr}/api/after");
    assert_eq!(get_status(&h2c_client(), &url).await, Ok(200), "h2c after the attack");
    assert_eq!(get_status(&client(), &url).await, Ok(200), "HTTP/1.1 after the attack");
}

/// VmRSS of this process (the gateway runs in-process), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Returns the growth; fails past the budget.
fn assert_rss_bounded(before: u64, what: &str) -> u64 {
    let after = rss_kib();
    let grew = after.saturating_sub(before);
    assert!(grew < RSS_BUDGET_KIB, "{what}: RSS grew {grew} KiB ({before} → {after} KiB)");
    grew
}

// ---------------------------------------------------------------------------------------------
// 1. Rapid Reset (CVE-2023-44487).

/// Opens up to `streams` streams, each HEADERS (END_STREAM) immediately followed by RST_STREAM
/// (CANCEL), `batch` pairs per write, pausing `pause` between writes. Stops when the gateway
/// says GOAWAY or closes. Returns the number of streams written.
async fn rapid_reset(c: &mut Raw, authority: &str, streams: u32, batch: u32, pause: Duration) -> u32 {
    let block = Block::get(authority, "/api/attack").0;
    let started = Instant::now();
    let mut opened = 0;
    while opened < streams && started.elapsed() < Duration::from_secs(15) && !c.gone() {
        let mut bytes = Vec::new();
        for _ in 0..batch {
            let id = 2 * opened + 1;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &block));
            bytes.extend(rst(id, CANCEL));
            opened += 1;
        }
        if !c.send(&bytes).await {
            break;
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
    opened
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_burst_gets_goaway_and_barely_reaches_the_backend() {
    let b = Counting::start(Duration::from_millis(200)).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    let mut c = Raw::open(g.addr).await;
    let opened = rapid_reset(&mut c, &g.addr.to_string(), 10_000, 100, Duration::ZERO).await;
    assert!(c.wait_gone().await, "no GOAWAY or close after {opened} reset streams");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = c.wire.lock();
    eprintln!(
        "rapid reset (burst): wrote {opened} HEADERS+RST pairs ({} bytes); {}; backend saw {}; RSS +{} KiB",
        c.sent,
        wire.outcome(),
        b.attack(),
        rss_kib().saturating_sub(rss)
    );
    let goaway = wire.goaway.clone().expect("a GOAWAY before the close");
    assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{}", wire.outcome());
    // The gateway processed no more than this many streams before it gave up on the peer.
    assert!(goaway.last_stream < 2 * 1000, "{}", wire.outcome());
    assert!(b.attack() < 100, "the backend saw {} of {opened} reset requests", b.attack());
    drop(wire);
    assert_rss_bounded(rss, "rapid reset");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_paced_stays_bounded() {
    // Pairs trickled so the gateway accepts each stream before its reset arrives: the reset
    // no longer counts as "pending accept" and hyper hands the request to the proxy.
    let b = Counting::start(Duration::from_millis(200)).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    let mut c = Raw::open(g.addr).await;
    let opened = rapid_reset(&mut c, &g.addr.to_string(), 2_000, 1, Duration::from_millis(1)).await;
    let gone = c.wait_gone().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = c.wire.lock();
    eprintln!(
        "rapid reset (paced): wrote {opened} HEADERS+RST pairs ({} bytes); {}; backend saw {}; RSS +{} KiB",
        c.sent,
        wire.outcome(),
        b.attack(),
        rss_kib().saturating_sub(rss)
    );
    assert!(gone, "no GOAWAY or close after {opened} reset streams; the backend saw {}", b.attack());
    assert!(b.attack() < 200, "the backend saw {} of {opened} reset requests", b.attack());
    drop(wire);
    assert_rss_bounded(rss, "paced rapid reset");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}
