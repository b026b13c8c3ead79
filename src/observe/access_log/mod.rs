//! The gateway's access log.
//!
//! One line per finished request, in Apache `common`, `combined` (the default), any Apache
//! `LogFormat` string, or JSON (one object per line). Lines go to stdout or to a file that is
//! reopened on demand (the gateway calls [`AccessLog::reopen`] on SIGUSR1, after logrotate has
//! renamed the file).
//!
//! The request path only formats the line, straight into a buffer of its thread that the
//! writer takes whole (see `writer`); a dedicated writer thread does all I/O, in rounds about
//! 10 ms apart, so a line reaches the file within about 10 ms. When a thread's buffer is full the line is dropped and counted ([`AccessLog::dropped`]); logging
//! never blocks and never fails a request.
//!
//! Secrets never reach the log: the headers in [`REDACTED_HEADERS`] print `[redacted]` even
//! when a format names them, and the query parameters in [`REDACTED_QUERY_PARAMS`] have their
//! values replaced. Everything a client controls is escaped the way Apache does (`\"`, `\\`,
//! `\n`, `\xhh`, ...) or JSON-escaped, so a client cannot forge log lines.
//!
//! Times are written in UTC: `%t` is `[10/Oct/2000:13:55:36 +0000]`, JSON `time` is RFC 3339
//! with milliseconds and a `Z` suffix.
//!
//! This file holds the record and format parsing; `format` writes the values of a record (the
//! named fields, escaping, redaction and time stamps), `writer` hands lines to the writer
//! thread and writes them, `tests` holds the unit tests.

pub mod format;
#[cfg(test)]
mod tests;
mod writer;

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue, HOST, REFERER, USER_AGENT};
use http::{Method, Version};
use tokio::sync::{mpsc, oneshot};

use format::{apache_query, bytes, escape, host, ip, micros, num, text, write_clf, write_header, write_json};
use format::{write_combined, write_common, write_protocol, write_request};
use format::{FieldFn, FIELDS};
use writer::{Msg, Shared, Sink};

use crate::route::Route;

/// Headers whose values are never logged, even when a `LogFormat` names them with
/// `%{...}i` / `%{...}o`: credentials, session cookies and API keys. `[redacted]` is printed
/// instead (or `-` when the header is absent). Lower-case, as `HeaderName::as_str` returns.
pub const REDACTED_HEADERS: &[&str] =
    &["authorization", "proxy-authorization", "cookie", "set-cookie", "ocp-apim-subscription-key", "x-api-key"];

/// Query parameters whose values are replaced with `[redacted]` in `%q`, `%r` and the JSON
/// `query`: clients may pass their subscription key in the URL instead of a header. Names
/// match case-insensitively after percent-decoding.
pub const REDACTED_QUERY_PARAMS: &[&str] = &["subscription-key"];

const REDACTED: &[u8] = b"[redacted]";

/// Apache's `common` format.
pub const COMMON: &str = "%h %l %u %t \"%r\" %>s %b";
/// Apache's `combined` format, the default.
pub const COMBINED: &str = "%h %l %u %t \"%r\" %>s %b \"%{Referer}i\" \"%{User-agent}i\"";

/// Lines each thread holds for the writer before its new lines are dropped (about 5 MB of
/// typical lines).
pub const DEFAULT_QUEUE_LINES: usize = 16_384;
/// Wake-ups and flush requests the writer's channel holds.
const WAKE_QUEUE: usize = 256;

/// Everything a log line can say about one finished request. Built by the proxy once per
/// request: the text of the request and response heads is copied into one [`HeadText`], names
/// from the config are shared (`Arc`s), so a record usually allocates nothing of its own.
#[derive(Clone, Debug)]
pub struct LogRecord {
    /// `%h`: the trusted client address.
    pub client_ip: IpAddr,
    /// `%{remote}p`.
    pub peer_port: u16,
    /// `%p`, `%{local}p`, `%{canonical}p`: the listener's port.
    pub local_port: u16,
    /// `%t`: request start; the start of its second when the format prints no more
    /// ([`Needs::time_ms`]).
    pub time: SystemTime,
    /// `%m`.
    pub method: Method,
    /// `%H`.
    pub version: Version,
    /// `%>s` / `%s`: final status sent to the client.
    pub status: u16,
    /// `%b` (`-` when 0), `%B`.
    pub bytes_sent: u64,
    /// `%D` (microseconds), `%T` (whole seconds).
    pub duration: Duration,
    /// `%U`, `%q`, `%v`, the request id, `%{NAME}i` and `%{NAME}o`.
    pub head: HeadText,
    /// `%u`: the authenticated subject, `-` when `None`.
    pub user: Option<String>,
    /// The API and operation; `None` when the request matched no route.
    pub route: Option<Arc<Route>>,
    pub product: Option<Arc<str>>,
    pub subscription: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    /// `"edge" | "policy" | "backend" | "gateway"`; `None` when the backend answered normally.
    pub layer: Option<&'static str>,
    pub policy: Option<&'static str>,
    pub upstream_status: Option<u16>,
    pub time_edge: Duration,
    pub time_policy: Duration,
    pub time_backend: Option<Duration>,
}

