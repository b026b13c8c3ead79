//! `cache-store`: store the response under the key an earlier `cache-lookup` computed (APIM
//! `<cache-store>`), for `duration` at most, when RFC 9111 allows it (`crate::cache::control`).
//!
//! The body is read to its end before it goes on, up to `max_body`: a response that says it is
//! larger is not touched at all, and one that turns out larger (no `Content-Length`) goes on
//! streaming with the bytes already read in front. Only the head of a larger response waits.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Response;
use http_body_util::BodyExt;
use serde::Deserialize;

use super::cache_lookup::CACHE_STATUS;
use super::{util, BuildCx, CacheTicket, Exchange, Outcome, Policy, Stage, Step};
use crate::body::ResponseBody;
use crate::cache::control::{self, StoreRules};
use crate::cache::entry::{request_value, Entry};
use crate::cache::unix_ms;
use crate::config::units::{ByteSize, Duration};
use crate::config::ConfigError;
use crate::respond::Problem;

/// `cache-store: { duration: 60s }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheStoreConfig {
    /// The longest an entry lives; `Cache-Control: max-age`/`s-maxage` may shorten it.
    pub duration: Duration,
    /// APIM `cache-response`: `false` stores `200 OK` only.
    #[serde(default = "yes")]
    pub cache_response: bool,
    #[serde(default = "default_max_body")]
    pub max_body: ByteSize,
}

fn yes() -> bool {
    true
}

/// Larger responses are not stored.
pub const DEFAULT_MAX_BODY: u64 = 1 << 20;

fn default_max_body() -> ByteSize {
    ByteSize(DEFAULT_MAX_BODY)
}

#[derive(Debug)]
pub struct CacheStore {
    duration: std::time::Duration,
    cache_response: bool,
    max_body: u64,
}

impl CacheStore {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let c: CacheStoreConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "cache-store", &[Stage::Outbound]) {
            errors.push(e);
        }
        if c.duration.0.as_millis() == 0 {
            errors.push(cx.error(&["duration"], "duration must be at least 1ms"));
        }
        if !mentions(cx.doc.root(), "cache-lookup") {
            errors.push(cx.doc.error_at_key(
                &cx.path,
                "`cache-store` stores what a `cache-lookup` missed, and this config has no `cache-lookup`",
            ));
        }
        util::done(errors)?;
        Ok(CacheStore { duration: c.duration.0, cache_response: c.cache_response, max_body: c.max_body.0 })
    }

    /// Whether `resp` may be stored, and for how long.
    fn decide(&self, resp: &Response<ResponseBody>, t: &CacheTicket) -> Result<std::time::Duration, &'static str> {
        if !self.cache_response && resp.status() != http::StatusCode::OK {
            return Err("status");
        }
        let rules = StoreRules {
            duration: self.duration,
            honor_cache_control: t.honor_cache_control,
            allow_private: t.allow_private,
            authorized: t.authorized,
        };
        let ttl = control::decide(resp.status().as_u16(), resp.headers(), &rules)?;
        let declared = resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            return Err("too-large");
        }
        Ok(ttl)
    }
}

/// Whether `kind` appears as a policy anywhere in the document (a `choose` branch counts).
fn mentions(node: &crate::config::yaml::Node, kind: &str) -> bool {
    use crate::config::yaml::NodeKind;
    match &node.kind {
        NodeKind::Map(entries) => entries.iter().any(|(k, v)| k.text() == Some(kind) || mentions(v, kind)),
        NodeKind::Seq(items) => items.iter().any(|i| mentions(i, kind)),
        _ => false,
    }
}

fn set_status(x: &mut Exchange, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        x.extra_response_headers.insert(CACHE_STATUS, v);
    }
}

