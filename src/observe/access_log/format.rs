//! Writing the values of a [`LogRecord`]: the named gateway fields (the JSON keys, also
//! `%{name}g`), Apache-style and JSON escaping, numbers, addresses, durations, UTC time stamps,
//! and the redaction of secret headers and query parameters.

use std::cell::RefCell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{HeaderName, REFERER, USER_AGENT};
use http::Version;

use super::{LogRecord, REDACTED, REDACTED_QUERY_PARAMS};

/// Writes one named value of a record: JSON-encoded when the flag is set (absent = `null`),
/// else Apache-escaped (absent = `-`).
pub(super) type FieldFn = fn(&LogRecord, &mut Vec<u8>, bool);

/// The JSON keys in output order, also the names `%{name}g` accepts.
pub(super) const FIELDS: &[(&str, FieldFn)] = &[
    ("time", |r, o, j| quoted(o, j, |o| rfc3339(o, r.time))),
    ("client_ip", |r, o, j| quoted(o, j, |o| ip(o, r.client_ip))),
    ("method", |r, o, j| text(o, Some(r.method.as_str().as_bytes()), j)),
    ("path", |r, o, j| text(o, Some(r.head.path()), j)),
    ("query", query_field),
    ("protocol", |r, o, j| text(o, Some(protocol(r.version).as_bytes()), j)),
    ("status", |r, o, _| num(o, r.status.into())),
    ("bytes_sent", |r, o, _| num(o, r.bytes_sent)),
    ("duration_ms", |r, o, _| millis(o, r.duration)),
    ("request_id", |r, o, j| text(o, Some(r.head.request_id()), j)),
    ("host", |r, o, j| text(o, host(r), j)),
    ("user_agent", |r, o, j| text(o, header(r, &USER_AGENT), j)),
    ("referer", |r, o, j| text(o, header(r, &REFERER), j)),
    ("user", |r, o, j| text(o, bytes(&r.user), j)),
    ("api", |r, o, j| text(o, r.api().map(str::as_bytes), j)),
    ("operation", |r, o, j| text(o, r.operation().map(str::as_bytes), j)),
    ("product", |r, o, j| text(o, shared(&r.product), j)),
    ("subscription", |r, o, j| text(o, shared(&r.subscription), j)),
    ("backend", |r, o, j| text(o, shared(&r.backend), j)),
    ("layer", |r, o, j| text(o, r.layer.map(str::as_bytes), j)),
    ("policy", |r, o, j| text(o, r.policy.map(str::as_bytes), j)),
    ("upstream_status", |r, o, j| match r.upstream_status {
        Some(status) => num(o, status.into()),
        None => text(o, None, j),
    }),
    ("time_edge", |r, o, _| millis(o, r.time_edge)),
    ("time_policy", |r, o, _| millis(o, r.time_policy)),
    ("time_backend", |r, o, j| match r.time_backend {
        Some(d) => millis(o, d),
        None => text(o, None, j),
    }),
];

/// Apache's `common` format, written without a dispatch per piece, its literals constants the
/// compiler writes in place rather than copies through `memcpy`.
pub(super) fn write_common(r: &LogRecord, o: &mut Vec<u8>) {
    if r.user.is_some() || !cached_prefix(o, r.client_ip, r.time) {
        let start = o.len();
        ip(o, r.client_ip);
        o.extend_from_slice(b" - ");
        match &r.user {
            None => o.push(b'-'),
            Some(u) => escape(o, u.as_bytes()),
        }
        o.push(b' ');
        write_clf(o, r.time);
        o.extend_from_slice(b" \"");
        if r.user.is_none() {
            remember_prefix(o.get(start..).unwrap_or_default(), r.client_ip, r.time);
        }
    }
    write_request(r, o);
    o.extend_from_slice(b"\" ");
    num(o, r.status.into());
    o.push(b' ');
    match r.bytes_sent {
        0 => o.push(b'-'),
        n => num(o, n),
    }
}

/// Apache's `combined` format (see [`write_common`]).
pub(super) fn write_combined(r: &LogRecord, o: &mut Vec<u8>) {
    write_common(r, o);
    if r.head.headers.is_empty() {
        // Neither header came (scripts and probes send neither).
        o.extend_from_slice(b" \"-\" \"-\"");
        return;
    }
    o.extend_from_slice(b" \"");
    write_header(r, o, &REFERER, false, false);
    o.extend_from_slice(b"\" \"");
    write_header(r, o, &USER_AGENT, false, false);
    o.push(b'"');
}

