//! The HTTP caching rules (RFC 9111) the response cache follows: `Cache-Control` directives,
//! which statuses may be stored without explicit freshness, and whether one response may be
//! stored and for how long.

use std::time::Duration;

use http::header::{self, HeaderMap};

/// The `Cache-Control` directives the cache acts on (every field line, case-insensitive).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheControl {
    pub no_store: bool,
    /// Also set by the qualified form (`no-cache="Set-Cookie"`): the cache cannot revalidate,
    /// so it treats every form alike.
    pub no_cache: bool,
    /// Also set by `private="…"`, for the same reason.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in split_directives(text) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    "private" => cc.private = true,
                    "public" => cc.public = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    // A malformed delta is stale at once (RFC 9111 §1.2.2 / §4.2.1).
                    "max-age" => cc.max_age = Some(cc.max_age.unwrap_or(u64::MAX).min(seconds().unwrap_or(0))),
                    "s-maxage" => cc.s_maxage = Some(cc.s_maxage.unwrap_or(u64::MAX).min(seconds().unwrap_or(0))),
                    _ => {}
                }
            }
        }
        cc
    }
}

/// Directives separated by commas outside quoted strings.
fn split_directives(text: &str) -> impl Iterator<Item = &str> {
    let mut in_quotes = false;
    text.split(move |c| {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        c == ',' && !in_quotes
    })
    .map(str::trim)
    .filter(|d| !d.is_empty())
}

/// `Pragma: no-cache` (HTTP/1.0), honoured on requests without `Cache-Control`.
pub fn pragma_no_cache(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::PRAGMA)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-cache")))
}

/// What a request's headers allow the cache to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDirective {
    /// Look up and store.
    Normal,
    /// `no-cache` (or `Pragma: no-cache`): go to the backend, but a fresh response may be stored.
    Refresh,
    /// `no-store`: neither look up nor store.
    NoStore,
}

pub fn request_directive(headers: &HeaderMap) -> RequestDirective {
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        RequestDirective::NoStore
    } else if cc.no_cache || (!headers.contains_key(header::CACHE_CONTROL) && pragma_no_cache(headers)) {
        RequestDirective::Refresh
    } else {
        RequestDirective::Normal
    }
}

