//! `rewrite-uri`: change the path (and query) sent to the backend (APIM `<rewrite-uri>`).
//!
//! The template is below the backend server's URL path and may use route parameters (`{id}`)
//! and any other name. Route parameters are inserted as matched (they are path segments
//! already); every other value is percent-encoded, so a header or claim can never add path
//! segments, a query or a fragment. With `copy_unmatched_params` (the default, as in APIM) the
//! request's query parameters that the template does not set are kept.

use std::borrow::Cow;

use http::StatusCode;
use serde::Deserialize;

use super::context::decode;
use super::{util, BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::expr::{Context, Name, Template, Value};
use crate::respond::{Layer, Problem};

/// `rewrite-uri: { template: "/v2/orders/{id}?view=full", copy_unmatched_params: true }`
#[derive(Debug, Deserialize)]
pub struct RewriteUriConfig {
    pub template: String,
    #[serde(default = "yes")]
    pub copy_unmatched_params: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug)]
pub struct RewriteUri {
    template: Template,
    copy_unmatched: bool,
}

/// The exchange as seen from inside a URL: values other than route parameters are encoded.
struct InUrl<'a>(&'a Exchange);

impl Context for InUrl<'_> {
    fn lookup(&self, name: &Name) -> Option<Value<'_>> {
        let v = self.0.lookup(name)?;
        if matches!(name, Name::Param(_)) {
            return Some(v);
        }
        Some(match v {
            Value::Str(s) => Value::Str(encode_cow(s)),
            Value::List(l) => Value::List(l.into_iter().map(encode_cow).collect()),
        })
    }
}

fn encode_cow(s: Cow<'_, str>) -> Cow<'_, str> {
    match util::encode(&s) {
        Cow::Borrowed(_) => s,
        Cow::Owned(o) => Cow::Owned(o),
    }
}

impl RewriteUri {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: RewriteUriConfig = cx.config()?;
        util::only_in(cx, "rewrite-uri", &[Stage::Inbound]).map_err(|e| vec![e])?;
        if !cfg.template.starts_with('/') {
            return Err(vec![
                cx.error(&["template"], "the template is a path below the backend's URL: start it with /")
            ]);
        }
        if cfg.template.contains('#') {
            return Err(vec![cx.error(&["template"], "a fragment (#…) is never sent to a server")]);
        }
        let template = cx.template(&cfg.template, &["template"]).map_err(|e| vec![e])?;
        Ok(RewriteUri { template, copy_unmatched: cfg.copy_unmatched_params })
    }

    fn target(&self, x: &Exchange) -> String {
        let in_url = InUrl(x);
        let mut out = self.template.render(&in_url).into_owned();
        if !self.copy_unmatched {
            return out;
        }
        let Some(query) = x.request.uri.query() else { return out };
        let new_query = out.split_once('?').map(|(_, q)| q.to_owned());
        let set: Vec<Cow<'_, str>> = new_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| decode(p.split_once('=').map_or(p, |(k, _)| k)).into_owned().into())
            .collect();
        let mut sep = if new_query.is_some() { '&' } else { '?' };
        if new_query.as_deref() == Some("") {
            sep = '\0';
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = decode(pair.split_once('=').map_or(pair, |(k, _)| k));
            if set.contains(&key) {
                continue;
            }
            if sep != '\0' {
                out.push(sep);
            }
            sep = '&';
            out.push_str(pair);
        }
        out
    }
}

impl Policy for RewriteUri {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "rewrite-uri"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let target = self.target(x);
        if http::uri::PathAndQuery::try_from(target.as_str()).is_err() {
            let p = Problem::new(
                StatusCode::BAD_REQUEST,
                "bad-rewrite",
                Layer::Policy,
                "the rewritten backend path is not a valid URL path",
            );
            return Step::Ready(Outcome::Reject(Box::new(p)));
        }
        x.backend.target = Some(target);
        Step::Ready(Outcome::Continue)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::policy::context::testing::*;

    fn rewrite(yaml: &str, uri: &str) -> String {
        let p = build_with(yaml, Stage::Inbound, RewriteUri::build).expect("builds");
        let mut x = exchange(uri);
        x.params.push((Arc::from("id"), "42".into()));
        x.request.headers.insert("x-evil", "../admin?x=1#f".parse().expect("hv"));
        assert!(matches!(run_ready(&p, &mut x), Outcome::Continue));
        x.backend.target.expect("target")
    }

    #[test]
    fn route_parameters_and_unmatched_query() {
        assert_eq!(rewrite("{ template: '/v2/items/{id}' }", "/orders/42?a=1&b=2"), "/v2/items/42?a=1&b=2");
        assert_eq!(rewrite("{ template: '/v2/items/{id}?a=9' }", "/orders/42?a=1&b=2"), "/v2/items/42?a=9&b=2");
        assert_eq!(
            rewrite("{ template: '/v2/items/{id}', copy_unmatched_params: false }", "/orders/42?a=1"),
            "/v2/items/42"
        );
        assert_eq!(rewrite("{ template: '/x?' }", "/orders/42?a=1"), "/x?a=1");
    }

    #[test]
    fn other_values_cannot_escape_their_segment() {
        assert_eq!(rewrite("{ template: '/u/{request.header.x-evil}' }", "/orders/42"), "/u/..%2Fadmin%3Fx%3D1%23f");
    }

    #[test]
    fn config_errors() {
        let e = build_with("{ template: 'v2/{nope}' }", Stage::Inbound, RewriteUri::build).expect_err("e").join("\n");
        assert!(e.contains("start it with /"), "{e}");
        let e = build_with("{ template: '/v2/{nope}' }", Stage::Inbound, RewriteUri::build).expect_err("e").join("\n");
        assert!(e.contains("p.template: unknown name `nope`"), "{e}");
    }
}
