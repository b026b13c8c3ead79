//! `authentication-managed-identity` (APIM's policy, off Azure): the gateway's own OAuth2
//! client-credentials token goes to the backend as `Authorization: Bearer …`, replacing the
//! client's header.
//!
//! The policy holds the compiled client (rebuilt on reload, so a rotated secret is used from the
//! next fetch) and a handle on the reload-surviving token entry in `PolicyEnv` (see
//! `identity::service`). With a cached token it decides without waiting; otherwise it waits for
//! the one fetch in flight. A token endpoint that fails is answered with 503 (down, slow) or 502
//! (refused, malformed) at layer `policy`; the detail never carries the credential or the
//! endpoint's own text.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode, Uri};
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::{ConfigError, PathSeg};
use crate::identity::service::assertion::Assertion;
use crate::identity::service::http::Http;
use crate::identity::service::{config_path, Client, ClientAuth, Endpoint, Entry, TokenError};
use crate::respond::{Layer, Problem};
use crate::secrets::Secret;

const KIND: &str = "authentication-managed-identity";

/// `authentication-managed-identity: { token_endpoint | provider, client_id, client_secret | private_key, scope | resource }`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The OAuth2 token endpoint URL.
    pub token_endpoint: Option<String>,
    /// Or an `identity_providers` entry whose `openid_configuration` names the token endpoint.
    pub provider: Option<String>,
    pub client_id: String,
    pub client_secret: Option<Secret>,
    /// `client_secret_basic` (default with a secret) or `client_secret_post`.
    pub client_auth: Option<String>,
    /// `private_key_jwt`: the key that signs the client assertion.
    pub private_key: Option<PrivateKeyConfig>,
    /// Space-separated scopes (`api://orders/.default`).
    pub scope: Option<String>,
    /// RFC 8707 resource indicator (APIM's `resource`).
    pub resource: Option<String>,
    /// Deadline for one token (or discovery) request.
    pub timeout: Option<crate::config::Duration>,
    /// A private CA for an https token endpoint (default: the system roots).
    pub ca: Option<PathBuf>,
    /// APIM `output-token-variable-name`: put the token in this variable instead of the header.
    pub output_token_variable: Option<String>,
    /// APIM `ignore-error`: without a token, the request goes on unchanged.
    #[serde(default)]
    pub ignore_error: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateKeyConfig {
    /// A PEM file (PKCS#8, or PKCS#1 for RSA).
    pub file: Option<PathBuf>,
    /// Or the PEM itself, typically `"{{secret:client-key}}"`.
    pub pem: Option<Secret>,
    #[serde(default = "default_alg")]
    pub algorithm: String,
    /// `kid` of the assertion's header, when the provider knows several keys of the client.
    pub key_id: Option<String>,
}

fn default_alg() -> String {
    "RS256".into()
}

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct AuthenticationManagedIdentity {
    client: Arc<Client>,
    entry: Arc<Entry>,
    output: Option<Arc<str>>,
    ignore_error: bool,
}

fn url(s: &str) -> Option<Uri> {
    match s.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Some(u),
        _ => None,
    }
}

