//! `validate-jwt` (APIM `<validate-jwt>`): the caller must present a token signed by an
//! identity provider, for this API, not expired, with the required claims.
//!
//! The engine is `identity::jwt`; this module finds the token in the request, maps the verdict
//! to RFC 6750 responses (401 `invalid_token`, 403 `insufficient_scope`) and hands the claims to
//! later policies through `Exchange::jwt`. A cached or known-key token is decided without
//! waiting (`Step::Ready`); only a token naming an unknown key waits for a key refetch.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE, WWW_AUTHENTICATE};
use http::StatusCode;
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::{ConfigError, Duration};
use crate::identity::jwt::claims::{ClaimRule, Match};
use crate::identity::jwt::validator::Quick;
use crate::identity::jwt::{Invalid, Rejection, Validator};
use crate::identity::providers::{compile_one, SECTION};
use crate::respond::{Layer, Problem};

/// `validate-jwt: { provider: corp, audiences: [ "api://orders" ], required_claims: { … } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateJwtConfig {
    pub provider: String,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub issuers: Vec<String>,
    pub header_name: Option<String>,
    pub query_parameter_name: Option<String>,
    pub cookie_name: Option<String>,
    #[serde(default = "default_skew")]
    pub clock_skew: Duration,
    #[serde(default = "default_true")]
    pub require_expiration_time: bool,
    #[serde(default)]
    pub required_claims: BTreeMap<String, RequiredValues>,
}

fn default_skew() -> Duration {
    Duration(std::time::Duration::from_secs(30))
}

fn default_true() -> bool {
    true
}

/// The values a claim must carry: `x`, `[a, b]` (all of), `{ any_of: [...] }`, `{ all_of: [...] }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RequiredValues {
    One(String),
    All(Vec<String>),
    Spec(MatchSpec),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    pub any_of: Option<Vec<String>>,
    pub all_of: Option<Vec<String>>,
}

impl RequiredValues {
    /// The values and how they match; `list_mode` is what a plain list means.
    pub fn rule(&self, name: &str, list_mode: Match) -> Result<ClaimRule, &'static str> {
        let boxed = |v: &[String]| v.iter().map(|s| s.as_str().into()).collect();
        let (values, mode) = match self {
            RequiredValues::One(v) => (vec![v.as_str().into()], Match::All),
            RequiredValues::All(v) => (boxed(v), list_mode),
            RequiredValues::Spec(MatchSpec { any_of: Some(v), all_of: None }) => {
                if v.is_empty() {
                    return Err("any_of needs at least one value");
                }
                (boxed(v), Match::Any)
            }
            RequiredValues::Spec(MatchSpec { any_of: None, all_of: Some(v) }) => (boxed(v), Match::All),
            RequiredValues::Spec(_) => return Err("give exactly one of any_of and all_of"),
        };
        Ok(ClaimRule { name: name.into(), values, mode })
    }
}

/// Where the token is read.
#[derive(Debug)]
enum Source {
    /// `Authorization: Bearer <token>`.
    Bearer,
    Header(HeaderName),
    Query(Box<str>),
    Cookie(Box<str>),
}

#[derive(Debug)]
pub struct ValidateJwt {
    validator: Validator,
    source: Source,
}

