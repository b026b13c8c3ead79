//! `return-response`: answer the client at the gateway (APIM `<return-response>`).
//!
//! The response is built once when the config compiles; per request it is only cloned.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Step};
use crate::body::ResponseBody;
use crate::config::ConfigError;

/// `return-response: { status: 200, headers: { content-type: application/json }, body: "…" }`
#[derive(Debug, Deserialize)]
pub struct ReturnResponseConfig {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug)]
pub struct ReturnResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl ReturnResponse {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: ReturnResponseConfig = cx.config()?;
        let mut errors = Vec::new();
        let status = match StatusCode::from_u16(cfg.status) {
            Ok(s) if (200..600).contains(&cfg.status) => s,
            _ => {
                errors.push(cx.error(&["status"], format!("status {} is not between 200 and 599", cfg.status)));
                StatusCode::OK
            }
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &cfg.headers {
            let at = ["headers", name.as_str()];
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                (Ok(n), Ok(v)) => {
                    if n == http::header::CONTENT_LENGTH
                        || n == http::header::TRANSFER_ENCODING
                        || n == http::header::CONNECTION
                    {
                        errors.push(cx.error(&at, format!("`{name}` is set by the gateway and cannot be configured")));
                    } else {
                        headers.append(n, v);
                    }
                }
                (Err(_), _) => errors.push(cx.error(&at, format!("`{name}` is not a valid header name"))),
                (_, Err(_)) => errors.push(cx.error(&at, "the value contains characters not allowed in a header")),
            }
        }
        if errors.is_empty() {
            Ok(ReturnResponse { status, headers, body: Bytes::from(cfg.body.clone()) })
        } else {
            Err(errors)
        }
    }
}

impl Policy for ReturnResponse {
    fn decides_at_once(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "return-response"
    }

    fn run<'a>(&'a self, _x: &'a mut Exchange) -> Step<'a> {
        let mut resp = Response::new(ResponseBody::full(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        Step::Ready(Outcome::Respond(Box::new(resp)))
    }

    fn terminates(&self) -> bool {
        true
    }
}
