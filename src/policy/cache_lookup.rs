//! `cache-lookup`: answer GET and HEAD from the response cache (APIM `<cache-lookup>`); on a
//! miss, hand the key to `cache-store` through [`Exchange::cache`].
//!
//! The key is the API, operation, method (HEAD reads GET's entries), normalised path, the query
//! (all of it, parameters sorted, unless `vary_by_query_parameters` names some), the values of
//! `vary_by_headers` and, with `vary_by_subscription`, the caller's subscription id: SHA-256 of
//! them, so keys have one length and never carry a credential in the clear. A hit answers at
//! the gateway with the stored status, headers and body, `Age` and `Cache-Status`
//! (RFC 9211); the rest of inbound, the backend and outbound do not run.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{util, BuildCx, CacheTicket, Exchange, Outcome, Policy, Stage, Step};
use crate::body::ResponseBody;
use crate::cache::control::{self, RequestDirective};
use crate::cache::entry::Entry;
use crate::cache::{unix_ms, CachingType, Store};
use crate::config::ConfigError;
use crate::observe::metrics::{response_cache_lookup, CacheResult};

/// `cache-lookup: { vary_by_headers: [Accept], vary_by_query_parameters: [page], vary_by_subscription: true }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheLookupConfig {
    #[serde(default)]
    pub vary_by_headers: Vec<String>,
    /// `None`: the whole query is part of the key.
    #[serde(default)]
    pub vary_by_query_parameters: Option<Vec<String>>,
    /// APIM `vary-by-developer`: one entry per subscription.
    #[serde(default)]
    pub vary_by_subscription: bool,
    #[serde(default = "yes")]
    pub honor_cache_control: bool,
    #[serde(default)]
    pub caching_type: CachingType,
    #[serde(default)]
    pub allow_private_response_caching: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct CacheLookup {
    headers: Vec<HeaderName>,
    /// Sorted; `None`: the whole query.
    query: Option<Vec<String>>,
    by_subscription: bool,
    honor: bool,
    allow_private: bool,
    /// `Authorization` is one of `headers`, so responses to authorized requests are keyed apart.
    keyed_by_authorization: bool,
    store: Store,
}

/// `Cache-Status` values (RFC 9211) written before the backend answers.
const STATUS_MISS: &str = "gatehouse; fwd=uri-miss";
const STATUS_VARY_MISS: &str = "gatehouse; fwd=vary-miss";
const STATUS_REQUEST: &str = "gatehouse; fwd=request";
const STATUS_METHOD: &str = "gatehouse; fwd=method";

impl CacheLookup {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: CacheLookupConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "cache-lookup", &[Stage::Inbound]) {
            errors.push(e);
        }
        let mut headers = Vec::new();
        for (i, h) in c.vary_by_headers.iter().enumerate() {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => headers.push(n),
                Err(_) => {
                    errors.push(util::item_error(cx, "vary_by_headers", i, format!("`{h}` is not a header name")))
                }
            }
        }
        headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        headers.dedup();
        let query = c.vary_by_query_parameters.map(|mut q| {
            q.sort();
            q.dedup();
            q
        });
        let store = store_for(cx, c.caching_type, &mut errors);
        util::done(errors)?;
        Ok(CacheLookup {
            keyed_by_authorization: headers.contains(&header::AUTHORIZATION),
            headers,
            query,
            by_subscription: c.vary_by_subscription,
            honor: c.honor_cache_control,
            allow_private: c.allow_private_response_caching,
            store: store.ok_or_else(Vec::new)?,
        })
    }

    /// The entry key of this request (`r:` + hex SHA-256 of its parts).
    pub fn key(&self, x: &Exchange) -> String {
        let mut h = Sha256::new();
        let mut part = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        part(b"gatehouse-response-v1");
        part(x.route.api.name.as_bytes());
        part(x.route.operation.as_deref().unwrap_or("").as_bytes());
        // HEAD is answered from GET's entry.
        part(b"GET");
        part(x.path.as_bytes());
        let query = x.request.uri.query().unwrap_or("");
        match &self.query {
            None => {
                let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
                pairs.sort_unstable();
                for p in pairs {
                    part(p.as_bytes());
                }
            }
            Some(names) => {
                for name in names {
                    part(name.as_bytes());
                    for (k, v) in query.split('&').map(|p| p.split_once('=').unwrap_or((p, ""))) {
                        if super::context::decode(k) == name.as_str() {
                            part(super::context::decode(v).as_bytes());
                        }
                    }
                    part(b"\0end");
                }
            }
        }
        for name in &self.headers {
            part(name.as_str().as_bytes());
            match crate::cache::entry::request_value(&x.request.headers, name.as_str()) {
                Some(v) => part(&v),
                None => part(b"\0absent"),
            }
        }
        if self.by_subscription {
            match &x.caller {
                Some(c) => part(c.subscription_id.as_bytes()),
                None => part(b"\0anonymous"),
            }
        }
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut key = String::with_capacity(2 + 64);
        key.push_str("r:");
        for b in h.finalize() {
            key.push(char::from(HEX[usize::from(b >> 4)]));
            key.push(char::from(HEX[usize::from(b & 15)]));
        }
        key
    }

    fn ticket(&self, x: &Exchange, key: String, status: &'static str) -> CacheTicket {
        CacheTicket {
            status,
            key,
            store: self.store.clone(),
            honor_cache_control: self.honor,
            allow_private: self.allow_private,
            authorized: self.authorized(x),
        }
    }

    fn authorized(&self, x: &Exchange) -> bool {
        !self.keyed_by_authorization && x.request.headers.contains_key(header::AUTHORIZATION)
    }

    /// The lookup's answer once the stored bytes (if any) are known.
    fn answer(&self, x: &mut Exchange, key: String, found: Option<Bytes>) -> Outcome {
        let head = x.request.method == Method::HEAD;
        let now = unix_ms();
        let mut status = STATUS_MISS;
        if let Some(entry) = found.as_ref().and_then(Entry::decode).filter(|e| e.expires_at_ms > now) {
            if !entry.vary_matches(&x.request.headers) {
                status = STATUS_VARY_MISS;
            } else if !self.authorized(x) || self.allow_private || entry.shared_with_authorized {
                response_cache_lookup(&x.route.api.name, CacheResult::Hit);
                return Outcome::Respond(Box::new(hit(entry, now, head)));
            }
        }
        response_cache_lookup(&x.route.api.name, CacheResult::Miss);
        x.extra_response_headers.insert(CACHE_STATUS, HeaderValue::from_static(status));
        // A HEAD response has no body to store.
        if !head {
            x.cache = Some(self.ticket(x, key, status));
        }
        Outcome::Continue
    }
}

