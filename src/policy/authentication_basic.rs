//! `authentication-basic` (APIM): the backend gets `Authorization: Basic …` with the gateway's
//! username and password (usually `{{secret:…}}`), replacing the client's header.
//!
//! The header is built once when the config compiles; per request it is only cloned.

use http::HeaderValue;
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::ConfigError;
use crate::secrets::Secret;

/// `authentication-basic: { username: svc, password: "{{secret:backend-password}}" }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug)]
pub struct AuthenticationBasic {
    /// Marked sensitive: HTTP/2 never indexes it, debug output hides it.
    header: HeaderValue,
}

impl AuthenticationBasic {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: Config = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound | Stage::Backend) {
            errors.push(cx.error(&[], "authentication-basic runs in inbound or backend (it sets a request header)"));
        }
        // RFC 7617 §2: the user-id cannot contain a colon; control characters cannot be sent.
        if cfg.username.contains(':') {
            errors.push(cx.error(&["username"], "a Basic username cannot contain `:`"));
        }
        if cfg.username.chars().chain(cfg.password.expose().chars()).any(char::is_control) {
            errors.push(cx.error(&[], "username and password cannot contain control characters"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let header = crate::identity::service::basic_header(&format!("{}:{}", cfg.username, cfg.password.expose()));
        Ok(AuthenticationBasic { header })
    }
}

impl Policy for AuthenticationBasic {
    fn kind(&self) -> &'static str {
        "authentication-basic"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        x.request.headers.insert(http::header::AUTHORIZATION, self.header.clone());
        Step::Ready(Outcome::Continue)
    }
}
