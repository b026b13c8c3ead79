//! Compiling the `backends` section: each backend's servers (their URLs parsed into scheme,
//! authority and base path), balancing, health checks, retries and client TLS.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::Uri;

use super::{at, key, Compiler};
use crate::config::{BackendConfig, ConfigDoc, PathSeg, RetryCondition, RetryOn};
use crate::upstream::balance::Balance;
use crate::upstream::{tls, BackendSpec, HealthSpec, Protocol, RetrySpec, ServerSpec};

impl Compiler<'_> {
    pub(super) fn backends(&mut self, cfg: &ConfigDoc) -> BTreeMap<String, Arc<BackendSpec>> {
        let mut out = BTreeMap::new();
        for (name, b) in &cfg.backends {
            let p = [key("backends"), key(name)];
            if let Some(spec) = self.backend(name, b, &p) {
                out.insert(name.clone(), Arc::new(spec));
            }
        }
        out
    }

    fn backend(&mut self, name: &str, b: &BackendConfig, p: &[PathSeg]) -> Option<BackendSpec> {
        let before = self.errors.len();
        if b.servers.is_empty() {
            self.err(&at(p, &[key("servers")]), "a backend needs at least one server");
        }
        let mut servers = Vec::new();
        for (i, s) in b.servers.iter().enumerate() {
            let sp = at(p, &[key("servers"), PathSeg::Index(i)]);
            if s.weight == 0 || s.weight > 1000 {
                self.err(&at(&sp, &[key("weight")]), "weight must be between 1 and 1000");
            }
            match parse_server_url(&s.url) {
                Ok((scheme, authority, base_path)) => {
                    servers.push(ServerSpec { url: s.url.clone(), scheme, authority, base_path, weight: s.weight })
                }
                Err(msg) => self.err(&at(&sp, &[key("url")]), msg),
            }
        }
        let balance = match Balance::parse(&b.balance) {
            Ok(b) => b,
            Err(msg) => {
                self.err(&at(p, &[key("balance")]), msg);
                Balance::RoundRobin
            }
        };
        let protocol = match b.protocol.as_str() {
            "http1" => Protocol::Http1,
            "http2" => Protocol::Http2,
            other => {
                self.err(&at(p, &[key("protocol")]), format!("unknown protocol `{other}` (expected http1 or http2)"));
                Protocol::Http1
            }
        };
        let health = b.health.as_ref().map(|h| {
            let hp = at(p, &[key("health")]);
            if !h.path.starts_with('/') {
                self.err(&at(&hp, &[key("path")]), "the health check path must start with /");
            }
            if h.interval.0 < Duration::from_millis(100) {
                self.err(&at(&hp, &[key("interval")]), "interval must be at least 100ms");
            }
            if h.healthy_threshold == 0 {
                self.err(&at(&hp, &[key("healthy_threshold")]), "healthy_threshold must be at least 1");
            }
            if h.unhealthy_threshold == 0 {
                self.err(&at(&hp, &[key("unhealthy_threshold")]), "unhealthy_threshold must be at least 1");
            }
            HealthSpec {
                path: h.path.clone(),
                interval: h.interval.0,
                timeout: h.timeout.0,
                healthy_threshold: h.healthy_threshold.max(1),
                unhealthy_threshold: h.unhealthy_threshold.max(1),
            }
        });
        if b.retry.attempts == 0 || b.retry.attempts > 10 {
            self.err(&at(p, &[key("retry"), key("attempts")]), "attempts must be between 1 (no retry) and 10");
        }
        let mut on_status = Vec::new();
        let mut on_connect_failure = false;
        for (i, on) in b.retry.on.iter().enumerate() {
            match on {
                RetryOn::Named(RetryCondition::ConnectFailure) => on_connect_failure = true,
                RetryOn::Status(s) if (500..600).contains(s) => on_status.push(*s),
                RetryOn::Status(s) => self.err(
                    &at(p, &[key("retry"), key("on"), PathSeg::Index(i)]),
                    format!("only 5xx statuses can be retried, not {s}"),
                ),
            }
        }
        let tls_cfg = b.tls.as_ref();
        // A stand-in value under `tls` (e.g. an empty path) would only fail again here.
        let tls_broken = self.broken(&at(p, &[key("tls")]));
        let ca = tls_cfg.and_then(|t| t.ca.as_ref()).map(|c| self.file(c));
        let client_pair = match tls_cfg.map(|t| (&t.client_cert, &t.client_key)) {
            Some((Some(c), Some(k))) => Some((self.file(c), self.file(k))),
            Some((None, None)) | None => None,
            Some(_) => {
                if !tls_broken {
                    self.err(&at(p, &[key("tls")]), "client_cert and client_key go together");
                }
                None
            }
        };
        let verify = tls_cfg.is_none_or(|t| t.verify);
        if !verify {
            tracing::warn!(
                backend = name,
                "TLS verification towards this backend is off (backends.{name}.tls.verify: false)."
            );
        }
        let uses_https = servers.iter().any(|s| s.scheme == Scheme::HTTPS);
        let options = tls::ClientTlsOptions {
            ca: if uses_https { ca.as_deref() } else { None },
            verify: verify && (uses_https || ca.is_some()),
            client_cert: client_pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        };
        let tls = match tls_broken {
            true => None,
            false => match tls::client_config(&options) {
                Ok(c) => Some(Arc::new(c)),
                Err(msg) => {
                    self.err(&at(p, &[key("tls")]), msg);
                    None
                }
            },
        };
        let tls_server_name = match tls_cfg.and_then(|t| t.server_name.clone()) {
            Some(n) => match rustls::pki_types::ServerName::try_from(n.clone()) {
                Ok(sn) => Some(sn),
                Err(_) => {
                    self.err(&at(p, &[key("tls"), key("server_name")]), format!("`{n}` is not a valid server name"));
                    None
                }
            },
            None => None,
        };
        let tls = tls.filter(|_| self.errors.len() == before)?;
        // What decides whether a reload may keep this backend's pool: its whole config and the
        // bytes of every file it refers to (a renewed CA or client certificate means new
        // connections).
        let fingerprint = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{b:?}").hash(&mut h);
            for f in [ca.as_ref(), client_pair.as_ref().map(|(c, _)| c), client_pair.as_ref().map(|(_, k)| k)]
                .into_iter()
                .flatten()
            {
                std::fs::read(f).unwrap_or_default().hash(&mut h);
            }
            h.finish()
        };
        Some(BackendSpec {
            fingerprint,
            name: name.to_owned(),
            servers,
            balance,
            health,
            passive_failures: b.passive_health.consecutive_failures,
            ejection_time: b.passive_health.ejection_time.0,
            connect_timeout: b.timeouts.connect.0,
            response_timeout: b.timeouts.response.0,
            idle_timeout: b.timeouts.idle.0,
            retry: RetrySpec {
                attempts: b.retry.attempts.max(1),
                on_connect_failure,
                on_status,
                budget_percent: b.retry.budget_percent,
                min_per_second: b.retry.min_per_second,
            },
            protocol,
            tls,
            tls_server_name,
            preserve_host: b.preserve_host,
        })
    }
}

pub(super) fn parse_server_url(url: &str) -> Result<(Scheme, http::uri::Authority, String), String> {
    let uri: Uri = url.parse().map_err(|_| format!("`{url}` is not a URL such as http://10.0.0.5:8080"))?;
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::HTTP,
        Some("https") => Scheme::HTTPS,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    let authority = uri.authority().cloned().ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err(format!("`{url}` must not contain credentials"));
    }
    if uri.query().is_some() {
        return Err(format!("`{url}` must not have a query"));
    }
    let base = uri.path().trim_end_matches('/').to_owned();
    Ok((scheme, authority, base))
}
