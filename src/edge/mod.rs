//! The edge: what happens to a request before it is matched to an API (Apache httpd's job).
//!
//! - `guard`: HTTP/1 framing, head limits, header deadline and idle timeout, on the raw bytes.
//! - this module: who the client is (trusted proxies), the request id, path normalisation, and
//!   the forwarding headers a backend receives.
//!
//! Invariant: a value from a client header (`X-Forwarded-For`, `Forwarded`, `X-Request-Id`, …) is
//! believed only when the TCP peer is in `edge.trusted_proxies`.

pub mod guard;
pub mod normalize;

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use ipnet::IpNet;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub const FORWARDED: HeaderName = HeaderName::from_static("forwarded");

/// A fresh request id: 128 random bits in lower-case hex.
pub fn new_request_id() -> String {
    let mut out = [0u8; 32];
    hex128(rand::random::<u128>(), &mut out);
    // Hex digits are ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

fn hex128(v: u128, out: &mut [u8; 32]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in v.to_be_bytes().iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0xf)];
    }
}

/// Request ids a thread cuts from one chunk before it takes a fresh one.
const IDS_PER_CHUNK: usize = 128;

thread_local! {
    /// The chunk this thread's request ids are cut from: a request then allocates nothing for
    /// its id, and cloning it (response header, log, policies) is a reference count, not the
    /// copy-on-first-clone of a value made from its own buffer.
    static ID_CHUNK: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
}

fn new_request_id_value() -> HeaderValue {
    let mut out = [0u8; 32];
    hex128(rand::random::<u128>(), &mut out);
    let cut = ID_CHUNK
        .try_with(|chunk| {
            let mut chunk = chunk.try_borrow_mut().ok()?;
            if chunk.capacity() < out.len() {
                // Reuses the old chunk in place once no id cut from it is alive any more.
                chunk.reserve(out.len() * IDS_PER_CHUNK);
            }
            chunk.extend_from_slice(&out);
            Some(chunk.split().freeze())
        })
        .ok()
        .flatten();
    let bytes = cut.unwrap_or_else(|| bytes::Bytes::copy_from_slice(&out));
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// `edge.trusted_proxies`, compiled.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client address the gateway believes: the peer, or — when the peer is a trusted proxy —
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut leftmost = None;
    for value in headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(s) = value.to_str() else { return peer };
        for part in s.rsplit(',') {
            let Ok(ip) = part.trim().parse::<IpAddr>() else { return leftmost.unwrap_or(peer) };
            let ip = canonical(ip);
            if !trusted.contains(ip) {
                return ip;
            }
            leftmost = Some(ip);
        }
    }
    leftmost.unwrap_or(peer)
}

/// The request id: a trusted proxy's `X-Request-Id` when it is sane, else a new one.
/// Returned as a header value so it is shared (not copied) between request, response and log.
pub fn request_id(headers: &HeaderMap, peer_trusted: bool) -> HeaderValue {
    if peer_trusted {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                return v.clone();
            }
        }
    }
    new_request_id_value()
}

/// A connection's last `Forwarded` value and (a copy of) the Host it names.
type LastForwarded = (Option<Box<[u8]>>, HeaderValue);

/// Per-connection strings for the forwarding headers, built once when the connection opens.
pub struct Peer {
    pub ip: IpAddr,
    /// The peer address as an `X-Forwarded-For` value.
    pub xff: HeaderValue,
    /// `for=ADDR;proto=SCHEME`, the start of this hop's `Forwarded` element.
    pub forwarded: String,
    pub tls: bool,
    /// The last `Forwarded` value made for an untrusted request and the Host it names: a
    /// connection's requests usually share their Host, so the value is made once, not per request.
    /// The Host is a copy: the request's own value shares the connection's read buffer, which
    /// it would keep alive for as long as the connection lives.
    last_forwarded: parking_lot::Mutex<Option<LastForwarded>>,
}

impl Peer {
    pub fn new(ip: IpAddr, tls: bool) -> Peer {
        let ip = canonical(ip);
        let text = ip.to_string();
        let for_value = match ip {
            IpAddr::V4(_) => text.clone(),
            IpAddr::V6(_) => format!("\"[{text}]\""),
        };
        let proto = if tls { "https" } else { "http" };
        Peer {
            ip,
            xff: HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("unknown")),
            forwarded: format!("for={for_value};proto={proto}"),
            tls,
            last_forwarded: parking_lot::Mutex::new(None),
        }
    }
}

/// What the forwarding headers describe about the downstream connection.
pub struct Downstream<'a> {
    pub peer: &'a Peer,
    pub peer_trusted: bool,
    /// The request's Host (or :authority), as received.
    pub host: Option<&'a HeaderValue>,
}