impl Default for LogRecord {
    fn default() -> Self {
        LogRecord {
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_port: 0,
            local_port: 0,
            time: UNIX_EPOCH,
            method: Method::GET,
            version: Version::HTTP_11,
            status: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            head: HeadText::default(),
            user: None,
            route: None,
            product: None,
            subscription: None,
            backend: None,
            layer: None,
            policy: None,
            upstream_status: None,
            time_edge: Duration::ZERO,
            time_policy: Duration::ZERO,
            time_backend: None,
        }
    }
}

impl LogRecord {
    /// Makes the record equal to [`LogRecord::default`] again, keeping the head text's
    /// buffers: a finished record is reused for a later request (see `observe::RequestTail`).
    /// Field by field, as building a default and moving it in copies the whole record.
    pub(crate) fn reset(&mut self) {
        self.client_ip = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        self.peer_port = 0;
        self.local_port = 0;
        self.time = UNIX_EPOCH;
        self.method = Method::GET;
        self.version = Version::HTTP_11;
        self.status = 0;
        self.bytes_sent = 0;
        self.duration = Duration::ZERO;
        self.head.clear();
        self.user = None;
        self.route = None;
        self.product = None;
        self.subscription = None;
        self.backend = None;
        self.layer = None;
        self.policy = None;
        self.upstream_status = None;
        self.time_edge = Duration::ZERO;
        self.time_policy = Duration::ZERO;
        self.time_backend = None;
    }

    /// The API's name, when the request was routed.
    pub fn api(&self) -> Option<&str> {
        self.route.as_deref().map(|r| r.api.name.as_str())
    }

    /// The operation, when the request was routed to one.
    pub fn operation(&self) -> Option<&str> {
        self.route.as_deref().and_then(|r| r.operation.as_deref())
    }
}

/// A reused [`HeadText`] whose buffer grew beyond this many bytes gives it back.
const HEAD_KEEP: usize = 4096;

/// Where one value lies in [`HeadText`]'s buffer.
type Span = (u32, u32);

/// The text of a request's (and its response's) head that a line prints: path, query, host,
/// request id and the header values the format names. Copied into one buffer rather than
/// shared with the request: a shared slice would pin the connection's read buffer, which hyper
/// then could not reuse for the next request. Records are reused (see `observe::RequestTail`),
/// so the buffer usually has room already and a copy is a plain `memcpy`.
#[derive(Clone, Debug, Default)]
pub struct HeadText {
    bytes: Vec<u8>,
    /// `None`: `/`, the path of a record nobody set one for.
    path: Option<Span>,
    query: Option<Span>,
    host: Option<Span>,
    request_id: Span,
    /// `(response, name, value)`, in the order added.
    headers: Vec<(bool, HeaderName, Span)>,
}

impl HeadText {
    fn push(&mut self, b: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(b);
        // A head is far below 4 GiB (hyper and the edge limits bound it).
        (u32::try_from(start).unwrap_or(u32::MAX), u32::try_from(self.bytes.len()).unwrap_or(u32::MAX))
    }

    fn get(&self, (a, b): Span) -> &[u8] {
        self.bytes.get(a as usize..b as usize).unwrap_or_default()
    }

    /// Back to empty (the path `/`), keeping the buffers unless a huge head grew them.
    fn clear(&mut self) {
        if self.bytes.capacity() > HEAD_KEEP {
            self.bytes = Vec::new();
        } else {
            self.bytes.clear();
        }
        self.path = None;
        self.query = None;
        self.host = None;
        self.request_id = (0, 0);
        if self.headers.capacity() > 16 {
            self.headers = Vec::new();
        } else {
            self.headers.clear();
        }
    }

