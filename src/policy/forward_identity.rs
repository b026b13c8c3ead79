//! `forward-identity`: what the backend learns about the caller.
//!
//! By default the client's `Authorization` header reaches the backend byte for byte (product.md
//! §3); this policy can strip it (least privilege: the backend never sees the client's token)
//! and/or send chosen validated claims as headers. Every configured claim header is removed from
//! the client's request first, so a client can never assert an identity header itself.

use std::collections::BTreeMap;

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use serde::Deserialize;
use serde_json::Value;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::identity::jwt::claims::lookup;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorizationMode {
    #[default]
    Keep,
    Strip,
}

/// `forward-identity: { authorization: strip, claims_as_headers: { X-User-Id: sub } }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardIdentityConfig {
    #[serde(default)]
    pub authorization: AuthorizationMode,
    /// Header name → claim name (dotted path allowed).
    #[serde(default)]
    pub claims_as_headers: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct ForwardIdentity {
    strip_authorization: bool,
    headers: Vec<(HeaderName, Box<str>)>,
}

/// Headers the gateway or HTTP itself owns.
const RESERVED: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
    "x-request-id",
];

impl ForwardIdentity {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: ForwardIdentityConfig = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound | Stage::Backend) {
            errors.push(cx.error(&[], "forward-identity runs in the inbound or backend section"));
        }
        let mut headers = Vec::new();
        for (name, claim) in &cfg.claims_as_headers {
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(h) if RESERVED.contains(&h.as_str()) => errors.push(cx.error(
                    &["claims_as_headers", name],
                    format!("`{name}` cannot carry a claim (it is managed by the gateway or HTTP)"),
                )),
                Ok(h) if claim.is_empty() => {
                    let _ = h;
                    errors.push(cx.error(&["claims_as_headers", name], "name the claim to send"));
                }
                Ok(h) => headers.push((h, claim.as_str().into())),
                Err(_) => {
                    errors.push(cx.error(&["claims_as_headers", name], format!("`{name}` is not a valid header name")))
                }
            }
        }
        if errors.is_empty() {
            Ok(ForwardIdentity { strip_authorization: cfg.authorization == AuthorizationMode::Strip, headers })
        } else {
            Err(errors)
        }
    }
}

/// A claim as a header value: strings as they are, arrays joined with ", ", objects as JSON.
fn header_value(v: &Value) -> Option<HeaderValue> {
    let text = match v {
        Value::Null => return None,
        Value::String(s) => return HeaderValue::from_str(s).ok(),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            parts.join(", ")
        }
        other => other.to_string(),
    };
    HeaderValue::from_str(&text).ok()
}

impl Policy for ForwardIdentity {
    fn kind(&self) -> &'static str {
        "forward-identity"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let headers = &mut x.request.headers;
        if self.strip_authorization {
            headers.remove(AUTHORIZATION);
        }
        let claims = x.jwt.as_deref().and_then(|v| v.map());
        for (name, claim) in &self.headers {
            headers.remove(name);
            if let Some(v) = claims.and_then(|c| lookup(c, claim)).and_then(header_value) {
                headers.insert(name.clone(), v);
            }
        }
        Outcome::Continue.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claim_values_as_headers() {
        assert_eq!(header_value(&json!("u-1")).expect("string"), "u-1");
        assert_eq!(header_value(&json!(["a", "b", 3])).expect("array"), "a, b, 3");
        assert_eq!(header_value(&json!(42)).expect("number"), "42");
        assert_eq!(header_value(&json!(true)).expect("bool"), "true");
        assert_eq!(header_value(&json!({"k": "v"})).expect("object"), "{\"k\":\"v\"}");
        assert!(header_value(&json!("evil\r\nX-Admin: 1")).is_none(), "no header injection");
        assert!(header_value(&Value::Null).is_none());
    }
}