/// The start of a `common` line without a user, `1.2.3.4 - - [10/Oct/2000:13:55:36 +0000] "`,
/// as a thread last wrote it: it holds for the client's further requests in the same second.
struct Prefix {
    ip: IpAddr,
    /// The second of the time stamp, `[from, until)`.
    from: SystemTime,
    until: SystemTime,
    text: [u8; 96],
    len: usize,
}

thread_local! {
    static PREFIX: RefCell<Option<Prefix>> = const { RefCell::new(None) };
}

/// Writes the thread's [`Prefix`] when it is the one of `ip` and `t`.
fn cached_prefix(out: &mut Vec<u8>, ip: IpAddr, t: SystemTime) -> bool {
    let written = PREFIX.try_with(|c| {
        let p = c.try_borrow().ok()?;
        let p = p.as_ref().filter(|p| p.ip == ip && p.from <= t && t < p.until)?;
        // All of the fixed-size text, then cut: a constant-length copy is written in place.
        out.extend_from_slice(&p.text);
        out.truncate(out.len() - (p.text.len() - p.len));
        Some(())
    });
    matches!(written, Ok(Some(())))
}

/// Keeps `text`, the prefix just written for `ip` and `t`, as the thread's [`Prefix`].
#[cold]
fn remember_prefix(text: &[u8], ip: IpAddr, t: SystemTime) {
    let Ok(since) = t.duration_since(UNIX_EPOCH) else { return };
    let from = UNIX_EPOCH.checked_add(Duration::from_secs(since.as_secs()));
    let Some((from, until)) = from.and_then(|f| Some((f, f.checked_add(Duration::from_secs(1))?))) else { return };
    let mut buf = [0u8; 96];
    let Some(slot) = buf.get_mut(..text.len()) else { return };
    slot.copy_from_slice(text);
    let _ = PREFIX.try_with(|c| {
        if let Ok(mut p) = c.try_borrow_mut() {
            *p = Some(Prefix { ip, from, until, text: buf, len: text.len() });
        }
    });
}

/// The text of the numbers 100 to 999 (statuses, small sizes), looked up rather than divided.
static DIGITS3: [[u8; 3]; 900] = {
    let mut t = [[0u8; 3]; 900];
    let mut i = 0;
    while i < 900 {
        let n = i + 100;
        t[i] = [b'0' + (n / 100) as u8, b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
        i += 1;
    }
    t
};

/// `%r`: method, path and query, protocol.
pub(super) fn write_request(r: &LogRecord, o: &mut Vec<u8>) {
    // A method is a token (the http crate admits nothing else), which never needs escaping.
    if r.method == http::Method::GET {
        o.extend_from_slice(b"GET");
    } else {
        o.extend_from_slice(r.method.as_str().as_bytes());
    }
    o.push(b' ');
    escape(o, r.head.path());
    apache_query(r, o);
    o.push(b' ');
    write_protocol(o, r.version);
}

/// `%H`, a constant for the usual version.
pub(super) fn write_protocol(o: &mut Vec<u8>, v: Version) {
    if v == Version::HTTP_11 {
        o.extend_from_slice(b"HTTP/1.1");
    } else {
        o.extend_from_slice(protocol(v).as_bytes());
    }
}

/// `%{NAME}i` / `%{NAME}o`: all values joined with `, `; `-` when absent.
pub(super) fn write_header(rec: &LogRecord, out: &mut Vec<u8>, name: &HeaderName, response: bool, redact: bool) {
    let mut values = rec.head.header(response, name);
    match values.next() {
        None => out.push(b'-'),
        Some(_) if redact => out.extend_from_slice(REDACTED),
        Some(first) => {
            escape(out, first);
            for v in values {
                out.extend_from_slice(b", ");
                escape(out, v);
            }
        }
    }
}

/// `%q`: `?` and the redacted, escaped query; nothing when there is none.
pub(super) fn apache_query(rec: &LogRecord, out: &mut Vec<u8>) {
    if let Some(q) = query(rec) {
        out.push(b'?');
        redact_query(q, |part| escape(out, part));
    }
}

pub(super) fn write_json(rec: &LogRecord, out: &mut Vec<u8>) {
    out.push(b'{');
    for (i, (key, field)) in FIELDS.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'"');
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(b"\":");
        field(rec, out, true);
    }
    out.push(b'}');
}