    /// `%U`: the path only.
    pub fn set_path(&mut self, path: &str) {
        self.path = Some(self.push(path.as_bytes()));
    }

    /// The query without its leading `?` (a leading `?` is tolerated); `%q` prints `?a=b`, or
    /// nothing when `None` or empty.
    pub fn set_query(&mut self, query: Option<&str>) {
        self.query = query.map(|q| self.push(q.as_bytes()));
    }

    /// `%v`: the host the request was for, without port; `None`, empty or `-` print `-`.
    pub fn set_host(&mut self, host: Option<&str>) {
        self.host = host.map(|h| self.push(h.as_bytes()));
    }

    pub fn set_request_id(&mut self, id: &str) {
        self.request_id = self.push(id.as_bytes());
    }

    /// The gateway's request id, which is visible ASCII (`edge::request_id` makes or admits no
    /// other), so it needs no text check.
    pub fn set_request_id_value(&mut self, id: &HeaderValue) {
        self.request_id = self.push(id.as_bytes());
    }

    /// Adds a value of a request (`%{NAME}i`) or response (`%{NAME}o`) header.
    pub fn add_header(&mut self, response: bool, name: &HeaderName, value: &[u8]) {
        let span = self.push(value);
        self.headers.push((response, name.clone(), span));
    }

    /// Replaces the values of a header by `value`.
    pub fn set_header(&mut self, response: bool, name: &HeaderName, value: &[u8]) {
        self.headers.retain(|(r, n, _)| !(*r == response && n == name));
        self.add_header(response, name, value);
    }

    /// Adds the first value of each of `names` that `map` has.
    pub fn pick_headers(&mut self, response: bool, names: &[HeaderName], map: &HeaderMap) {
        for name in names {
            if let Some(v) = map.get(name) {
                self.add_header(response, name, v.as_bytes());
            }
        }
    }

    /// [`HeadText::pick_headers`] of a request, also returning its Host header: one walk over a
    /// small map, where a hashed lookup per name costs more than comparing the names it has.
    pub fn pick_request_headers<'m>(&mut self, names: &[HeaderName], map: &'m HeaderMap) -> Option<&'m HeaderValue> {
        if map.len() > 16 || names.len() > 64 {
            self.pick_headers(false, names, map);
            return map.get(HOST);
        }
        let mut host = None;
        let mut seen = 0u64;
        for (name, value) in map {
            if host.is_none() && *name == HOST {
                host = Some(value);
            }
            if let Some(i) = names.iter().position(|n| n == name) {
                if seen & (1 << i) == 0 {
                    seen |= 1 << i;
                    self.add_header(false, name, value.as_bytes());
                }
            }
        }
        host
    }

    pub fn path(&self) -> &[u8] {
        self.path.map_or(b"/", |s| self.get(s))
    }

    pub fn query(&self) -> Option<&[u8]> {
        self.query.map(|s| self.get(s))
    }

    pub fn host(&self) -> Option<&[u8]> {
        self.host.map(|s| self.get(s))
    }

    pub fn request_id(&self) -> &[u8] {
        self.get(self.request_id)
    }

    /// The first value of a request or response header.
    pub fn first_header(&self, response: bool, name: &HeaderName) -> Option<&[u8]> {
        self.headers.iter().find(|(r, n, _)| *r == response && n == name).map(|(_, _, s)| self.get(*s))
    }

    /// The values of a request or response header, in order.
    pub fn header<'a>(&'a self, response: bool, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> {
        self.headers.iter().filter(move |(r, n, _)| *r == response && n == name).map(|(_, _, s)| self.get(*s))
    }
}

