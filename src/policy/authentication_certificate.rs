//! `authentication-certificate` (APIM): the backend is called with a client certificate (mTLS).
//!
//! Gatehouse keeps one connection pool per backend, and a TLS client certificate belongs to the
//! connection, not to a request; so the certificate is configured on the backend
//! (`backends.X.tls.client_cert` / `client_key`) and this policy states and checks the
//! requirement: the backend the request goes to must present a client certificate — the one
//! with `thumbprint` (SHA-1 as APIM shows it, or SHA-256, hex) when given. At API and operation
//! scope the API's backend is checked when the config compiles; at run time the backend actually
//! chosen (after `set-backend-service`) is checked, and a mismatch is a 502 at layer `policy`
//! rather than a request sent without the expected identity.

use std::path::PathBuf;
use std::sync::Arc;

use http::StatusCode;
use serde::Deserialize;

use super::{BuildCx, Exchange, Outcome, Policy, Stage, Step};
use crate::config::{ConfigError, PathSeg};
use crate::identity::service::config_path;
use crate::respond::{Layer, Problem};

/// `authentication-certificate: { thumbprint: "…" }` or `{}` (any client certificate).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub thumbprint: Option<String>,
}

#[derive(Debug)]
pub struct AuthenticationCertificate {
    /// The backends whose client certificate satisfies the policy.
    backends: Vec<Arc<str>>,
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// SHA-1 and SHA-256 thumbprints of the leaf certificate of `backends.NAME.tls.client_cert`.
fn thumbprints(cx: &BuildCx<'_>, name: &str) -> Option<[String; 2]> {
    let at = [key("backends"), key(name), key("tls"), key("client_cert")];
    let path: PathBuf = cx.doc.deserialize_at::<PathBuf>(&at)?.ok()?;
    // Unreadable files are reported by the backend's own checks.
    let certs = crate::upstream::tls::load_certs(&config_path(cx.doc, &path)).ok()?;
    let leaf = certs.first()?;
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, leaf.as_ref());
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf.as_ref());
    Some([hex(sha1.as_ref()), hex(sha256.as_ref())])
}

impl AuthenticationCertificate {
    pub fn build(cx: &BuildCx<'_>) -> Result<Self, Vec<ConfigError>> {
        let cfg: Config = cx.config()?;
        let mut errors = Vec::new();
        if !matches!(cx.stage, Stage::Inbound | Stage::Backend) {
            errors.push(cx.error(&[], "authentication-certificate runs in inbound or backend"));
        }
        let wanted = cfg.thumbprint.as_deref().map(|t| t.replace([':', ' '], "").to_ascii_uppercase());
        if let Some(t) = &wanted {
            if !(t.len() == 40 || t.len() == 64) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                errors.push(cx.error(&["thumbprint"], "a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits"));
            }
        }
        let mut backends = Vec::new();
        for (name, _) in cx.doc.map_entries(&[key("backends")]) {
            let ok = match (thumbprints(cx, &name), &wanted) {
                (Some(_), None) => true,
                (Some(prints), Some(t)) => prints.contains(t),
                (None, _) => false,
            };
            if ok {
                backends.push(Arc::<str>::from(name.as_str()));
            }
        }
        // At API or operation scope the backend is known now.
        let api = cx
            .scope
            .strip_prefix("api:")
            .or_else(|| cx.scope.strip_prefix("operation:").and_then(|s| s.split('/').next()));
        if let Some(api) = api {
            if let Some(Ok(b)) = cx.doc.deserialize_at::<String>(&[key("apis"), key(api), key("backend")]) {
                if !backends.iter().any(|n| **n == *b) {
                    errors.push(cx.error(&[], match &wanted {
                        None => format!("backend `{b}` has no client certificate (set backends.{b}.tls.client_cert and client_key)"),
                        Some(_) => format!("backend `{b}` does not present the certificate with this thumbprint (backends.{b}.tls.client_cert)"),
                    }));
                }
            }
        }
        if errors.is_empty() {
            Ok(AuthenticationCertificate { backends })
        } else {
            Err(errors)
        }
    }
}

impl Policy for AuthenticationCertificate {
    fn kind(&self) -> &'static str {
        "authentication-certificate"
    }

    fn run<'a>(&'a self, x: &'a mut Exchange) -> Step<'a> {
        let backend = x.backend.service.as_deref().or(x.route.api.backend.as_deref());
        if backend.is_some_and(|b| self.backends.iter().any(|n| **n == *b)) {
            return Step::Ready(Outcome::Continue);
        }
        let p = Problem::new(
            StatusCode::BAD_GATEWAY,
            "client-certificate-missing",
            Layer::Policy,
            "the backend chosen for this request does not present the required client certificate",
        );
        Step::Ready(Outcome::Reject(Box::new(p)))
    }
}