fn query_field(rec: &LogRecord, out: &mut Vec<u8>, json: bool) {
    match query(rec) {
        Some(q) if json => {
            let mut buf = Vec::with_capacity(q.len() + 8);
            redact_query(q, |part| buf.extend_from_slice(part));
            text(out, Some(&buf), true);
        }
        Some(q) => redact_query(q, |part| escape(out, part)),
        None => text(out, None, json),
    }
}

fn quoted(out: &mut Vec<u8>, json: bool, f: impl FnOnce(&mut Vec<u8>)) {
    if json {
        out.push(b'"');
        f(out);
        out.push(b'"');
    } else {
        f(out);
    }
}

pub(super) fn bytes(s: &Option<String>) -> Option<&[u8]> {
    s.as_deref().map(str::as_bytes)
}

fn shared(s: &Option<std::sync::Arc<str>>) -> Option<&[u8]> {
    s.as_deref().map(str::as_bytes)
}

/// A string value: a JSON string (invalid UTF-8 replaced) or Apache-escaped; absent as
/// `null` / `-`.
pub(super) fn text(out: &mut Vec<u8>, value: Option<&[u8]>, json: bool) {
    match value {
        None => out.extend_from_slice(if json { b"null" } else { b"-" }),
        Some(v) if json && v.iter().all(plain) => {
            out.push(b'"');
            out.extend_from_slice(v);
            out.push(b'"');
        }
        Some(v) if json => {
            let v = String::from_utf8_lossy(v);
            if serde_json::to_writer(&mut *out, &*v).is_err() {
                // Unreachable: writing to a Vec cannot fail.
                out.extend_from_slice(b"null");
            }
        }
        Some(v) => escape(out, v),
    }
}

#[inline]
pub(super) fn num(out: &mut Vec<u8>, n: u64) {
    // Statuses, ports and small sizes take the short paths: fixed-size writes, no copy call.
    let d = |k: u64| b'0' + (n / k % 10) as u8;
    match n {
        0..=9 => out.push(d(1)),
        10..=99 => out.extend_from_slice(&[d(10), d(1)]),
        100..=999 => out.extend_from_slice(&DIGITS3[(n - 100) as usize]),
        1000..=9999 => out.extend_from_slice(&[d(1000), d(100), d(10), d(1)]),
        _ => {
            let mut buf = [0u8; 20];
            let mut i = buf.len();
            let mut n = n;
            while n > 0 {
                i -= 1;
                buf[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
            out.extend_from_slice(&buf[i..]);
        }
    }
}

/// A thread's last written address and its text: a client's requests come in runs.
struct IpText {
    ip: IpAddr,
    text: [u8; 48],
    len: usize,
}

thread_local! {
    static LAST_IP: RefCell<Option<IpText>> = const { RefCell::new(None) };
}

pub(super) fn ip(out: &mut Vec<u8>, ip: IpAddr) {
    let cached = LAST_IP.try_with(|c| {
        let mut last = c.try_borrow_mut().ok()?;
        match &*last {
            // All of the fixed-size text, then cut: a constant-length copy is written in place.
            Some(t) if t.ip == ip => {
                out.extend_from_slice(&t.text);
                out.truncate(out.len() - (t.text.len() - t.len));
            }
            _ => {
                let start = out.len();
                format_ip(out, ip);
                let written = out.get(start..)?;
                let mut text = [0u8; 48];
                text.get_mut(..written.len())?.copy_from_slice(written);
                *last = Some(IpText { ip, text, len: written.len() });
            }
        }
        Some(())
    });
    if cached.ok().flatten().is_none() {
        format_ip(out, ip);
    }
}

fn format_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into a local buffer, then one copy: a push per byte costs a capacity check each.
            let mut buf = [0u8; 15];
            let mut len = 0;
            for (i, o) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[len] = b'.';
                    len += 1;
                }
                if o >= 100 {
                    buf[len] = b'0' + o / 100;
                    len += 1;
                }
                if o >= 10 {
                    buf[len] = b'0' + o / 10 % 10;
                    len += 1;
                }
                buf[len] = b'0' + o % 10;
                len += 1;
            }
            out.extend_from_slice(&buf[..len]);
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}"); // writing to a Vec cannot fail
        }
    }
}

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Milliseconds with microsecond precision, e.g. `12.345` (valid as a JSON number).
fn millis(out: &mut Vec<u8>, d: Duration) {
    let us = micros(d);
    num(out, us / 1000);
    dot3(out, us % 1000);
}

