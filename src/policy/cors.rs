//! `cors`: cross-origin resource sharing (APIM `<cors>`), answered at the gateway.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered with
//! 204 and the allowed origin, methods, headers and max age; the backend never sees it. When the
//! origin, method or a requested header is not allowed, the preflight is answered with an empty
//! 200 and no CORS headers (APIM `terminate-unmatched-request`, the default), so the browser
//! refuses the call; with `terminate_unmatched_request: false` it goes on to the backend instead.
//! On an actual request from an allowed origin the CORS headers are added to whatever response
//! goes out (backend answer, gateway error or another policy's answer); a disallowed origin gets
//! none.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;

use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::body::ResponseBody;
use crate::config::ConfigError;

/// ```yaml
/// cors:
///   allowed_origins: [ "https://app.example.com" ]   # or [ "*" ]
///   allowed_methods: [ GET, POST ]                     # or [ "*" ]
///   allowed_headers: [ content-type, authorization ]   # or [ "*" ]
///   expose_headers: [ x-request-id ]
///   allow_credentials: true
///   preflight_result_max_age: 600
/// ```
#[derive(Debug, Deserialize)]
pub struct CorsConfig {
    pub allowed_origins: Vec<String>,
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default)]
    pub preflight_result_max_age: Option<u32>,
    #[serde(default = "yes")]
    pub terminate_unmatched_request: bool,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "POST".into()]
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct Cors {
    /// `None`: any origin.
    origins: Option<Vec<String>>,
    /// `None`: any method.
    methods: Option<Vec<Method>>,
    methods_value: HeaderValue,
    /// `None`: any header (lowercase names otherwise).
    headers: Option<Vec<HeaderName>>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
    terminate: bool,
}

const ALLOW_ORIGIN: HeaderName = header::ACCESS_CONTROL_ALLOW_ORIGIN;

impl Cors {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: CorsConfig = cx.config()?;
        let mut errors = Vec::new();
        if let Err(e) = util::only_in(cx, "cors", &[Stage::Inbound]) {
            errors.push(e);
        }
        let star = |l: &[String]| l.iter().any(|s| s == "*");
        let origins = if star(&cfg.allowed_origins) {
            if cfg.allow_credentials {
                errors.push(cx.error(
                    &["allow_credentials"],
                    "browsers refuse credentials with any origin (`*`): list the origins",
                ));
            }
            None
        } else {
            for (i, o) in cfg.allowed_origins.iter().enumerate() {
                let host = o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")).unwrap_or("");
                let ok = !host.is_empty() && !host.contains(['/', ' ']) && HeaderValue::from_str(o).is_ok();
                if !ok {
                    errors.push(util::item_error(
                        cx,
                        "allowed_origins",
                        i,
                        format!("`{o}` is not an origin: scheme://host[:port], no path (or `*`)"),
                    ));
                }
            }
            if cfg.allowed_origins.is_empty() {
                errors.push(cx.error(&["allowed_origins"], "list the allowed origins (or `*`)"));
            }
            Some(cfg.allowed_origins.iter().map(|o| o.to_ascii_lowercase()).collect())
        };
        let methods = if star(&cfg.allowed_methods) {
            None
        } else {
            let mut v = Vec::new();
            for (i, m) in cfg.allowed_methods.iter().enumerate() {
                match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => v.push(m),
                    Err(_) => errors.push(util::item_error(cx, "allowed_methods", i, format!("`{m}` is not a method"))),
                }
            }
            Some(v)
        };
        let headers = if star(&cfg.allowed_headers) {
            None
        } else {
            Some(names(cx, "allowed_headers", &cfg.allowed_headers, &mut errors))
        };
        let expose = names(cx, "expose_headers", &cfg.expose_headers, &mut errors);
        util::done(errors)?;
        let methods_value = match &methods {
            None => HeaderValue::from_static("*"),
            Some(m) => join(m.iter().map(Method::as_str)),
        };
        Ok(Cors {
            origins,
            methods,
            methods_value,
            headers,
            expose: (!expose.is_empty()).then(|| join(expose.iter().map(HeaderName::as_str))),
            credentials: cfg.allow_credentials,
            max_age: cfg.preflight_result_max_age.map(HeaderValue::from),
            terminate: cfg.terminate_unmatched_request,
        })
    }

    fn origin_allowed(&self, origin: &[u8]) -> bool {
        match &self.origins {
            None => true,
            Some(list) => list.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }

    /// `Access-Control-Allow-Origin` (and `Vary`, credentials) for an allowed origin.
    fn origin_headers(&self, origin: &HeaderValue, into: &mut http::HeaderMap) {
        if self.origins.is_none() && !self.credentials {
            into.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            into.insert(ALLOW_ORIGIN, origin.clone());
            into.insert(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            into.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
    }

    fn preflight(&self, x: &Exchange, origin: &HeaderValue, method: &HeaderValue) -> Option<Response<ResponseBody>> {
        if !self.origin_allowed(origin.as_bytes()) {
            return None;
        }
        let method_ok = match &self.methods {
            None => true,
            Some(list) => list.iter().any(|m| m.as_str().as_bytes() == method.as_bytes()),
        };
        if !method_ok {
            return None;
        }
        let requested = x.request.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        if let (Some(list), Some(req)) = (&self.headers, requested) {
            let all_allowed = req
                .as_bytes()
                .split(|b| *b == b',')
                .map(|t| t.trim_ascii())
                .filter(|t| !t.is_empty())
                .all(|t| list.iter().any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(t)));
            if !all_allowed {
                return None;
            }
        }
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let h = resp.headers_mut();
        self.origin_headers(origin, h);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods_value.clone());
        if let Some(req) = requested {
            // Echoing what was asked (all of it allowed) also covers `*`, which browsers do not
            // honour together with credentials.
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, req.clone());
        }
        if let Some(age) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        Some(resp)
    }
}