/// Sets `X-Forwarded-For/Proto/Host` and `Forwarded` for the backend. Inbound values survive
/// only from a trusted peer, which the gateway then appends to (X-Forwarded-For, Forwarded).
/// On the common path (untrusted client, the same Host as the connection's last request) it
/// allocates nothing: the `Forwarded` value is the connection's last one.
pub fn set_forwarding_headers(headers: &mut HeaderMap, d: &Downstream<'_>) {
    strip_spoofable(headers, d.peer_trusted);
    let peer = d.peer;
    match if d.peer_trusted { joined(headers, &X_FORWARDED_FOR) } else { None } {
        Some(prev) => put(headers, X_FORWARDED_FOR, &format!("{prev}, {}", peer.ip)),
        None => {
            headers.insert(X_FORWARDED_FOR, peer.xff.clone());
        }
    }
    if !(d.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, proto_value(peer));
    }
    if !(d.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match d.host {
            Some(h) => {
                headers.insert(X_FORWARDED_HOST, h.clone());
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    let prev = if d.peer_trusted { joined(headers, &FORWARDED) } else { None };
    let value = match prev {
        None => last_forwarded(peer, d.host),
        Some(prev) => forwarded_value(Some(&prev), peer, d.host),
    };
    headers.insert(FORWARDED, value);
}

/// The fields a backend request carries after the client's own.
pub type AddedFields = Vec<(HeaderName, HeaderValue)>;

/// The forwarding fields of [`set_forwarding_headers`] and `X-Request-Id`, taken *out* of
/// `headers` (where a client sent them) and returned for the backend request's writer to add
/// after the client's fields: the client's map is never grown (which rebuilt its table on every
/// request). The backend sees the same fields either way.
pub fn forwarding_fields(headers: &mut HeaderMap, d: &Downstream<'_>, request_id: &HeaderValue) -> AddedFields {
    let mut out = Vec::with_capacity(5);
    if d.peer_trusted {
        // A trusted proxy's values are merged in place (rare), then moved out.
        set_forwarding_headers(headers, d);
        for name in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, FORWARDED, X_REQUEST_ID] {
            if let http::header::Entry::Occupied(e) = headers.entry(name) {
                let (name, values) = e.remove_entry_mult();
                if name != X_REQUEST_ID {
                    out.extend(values.map(|v| (name.clone(), v)));
                }
            }
        }
    } else {
        strip_spoofable(headers, false);
        // One pass over the names; the client's own values (lookups) only when there are any.
        let sent_any = headers.keys().any(|n| {
            matches!(n.as_str().len(), 9 | 12 | 15 | 16 | 17)
                && (n == X_FORWARDED_FOR
                    || n == X_FORWARDED_PROTO
                    || n == X_FORWARDED_HOST
                    || n == FORWARDED
                    || n == X_REQUEST_ID)
        });
        if sent_any {
            for name in [X_FORWARDED_FOR, X_FORWARDED_PROTO, X_FORWARDED_HOST, FORWARDED, X_REQUEST_ID] {
                headers.remove(name);
            }
        }
        let peer = d.peer;
        out.push((X_FORWARDED_FOR, peer.xff.clone()));
        out.push((X_FORWARDED_PROTO, proto_value(peer)));
        if let Some(h) = d.host {
            out.push((X_FORWARDED_HOST, h.clone()));
        }
        out.push((FORWARDED, last_forwarded(peer, d.host)));
    }
    out.push((X_REQUEST_ID, request_id.clone()));
    out
}

fn proto_value(peer: &Peer) -> HeaderValue {
    if peer.tls {
        HeaderValue::from_static("https")
    } else {
        HeaderValue::from_static("http")
    }
}

/// This hop's `Forwarded` value for an untrusted request: the connection's last one while the
/// Host stays the same.
fn last_forwarded(peer: &Peer, host: Option<&HeaderValue>) -> HeaderValue {
    let mut last = peer.last_forwarded.lock();
    match &*last {
        Some((h, value)) if h.as_deref() == host.map(HeaderValue::as_bytes) => value.clone(),
        _ => {
            let value = forwarded_value(None, peer, host);
            *last = Some((host.map(|h| h.as_bytes().into()), value.clone()));
            value
        }
    }
}

/// This hop's `Forwarded` element after `prev` (the trusted elements before it, if any);
/// `for=unknown` when it cannot be a header value.
fn forwarded_value(prev: Option<&str>, peer: &Peer, host: Option<&HeaderValue>) -> HeaderValue {
    let host = host.and_then(|h| h.to_str().ok()).filter(|h| !h.contains(['"', '\\']));
    let mut element =
        String::with_capacity(prev.map_or(0, |p| p.len() + 2) + peer.forwarded.len() + 8 + host.map_or(0, str::len));
    if let Some(prev) = prev {
        element.push_str(prev);
        element.push_str(", ");
    }
    element.push_str(&peer.forwarded);
    if let Some(h) = host {
        element.push_str(";host=\"");
        element.push_str(h);
        element.push('"');
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(element))
        .unwrap_or_else(|_| HeaderValue::from_static("for=unknown"))
}

/// Client-address headers other proxies and frameworks believe (nginx `real_ip_header`, Akamai,
/// Express `trust proxy`…), dropped unless a trusted proxy sent them; and URL-override headers
/// (IIS, Symfony, Laminas) that would let a client choose another path than the one routed,
/// always dropped (reliability.md §2.4, §2.6).
const CLIENT_ADDRESS: [&str; 3] = ["x-real-ip", "true-client-ip", "x-client-ip"];
const URL_OVERRIDE: [&str; 2] = ["x-original-url", "x-rewrite-url"];

fn strip_spoofable(headers: &mut HeaderMap, peer_trusted: bool) {
    // One pass over the names; removals (and their lookups) only when one is present.
    let mut found = false;
    for name in headers.keys() {
        let n = name.as_str();
        if matches!(n.len(), 9 | 11 | 13 | 14) && (URL_OVERRIDE.contains(&n) || CLIENT_ADDRESS.contains(&n)) {
            found = true;
            break;
        }
    }
    if !found {
        return;
    }
    for n in URL_OVERRIDE {
        headers.remove(n);
    }
    if !peer_trusted {
        for n in CLIENT_ADDRESS {
            headers.remove(n);
        }
    }
}

fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let s = v.to_str().ok()?;
        match &mut out {
            Some(o) => {
                o.push_str(", ");
                o.push_str(s);
            }
            None => out = Some(s.to_owned()),
        }
    }
    out
}