impl AuthenticationManagedIdentity {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: Config = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound | Stage::Backend) {
            errors.push(
                cx.error(&[], "authentication-managed-identity runs in inbound or backend (it sets a request header)"),
            );
        }
        let endpoint = match (&cfg.token_endpoint, &cfg.provider) {
            (Some(_), Some(_)) => {
                errors.push(cx.error(&["provider"], "set either token_endpoint or provider, not both"));
                None
            }
            (None, None) => {
                errors.push(cx.error(&[], "set token_endpoint (a URL) or provider (an identity_providers entry)"));
                None
            }
            (Some(t), None) => match url(t) {
                Some(u) => Some(Endpoint::Token(u)),
                None => {
                    errors.push(cx.error(&["token_endpoint"], format!("`{t}` is not an http(s) URL")));
                    None
                }
            },
            (None, Some(p)) => discovery(cx, p).map_err(|e| errors.push(e)).ok().map(Endpoint::Discovery),
        };
        if cfg.client_id.is_empty() {
            errors.push(cx.error(&["client_id"], "client_id is empty"));
        }
        let auth = client_auth(cx, &cfg).map_err(|e| errors.extend(e)).ok();
        if cfg.scope.as_deref().is_some_and(str::is_empty) {
            errors.push(cx.error(&["scope"], "scope is empty (leave it out instead)"));
        }
        let timeout = cfg.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() || timeout > Duration::from_secs(60) {
            errors.push(cx.error(&["timeout"], "timeout must be between 1ms and 60s"));
        }
        let http = match Http::new(cfg.ca.as_ref().map(|p| config_path(cx.doc, p)).as_deref(), timeout) {
            Ok(h) => Some(h),
            Err(e) => {
                errors.push(cx.error(&["ca"], e));
                None
            }
        };
        if let Some(v) = &cfg.output_token_variable {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
                errors.push(cx.error(&["output_token_variable"], "use letters, digits, `-`, `_` and `.`"));
            }
        }
        match (endpoint, auth, http) {
            (Some(endpoint), Some(auth), Some(http)) if errors.is_empty() => {
                let client = Arc::new(Client {
                    endpoint,
                    client_id: cfg.client_id,
                    auth,
                    scope: cfg.scope,
                    resource: cfg.resource,
                    http,
                });
                let entry = cx.env.service_tokens.entry(client.key());
                Ok(AuthenticationManagedIdentity {
                    client,
                    entry,
                    output: cfg.output_token_variable.map(Arc::from),
                    ignore_error: cfg.ignore_error,
                })
            }
            _ => Err(errors),
        }
    }

    fn apply(&self, x: &mut Exchange, header: HeaderValue) {
        match &self.output {
            Some(var) => {
                let token = header.to_str().unwrap_or("").trim_start_matches("Bearer ").to_owned();
                x.set_var(var, token);
            }
            None => {
                x.request.headers.insert(http::header::AUTHORIZATION, header);
            }
        }
    }

    fn failed(&self, x: &mut Exchange, e: &TokenError) -> Outcome {
        tracing::warn!(
            client_id = %self.client.client_id,
            error = %e,
            request_id = ?x.request_id,
            "Service token request failed."
        );
        if self.ignore_error {
            return Outcome::Continue;
        }
        let (status, kind, detail) = if e.unavailable() {
            (StatusCode::SERVICE_UNAVAILABLE, "service-token-unavailable", "the token endpoint is unavailable")
        } else {
            (StatusCode::BAD_GATEWAY, "service-token-failed", "the token endpoint did not issue a token")
        };
        let mut p = Problem::new(status, kind, Layer::Policy, detail);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            p = p.with_header(http::header::RETRY_AFTER, HeaderValue::from_static("2"));
        }
        Outcome::Reject(Box::new(p))
    }
}

/// The discovery URL of `identity_providers.NAME`.
fn discovery(cx: &BuildCx<'_>, name: &str) -> Result<Uri, ConfigError> {
    let key = |k: &str| PathSeg::Key(k.to_owned());
    let provider = [key("identity_providers"), key(name)];
    if cx.doc.get(&provider).is_none() {
        return Err(cx.error(&["provider"], format!("no identity provider `{name}` in identity_providers")));
    }
    let at = [key("identity_providers"), key(name), key("openid_configuration")];
    match cx.doc.deserialize_at::<String>(&at) {
        Some(Ok(s)) => url(&s)
            .ok_or_else(|| cx.error(&["provider"], format!("provider `{name}`: openid_configuration is not a URL"))),
        _ => Err(cx.error(
            &["provider"],
            format!("provider `{name}` has no openid_configuration to find its token endpoint; set token_endpoint"),
        )),
    }
}

fn client_auth(cx: &BuildCx<'_>, cfg: &Config) -> Result<ClientAuth, Vec<ConfigError>> {
    match (&cfg.client_secret, &cfg.private_key) {
        (Some(_), Some(_)) => {
            Err(vec![cx.error(&["private_key"], "set either client_secret or private_key, not both")])
        }
        (None, None) => Err(vec![cx.error(&[], "set client_secret or private_key (private_key_jwt)")]),
        (Some(secret), None) => {
            if secret.expose().is_empty() {
                return Err(vec![cx.error(&["client_secret"], "client_secret is empty")]);
            }
            match cfg.client_auth.as_deref() {
                None | Some("client_secret_basic") => Ok(ClientAuth::SecretBasic(secret.clone())),
                Some("client_secret_post") => Ok(ClientAuth::SecretPost(secret.clone())),
                Some(other) => {
                    Err(vec![cx.error(
                        &["client_auth"],
                        format!("`{other}` is not client_secret_basic or client_secret_post"),
                    )])
                }
            }
        }
        (None, Some(k)) => {
            if cfg.client_auth.as_deref().is_some_and(|a| a != "private_key_jwt") {
                return Err(vec![
                    cx.error(&["client_auth"], "with private_key the client authenticates by private_key_jwt")
                ]);
            }
            let pem = match (&k.file, &k.pem) {
                (Some(_), Some(_)) => return Err(vec![cx.error(&["private_key", "pem"], "set either file or pem")]),
                (None, None) => return Err(vec![cx.error(&["private_key"], "set file (a PEM file) or pem")]),
                (Some(f), None) => {
                    let path = config_path(cx.doc, f);
                    std::fs::read(&path).map_err(|e| {
                        vec![cx.error(&["private_key", "file"], format!("cannot read {}: {e}", path.display()))]
                    })?
                }
                (None, Some(p)) => p.expose().as_bytes().to_vec(),
            };
            let sub = if k.file.is_some() { "file" } else { "pem" };
            Assertion::new(&pem, &k.algorithm, k.key_id.clone())
                .map(|a| ClientAuth::PrivateKeyJwt(Arc::new(a)))
                .map_err(|e| vec![cx.error(&["private_key", sub], e)])
        }
    }
}