/// The entry for a response read whole: hop-by-hop fields and what is per request (`Age`,
/// `Cache-Status`, `X-Request-Id`, the length, recomputed) are not stored.
fn entry(x: &Exchange, parts: &http::response::Parts, body: Bytes, ttl: std::time::Duration) -> Entry {
    let mut headers = parts.headers.clone();
    crate::proxy::strip_hop_by_hop(&mut headers);
    for name in [header::CONTENT_LENGTH, header::AGE, CACHE_STATUS, crate::edge::X_REQUEST_ID] {
        headers.remove(name);
    }
    for name in ["keep-alive", "proxy-connection"] {
        headers.remove(name);
    }
    let vary = control::vary_names(&parts.headers)
        .map(|n| {
            let n = n.to_ascii_lowercase();
            let v = request_value(&x.request.headers, &n);
            (n, v)
        })
        .collect();
    let now = unix_ms();
    Entry {
        stored_at_ms: now,
        expires_at_ms: now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
        status: parts.status.as_u16(),
        shared_with_authorized: control::shared_with_authorized(&parts.headers),
        vary,
        headers,
        body,
    }
}

impl Policy for CacheStore {
    fn kind(&self) -> &'static str {
        "cache-store"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        // No ticket: the lookup hit, bypassed, or did not run on this route.
        let Some(ticket) = x.cache.take() else { return Step::Ready(Outcome::Continue) };
        let Some(resp) = x.response.as_ref() else { return Step::Ready(Outcome::Continue) };
        let ttl = match self.decide(resp, &ticket) {
            Ok(ttl) => ttl,
            Err(why) => {
                set_status(x, &format!("{}; detail={why}", ticket.status));
                return Step::Ready(Outcome::Continue);
            }
        };
        Step::Wait(Box::pin(async move {
            let Some(resp) = x.response.take() else { return Outcome::Continue };
            let (parts, mut body) = resp.into_parts();
            let mut frames = Vec::new();
            let mut size = 0u64;
            let mut trailers = false;
            let ended = loop {
                match body.frame().await {
                    None => break true,
                    Some(Ok(f)) => {
                        size += f.data_ref().map_or(0, |d| d.len() as u64);
                        trailers |= f.is_trailers();
                        frames.push(f);
                        if size > self.max_body {
                            break false;
                        }
                    }
                    Some(Err(_)) => {
                        return Outcome::Reject(Box::new(Problem::backend(
                            http::StatusCode::BAD_GATEWAY,
                            "response-read-failed",
                            "http_response_incomplete",
                            String::new(),
                            "the backend's response body was cut off",
                        )))
                    }
                }
            };
            if !ended || trailers {
                // Too large (or with trailers, which are not stored): the response goes on as it came.
                let why = if trailers { "trailers" } else { "too-large" };
                x.response = Some(Response::from_parts(parts, ResponseBody::replay(frames, body)));
                set_status(x, &format!("{}; detail={why}", ticket.status));
                return Outcome::Continue;
            }
            let mut data = bytes::BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
            for f in frames {
                if let Ok(d) = f.into_data() {
                    data.extend_from_slice(&d);
                }
            }
            let data = data.freeze();
            let e = entry(x, &parts, data.clone(), ttl);
            ticket.store.set_soon(ticket.key, e.encode(), ttl);
            x.response = Some(Response::from_parts(parts, ResponseBody::full(Bytes::new())));
            util::put_body(x, data);
            set_status(x, &format!("{}; stored", ticket.status));
            Outcome::Continue
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheCell, CachingType, Store};
    use crate::policy::context::testing::*;

    const DOC: &str = "l: { cache-lookup: {} }\np: ";

    fn store_policy(yaml: &str) -> Result<CacheStore, Vec<String>> {
        let path = [crate::config::PathSeg::Key("p".into())];
        build_in(&format!("{DOC}{yaml}\n"), &path, Stage::Outbound, CacheStore::build)
    }

    fn ticket(cell: &CacheCell) -> CacheTicket {
        let store = Store::new(cell.memory(), &crate::ratelimit::Limits::default(), CachingType::Internal);
        CacheTicket {
            key: "r:test".into(),
            store: store.expect("memory"),
            honor_cache_control: true,
            allow_private: false,
            authorized: false,
            status: "gatehouse; fwd=uri-miss",
        }
    }

    fn run_with(p: &CacheStore, cell: &CacheCell, resp: Response<ResponseBody>) -> (Outcome, Exchange) {
        let mut x = exchange("/orders/1");
        x.stage = Stage::Outbound;
        x.request.headers.insert("accept-language", HeaderValue::from_static("de"));
        x.cache = Some(ticket(cell));
        x.response = Some(resp);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let o = rt.block_on(run_async(p, &mut x));
        (o, x)
    }

    fn response(body: &'static str, headers: &[(&'static str, &'static str)]) -> Response<ResponseBody> {
        let mut r = Response::new(ResponseBody::full(Bytes::from_static(body.as_bytes())));
        for (n, v) in headers {
            r.headers_mut().append(*n, HeaderValue::from_static(v));
        }
        r
    }

    #[test]
    fn stores_a_cacheable_response_with_its_vary_values() {
        let p = store_policy("{ duration: 60s }").expect("builds");
        let cell = CacheCell::default();
        let resp = response("hello", &[("vary", "Accept-Language"), ("connection", "x-hop"), ("x-hop", "1")]);
        let (o, x) = run_with(&p, &cell, resp);
        assert!(matches!(o, Outcome::Continue));
        assert_eq!(x.extra_response_headers[CACHE_STATUS], "gatehouse; fwd=uri-miss; stored");
        let e = Entry::decode(&cell.memory().get("r:test").expect("stored")).expect("entry");
        assert_eq!(&e.body[..], b"hello");
        assert_eq!(e.vary, vec![("accept-language".to_owned(), Some(Bytes::from_static(b"de")))]);
        assert!(!e.headers.contains_key("x-hop") && !e.headers.contains_key("connection"));
        assert!(e.expires_at_ms - e.stored_at_ms <= 60_000);
    }

    #[test]
    fn refused_responses_are_left_alone_and_say_why() {
        let p = store_policy("{ duration: 60s, max_body: 4 }").expect("builds");
        let cell = CacheCell::default();
        let (_, x) = run_with(&p, &cell, response("x", &[("cache-control", "no-store")]));
        assert_eq!(x.extra_response_headers[CACHE_STATUS], "gatehouse; fwd=uri-miss; detail=no-store");
        // Larger than max_body without a Content-Length: streamed on whole, not stored.
        let (o, mut x) = run_with(&p, &cell, response("longer than four", &[]));
        assert!(matches!(o, Outcome::Continue));
        assert_eq!(x.extra_response_headers[CACHE_STATUS], "gatehouse; fwd=uri-miss; detail=too-large");
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("rt");
        let body = rt.block_on(util::read_body(&mut x)).expect("body");
        assert_eq!(&body[..], b"longer than four");
        assert!(cell.memory().get("r:test").is_none());
        let only_ok = store_policy("{ duration: 60s, cache_response: false }").expect("builds");
        let mut r = response("gone", &[]);
        *r.status_mut() = http::StatusCode::GONE;
        let (_, x) = run_with(&only_ok, &cell, r);
        assert_eq!(x.extra_response_headers[CACHE_STATUS], "gatehouse; fwd=uri-miss; detail=status");
    }

    #[test]
    fn config_errors_are_located() {
        let e = store_policy("{ duration: 0s }").expect_err("zero");
        assert!(e.join("\n").contains("p.duration: duration must be at least 1ms"), "{e:?}");
        let e = store_policy("{ duration: -5s }").expect_err("negative");
        assert!(e.join("\n").contains("p.duration"), "{e:?}");
        let e = build_with("{ duration: 5s }", Stage::Outbound, CacheStore::build).expect_err("no lookup");
        assert!(e.join("\n").contains("this config has no `cache-lookup`"), "{e:?}");
        let path = [crate::config::PathSeg::Key("p".into())];
        let e = build_in(&format!("{DOC}{{ duration: 5s }}\n"), &path, Stage::Inbound, CacheStore::build)
            .expect_err("stage");
        assert!(e.join("\n").contains("belongs in outbound"), "{e:?}");
    }
}