/// `.` and the three digits of `n % 1000`.
fn dot3(out: &mut Vec<u8>, n: u64) {
    let d = |k: u64| b'0' + (n / k % 10) as u8;
    out.extend_from_slice(&[b'.', d(100), d(10), d(1)]);
}

fn header<'a>(rec: &'a LogRecord, name: &HeaderName) -> Option<&'a [u8]> {
    rec.head.first_header(false, name)
}

pub(super) fn host(rec: &LogRecord) -> Option<&[u8]> {
    match rec.head.host()? {
        b"" | b"-" => None,
        h => Some(h),
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
pub fn strip_port(host: &str) -> &str {
    // Byte searches: `str::rsplit_once` with a char pattern costs ~10x more on every request.
    let b = host.as_bytes();
    let end = if b.first() == Some(&b'[') {
        b.iter().position(|&c| c == b']').map_or(b.len(), |i| i + 1)
    } else {
        b.iter().rposition(|&c| c == b':').unwrap_or(b.len())
    };
    // `end` is at an ASCII byte or the end, so on a char boundary.
    host.get(..end).unwrap_or(host)
}

fn query(rec: &LogRecord) -> Option<&[u8]> {
    let q = rec.head.query()?;
    let q = q.strip_prefix(b"?").unwrap_or(q);
    (!q.is_empty()).then_some(q)
}

pub(super) fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Printable ASCII other than `"` and `\`: needs no escaping, in JSON or Apache style.
fn plain(c: &u8) -> bool {
    PLAIN[usize::from(*c)]
}

/// [`plain`] of every byte: a lookup costs less than the three comparisons per byte of a path.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0x20;
    while c <= 0x7e {
        t[c] = c != b'"' as usize && c != b'\\' as usize;
        c += 1;
    }
    t
};

/// Apache's `ap_escape_logitem`: `"` and `\` are backslash-escaped, `\b \n \r \t \v` get C
/// escapes, and every other byte outside printable ASCII becomes `\xhh`.
pub(super) fn escape(out: &mut Vec<u8>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if s.iter().all(plain) {
        out.extend_from_slice(s);
        return;
    }
    for &c in s {
        match c {
            b'"' | b'\\' => out.extend_from_slice(&[b'\\', c]),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x0b => out.extend_from_slice(b"\\v"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]),
        }
    }
}

/// Calls `emit` with the pieces of `q`, the values of [`REDACTED_QUERY_PARAMS`] replaced.
fn redact_query(q: &[u8], emit: impl FnMut(&[u8])) {
    redact_pairs(q, secret_param, emit);
}

/// Calls `emit` with the pieces of `q`, the values of the parameters `secret` picks replaced.
fn redact_pairs(q: &[u8], secret: impl Fn(&[u8]) -> bool, mut emit: impl FnMut(&[u8])) {
    for (i, pair) in q.split(|&b| b == b'&').enumerate() {
        if i > 0 {
            emit(b"&");
        }
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) if secret(&pair[..eq]) => {
                emit(&pair[..=eq]);
                emit(REDACTED);
            }
            _ => emit(pair),
        }
    }
}

/// Whether a raw (percent-encoded) parameter name is in [`REDACTED_QUERY_PARAMS`].
pub(super) fn secret_param(raw: &[u8]) -> bool {
    REDACTED_QUERY_PARAMS.iter().any(|want| param_is(raw, want))
}

/// The query with the values of the parameters named in `names` (besides the built-in
/// [`REDACTED_QUERY_PARAMS`], which every format redacts anyway) replaced by `[redacted]`: the
/// per-API subscription-key parameters (`apis.X.subscription_key.query`), applied when the
/// record is made.
pub fn redact_named(q: &str, names: &[Box<str>]) -> String {
    let mut out = Vec::with_capacity(q.len());
    redact_pairs(q.as_bytes(), |raw| names.iter().any(|n| param_is(raw, n)), |piece| out.extend_from_slice(piece));
    // Pieces are whole `&`-separated parts of a `str` and ASCII `[redacted]`, so still UTF-8.
    String::from_utf8(out).unwrap_or_default()
}