fn put(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    } else {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec!["10.0.0.0/8".parse().expect("net")])
    }

    #[test]
    fn request_ids_are_hex() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|c| c.is_ascii_hexdigit()));
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("from-proxy"));
        assert_eq!(request_id(&h, true), "from-proxy");
        assert_ne!(request_id(&h, false), "from-proxy");
    }

    #[test]
    fn client_ip_believes_only_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"));
        assert_eq!(
            client_ip("10.0.0.1".parse().expect("ip"), &h, &trusted()),
            "1.2.3.4".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_ip("9.9.9.9".parse().expect("ip"), &h, &trusted()), "9.9.9.9".parse::<IpAddr>().expect("ip"));
    }

    #[test]
    fn spoofable_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("true-client-ip", HeaderValue::from_static("6.6.6.6"));
        h.insert("x-original-url", HeaderValue::from_static("/admin"));
        h.insert("x-other", HeaderValue::from_static("kept"));
        let mut trusted = h.clone();
        strip_spoofable(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-other"], "kept");
        // From a trusted proxy, the address headers are its to set; URL overrides never pass.
        strip_spoofable(&mut trusted, true);
        assert_eq!(trusted["x-real-ip"], "6.6.6.6");
        assert!(trusted.get("x-original-url").is_none());
    }

    /// The fields the backend writer adds are exactly what setting them in the map gives.
    #[test]
    fn added_fields_equal_the_fields_set_in_place() {
        let rid = HeaderValue::from_static("rid-1");
        let host = HeaderValue::from_static("api.test");
        for trusted in [false, true] {
            let mut h = HeaderMap::new();
            h.insert(http::header::HOST, host.clone());
            h.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
            h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
            h.insert(FORWARDED, HeaderValue::from_static("for=1.2.3.4"));
            h.insert(X_REQUEST_ID, HeaderValue::from_static("client-id"));
            h.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
            h.insert("x-other", HeaderValue::from_static("kept"));
            let peer = Peer::new("10.0.0.1".parse().expect("ip"), false);
            let d = Downstream { peer: &peer, peer_trusted: trusted, host: Some(&host) };
            let mut in_place = h.clone();
            set_forwarding_headers(&mut in_place, &d);
            in_place.insert(X_REQUEST_ID, rid.clone());
            let mut rest = h.clone();
            let added = forwarding_fields(&mut rest, &d, &rid);
            for (name, _) in &added {
                assert!(!rest.contains_key(name), "{name} is both in the map and added");
            }
            for (name, value) in added {
                rest.append(name, value);
            }
            assert_eq!(rest, in_place, "trusted: {trusted}");
        }
        // Without any forwarding field from the client, nothing is removed.
        let mut h = HeaderMap::new();
        h.insert(http::header::HOST, host.clone());
        let peer = Peer::new("9.9.9.9".parse().expect("ip"), true);
        let d = Downstream { peer: &peer, peer_trusted: false, host: Some(&host) };
        let added = forwarding_fields(&mut h, &d, &rid);
        assert_eq!(h.len(), 1);
        let names: Vec<&str> = added.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-request-id"]);
        assert_eq!(added[1].1, "https");
        assert_eq!(added[3].1, "for=9.9.9.9;proto=https;host=\"api.test\"");
    }

    #[test]
    fn forwarding_headers_replace_untrusted_values() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let peer = Peer::new("9.9.9.9".parse().expect("ip"), false);
        let host = HeaderValue::from_static("api.test");
        let d = Downstream { peer: &peer, peer_trusted: false, host: Some(&host) };
        set_forwarding_headers(&mut h, &d);
        assert_eq!(h[&X_FORWARDED_FOR], "9.9.9.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[&FORWARDED], "for=9.9.9.9;proto=http;host=\"api.test\"");

        let mut h2 = HeaderMap::new();
        h2.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        let peer = Peer::new("10.0.0.1".parse().expect("ip"), true);
        let d = Downstream { peer: &peer, peer_trusted: true, host: None };
        set_forwarding_headers(&mut h2, &d);
        assert_eq!(h2[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
    }
}