impl ValidateJwt {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: ValidateJwtConfig = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound) {
            errors.push(cx.error(&[], "validate-jwt runs in the inbound section only"));
        }
        let provider = match compile_one(cx.doc, &cfg.provider) {
            Some(Ok(spec)) => Some(cx.env.identity.provider(spec)),
            Some(Err(_)) => {
                errors.push(cx.error(
                    &["provider"],
                    format!("identity provider `{}` has errors (see {SECTION}.{})", cfg.provider, cfg.provider),
                ));
                None
            }
            None => {
                errors.push(cx.error(
                    &["provider"],
                    format!("unknown identity provider `{}` (define it under {SECTION})", cfg.provider),
                ));
                None
            }
        };
        if cfg.audiences.is_empty() || cfg.audiences.iter().any(String::is_empty) {
            errors.push(
                cx.error(&["audiences"], "at least one audience is required: the token's `aud` must name this API"),
            );
        }
        if cfg.issuers.len() > 8 {
            errors.push(cx.error(&["issuers"], "at most 8 issuers"));
        }
        if cfg.clock_skew.0 > std::time::Duration::from_secs(300) {
            errors.push(cx.error(&["clock_skew"], "clock_skew must be at most 5m"));
        }
        let sources = [cfg.header_name.is_some(), cfg.query_parameter_name.is_some(), cfg.cookie_name.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            errors.push(cx.error(&[], "give at most one of header_name, query_parameter_name and cookie_name"));
        }
        let source = if let Some(h) = &cfg.header_name {
            match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) if n == AUTHORIZATION => Source::Bearer,
                Ok(n) => Source::Header(n),
                Err(_) => {
                    errors.push(cx.error(&["header_name"], format!("`{h}` is not a valid header name")));
                    Source::Bearer
                }
            }
        } else if let Some(q) = &cfg.query_parameter_name {
            if q.is_empty() {
                errors.push(cx.error(&["query_parameter_name"], "must not be empty"));
            }
            Source::Query(q.as_str().into())
        } else if let Some(c) = &cfg.cookie_name {
            if c.is_empty() || c.contains([';', '=', ' ']) {
                errors.push(cx.error(&["cookie_name"], "not a valid cookie name"));
            }
            Source::Cookie(c.as_str().into())
        } else {
            Source::Bearer
        };
        let mut required = Vec::new();
        for (name, values) in &cfg.required_claims {
            match values.rule(name, Match::All) {
                Ok(r) => required.push(r),
                Err(msg) => errors.push(cx.error(&["required_claims", name], msg)),
            }
        }
        match (errors.is_empty(), provider) {
            (true, Some(provider)) => Ok(ValidateJwt {
                validator: Validator {
                    provider,
                    issuers: cfg.issuers.iter().map(|s| s.as_str().into()).collect(),
                    audiences: cfg.audiences.iter().map(|s| s.as_str().into()).collect(),
                    clock_skew: cfg.clock_skew.0.as_secs(),
                    require_expiration_time: cfg.require_expiration_time,
                    required_claims: required,
                },
                source,
            }),
            _ => Err(errors),
        }
    }

    fn reject(&self, r: Rejection) -> Outcome {
        Outcome::Reject(Box::new(match r {
            Rejection::Invalid(i) => invalid_token(i),
            Rejection::Insufficient(claim) => insufficient(&format!("claim `{claim}` lacks a required value"), None),
        }))
    }
}

/// 401 without a token (RFC 6750 §3.1: no error code when no credentials were sent).
pub fn missing_token() -> Problem {
    Problem::new(StatusCode::UNAUTHORIZED, "jwt-missing", Layer::Policy, "token missing")
        .with_header(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
}

/// 401 `invalid_token` with the fixed description of why.
pub fn invalid_token(i: Invalid) -> Problem {
    let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", i.detail());
    let value = HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer error=\"invalid_token\""));
    Problem::new(StatusCode::UNAUTHORIZED, "jwt-invalid", Layer::Policy, i.detail())
        .with_header(WWW_AUTHENTICATE, value)
}

/// 403 `insufficient_scope`; `scope` lists the scopes needed, when scopes are what is missing.
pub fn insufficient(detail: &str, scope: Option<&str>) -> Problem {
    let challenge = match scope {
        Some(s) => format!("Bearer error=\"insufficient_scope\", scope=\"{}\"", s.replace(['"', '\\'], "")),
        None => "Bearer error=\"insufficient_scope\"".to_owned(),
    };
    let value =
        HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer error=\"insufficient_scope\""));
    Problem::new(StatusCode::FORBIDDEN, "insufficient-scope", Layer::Policy, detail)
        .with_header(WWW_AUTHENTICATE, value)
}

enum Found<'a> {
    Token(&'a str),
    Missing,
    Unreadable,
}

/// The bearer token of a lone `Authorization` field, as bytes: `find`'s answer for a value
/// that is text, without first checking every byte of it. Only the token cache's lookup uses
/// it: a hit means the bytes are a token that verified (base64url and dots), and then the
/// whole value is text (scheme, separator, spaces and tabs around the token) and `find` reads
/// the same token from it; a miss goes the strict way.
fn bearer_bytes(headers: &http::HeaderMap) -> Option<&[u8]> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(v), None) = (values.next(), values.next()) else { return None };
    let v = v.as_bytes();
    let space = v.iter().position(|&b| b == b' ')?;
    if !v[..space].eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    // `str::trim` on a text header value: only spaces and tabs are whitespace there.
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let token = &v[space + 1..];
    let start = token.iter().position(|b| !blank(b)).unwrap_or(token.len());
    let end = token.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    Some(&token[start..end])
}

