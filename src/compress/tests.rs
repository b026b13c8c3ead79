use bytes::Bytes;
use http_body_util::BodyExt;

use super::config::TypePattern;
use super::*;

fn accept(v: &str) -> Accept {
    Accept::of(&Method::GET, &headers(&[("accept-encoding", v)]))
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).expect("value"));
    }
    h
}

const BOTH: &[Coding] = &[Coding::Br, Coding::Gzip];
const GZIP_FIRST: &[Coding] = &[Coding::Gzip, Coding::Br];

#[test]
fn negotiation_follows_q_values_then_server_order() {
    assert_eq!(accept("gzip, deflate, br").choose(BOTH), Some(Coding::Br));
    assert_eq!(accept("gzip, deflate, br").choose(GZIP_FIRST), Some(Coding::Gzip));
    assert_eq!(accept("gzip").choose(BOTH), Some(Coding::Gzip));
    assert_eq!(accept("br;q=0.5, gzip;q=0.8").choose(BOTH), Some(Coding::Gzip), "the client's highest q wins");
    assert_eq!(accept("br;q=1.0, gzip;q=0.999").choose(GZIP_FIRST), Some(Coding::Br));
    assert_eq!(accept("GZIP;Q=0.3").choose(BOTH), Some(Coding::Gzip), "names and q are case-insensitive");
    assert_eq!(accept("x-gzip").choose(BOTH), Some(Coding::Gzip));
    assert_eq!(accept("deflate, zstd").choose(BOTH), None);
    assert_eq!(accept("").choose(BOTH), None);
    assert_eq!(Accept::of(&Method::GET, &HeaderMap::new()).choose(BOTH), None, "no header: identity");
}

#[test]
fn q_zero_star_and_identity() {
    assert_eq!(accept("br;q=0, gzip").choose(BOTH), Some(Coding::Gzip), "q=0 excludes");
    assert_eq!(accept("br;q=0, gzip;q=0").choose(BOTH), None);
    assert_eq!(accept("gzip;q=0.0").choose(BOTH), None);
    assert_eq!(accept("*").choose(BOTH), Some(Coding::Br), "* accepts every coding");
    assert_eq!(accept("*;q=0.5, br;q=0").choose(BOTH), Some(Coding::Gzip), "a named coding overrides *");
    assert_eq!(accept("*;q=0").choose(BOTH), None);
    assert_eq!(accept("gzip;q=0.5, identity").choose(BOTH), None, "identity preferred");
    assert_eq!(accept("gzip, identity;q=0.5").choose(BOTH), Some(Coding::Gzip));
    assert_eq!(accept("gzip, identity;q=0").choose(BOTH), Some(Coding::Gzip));
}

#[test]
fn malformed_weights_are_ignored_and_repeats_take_the_best() {
    assert_eq!(accept("br;q=2, gzip").choose(BOTH), Some(Coding::Gzip));
    assert_eq!(accept("br;q=abc").choose(BOTH), None);
    assert_eq!(accept("br;q=0.1234").choose(BOTH), None);
    assert_eq!(accept("br;q=0, br;q=0.4").choose(BOTH), Some(Coding::Br));
    // Several field lines are one list.
    let a = Accept::of(&Method::GET, &headers(&[("accept-encoding", "br;q=0"), ("accept-encoding", "gzip")]));
    assert_eq!(a.choose(BOTH), Some(Coding::Gzip));
    assert_eq!(qvalue(b"0.5"), Some(500));
    assert_eq!(qvalue(b"1.000"), Some(1000));
    assert_eq!(qvalue(b"0."), Some(0));
    assert_eq!(qvalue(b"1.001"), None);
    assert_eq!(qvalue(b".5"), None);
}

fn spec() -> Spec {
    Spec {
        codings: BOTH.to_vec(),
        min_size: 100,
        types: vec![TypePattern::Exact("application/json".into()), TypePattern::Prefix("text/".into())],
        gzip_level: 6,
        br_level: 4,
    }
}

