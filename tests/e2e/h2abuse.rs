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
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const DATA: u8 = 0x0;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;
const CANCEL: u32 = 0x8;
const REFUSED_STREAM: u32 = 0x7;
const COMPRESSION_ERROR: u32 = 0x9;
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
#[derive(Debug, Default, Clone)]
struct Wire {
    goaway: Option<GoAway>,
    /// (stream, error code) of each RST_STREAM.
    resets: Vec<(u32, u32)>,
    /// Streams that got a response HEADERS frame.
    responses: Vec<u32>,
    /// Streams that got DATA.
    data: Vec<u32>,
    /// PING ACKs.
    pongs: usize,
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
                    PING if f.flags & ACK != 0 => wire.pongs += 1,
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

    /// Sends a PING and waits for its ACK: the gateway has then read everything sent before it
    /// (h2 handles frames in order), and hyper has accepted every stream it opened.
    async fn ping_pong(&mut self) -> bool {
        let before = self.wire.lock().pongs;
        self.send(&frame(PING, 0, 0, &[0; 8])).await && self.wait_for(WAIT, |w| w.pongs > before || w.gone()).await
    }

    /// A copy of what came back so far.
    fn wire(&self) -> Wire {
        self.wire.lock().clone()
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
                        let (attack, in_flight, max_in_flight) =
                            (attack.clone(), in_flight.clone(), max_in_flight.clone());
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
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Counting { addr, attack, max_in_flight, task }
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

/// How a Rapid Reset attacker paces itself.
#[derive(Clone, Copy)]
enum Pace {
    /// As fast as the socket takes it, 100 HEADERS+RST_STREAM pairs per write.
    Burst,
    /// 10 pairs per write, then a PING round trip: the gateway has accepted those streams before
    /// the next ones arrive, so their resets never count as "pending accept" (hyper's only reset
    /// limit) and hyper hands every already-cancelled request to the proxy.
    Lockstep,
}

struct Attack {
    /// Streams written (HEADERS + RST_STREAM pairs).
    opened: u32,
    /// Streams written when the first GOAWAY or close was noticed.
    stopped_at: Option<u32>,
    took: Duration,
}

/// Opens up to `streams` streams, each HEADERS (END_STREAM) immediately followed by RST_STREAM
/// (CANCEL), ignoring any GOAWAY: it stops when the gateway closes the connection, after
/// `streams`, or after 15 s.
async fn rapid_reset(c: &mut Raw, authority: &str, streams: u32, pace: Pace) -> Attack {
    let block = Block::get(authority, "/api/attack").0;
    let batch = match pace {
        Pace::Burst => 100,
        Pace::Lockstep => 10,
    };
    let started = Instant::now();
    let (mut opened, mut stopped_at) = (0, None);
    while opened < streams && started.elapsed() < Duration::from_secs(15) && !c.wire().closed {
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
        if let Pace::Lockstep = pace {
            c.ping_pong().await;
        }
        if stopped_at.is_none() && c.gone() {
            stopped_at = Some(opened);
        }
    }
    let took = started.elapsed();
    c.wait_for(WAIT, |w| w.closed).await;
    if stopped_at.is_none() && c.gone() {
        stopped_at = Some(opened);
    }
    Attack { opened, stopped_at, took }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_burst_gets_goaway_and_barely_reaches_the_backend() {
    let b = Counting::start(Duration::from_millis(200)).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    let mut c = Raw::open(g.addr).await;
    let a = rapid_reset(&mut c, &g.addr.to_string(), 10_000, Pace::Burst).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let wire = c.wire();
    eprintln!(
        "rapid reset (burst): wrote {} HEADERS+RST pairs ({} bytes) in {:?}; {}; backend saw {}; RSS +{} KiB",
        a.opened,
        c.sent,
        a.took,
        wire.outcome(),
        b.attack(),
        rss_kib().saturating_sub(rss)
    );
    assert!(wire.closed, "still open after {} reset streams: {}", a.opened, wire.outcome());
    let goaway = wire.goaway.clone().expect("a GOAWAY before the close");
    assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{}", wire.outcome());
    // The gateway handled no more streams than this before it gave up on the peer (the writer
    // gets further: socket buffers).
    assert!(goaway.last_stream < 2 * 1_000, "{}", wire.outcome());
    assert!(b.attack() < 100, "the backend saw {} of {} reset requests", b.attack(), a.opened);
    assert_rss_bounded(rss, "rapid reset");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_in_lockstep_never_floods_the_backend() {
    let b = Counting::start(Duration::from_millis(200)).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();
    let mut c = Raw::open(g.addr).await;
    let a = rapid_reset(&mut c, &g.addr.to_string(), 5_000, Pace::Lockstep).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grew = assert_rss_bounded(rss, "rapid reset in lockstep");
    eprintln!(
        "rapid reset (lockstep): wrote {} HEADERS+RST pairs ({} bytes) in {:?}; first GOAWAY/close after {:?}; {}; \
         backend saw {}; RSS +{grew} KiB",
        a.opened,
        c.sent,
        a.took,
        a.stopped_at,
        c.wire().outcome(),
        b.attack(),
    );
    // Cancelled requests are dropped before the proxy gets to the backend.
    assert!(b.attack() < 100, "the backend saw {} of {} reset requests", b.attack(), a.opened);
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_in_lockstep_is_cut_off_after_1000_streams() {
    // reliability.md §4: H2 streams per connection, 1000 then GOAWAY (nginx keepalive_requests,
    // HAProxy max-total-streams). The attacker ignores the GOAWAY, so the connection must also be
    // closed soon after it.
    let b = Counting::start(Duration::from_millis(200)).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let mut c = Raw::open(g.addr).await;
    let a = rapid_reset(&mut c, &g.addr.to_string(), 20_000, Pace::Lockstep).await;
    let wire = c.wire();
    eprintln!(
        "rapid reset (lockstep, ignoring GOAWAY): {} streams written in {:?}, first GOAWAY/close after {:?}; {}; \
         backend saw {}",
        a.opened,
        a.took,
        a.stopped_at,
        wire.outcome(),
        b.attack()
    );
    let at = a.stopped_at.unwrap_or_else(|| panic!("{} reset streams and {}", a.opened, wire.outcome()));
    assert!(at <= 1_100, "the first GOAWAY or close came after {at} streams");
    assert!(wire.closed, "still open after {} streams: {}", a.opened, wire.outcome());
    // What the gateway processed: the last GOAWAY names it, unless it is still the graceful
    // first one (2^31-1) and the connection was dropped. The writer itself gets further (socket
    // buffers) once it stops waiting for PINGs.
    if let Some(g) = wire.goaway.as_ref().filter(|g| g.last_stream != 0x7fff_ffff) {
        assert!(g.last_stream <= 2 * (at + 500) + 1, "{}", wire.outcome());
    }
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 2. CONTINUATION flood (Nowotarski 2024; CVE-2024-27316, -27919, -28182, CVE-2023-45288).

/// HEADERS for stream 1 without END_HEADERS, then up to `max_frames` CONTINUATION frames carrying
/// `fragment` (never END_HEADERS), one frame per write (and at most 10 s). Returns the frames
/// written before the gateway said GOAWAY or closed.
async fn continuation_flood(
    c: &mut Raw,
    first: &[u8],
    fragment: impl Fn(usize) -> Vec<u8>,
    max_frames: usize,
) -> usize {
    assert!(c.send(&frame(HEADERS, END_STREAM, 1, first)).await);
    let started = Instant::now();
    let mut n = 0;
    while n < max_frames && started.elapsed() < Duration::from_secs(10) && !c.gone() {
        if !c.send(&frame(CONTINUATION, 0, 1, &fragment(n))).await {
            break;
        }
        n += 1;
        // Give the gateway a moment to react, so the count is close to where it stopped reading.
        c.wait_for(Duration::from_millis(2), Wire::gone).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_is_cut_off() {
    let b = Counting::start(Duration::ZERO).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let authority = g.addr.to_string();
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    // Complete small header fields, one per frame.
    let small = |i: usize| Block::default().literal(&format!("x-flood-{i}"), b"v").0;
    // Frames filled with complete header fields (~16 KiB each).
    let full = |i: usize| {
        let mut b = Block::default();
        for j in 0..150 {
            b = b.literal(&format!("x-{i}-{j}"), &[b'v'; 96]);
        }
        b.0
    };
    // One string literal that claims 64 MiB and never ends: the decoder can only buffer it.
    let endless_first = Block::get(&authority, "/api/attack").int(4, 0, 0).str(b"x-endless").int(7, 0, 1 << 26).0;
    type Fragment = Box<dyn Fn(usize) -> Vec<u8>>;
    let cases: [(&str, Vec<u8>, Fragment, usize); 4] = [
        ("empty", Block::get(&authority, "/api/attack").0, Box::new(|_| Vec::new()), 200_000),
        ("small headers", Block::get(&authority, "/api/attack").0, Box::new(small), 100_000),
        ("16 KiB of headers", Block::get(&authority, "/api/attack").0, Box::new(full), 4_096),
        ("one endless value", endless_first, Box::new(|_| vec![b'a'; MAX_FRAME]), 4_096),
    ];
    for (name, first, fragment, max_frames) in cases {
        let mut c = Raw::open(g.addr).await;
        let frames = continuation_flood(&mut c, &first, fragment, max_frames).await;
        assert!(c.wait_gone().await, "{name}: still open after {frames} CONTINUATION frames");
        let wire = c.wire();
        eprintln!(
            "CONTINUATION flood ({name}): {frames} frames / {} bytes written (of up to {max_frames}) before {}",
            c.sent,
            wire.outcome()
        );
        // h2 allows max(header list / frame size × 1.25, 5) CONTINUATION frames per block.
        assert!(frames <= 20, "{name}: {frames} frames went in before the gateway stopped reading");
        assert!(c.sent < 1 << 20, "{name}: {} bytes went in", c.sent);
        let goaway = wire.goaway.clone().unwrap_or_else(|| panic!("{name}: closed without GOAWAY"));
        assert!(goaway.code == ENHANCE_YOUR_CALM || goaway.code == COMPRESSION_ERROR, "{name}: {}", wire.outcome());
        assert_eq!(goaway.last_stream, 0, "{name}: the half-sent request was not processed");
        assert!(wire.responses.is_empty(), "{name}: {wire:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.attack(), 0, "the backend saw a request whose header block never ended");
    let grew = assert_rss_bounded(rss, "CONTINUATION flood");
    eprintln!("CONTINUATION flood: RSS +{grew} KiB");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 3. HPACK bomb (CVE-2016-6581): a small header block that decodes to a huge header list.

/// ~4 KiB header inserted into the 4 KiB dynamic table, then referenced by index `refs` times:
/// each one-byte reference decodes to 4 KiB + 32 of header list.
fn bomb(authority: &str, id: u32, insert: bool, refs: usize) -> Vec<u8> {
    let mut b = Block::get(authority, &format!("/api/attack/{id}"));
    if insert {
        b = b.insert("x-bomb", &[b'a'; 4000]);
    }
    b.0.extend(std::iter::repeat_n(0x80 | 62u8, refs));
    assert!(b.0.len() <= MAX_FRAME);
    frame(HEADERS, END_HEADERS | END_STREAM, id, &b.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused_without_decoding_it_into_memory() {
    let b = Counting::start(Duration::ZERO).await;
    let g = gateway(&abuse_config(b.addr, "")).await;
    let authority = g.addr.to_string();
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    // The big bomb: 8 KiB on the wire, 16 MB decoded, then 16 KiB frames of 64 MB each.
    let mut c = Raw::open(g.addr).await;
    let mut wire_bytes = bomb(&authority, 1, true, 4_000);
    for i in 1..64u32 {
        wire_bytes.extend(bomb(&authority, 2 * i + 1, false, 16_000));
    }
    let claimed: u64 = 4_001 * 4_038 + 63 * 16_000 * 4_038;
    let _ = c.send(&wire_bytes).await;
    assert!(c.wait_gone().await, "no GOAWAY or close after an HPACK bomb");
    {
        let wire = c.wire();
        eprintln!(
            "HPACK bomb: {} bytes on the wire claiming {} MB of headers → {}; responses {:?}; resets {:?}",
            c.sent,
            claimed >> 20,
            wire.outcome(),
            wire.responses,
            wire.resets
        );
        let goaway = wire.goaway.clone().expect("a GOAWAY");
        assert_eq!(goaway.code, ENHANCE_YOUR_CALM, "{}", wire.outcome());
        assert_eq!(goaway.last_stream, 0, "{}", wire.outcome());
    }

    // Moderate bombs, 2× the header list limit each (16 KiB → ~32 KiB decoded), stream after
    // stream: each is refused on its own (431 or RST_STREAM); the connection is not trusted forever.
    let mut c = Raw::open(g.addr).await;
    let mut sent = 0;
    let mut id = 1;
    while sent < 400 && !c.gone() {
        if !c.send(&bomb(&authority, id, id == 1, 8)).await {
            break;
        }
        sent += 1;
        id += 2;
        if sent % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    c.wait_for(Duration::from_secs(1), |w| w.gone() || w.responses.len() + w.resets.len() >= sent).await;
    {
        let wire = c.wire();
        eprintln!(
            "HPACK 2× bombs: {sent} streams → {} response HEADERS (no DATA: {}), {} RST_STREAM; {}",
            wire.responses.len(),
            wire.data.is_empty(),
            wire.resets.len(),
            wire.outcome()
        );
        assert!(wire.data.is_empty(), "a refused request got a body: {wire:?}");
        if !wire.gone() {
            assert!(wire.responses.len() + wire.resets.len() >= sent, "{wire:?}");
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.attack(), 0, "a bombed request reached the backend");
    let grew = assert_rss_bounded(rss, "HPACK bomb");
    eprintln!("HPACK bomb: RSS +{grew} KiB");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 4. More streams than SETTINGS_MAX_CONCURRENT_STREAMS.

async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// One request on an h2 connection: the status, or the h2 error (stream or connection).
async fn h2_get(
    client: &h2::client::SendRequest<Bytes>,
    url: &str,
    headers: &[(String, String)],
) -> Result<u16, h2::Error> {
    let mut req = Request::get(url);
    for (n, v) in headers {
        req = req.header(n.as_str(), v.as_str());
    }
    let req = req.body(()).expect("req");
    let mut client = client.clone().ready().await?;
    let (resp, _) = client.send_request(req, true)?;
    let resp = tokio::time::timeout(WAIT, resp).await.expect("h2 response in time")?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    Ok(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_concurrent_are_refused_and_never_reach_the_backend_at_once() {
    let delay = Duration::from_millis(600);
    let b = Counting::start(delay).await;
    let g = gateway(&abuse_config(b.addr, "h2_max_concurrent_streams: 10")).await;
    let authority = g.addr.to_string();
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();

    // A client that ignores SETTINGS_MAX_CONCURRENT_STREAMS: 30 requests in one write.
    let mut c = Raw::open(g.addr).await;
    let mut bytes = Vec::new();
    for i in 0..30u32 {
        let id = 2 * i + 1;
        bytes.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            id,
            &Block::get(&authority, &format!("/api/attack/{id}")).0,
        ));
    }
    assert!(c.send(&bytes).await);
    assert!(c.wait_for(WAIT, |w| w.refused() >= 20).await, "{:?}", c.wire());
    assert!(c.wait_for(WAIT, |w| w.responses.len() >= 10).await, "{:?}", c.wire());
    {
        let wire = c.wire();
        eprintln!(
            "30 streams at once (limit 10): {} refused, {} answered, backend saw {}, at most {} at once; {}",
            wire.refused(),
            wire.responses.len(),
            b.attack(),
            b.max_in_flight(),
            wire.outcome()
        );
        let refused: Vec<u32> = wire.resets.iter().filter(|r| r.1 == REFUSED_STREAM).map(|r| r.0).collect();
        assert_eq!(refused, (10..30).map(|i| 2 * i + 1).collect::<Vec<_>>(), "the 11th stream on are refused");
        let mut answered = wire.responses.clone();
        answered.sort_unstable();
        assert_eq!(answered, (0..10).map(|i| 2 * i + 1).collect::<Vec<_>>());
    }
    assert_eq!(b.attack(), 10);
    assert!(b.max_in_flight() <= 10, "{} in flight at once", b.max_in_flight());
    drop(c);

    // A well-behaved h2 client asking for 30 at once on one connection: queued by the client,
    // all answered, still never more than 10 at the backend.
    let before = b.attack();
    let h2 = h2_connect(g.addr).await;
    // One request first, so the client has the gateway's SETTINGS before the burst (until then
    // it may assume no limit and get REFUSED_STREAM, which is the gateway doing its job).
    assert_eq!(h2_get(&h2, &format!("http://{authority}/api/warm-up"), &[]).await.map_err(|e| e.to_string()), Ok(200));
    assert_eq!(h2.current_max_send_streams(), 10, "SETTINGS_MAX_CONCURRENT_STREAMS from the gateway");
    let started = Instant::now();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let h2 = h2.clone();
            let url = format!("http://{authority}/api/attack/queued-{i}");
            tokio::spawn(async move { h2_get(&h2, &url, &[]).await.map_err(|e| e.to_string()) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), Ok(200));
    }
    let took = started.elapsed();
    eprintln!("30 queued h2 requests (limit 10): all 200 in {took:?}, backend max in flight {}", b.max_in_flight());
    assert_eq!(b.attack() - before, 30);
    assert!(b.max_in_flight() <= 10, "{} in flight at once", b.max_in_flight());
    assert!(took >= delay * 3 - Duration::from_millis(100), "30 requests at 10 at a time took only {took:?}");

    // A client that keeps opening streams past the limit on one connection: every extra one
    // is refused, the backend still sees at most 10 at once, and the gateway gives up on it.
    let before = b.attack();
    let mut c = Raw::open(g.addr).await;
    let mut opened = 0u32;
    while opened < 2_000 && !c.gone() {
        let mut bytes = Vec::new();
        for _ in 0..50 {
            let id = 2 * opened + 1;
            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &Block::get(&authority, "/api/attack/flood").0));
            opened += 1;
        }
        if !c.send(&bytes).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let gone = c.wait_gone().await;
    {
        let wire = c.wire();
        eprintln!(
            "stream flood past the limit: {opened} opened, {} refused, backend saw {}, at most {} at once; {}",
            wire.refused(),
            b.attack() - before,
            b.max_in_flight(),
            wire.outcome()
        );
        assert!(gone, "{}", wire.outcome());
    }
    assert!(b.attack() - before <= 10, "{} flood requests reached the backend", b.attack() - before);
    assert!(b.max_in_flight() <= 10, "{} in flight at once", b.max_in_flight());
    let grew = assert_rss_bounded(rss, "stream flood");
    eprintln!("stream flood: RSS +{grew} KiB");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 5. A header list larger than edge.limits.header_bytes (SETTINGS_MAX_HEADER_LIST_SIZE).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_header_list_over_header_bytes_is_refused() {
    let b = Counting::start(Duration::ZERO).await;
    let g = gateway(&abuse_config(b.addr, "header_bytes: 4KiB")).await;
    let bystander = Bystander::start(g.addr);
    let url = |p: &str| format!("http://{}/api/{p}", g.addr);
    let one = |n: usize| vec![("x-big".to_owned(), "v".repeat(n))];
    let rss = rss_kib();
    let h2 = h2_connect(g.addr).await;

    // Fits: 4 KiB counts name + value + 32 per field (RFC 9113 §6.5.2), pseudo-headers too.
    assert_eq!(h2_get(&h2, &url("fits"), &one(3_000)).await.map_err(|e| e.to_string()), Ok(200));

    // Over it: h2 answers a bare 431 (or resets the stream); the connection carries on.
    let sum: Vec<(String, String)> = (0..6).map(|i| (format!("x-h{i}"), "v".repeat(1_000))).collect();
    for (name, headers) in [("one 6 KB header", one(6_000)), ("six 1 KB headers", sum)] {
        let got = h2_get(&h2, &url("attack/big"), &headers).await;
        eprintln!("h2 header list over 4 KiB ({name}): {got:?}");
        match got {
            Ok(status) => assert_eq!(status, 431, "{name}"),
            Err(e) => assert!(e.is_reset() && !e.is_go_away(), "{name}: {e:?}"),
        }
    }
    assert_eq!(h2_get(&h2, &url("fits-again"), &[]).await.map_err(|e| e.to_string()), Ok(200));

    // Way over it (more than 4× the limit): the connection is done with.
    let got = h2_get(&h2, &url("attack/huge"), &one(40_000)).await;
    eprintln!("h2 header list of 40 KB (limit 4 KiB): {got:?}");
    let e = got.expect_err("a 40 KB header list is not served");
    assert!(e.is_go_away() || e.is_io() || e.is_reset(), "{e:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.attack(), 0, "an oversized header list reached the backend");
    assert_rss_bounded(rss, "oversized header lists");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 6. More header fields than edge.limits.headers: the gateway's own 431.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_too_many_headers_is_431_problem() {
    let b = Counting::start(Duration::ZERO).await;
    let g = gateway(&abuse_config(b.addr, "headers: 20")).await;
    let bystander = Bystander::start(g.addr);
    let rss = rss_kib();
    let h2 = h2c_client();
    let req = |path: &str, n: usize| {
        let mut r = Request::get(g.url(path));
        for i in 0..n {
            r = r.header(format!("x-h{i}"), "v");
        }
        r.body(Full::default()).expect("req")
    };

    let got = send(&h2, req("/api/fits", 20)).await;
    assert_eq!(got.status, 200, "{}", got.text());
    for n in [21, 300] {
        let got = send(&h2, req("/api/attack", n)).await;
        let v = assert_problem(&got, 431, "edge");
        assert_eq!(v["type"], "urn:gatehouse:error:too-many-headers", "{v}");
    }
    // The same pooled h2 connection keeps serving.
    let got = send(&h2, req("/api/fits", 3)).await;
    assert_eq!(got.status, 200);

    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(b.attack(), 0, "a request with too many headers reached the backend");
    assert_rss_bounded(rss, "too many headers");
    bystander.finish().await;
    assert_still_served(g.addr).await;
}

// ---------------------------------------------------------------------------------------------
// 5. A stalled HTTP/2 request body (the HTTP/1 guard has its own deadline).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_h2_body_is_ended_within_body_timeout_while_others_are_served() {
    // This backend reads the whole body before it answers.
    let b = crate::support::backend().await;
    let g = gateway(&abuse_config(b.addr, "body_timeout: 1s")).await;
    let client = h2_connect(g.addr).await;
    let mut sender = client.clone().ready().await.expect("ready");
    let req = Request::post(format!("http://{}/api/upload", g.addr)).body(()).expect("req");
    let (resp, mut stream) = sender.send_request(req, false).expect("send");
    stream.send_data(Bytes::from_static(b"first bytes, then nothing"), false).expect("data");
    let started = std::time::Instant::now();

    // Meanwhile another client is served normally.
    assert_still_served(g.addr).await;

    let resp = tokio::time::timeout(Duration::from_secs(10), resp).await.expect("answered in time");
    let waited = started.elapsed();
    // Either the gateway answered 408 itself, or the backend call was cut and the stream ended.
    match resp {
        Ok(r) => assert_eq!(r.status(), 408, "a stalled body is a request timeout"),
        Err(e) => assert!(e.is_reset() || e.is_remote(), "unexpected error: {e}"),
    }
    assert!(waited < Duration::from_secs(5), "the stall was not bounded: {waited:?}");
    drop(stream);
}