fn names(cx: &BuildCx<'_>, key: &str, list: &[String], errors: &mut Vec<ConfigError>) -> Vec<HeaderName> {
    let mut out = Vec::new();
    for (i, n) in list.iter().enumerate() {
        match HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => out.push(h),
            Err(_) => errors.push(util::item_error(cx, key, i, format!("`{n}` is not a header name"))),
        }
    }
    out
}

fn join<'a>(items: impl Iterator<Item = &'a str>) -> HeaderValue {
    let s: Vec<&str> = items.collect();
    HeaderValue::from_str(&s.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Policy for Cors {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "cors"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let Some(origin) = x.request.headers.get(header::ORIGIN).cloned() else {
            return Step::Ready(Outcome::Continue);
        };
        let preflight_method = x.request.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        if let (true, Some(method)) = (x.request.method == Method::OPTIONS, preflight_method) {
            return match self.preflight(x, &origin, method) {
                Some(resp) => Step::Ready(Outcome::Respond(Box::new(resp))),
                None if self.terminate => Step::Ready(Outcome::Respond(Box::new(Response::new(ResponseBody::empty())))),
                None => Step::Ready(Outcome::Continue),
            };
        }
        if self.origin_allowed(origin.as_bytes()) {
            self.origin_headers(&origin, &mut x.extra_response_headers);
            if let Some(e) = &self.expose {
                x.extra_response_headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
            }
        }
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::context::testing::*;

    const CFG: &str = "{ allowed_origins: ['https://app.test'], allowed_methods: [GET, PUT], \
                       allowed_headers: [content-type, x-token], expose_headers: [x-request-id], \
                       allow_credentials: true, preflight_result_max_age: 600 }";

    fn preflight(p: &Cors, origin: &str, method: &str, headers: Option<&str>) -> Response<ResponseBody> {
        let mut x = exchange("/orders/1");
        x.request.method = Method::OPTIONS;
        x.request.headers.insert(header::ORIGIN, origin.parse().expect("hv"));
        x.request.headers.insert(header::ACCESS_CONTROL_REQUEST_METHOD, method.parse().expect("hv"));
        if let Some(h) = headers {
            x.request.headers.insert(header::ACCESS_CONTROL_REQUEST_HEADERS, h.parse().expect("hv"));
        }
        match run_ready(p, &mut x) {
            Outcome::Respond(r) => *r,
            _ => panic!("preflight answered at the gateway"),
        }
    }

    #[test]
    fn preflight_is_answered_with_what_is_allowed() {
        let p = build_with(CFG, Stage::Inbound, Cors::build).expect("builds");
        let r = preflight(&p, "https://APP.test", "PUT", Some("Content-Type, X-Token"));
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], "https://APP.test");
        assert_eq!(h["access-control-allow-methods"], "GET, PUT");
        assert_eq!(h["access-control-allow-headers"], "Content-Type, X-Token");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        assert_eq!(h["vary"], "Origin");
        for (origin, method, headers) in [
            ("https://evil.test", "PUT", None),
            ("https://app.test", "DELETE", None),
            ("https://app.test", "GET", Some("x-other")),
        ] {
            let r = preflight(&p, origin, method, headers);
            assert_eq!(r.status(), 200, "{origin} {method} {headers:?}");
            assert!(r.headers().get("access-control-allow-origin").is_none());
        }
    }

    #[test]
    fn actual_requests_get_headers_only_for_allowed_origins() {
        let p = build_with(CFG, Stage::Inbound, Cors::build).expect("builds");
        let mut x = exchange("/orders/1");
        x.request.headers.insert(header::ORIGIN, "https://app.test".parse().expect("hv"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert_eq!(x.extra_response_headers["access-control-allow-origin"], "https://app.test");
        assert_eq!(x.extra_response_headers["access-control-expose-headers"], "x-request-id");
        let mut x = exchange("/orders/1");
        x.request.headers.insert(header::ORIGIN, "https://evil.test".parse().expect("hv"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        assert!(x.extra_response_headers.is_empty());
        let any = build_with("{ allowed_origins: ['*'] }", Stage::Inbound, Cors::build).expect("builds");
        assert!(matches!(run_ready(&any, &mut x), Outcome::Continue));
        assert_eq!(x.extra_response_headers["access-control-allow-origin"], "*");
    }

    #[test]
    fn config_errors() {
        let e = build_with("{ allowed_origins: ['*'], allow_credentials: true }", Stage::Inbound, Cors::build)
            .expect_err("e")
            .join("\n");
        assert!(e.contains("p.allow_credentials:"), "{e}");
        let e = build_with("{ allowed_origins: ['app.test', 'https://a.test/path'] }", Stage::Inbound, Cors::build)
            .expect_err("e")
            .join("\n");
        assert!(e.contains("p.allowed_origins[0]:") && e.contains("p.allowed_origins[1]:"), "{e}");
    }
}