fn table() -> Table {
    let doc = crate::config::Document::parse(
        "t.yaml",
        "edge:\n  compression: { min_size: 100, types: [application/json, text/*] }\n\
         apis:\n  off: { path: /o, compression: false }\n",
    )
    .expect("yaml");
    let mut errors = Vec::new();
    let t = config::compile(&doc, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    t
}

fn response(status: u16, body: &str, pairs: &[(&'static str, &str)]) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::full(Bytes::from(body.to_owned())));
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    *r.headers_mut() = headers(pairs);
    r
}

const JSON: (&str, &str) = ("content-type", "application/json; charset=utf-8");

#[test]
fn the_skip_rules() {
    let s = spec();
    let json = headers(&[JSON]);
    assert!(eligible(&s, StatusCode::OK, &json, Some(100)));
    assert!(eligible(&s, StatusCode::NOT_FOUND, &json, None), "unknown length, any status with a body");
    assert!(!eligible(&s, StatusCode::OK, &json, Some(99)), "below min_size");
    for status in [StatusCode::SWITCHING_PROTOCOLS, StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        assert!(!eligible(&s, status, &json, None), "{status}");
    }
    assert!(!eligible(&s, StatusCode::PARTIAL_CONTENT, &json, None));
    assert!(!eligible(&s, StatusCode::OK, &headers(&[JSON, ("content-encoding", "gzip")]), None));
    assert!(!eligible(&s, StatusCode::OK, &headers(&[("content-type", "image/png")]), None));
    assert!(!eligible(&s, StatusCode::OK, &HeaderMap::new(), None), "no type");
    assert!(eligible(&s, StatusCode::OK, &headers(&[("content-type", "TEXT/Plain")]), None), "text/*");
    assert!(!eligible(&s, StatusCode::OK, &headers(&[JSON, ("cache-control", "max-age=60, No-Transform")]), None));
    assert!(eligible(&s, StatusCode::OK, &headers(&[JSON, ("cache-control", "no-transformer")]), None));
}

#[tokio::test]
async fn apply_rewrites_the_head_and_encodes_the_body() {
    let t = table();
    let body = "{\"items\": [1, 2, 3]} ".repeat(50);
    let mut r = response(
        200,
        &body,
        &[JSON, ("content-length", "1050"), ("etag", "\"v1\""), ("vary", "Origin"), ("accept-ranges", "bytes")],
    );
    apply(&t, Some("api"), accept("gzip;q=0.5, br"), &mut r);
    let h = r.headers();
    assert_eq!(h["content-encoding"], "br");
    assert!(!h.contains_key("content-length") && !h.contains_key("accept-ranges"));
    assert_eq!(h["etag"], "W/\"v1\"");
    assert_eq!(h.get_all("vary").iter().collect::<Vec<_>>(), ["Origin, Accept-Encoding"]);
    let got = r.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(encode::decode(Coding::Br, &got), body.as_bytes());
}

#[tokio::test]
async fn unaccepted_or_unconfigured_responses_are_untouched() {
    let t = table();
    let body = "x".repeat(500);
    // The client takes no coding: the body is as it was, but Vary still says it could differ.
    let mut r = response(200, &body, &[JSON, ("etag", "\"v1\"")]);
    apply(&t, None, accept("identity"), &mut r);
    assert!(!r.headers().contains_key("content-encoding"));
    assert_eq!(r.headers()["vary"], "Accept-Encoding");
    assert_eq!(r.headers()["etag"], "\"v1\"");
    assert_eq!(r.into_body().collect().await.expect("body").to_bytes(), body.as_bytes());
    // HEAD, an API with compression off, and a weak ETag / Vary: * kept as they are.
    let mut r = response(200, &body, &[JSON]);
    apply(&t, None, Accept::of(&Method::HEAD, &headers(&[("accept-encoding", "gzip")])), &mut r);
    assert!(r.headers().is_empty() || !r.headers().contains_key("vary"));
    let mut r = response(200, &body, &[JSON]);
    apply(&t, Some("off"), accept("gzip"), &mut r);
    assert!(!r.headers().contains_key("content-encoding") && !r.headers().contains_key("vary"));
    let mut r = response(200, &body, &[JSON, ("etag", "W/\"v1\""), ("vary", "*")]);
    apply(&t, None, accept("gzip"), &mut r);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert_eq!(r.headers()["etag"], "W/\"v1\"");
    assert_eq!(r.headers()["vary"], "*");
    // The size of a gateway-written body counts when no Content-Length is set.
    let mut r = response(200, "short", &[JSON]);
    apply(&t, None, accept("gzip"), &mut r);
    assert!(!r.headers().contains_key("content-encoding"));
}

#[test]
fn vary_lines_are_merged_once() {
    let mut h = headers(&[("vary", "Origin"), ("vary", "Accept-Language")]);
    add_vary(&mut h);
    assert_eq!(h.get_all("vary").iter().collect::<Vec<_>>(), ["Origin, Accept-Language, Accept-Encoding"]);
    let mut h = headers(&[("vary", "origin, accept-encoding")]);
    add_vary(&mut h);
    assert_eq!(h["vary"], "origin, accept-encoding");
}