impl Source {
    fn find<'a>(&self, req: &'a http::request::Parts) -> Found<'a> {
        match self {
            Source::Bearer => {
                let mut values = req.headers.get_all(AUTHORIZATION).iter();
                let (Some(v), None) = (values.next(), values.next()) else {
                    return if req.headers.contains_key(AUTHORIZATION) { Found::Unreadable } else { Found::Missing };
                };
                let Ok(v) = v.to_str() else { return Found::Unreadable };
                match v.split_once(' ') {
                    Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Found::Token(token.trim()),
                    // Another scheme (Basic…): no bearer token was presented.
                    _ => Found::Missing,
                }
            }
            Source::Header(name) => match req.headers.get(name).map(HeaderValue::to_str) {
                None => Found::Missing,
                Some(Err(_)) => Found::Unreadable,
                Some(Ok(v)) => {
                    let v = v.trim();
                    let v = match v.get(..7) {
                        Some(p) if p.eq_ignore_ascii_case("bearer ") => v[7..].trim_start(),
                        _ => v,
                    };
                    Found::Token(v)
                }
            },
            Source::Query(name) => {
                let query = req.uri.query().unwrap_or("");
                for pair in query.split('&') {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    if k == &**name {
                        // base64url and dots need no percent-encoding; an encoded token is
                        // not one the gateway would have to guess at.
                        return if v.contains('%') || v.contains('+') { Found::Unreadable } else { Found::Token(v) };
                    }
                }
                Found::Missing
            }
            Source::Cookie(name) => {
                for header in req.headers.get_all(COOKIE) {
                    let Ok(h) = header.to_str() else { continue };
                    for c in h.split(';') {
                        if let Some((k, v)) = c.trim().split_once('=') {
                            if k == &**name {
                                return Found::Token(v.trim_matches('"'));
                            }
                        }
                    }
                }
                Found::Missing
            }
        }
    }
}