/// One compiled element of an Apache format: the common directives have their own arms (a
/// `match` the compiler lays out as a jump table, each arm inlined), the `%{name}g` fields a
/// function of [`FIELDS`].
#[derive(Clone, Debug)]
enum Piece {
    Literal(Box<[u8]>),
    /// `%h`
    ClientIp,
    /// `%u`
    User,
    /// `%t`
    Time,
    /// `%r`
    Request,
    /// `%>s`, `%s`
    Status,
    /// `%b`: `-` for none
    BytesClf,
    /// `%B`
    Bytes,
    /// `%D`, `%{us}T`
    Micros,
    /// `%{ms}T`
    Millis,
    /// `%T`, `%{s}T`
    Secs,
    /// `%v`
    Host,
    /// `%p`, `%{local}p`, `%{canonical}p`
    LocalPort,
    /// `%{remote}p`
    PeerPort,
    /// `%U`
    Path,
    /// `%q`
    Query,
    /// `%m`
    Method,
    /// `%H`
    Protocol,
    /// `%{name}g`: a value of the record (the field's name, its writer), written Apache-style.
    Value(&'static str, FieldFn),
    Header {
        name: HeaderName,
        response: bool,
        redact: bool,
    },
}

/// A compiled Apache `LogFormat` string.
#[derive(Clone, Debug)]
pub struct ApacheFormat {
    pieces: Vec<Piece>,
    /// `common` or `combined`, which have a writer of their own.
    standard: Option<Standard>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Standard {
    Common,
    Combined,
}

/// The fields of [`FIELDS`] that [`Needs::gateway`] stands for.
const GATEWAY_FIELDS: [&str; 11] = [
    "api",
    "operation",
    "product",
    "subscription",
    "backend",
    "layer",
    "policy",
    "upstream_status",
    "time_edge",
    "time_policy",
    "time_backend",
];

/// What of a request a format prints beyond its path, query, method, version, client, ports,
/// status, size, duration and the headers of [`LogFormat::headers_used`]: the proxy fills only
/// that into a [`LogRecord`] (`common` and `combined` print none of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// `%v`, the `host` field: [`HeadText::set_host`].
    pub host: bool,
    /// The `request_id` field: [`HeadText::set_request_id`].
    pub request_id: bool,
    /// The `time` field, to the millisecond; else only the second of [`LogRecord::time`] is
    /// printed (`%t`).
    pub time_ms: bool,
    /// The API, operation, product, subscription, backend, layer, policy, upstream status and
    /// layer timings.
    pub gateway: bool,
}

/// A compiled access-log format.
#[derive(Clone, Debug)]
pub enum LogFormat {
    Apache(ApacheFormat),
    Json,
}

impl Default for LogFormat {
    fn default() -> Self {
        LogFormat::parse(COMBINED).unwrap_or(LogFormat::Json)
    }
}

impl LogFormat {
    /// `"common" | "combined" | "json"` or any Apache `LogFormat` string. The error names the
    /// bad directive and its byte offset.
    pub fn parse(spec: &str) -> Result<LogFormat, String> {
        match spec.trim() {
            "json" => Ok(LogFormat::Json),
            "common" => parse_apache(COMMON).map(LogFormat::Apache),
            "combined" => parse_apache(COMBINED).map(LogFormat::Apache),
            _ => parse_apache(spec).map(LogFormat::Apache),
        }
    }

    /// The request and response headers this format prints, so the proxy copies only those
    /// into a [`LogRecord`] instead of whole header maps.
    pub fn headers_used(&self) -> (Vec<HeaderName>, Vec<HeaderName>) {
        match self {
            LogFormat::Json => (vec![USER_AGENT, REFERER], Vec::new()),
            LogFormat::Apache(f) => {
                let (mut req, mut resp) = (Vec::new(), Vec::new());
                for piece in &f.pieces {
                    if let Piece::Header { name, response, .. } = piece {
                        let list = if *response { &mut resp } else { &mut req };
                        if !list.contains(name) {
                            list.push(name.clone());
                        }
                    }
                    if let Piece::Value(name, _) = piece {
                        for (field, header) in [("user_agent", USER_AGENT), ("referer", REFERER)] {
                            if *name == field && !req.contains(&header) {
                                req.push(header);
                            }
                        }
                    }
                }
                (req, resp)
            }
        }
    }

    /// What of a request this format prints beyond what every line may (see [`Needs`]).
    pub fn needs(&self) -> Needs {
        let LogFormat::Apache(f) = self else {
            return Needs { host: true, request_id: true, time_ms: true, gateway: true };
        };
        let mut needs = Needs::default();
        for piece in &f.pieces {
            match piece {
                Piece::Host | Piece::Value("host", _) => needs.host = true,
                Piece::Value("request_id", _) => needs.request_id = true,
                Piece::Value("time", _) => needs.time_ms = true,
                Piece::Value(name, _) if GATEWAY_FIELDS.contains(name) => needs.gateway = true,
                _ => {}
            }
        }
        needs
    }

