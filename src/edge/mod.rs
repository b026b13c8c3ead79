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

/// A fresh request id: 128 random bits in hex.
pub fn new_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
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
pub fn request_id(headers: &HeaderMap, peer_trusted: bool) -> String {
    if peer_trusted {
        if let Some(v) = headers.get(&X_REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
                if let Ok(s) = v.to_str() {
                    return s.to_owned();
                }
            }
        }
    }
    new_request_id()
}

/// What the forwarding headers describe about the downstream connection.
pub struct Downstream<'a> {
    pub peer: IpAddr,
    pub peer_trusted: bool,
    pub tls: bool,
    pub host: Option<&'a str>,
}

/// Sets `X-Forwarded-For/Proto/Host` and `Forwarded` for the backend. Inbound values survive
/// only from a trusted peer, which the gateway then appends to (X-Forwarded-For, Forwarded).
pub fn set_forwarding_headers(headers: &mut HeaderMap, d: &Downstream<'_>) {
    let peer = canonical(d.peer);
    let proto = if d.tls { "https" } else { "http" };
    let peer_str = peer.to_string();

    let xff = match (d.peer_trusted, joined(headers, &X_FORWARDED_FOR)) {
        (true, Some(prev)) => format!("{prev}, {peer_str}"),
        _ => peer_str.clone(),
    };
    put(headers, X_FORWARDED_FOR, &xff);

    if !(d.peer_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        put(headers, X_FORWARDED_PROTO, proto);
    }
    if !(d.peer_trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match d.host {
            Some(h) => put(headers, X_FORWARDED_HOST, h),
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }

    let for_value = match peer {
        IpAddr::V4(_) => peer_str,
        IpAddr::V6(_) => format!("\"[{peer_str}]\""),
    };
    let mut element = format!("for={for_value};proto={proto}");
    if let Some(h) = d.host {
        element.push_str(";host=\"");
        element.push_str(h);
        element.push('"');
    }
    let forwarded = match (d.peer_trusted, joined(headers, &FORWARDED)) {
        (true, Some(prev)) => format!("{prev}, {element}"),
        _ => element,
    };
    put(headers, FORWARDED, &forwarded);
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
    fn forwarding_headers_replace_untrusted_values() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
        h.insert(FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let d = Downstream {
            peer: "9.9.9.9".parse().expect("ip"),
            peer_trusted: false,
            tls: false,
            host: Some("api.test"),
        };
        set_forwarding_headers(&mut h, &d);
        assert_eq!(h[&X_FORWARDED_FOR], "9.9.9.9");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "api.test");
        assert_eq!(h[&FORWARDED], "for=9.9.9.9;proto=http;host=\"api.test\"");

        let mut h2 = HeaderMap::new();
        h2.insert(X_FORWARDED_FOR, HeaderValue::from_static("1.2.3.4"));
        let d = Downstream { peer: "10.0.0.1".parse().expect("ip"), peer_trusted: true, tls: true, host: None };
        set_forwarding_headers(&mut h2, &d);
        assert_eq!(h2[&X_FORWARDED_FOR], "1.2.3.4, 10.0.0.1");
    }
}