impl Policy for AuthenticationManagedIdentity {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        if let Some(h) = self.entry.cached(&self.client) {
            self.apply(x, h);
            return Step::Ready(Outcome::Continue);
        }
        Step::Wait(Box::pin(async move {
            match self.entry.token(&self.client).await {
                Ok(h) => {
                    self.apply(x, h);
                    Outcome::Continue
                }
                Err(e) => self.failed(x, &e),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    /// The errors of a config whose API `a` has `section: [ { authentication-managed-identity: BODY } ]`.
    fn errors(section: &str, body: &str) -> Vec<String> {
        let yaml = format!(
            "listeners: [ {{ name: m, bind: \"127.0.0.1:0\" }} ]\nbackends: {{ b: {{ servers: [ {{ url: \"http://127.0.0.1:9\" }} ] }} }}\n\
             apis: {{ a: {{ path: /a, backend: b, policies: {{ {section}: [ {{ authentication-managed-identity: {body} }} ] }} }} }}\n"
        );
        match crate::snapshot::compile_str("t.yaml", &yaml, std::path::Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(|e| format!("{}: {}", e.path, e.message)).collect(),
        }
    }

    #[test]
    fn valid_configs_compile() {
        let ok = [
            r#"{ token_endpoint: "https://idp/token", client_id: c, client_secret: s, scope: "api://x/.default" }"#,
            r#"{ token_endpoint: "http://idp/token", client_id: c, client_secret: s, client_auth: client_secret_post, resource: api://x, timeout: 2s }"#,
            r#"{ token_endpoint: "http://idp/token", client_id: c, client_secret: s, output_token_variable: tok, ignore_error: true }"#,
        ];
        for body in ok {
            assert_eq!(errors("inbound", body), Vec::<String>::new(), "{body}");
        }
        assert_eq!(errors("backend", ok[0]), Vec::<String>::new());
    }

    #[test]
    fn invalid_configs_are_located() {
        let p = "apis.a.policies.inbound[0].authentication-managed-identity";
        let cases = [
            ("{ client_id: c, client_secret: s }", format!("{p}: set token_endpoint")),
            (
                r#"{ token_endpoint: "ftp://x", client_id: c, client_secret: s }"#,
                format!("{p}.token_endpoint: `ftp://x`"),
            ),
            (
                r#"{ token_endpoint: "http://x/t", provider: corp, client_id: c, client_secret: s }"#,
                format!("{p}.provider: set either"),
            ),
            (r#"{ token_endpoint: "http://x/t", client_id: c }"#, format!("{p}: set client_secret or private_key")),
            (
                r#"{ token_endpoint: "http://x/t", client_id: c, client_secret: s, client_auth: tls }"#,
                format!("{p}.client_auth: `tls`"),
            ),
            (
                r#"{ token_endpoint: "http://x/t", client_id: c, private_key: { pem: junk, algorithm: ES256 } }"#,
                format!("{p}.private_key.pem: not a PEM"),
            ),
            (
                r#"{ token_endpoint: "http://x/t", client_id: c, private_key: { file: /nonexistent.pem } }"#,
                format!("{p}.private_key.file: cannot read"),
            ),
            (
                r#"{ token_endpoint: "http://x/t", client_id: c, client_secret: s, timeout: 5m }"#,
                format!("{p}.timeout: timeout must be"),
            ),
            (
                r#"{ token_endpoint: "http://x/t", client_id: c, client_secret: s, colour: red }"#,
                format!("{p}.colour: unknown key"),
            ),
        ];
        for (body, want) in cases {
            let got = errors("inbound", body);
            assert!(got.iter().any(|e| e.starts_with(&want)), "{body}: want {want}, got {got:#?}");
        }
        let got = errors("outbound", r#"{ token_endpoint: "http://x/t", client_id: c, client_secret: s }"#);
        assert!(got.iter().any(|e| e.contains("runs in inbound or backend")), "{got:#?}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let s = crate::secrets::Secret::new("hunter2-secret");
        let auth = crate::identity::service::ClientAuth::SecretBasic(s);
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