    /// Appends one line for `rec`, including the trailing `'\n'`.
    pub fn write(&self, rec: &LogRecord, out: &mut Vec<u8>) {
        match self {
            LogFormat::Apache(f) => {
                // Room for a usual line at once, so the many small appends never reallocate.
                out.reserve(256);
                match f.standard {
                    Some(Standard::Combined) => write_combined(rec, out),
                    Some(Standard::Common) => write_common(rec, out),
                    None => {
                        for piece in &f.pieces {
                            write_piece(piece, rec, out);
                        }
                    }
                }
            }
            LogFormat::Json => write_json(rec, out),
        }
        out.push(b'\n');
    }
}

#[inline]
fn write_piece(piece: &Piece, r: &LogRecord, o: &mut Vec<u8>) {
    match piece {
        Piece::Literal(l) => o.extend_from_slice(l),
        Piece::ClientIp => ip(o, r.client_ip),
        Piece::User => text(o, bytes(&r.user), false),
        Piece::Time => write_clf(o, r.time),
        Piece::Request => write_request(r, o),
        Piece::Status => num(o, r.status.into()),
        Piece::BytesClf => match r.bytes_sent {
            0 => o.push(b'-'),
            n => num(o, n),
        },
        Piece::Bytes => num(o, r.bytes_sent),
        Piece::Micros => num(o, micros(r.duration)),
        Piece::Millis => num(o, micros(r.duration) / 1000),
        Piece::Secs => num(o, r.duration.as_secs()),
        Piece::Host => text(o, host(r), false),
        Piece::LocalPort => num(o, r.local_port.into()),
        Piece::PeerPort => num(o, r.peer_port.into()),
        Piece::Path => escape(o, r.head.path()),
        Piece::Query => apache_query(r, o),
        Piece::Method => o.extend_from_slice(r.method.as_str().as_bytes()),
        Piece::Protocol => write_protocol(o, r.version),
        Piece::Value(_, value) => value(r, o, false),
        Piece::Header { name, response, redact } => write_header(r, o, name, *response, *redact),
    }
}

fn parse_apache(spec: &str) -> Result<ApacheFormat, String> {
    if spec.is_empty() {
        return Err("empty access log format".to_owned());
    }
    let b = spec.as_bytes();
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            lit.push(b[i]);
            i += 1;
            continue;
        }
        // `i` only ever stops on ASCII bytes below, so every slice is on a char boundary.
        let start = i;
        i += 1;
        while i < b.len() && (b[i] == b'<' || b[i] == b'>') {
            i += 1;
        }
        let mut arg = None;
        if b.get(i) == Some(&b'{') {
            let Some(close) = spec[i..].find('}') else {
                return Err(format!("unterminated \"%{{\" at offset {start} of access log format"));
            };
            arg = Some(&spec[i + 1..i + close]);
            i += close + 1;
        }
        let Some(c) = spec[i..].chars().next() else {
            return Err(format!("incomplete directive \"{}\" at offset {start} of access log format", &spec[start..]));
        };
        i += c.len_utf8();
        match directive(c, arg) {
            Ok(Piece::Literal(l)) => lit.extend_from_slice(&l),
            Ok(piece) => {
                if !lit.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut lit).into()));
                }
                pieces.push(piece);
            }
            Err(why) => return Err(format!("{why} \"{}\" at offset {start} of access log format", &spec[start..i])),
        }
    }
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit.into()));
    }
    let standard = match spec {
        COMMON => Some(Standard::Common),
        COMBINED => Some(Standard::Combined),
        _ => None,
    };
    Ok(ApacheFormat { pieces, standard })
}