/// `caching_type` checked against `cluster.redis`; shared by the value policies.
pub(crate) fn store_for(cx: &BuildCx<'_>, mode: CachingType, errors: &mut Vec<ConfigError>) -> Option<Store> {
    let store = Store::new(cx.env.cache.memory(), cx.env.limits.get(), mode);
    if store.is_none() {
        errors
            .push(cx.error(&["caching_type"], "`external` needs `cluster.redis`; use `internal` or `prefer-external`"));
    }
    store
}

pub(crate) const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The stored response, aged.
fn hit(entry: Entry, now: u64, head: bool) -> Response<ResponseBody> {
    let age = now.saturating_sub(entry.stored_at_ms) / 1000;
    let ttl = entry.expires_at_ms.saturating_sub(now) / 1000;
    let len = entry.body.len();
    let body = if head { ResponseBody::empty() } else { ResponseBody::full(entry.body) };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
    *resp.headers_mut() = entry.headers;
    let h = resp.headers_mut();
    h.insert(header::AGE, HeaderValue::from(age));
    if head {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("gatehouse; hit; ttl={ttl}")) {
        h.insert(CACHE_STATUS, v);
    }
    resp
}

impl Policy for CacheLookup {
    fn kind(&self) -> &'static str {
        "cache-lookup"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let api = &x.route.api.name;
        if x.request.method != Method::GET && x.request.method != Method::HEAD {
            response_cache_lookup(api, CacheResult::Bypass);
            x.extra_response_headers.insert(CACHE_STATUS, HeaderValue::from_static(STATUS_METHOD));
            return Step::Ready(Outcome::Continue);
        }
        let directive = match self.honor {
            true => control::request_directive(&x.request.headers),
            false => RequestDirective::Normal,
        };
        match directive {
            RequestDirective::Normal => {}
            RequestDirective::NoStore => {
                response_cache_lookup(api, CacheResult::Bypass);
                x.extra_response_headers.insert(CACHE_STATUS, HeaderValue::from_static(STATUS_REQUEST));
                return Step::Ready(Outcome::Continue);
            }
            RequestDirective::Refresh => {
                response_cache_lookup(api, CacheResult::Bypass);
                x.extra_response_headers.insert(CACHE_STATUS, HeaderValue::from_static(STATUS_REQUEST));
                if x.request.method == Method::GET {
                    x.cache = Some(self.ticket(x, self.key(x), STATUS_REQUEST));
                }
                return Step::Ready(Outcome::Continue);
            }
        }
        let key = self.key(x);
        if !self.store.is_external() {
            let found = self.store.get_now(&key);
            return Step::Ready(self.answer(x, key, found));
        }
        Step::Wait(Box::pin(async move {
            let found = self.store.get(&key).await;
            self.answer(x, key, found)
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::policy::context::testing::*;
    use crate::policy::Caller;

    fn lookup(yaml: &str) -> CacheLookup {
        build_with(yaml, Stage::Inbound, CacheLookup::build).expect("builds")
    }

    fn key_of(p: &CacheLookup, uri: &str, f: impl FnOnce(&mut Exchange)) -> String {
        let mut x = exchange(uri);
        f(&mut x);
        p.key(&x)
    }

    #[test]
    fn the_whole_query_is_part_of_the_key_in_any_order() {
        let p = lookup("{}");
        let k = key_of(&p, "/orders/1?a=1&b=2", |_| {});
        assert!(k.starts_with("r:") && k.len() == 66, "{k}");
        assert_eq!(k, key_of(&p, "/orders/1?b=2&a=1", |_| {}));
        assert_ne!(k, key_of(&p, "/orders/1?a=1&b=3", |_| {}));
        assert_ne!(k, key_of(&p, "/orders/2?a=1&b=2", |_| {}));
        // HEAD reads GET's entries; other headers do not matter unless named.
        let head = key_of(&p, "/orders/1?a=1&b=2", |x| {
            x.request.method = Method::HEAD;
            x.request.headers.insert("accept", HeaderValue::from_static("text/html"));
        });
        assert_eq!(k, head);
    }

    #[test]
    fn named_query_parameters_headers_and_subscription_vary_the_key() {
        let p = lookup("{ vary_by_query_parameters: [page], vary_by_headers: [Accept], vary_by_subscription: true }");
        let base = key_of(&p, "/orders/1?page=2&utm=x", |_| {});
        assert_eq!(base, key_of(&p, "/orders/1?utm=y&page=2", |_| {}));
        assert_ne!(base, key_of(&p, "/orders/1?page=3", |_| {}));
        assert_eq!(base, key_of(&p, "/orders/1?page=%32", |_| {}), "values are compared decoded");
        let json = key_of(&p, "/orders/1?page=2", |x| {
            x.request.headers.insert("accept", HeaderValue::from_static("application/json"));
        });
        assert_ne!(base, json);
        let sub = |id: &'static str| {
            move |x: &mut Exchange| {
                x.caller =
                    Some(Arc::new(Caller { subscription_id: id.into(), subscription_name: "n".into(), product: None }))
            }
        };
        let a = key_of(&p, "/orders/1?page=2", sub("s1"));
        assert_ne!(a, base);
        assert_ne!(a, key_of(&p, "/orders/1?page=2", sub("s2")));
        assert_eq!(a, key_of(&p, "/orders/1?page=2", sub("s1")));
    }

    #[test]
    fn misses_hand_a_ticket_and_hits_answer_with_age() {
        let p = lookup("{ caching_type: internal }");
        let mut x = exchange("/orders/1");
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        let t = x.cache.take().expect("a ticket on a miss");
        assert_eq!(x.extra_response_headers[CACHE_STATUS], STATUS_MISS);
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let entry = Entry {
            stored_at_ms: unix_ms() - 3_000,
            expires_at_ms: unix_ms() + 60_000,
            status: 200,
            shared_with_authorized: false,
            vary: Vec::new(),
            headers,
            body: Bytes::from_static(b"stored"),
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        rt.block_on(t.store.set(t.key.clone(), entry.encode(), Duration::from_secs(60)));
        let mut x = exchange("/orders/1");
        let Outcome::Respond(r) = run_ready(&p, &mut x) else { panic!("expected a hit") };
        assert_eq!(r.headers()[header::AGE], "3");
        assert!(r.headers()[CACHE_STATUS].to_str().expect("ascii").starts_with("gatehouse; hit; ttl="));
        assert_eq!(r.headers()["content-type"], "text/plain");
        // An authorized request is not served an entry that was not explicitly shared.
        let mut x = exchange("/orders/1");
        x.request.headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert!(x.cache.as_ref().expect("ticket").authorized);
    }

    #[test]
    fn methods_and_request_directives_bypass() {
        let p = lookup("{ caching_type: internal }");
        let mut x = exchange("/orders/1");
        x.request.method = Method::POST;
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert!(x.cache.is_none());
        assert_eq!(x.extra_response_headers[CACHE_STATUS], STATUS_METHOD);
        let mut x = exchange("/orders/1");
        x.request.headers.insert("cache-control", HeaderValue::from_static("no-store"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert!(x.cache.is_none(), "no-store: nothing stored");
        let mut x = exchange("/orders/1");
        x.request.headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert!(x.cache.is_some(), "no-cache: the fresh response may be stored");
        assert_eq!(x.extra_response_headers[CACHE_STATUS], STATUS_REQUEST);
    }

    #[test]
    fn config_errors_are_located() {
        let e = build_with("{ vary_by_headers: ['a b'] }", Stage::Inbound, CacheLookup::build).expect_err("bad header");
        assert!(e.join("\n").contains("p.vary_by_headers[0]: `a b` is not a header name"), "{e:?}");
        let e = build_with("{ caching_type: external }", Stage::Inbound, CacheLookup::build).expect_err("no redis");
        assert!(e.join("\n").contains("p.caching_type: `external` needs `cluster.redis`"), "{e:?}");
        let e = build_with("{}", Stage::Outbound, CacheLookup::build).expect_err("stage");
        assert!(e.join("\n").contains("belongs in inbound"), "{e:?}");
    }
}