/// Whether the raw (percent-encoded, `+` for space) parameter name `raw` decodes to `want`,
/// ignoring ASCII case.
fn param_is(raw: &[u8], want: &str) -> bool {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    {
        let want = want.as_bytes();
        let (mut i, mut j) = (0, 0);
        while let Some(&c) = raw.get(i) {
            let (c, step) = match (c, raw.get(i + 1..i + 3)) {
                (b'%', Some(&[h, l])) => match (hex(h), hex(l)) {
                    (Some(h), Some(l)) => ((h << 4) | l, 3),
                    _ => (c, 1),
                },
                (b'+', _) => (b' ', 1),
                _ => (c, 1),
            };
            if !want.get(j).is_some_and(|w| w.eq_ignore_ascii_case(&c)) {
                return false;
            }
            i += step;
            j += 1;
        }
        j == want.len()
    }
}

/// A thread's formatted second, reused while requests start within the same second.
#[derive(Clone, Copy)]
pub(super) struct Stamp {
    secs: u64,
    /// The second, `[from, until)`: a time is checked against it without the conversion to
    /// seconds since the epoch.
    from: SystemTime,
    until: SystemTime,
    /// `10/Oct/2000:13:55:36 +0000`
    pub(super) clf: [u8; 26],
    /// `2000-10-10T13:55:36`
    rfc: [u8; 19],
}

thread_local! {
    static STAMP: RefCell<Option<Stamp>> = const { RefCell::new(None) };
}

/// The formatted second of `t` (UTC) and its milliseconds. Times before 1970 or after 9999
/// print as the epoch.
pub(super) fn stamp(t: SystemTime) -> (Stamp, u32) {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let d = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let ms = d.subsec_millis();
    let secs = d.as_secs();
    let cached = STAMP.try_with(|c| c.try_borrow().ok().and_then(|s| s.filter(|s| s.secs == secs)));
    if let Some(cached) = cached.ok().flatten() {
        return (cached, ms);
    }
    let dt = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|dt| dt.year() <= 9999)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month, day) = dt.to_calendar_date();
    let (h, m, s) = dt.to_hms();
    let mon = MONTHS[usize::from(u8::from(month) - 1) % 12];
    // `t` is at least `from`, so both are representable, save `until` at the end of time
    // (then the range is empty and every call formats).
    let from = UNIX_EPOCH.checked_add(Duration::from_secs(secs)).unwrap_or(UNIX_EPOCH);
    let until = from.checked_add(Duration::from_secs(1)).unwrap_or(from);
    let mut stamp = Stamp { secs, from, until, clf: [b' '; 26], rfc: [b' '; 19] };
    // Fixed widths: both fit exactly, and writing to a slice cannot fail otherwise.
    let _ = write!(&mut stamp.clf[..], "{day:02}/{mon}/{year:04}:{h:02}:{m:02}:{s:02} +0000");
    let _ = write!(&mut stamp.rfc[..], "{year:04}-{:02}-{day:02}T{h:02}:{m:02}:{s:02}", u8::from(month));
    let _ = STAMP.try_with(|c| {
        if let Ok(mut s) = c.try_borrow_mut() {
            *s = Some(stamp);
        }
    });
    (stamp, ms)
}

/// `%t`: `[10/Oct/2000:13:55:36 +0000]` (UTC), from the thread's formatted second when `t` is
/// in it.
pub(super) fn write_clf(out: &mut Vec<u8>, t: SystemTime) {
    out.push(b'[');
    // Borrowed in place: copying the stamp out costs more than the comparison.
    let cached = STAMP.try_with(|c| {
        let s = c.try_borrow().ok()?;
        let s = s.as_ref().filter(|s| s.from <= t && t < s.until)?;
        out.extend_from_slice(&s.clf);
        Some(())
    });
    if cached.ok().flatten().is_none() {
        out.extend_from_slice(&stamp(t).0.clf);
    }
    out.push(b']');
}

/// `2000-10-10T13:55:36.123Z` (UTC).
fn rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let (stamp, ms) = stamp(t);
    out.extend_from_slice(&stamp.rfc);
    dot3(out, ms.into());
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_plain_table_is_printable_ascii_but_quote_and_backslash() {
        for c in 0..=255u8 {
            assert_eq!(super::plain(&c), matches!(c, 0x20..=0x7e) && c != b'"' && c != b'\\', "{c}");
        }
    }

    #[test]
    fn numbers_print_in_decimal() {
        for n in (0..=1100).chain([9_999, 10_000, 123_456, u64::MAX]) {
            let mut out = Vec::new();
            super::num(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