fn directive(c: char, arg: Option<&str>) -> Result<Piece, &'static str> {
    Ok(match (c, arg) {
        ('%', None) => Piece::Literal(Box::new(*b"%")),
        // Always `-` (no identd): a literal, merged with its neighbours.
        ('l', None) => Piece::Literal(Box::new(*b"-")),
        ('i' | 'o', Some(name)) => {
            let name =
                HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| "invalid header name in directive")?;
            let redact = REDACTED_HEADERS.contains(&name.as_str());
            let response = c == 'o';
            Piece::Header { name, response, redact }
        }
        ('g', Some(name)) => match FIELDS.iter().find(|(n, _)| *n == name.trim()) {
            Some(&(name, field)) => Piece::Value(name, field),
            None => return Err("unknown gateway field in directive"),
        },
        ('i' | 'o' | 'g', None) => return Err("missing {NAME} in directive"),
        ('h', None) => Piece::ClientIp,
        ('u', None) => Piece::User,
        ('t', None) => Piece::Time,
        ('r', None) => Piece::Request,
        ('s', None) => Piece::Status,
        ('b', None) => Piece::BytesClf,
        ('B', None) => Piece::Bytes,
        ('D', None) | ('T', Some("us")) => Piece::Micros,
        ('T', Some("ms")) => Piece::Millis,
        ('T', None | Some("s")) => Piece::Secs,
        ('v', None) => Piece::Host,
        ('p', None | Some("local" | "canonical")) => Piece::LocalPort,
        ('p', Some("remote")) => Piece::PeerPort,
        ('U', None) => Piece::Path,
        ('q', None) => Piece::Query,
        ('m', None) => Piece::Method,
        ('H', None) => Piece::Protocol,
        _ => return Err("unsupported directive"),
    })
}

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(PathBuf),
}

#[derive(Debug)]
struct Inner {
    format: LogFormat,
    needs: Needs,
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
}

/// The access log: bounded per-thread buffers in front of a writer thread. Cheap to clone.
/// The writer writes what is left and exits when the last handle is dropped; call
/// [`AccessLog::flush`] before the process exits.
#[derive(Clone, Debug)]
pub struct AccessLog {
    inner: Arc<Inner>,
}

impl AccessLog {
    /// Opens the target now (append, create) so errors surface at start-up, and spawns the
    /// writer; each thread holds up to [`DEFAULT_QUEUE_LINES`] lines for it.
    pub fn start(format: LogFormat, target: LogTarget) -> io::Result<AccessLog> {
        Self::start_with_capacity(format, target, DEFAULT_QUEUE_LINES)
    }

    /// [`AccessLog::start`] with each thread holding at most `lines` lines (at least 1) for
    /// the writer.
    pub fn start_with_capacity(format: LogFormat, target: LogTarget, lines: usize) -> io::Result<AccessLog> {
        let sink = Sink::open(target)?;
        let (tx, rx) = mpsc::channel(WAKE_QUEUE);
        let shared = Arc::new(Shared::new(lines));
        let writer_shared = Arc::clone(&shared);
        // A dedicated OS thread rather than a tokio task: every write is a blocking syscall
        // (a slow disk, or a stdout pipe whose reader stalls), which must not occupy an async
        // worker, and `spawn_blocking` per batch would cost a pool hand-off each time. The
        // thread parks in `blocking_recv` when idle, and `start` works with or without a
        // runtime.
        std::thread::Builder::new()
            .name("access-log".to_owned())
            .spawn(move || writer::run(rx, sink, &writer_shared))?;
        let needs = format.needs();
        Ok(AccessLog { inner: Arc::new(Inner { format, needs, tx, shared }) })
    }

    /// What the format prints of a request beyond the basics ([`LogFormat::needs`]).
    pub fn needs(&self) -> Needs {
        self.inner.needs
    }

    /// Formats `rec` into this thread's buffer. Never blocks and never fails: when the buffer
    /// is full the line is dropped and counted.
    pub fn log(&self, rec: &LogRecord) {
        let inner = &*self.inner;
        if inner.shared.append(|out| inner.format.write(rec, out)) {
            // The first line since the writer last came: wake it. A full channel means it has
            // wake-ups waiting already.
            let _ = inner.tx.try_send(Msg::Wake);
        }
    }

    /// The next line goes to a freshly opened file (logrotate: rename, then SIGUSR1). Lines
    /// logged before the call still go to the old file, from every thread. No-op for stdout.
    pub fn reopen(&self) {
        self.inner.shared.reopen();
        let _ = self.inner.tx.try_send(Msg::Wake);
    }

    /// Lines dropped because a thread's buffer was full (the writer fell behind).
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// Failed writes, flushes and reopens (also reported on stderr, sparingly).
    pub fn write_errors(&self) -> u64 {
        self.inner.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Waits until everything logged before the call is written and flushed.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}