/// Statuses stored without explicit freshness: RFC 9110's heuristically cacheable codes, less
/// 206 (the cache does not combine ranges).
pub fn cacheable_status(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// What the store decision needs besides the response.
#[derive(Debug, Clone, Copy)]
pub struct StoreRules {
    /// The policy's `duration`: the longest an entry lives.
    pub duration: Duration,
    pub honor_cache_control: bool,
    pub allow_private: bool,
    /// The request carried `Authorization` and it is not part of the key.
    pub authorized: bool,
}

/// Why a response was not stored (the `detail` of its `Cache-Status`).
pub type Refusal = &'static str;

/// Whether a response may be stored, and for how long (RFC 9111 §3, §4.2.1, §3.5).
pub fn decide(status: u16, headers: &HeaderMap, rules: &StoreRules) -> Result<Duration, Refusal> {
    if !cacheable_status(status) {
        return Err("status");
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err("set-cookie");
    }
    if vary_star(headers) {
        return Err("vary-star");
    }
    let cc = CacheControl::parse(headers);
    let mut ttl = rules.duration;
    if rules.honor_cache_control {
        if cc.no_store {
            return Err("no-store");
        }
        if cc.no_cache {
            return Err("no-cache");
        }
        if cc.private && !rules.allow_private {
            return Err("private");
        }
        if let Some(s) = cc.s_maxage.or(cc.max_age) {
            ttl = ttl.min(Duration::from_secs(s));
        }
    }
    // RFC 9111 §3.5: a response to an authorized request is shared only when it says so.
    if rules.authorized && !rules.allow_private && !(cc.public || cc.s_maxage.is_some() || cc.must_revalidate) {
        return Err("authorization");
    }
    if ttl.is_zero() {
        return Err("stale");
    }
    Ok(ttl)
}

/// Whether the response may be served to a request with `Authorization` (RFC 9111 §3.5).
pub fn shared_with_authorized(headers: &HeaderMap) -> bool {
    let cc = CacheControl::parse(headers);
    cc.public || cc.s_maxage.is_some() || cc.must_revalidate
}

/// `Vary: *`: the response varies on something outside the request; never stored.
fn vary_star(headers: &HeaderMap) -> bool {
    vary_names(headers).any(|n| n == "*")
}

/// The field names a response's `Vary` lists (trimmed, as written).
pub fn vary_names(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().expect("value"));
        }
        h
    }

    fn rules() -> StoreRules {
        StoreRules {
            duration: Duration::from_secs(60),
            honor_cache_control: true,
            allow_private: false,
            authorized: false,
        }
    }

    #[test]
    fn cache_control_directives_are_read_from_every_line() {
        let cc = CacheControl::parse(&headers(&[
            ("cache-control", "Public, MAX-AGE=30, ext=\"a,b\""),
            ("cache-control", "s-maxage=\"10\", no-cache=\"Set-Cookie\""),
        ]));
        assert_eq!(
            cc,
            CacheControl { public: true, max_age: Some(30), s_maxage: Some(10), no_cache: true, ..Default::default() }
        );
        // Two max-age values: the smaller wins; a malformed one means stale.
        assert_eq!(CacheControl::parse(&headers(&[("cache-control", "max-age=50, max-age=20")])).max_age, Some(20));
        assert_eq!(CacheControl::parse(&headers(&[("cache-control", "max-age=soon")])).max_age, Some(0));
    }

    #[test]
    fn request_directives() {
        assert_eq!(request_directive(&headers(&[])), RequestDirective::Normal);
        assert_eq!(request_directive(&headers(&[("cache-control", "no-cache")])), RequestDirective::Refresh);
        assert_eq!(request_directive(&headers(&[("pragma", "no-cache")])), RequestDirective::Refresh);
        // Cache-Control present: Pragma is ignored (RFC 9111 §5.4).
        assert_eq!(
            request_directive(&headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")])),
            RequestDirective::Normal
        );
        assert_eq!(request_directive(&headers(&[("cache-control", "no-cache, no-store")])), RequestDirective::NoStore);
    }

    #[test]
    fn storability() {
        let r = rules();
        assert_eq!(decide(200, &headers(&[]), &r), Ok(Duration::from_secs(60)));
        assert_eq!(decide(404, &headers(&[]), &r), Ok(Duration::from_secs(60)));
        assert_eq!(decide(500, &headers(&[]), &r), Err("status"));
        assert_eq!(decide(206, &headers(&[]), &r), Err("status"));
        assert_eq!(decide(200, &headers(&[("set-cookie", "a=b")]), &r), Err("set-cookie"));
        assert_eq!(decide(200, &headers(&[("vary", "Accept, *")]), &r), Err("vary-star"));
        assert_eq!(decide(200, &headers(&[("cache-control", "no-store")]), &r), Err("no-store"));
        assert_eq!(decide(200, &headers(&[("cache-control", "private")]), &r), Err("private"));
        assert_eq!(decide(200, &headers(&[("cache-control", "max-age=0")]), &r), Err("stale"));
        // max-age caps the duration, s-maxage wins over max-age, neither extends it.
        assert_eq!(decide(200, &headers(&[("cache-control", "max-age=5")]), &r), Ok(Duration::from_secs(5)));
        assert_eq!(
            decide(200, &headers(&[("cache-control", "max-age=5, s-maxage=20")]), &r),
            Ok(Duration::from_secs(20))
        );
        assert_eq!(decide(200, &headers(&[("cache-control", "max-age=600")]), &r), Ok(Duration::from_secs(60)));
        // Not honoured: only the status, cookies and Vary: * matter.
        let lax = StoreRules { honor_cache_control: false, ..r };
        assert_eq!(decide(200, &headers(&[("cache-control", "no-store, private")]), &lax), Ok(lax.duration));
        let private_ok = StoreRules { allow_private: true, ..r };
        assert!(decide(200, &headers(&[("cache-control", "private")]), &private_ok).is_ok());
    }

    #[test]
    fn authorized_requests_store_only_explicitly_shared_responses() {
        let r = StoreRules { authorized: true, ..rules() };
        assert_eq!(decide(200, &headers(&[]), &r), Err("authorization"));
        assert!(decide(200, &headers(&[("cache-control", "public")]), &r).is_ok());
        assert!(decide(200, &headers(&[("cache-control", "s-maxage=30")]), &r).is_ok());
        assert!(shared_with_authorized(&headers(&[("cache-control", "public, max-age=9")])));
        assert!(!shared_with_authorized(&headers(&[("cache-control", "max-age=9")])));
    }
}
