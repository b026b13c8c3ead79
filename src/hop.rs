//! Hop-by-hop fields (RFC 9110 §7.6.1): what the proxy strips from requests and responses (the
//! HTTP/1.1 backend client already leaves them out of the responses it reads), and how an upgrade
//! request is recognised.

use http::header::{self, HeaderMap, HeaderName};

pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().split(|c| *c == b',').any(|t| trim(t).eq_ignore_ascii_case(b"upgrade")))
}

fn trim(v: &[u8]) -> &[u8] {
    let s = v.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(v.len());
    let e = v.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(s, |p| p + 1);
    &v[s..e.max(s)]
}

/// Hop-by-hop fields (RFC 9110 §7.6.1) plus the legacy ones proxies also drop, as a bit each;
/// and `Expect`, which the gateway answers itself (hyper sends the client its `100 Continue`), so
/// a backend never sees it (it is a request field; no response carries it).
pub fn hop_by_hop_bit(n: &HeaderName) -> u16 {
    if n == header::CONNECTION {
        1
    } else if n == header::TE {
        2
    } else if n == header::TRAILER {
        4
    } else if n == header::TRANSFER_ENCODING {
        8
    } else if n == header::UPGRADE {
        16
    } else {
        match n.as_str() {
            "keep-alive" => 32,
            "proxy-connection" => 64,
            "http2-settings" => 128,
            "expect" => 256,
            _ => 0,
        }
    }
}

/// RFC 9110 §7.6.1: hop-by-hop fields and every field the `Connection` header names are removed.
/// Framing and Host are never removed this way: the gateway sets those itself. One pass over the
/// field names records which are present, so the common cases (none, or `Connection:
/// keep-alive` from a backend) cost no lookups by name and no allocation.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut present = 0u16;
    for name in h.keys() {
        present |= hop_by_hop_bit(name);
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        // Connection's values are taken out in one lookup; the fields they nominate go after
        // (the common `keep-alive` / `close` nominate none, and then nothing is allocated).
        let mut nominated: Vec<HeaderName> = Vec::new();
        if let header::Entry::Occupied(entry) = h.entry(header::CONNECTION) {
            let (_, values) = entry.remove_entry_mult();
            for value in values {
                for token in value.as_bytes().split(|c| *c == b',').map(trim) {
                    if token.eq_ignore_ascii_case(b"close") || token.eq_ignore_ascii_case(b"keep-alive") {
                        continue;
                    }
                    if let Ok(name) = HeaderName::from_bytes(token) {
                        if name != header::HOST && name != header::CONTENT_LENGTH && hop_by_hop_bit(&name) == 0 {
                            nominated.push(name);
                        }
                    }
                }
            }
        }
        for name in nominated {
            h.remove(name);
        }
    }
    const BY_BIT: [(u16, HeaderName); 4] =
        [(2, header::TE), (4, header::TRAILER), (8, header::TRANSFER_ENCODING), (16, header::UPGRADE)];
    for (bit, name) in BY_BIT {
        if present & bit != 0 {
            h.remove(name);
        }
    }
    for (bit, name) in [(32, "keep-alive"), (64, "proxy-connection"), (128, "http2-settings"), (256, "expect")] {
        if present & bit != 0 {
            h.remove(name);
        }
    }
}

/// Whether a `Connection` value names fields to remove besides the common `close` and
/// `keep-alive` (then [`strip_hop_by_hop`] must see it).
pub fn connection_nominates(value: &[u8]) -> bool {
    value
        .split(|c| *c == b',')
        .map(trim)
        .any(|t| !t.is_empty() && !t.eq_ignore_ascii_case(b"close") && !t.eq_ignore_ascii_case(b"keep-alive"))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_and_nominated_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("close, X-Secret, host"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::EXPECT).is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h[header::HOST], "a");
        assert_eq!(h[header::AUTHORIZATION], "Bearer x");
    }

    #[test]
    fn every_connection_value_is_read_and_removed() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a , X-B"));
        h.insert("x-a", HeaderValue::from_static("1"));
        h.insert("x-b", HeaderValue::from_static("2"));
        h.insert("x-c", HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-a").is_none() && h.get("x-b").is_none());
        assert_eq!(h["x-c"], "3");

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h[header::CONTENT_LENGTH], "5");
    }
}