impl Policy for ValidateJwt {
    fn kind(&self) -> &'static str {
        "validate-jwt"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let now = x.unix_now();
        if let Source::Bearer = self.source {
            let cached = bearer_bytes(&x.request.headers).and_then(|t| self.validator.validate_cached(t, now));
            match cached {
                Some(Ok(claims)) => {
                    x.jwt = Some(claims);
                    return Outcome::Continue.into();
                }
                Some(Err(r)) => return self.reject(r).into(),
                None => {}
            }
        }
        let token = match self.source.find(&x.request) {
            Found::Token("") | Found::Missing => return Outcome::Reject(Box::new(missing_token())).into(),
            Found::Unreadable => return self.reject(Rejection::Invalid(Invalid::Malformed)).into(),
            Found::Token(t) => t,
        };
        match self.validator.validate_now(token, now) {
            Quick::Done(Ok(claims)) => {
                x.jwt = Some(claims);
                Outcome::Continue.into()
            }
            Quick::Done(Err(r)) => self.reject(r).into(),
            Quick::Wait => {
                let token: Arc<str> = token.into();
                Step::Wait(Box::pin(async move {
                    match self.validator.validate(&token, now).await {
                        Ok(claims) => {
                            x.jwt = Some(claims);
                            Outcome::Continue
                        }
                        Err(r) => self.reject(r),
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &[u8])]) -> http::request::Parts {
        let mut b = http::Request::get(uri);
        for (k, v) in headers {
            b = b.header(*k, HeaderValue::from_bytes(v).expect("header value"));
        }
        b.body(()).expect("request").into_parts().0
    }

    fn found(source: &Source, p: &http::request::Parts) -> Option<String> {
        match source.find(p) {
            Found::Token(t) => Some(t.to_owned()),
            Found::Missing => None,
            Found::Unreadable => Some("<unreadable>".into()),
        }
    }

    #[test]
    fn bearer_bytes_read_the_token_find_reads() {
        let values: [&[u8]; 12] = [
            b"Bearer a.b.c",
            b"bearer  a.b.c \t",
            b"BEARER \ta.b.c",
            b"Bearer a.b.c x",
            b"Bearer ",
            b"Bearer",
            b"Basic a.b.c",
            b"Bearerx a.b.c",
            b"Bearer a.b.\xffc",
            b"Be\xffrer a.b.c",
            b"Bearer a.b.c\xff",
            b"Bearer a.b.c  \xff",
        ];
        for v in values {
            let p = parts("/", &[("authorization", v)]);
            let bytes = bearer_bytes(&p.headers);
            match Source::Bearer.find(&p) {
                // Whenever `find` reads a token, the bytes are that token.
                Found::Token(t) => assert_eq!(bytes, Some(t.as_bytes()), "{v:?}"),
                // Otherwise any bytes read are not a token's (not text, or not one token), so
                // they can never be found in the verified-token cache.
                _ => assert!(
                    bytes.is_none_or(|b| b.is_empty() || b.iter().any(|c| !c.is_ascii_graphic() || *c == b' ')),
                    "{v:?}"
                ),
            }
        }
        let two = parts("/", &[("authorization", b"Bearer a"), ("authorization", b"Bearer a")]);
        assert_eq!(bearer_bytes(&two.headers), None);
    }

    #[test]
    fn token_sources() {
        let bearer = Source::Bearer;
        assert_eq!(found(&bearer, &parts("/", &[("authorization", b"Bearer a.b.c")])).as_deref(), Some("a.b.c"));
        assert_eq!(found(&bearer, &parts("/", &[("authorization", b"bearer  a.b.c ")])).as_deref(), Some("a.b.c"));
        assert_eq!(found(&bearer, &parts("/", &[("authorization", b"Basic dXNlcjpwdw==")])), None);
        assert_eq!(found(&bearer, &parts("/", &[])), None);
        let two = parts("/", &[("authorization", b"Bearer a"), ("authorization", b"Bearer b")]);
        assert_eq!(found(&bearer, &two).as_deref(), Some("<unreadable>"));
        let binary = parts("/", &[("authorization", b"Bearer \xff\xfe")]);
        assert_eq!(found(&bearer, &binary).as_deref(), Some("<unreadable>"));

        let header = Source::Header(HeaderName::from_static("x-token"));
        assert_eq!(found(&header, &parts("/", &[("x-token", b"a.b.c")])).as_deref(), Some("a.b.c"));
        assert_eq!(found(&header, &parts("/", &[("x-token", b"Bearer a.b.c")])).as_deref(), Some("a.b.c"));

        let query = Source::Query("access_token".into());
        assert_eq!(found(&query, &parts("/x?a=1&access_token=a.b.c&z", &[])).as_deref(), Some("a.b.c"));
        assert_eq!(found(&query, &parts("/x?access_token_x=1", &[])), None);
        assert_eq!(found(&query, &parts("/x?access_token=a%2Eb", &[])).as_deref(), Some("<unreadable>"));

        let cookie = Source::Cookie("session".into());
        let p = parts("/", &[("cookie", b"theme=dark; session=a.b.c; other=1")]);
        assert_eq!(found(&cookie, &p).as_deref(), Some("a.b.c"));
        assert_eq!(found(&cookie, &parts("/", &[("cookie", b"sessionx=1")])), None);
    }

    #[test]
    fn required_values_forms() {
        let all = RequiredValues::All(vec!["a".into(), "b".into()]).rule("roles", Match::All).expect("list");
        assert_eq!((all.values.len(), all.mode), (2, Match::All));
        let any = RequiredValues::Spec(MatchSpec { any_of: Some(vec!["a".into()]), all_of: None });
        assert_eq!(any.rule("roles", Match::All).expect("any_of").mode, Match::Any);
        let both = RequiredValues::Spec(MatchSpec { any_of: Some(vec![]), all_of: Some(vec![]) });
        assert!(both.rule("roles", Match::All).is_err());
        let one = RequiredValues::One("t1".into()).rule("tid", Match::Any).expect("one");
        assert_eq!((one.values.len(), one.mode), (1, Match::All));
    }

    #[test]
    fn challenges_follow_rfc_6750() {
        let p = invalid_token(Invalid::Expired);
        assert_eq!(p.status, StatusCode::UNAUTHORIZED);
        assert_eq!(p.headers[WWW_AUTHENTICATE], "Bearer error=\"invalid_token\", error_description=\"token expired\"");
        assert_eq!(missing_token().headers[WWW_AUTHENTICATE], "Bearer");
        let p = insufficient("x", Some("orders.write"));
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        assert_eq!(p.headers[WWW_AUTHENTICATE], "Bearer error=\"insufficient_scope\", scope=\"orders.write\"");
    }
}
