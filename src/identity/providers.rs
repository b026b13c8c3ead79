//! `identity_providers:` compiled ([`compile`], [`compile_one`]) and kept alive at run time
//! ([`Registry`]).
//!
//! The registry is the long-lived owner the gateway keeps across reloads: asking it for a
//! provider whose name and config are unchanged returns the running one, with its keys, its
//! verified-token cache and its refresh task, so a reload costs no refetch and no signature
//! checks. A changed provider is a new one; the old one (and its task) goes away with the last
//! snapshot that used it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::Uri;
use parking_lot::Mutex;

use crate::config::identity::IdentityProviderConfig;
use crate::config::{ConfigError, Document, PathSeg};
use crate::identity::jwt::keys::{Alg, AlgSet, VerifyKey};
use crate::identity::jwt::Provider;

/// The top-level key.
pub const SECTION: &str = "identity_providers";

/// Where a provider's keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Only inline keys and/or the shared secret.
    Static,
    Jwks(Uri),
    Discovery(Uri),
}

/// One provider, validated.
#[derive(Debug)]
pub struct ProviderSpec {
    pub name: Arc<str>,
    /// As written (secrets resolved): two specs with equal configs are the same provider.
    pub config: IdentityProviderConfig,
    pub source: Source,
    pub issuer: Option<String>,
    pub statics: Vec<Arc<VerifyKey>>,
    pub algorithms: AlgSet,
    pub refresh_interval: Duration,
    pub min_refetch_interval: Duration,
    pub unknown_kid_ttl: Duration,
    pub fetch_timeout: Duration,
    pub token_cache_size: usize,
    /// `ca`, resolved against the config file's directory and checked to hold certificates.
    pub ca: Option<std::path::PathBuf>,
}

fn key(k: &str) -> PathSeg {
    PathSeg::Key(k.to_owned())
}

fn at(base: &[PathSeg], more: &[&str]) -> Vec<PathSeg> {
    let mut v = base.to_vec();
    v.extend(more.iter().map(|k| key(k)));
    v
}

/// Checks and compiles the whole `identity_providers:` section; every error is collected.
pub fn compile(doc: &Document, errors: &mut Vec<ConfigError>) -> BTreeMap<String, Arc<ProviderSpec>> {
    let mut out = BTreeMap::new();
    for (name, _) in doc.map_entries(&[key(SECTION)]) {
        match compile_one(doc, &name) {
            Some(Ok(spec)) => {
                out.insert(name, Arc::new(spec));
            }
            Some(Err(e)) => errors.extend(e),
            None => {}
        }
    }
    if let Some(node) = doc.get(&[key(SECTION)]) {
        if !node.is_null() && !matches!(node.kind, crate::config::yaml::NodeKind::Map(_)) {
            errors.push(doc.error(&[key(SECTION)], "identity_providers must be a map of named providers"));
        }
    }
    out
}

/// Compiles `identity_providers.NAME`; `None` when there is no such provider.
pub fn compile_one(doc: &Document, name: &str) -> Option<Result<ProviderSpec, Vec<ConfigError>>> {
    let path = [key(SECTION), key(name)];
    let cfg = match doc.deserialize_at::<IdentityProviderConfig>(&path)? {
        Ok(c) => c,
        Err(e) => return Some(Err(e)),
    };
    Some(build(doc, &path, name, cfg))
}

fn parse_url(doc: &Document, p: &[PathSeg], url: &str, errors: &mut Vec<ConfigError>) -> Option<Uri> {
    match url.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Some(u),
        _ => {
            errors.push(doc.error(p, format!("`{url}` is not an http(s) URL")));
            None
        }
    }
}

fn build(
    doc: &Document,
    path: &[PathSeg],
    name: &str,
    cfg: IdentityProviderConfig,
) -> Result<ProviderSpec, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let source = match (&cfg.openid_configuration, &cfg.jwks_uri) {
        (Some(_), Some(_)) => {
            errors.push(doc.error(path, "give either `openid_configuration` or `jwks_uri`, not both"));
            Source::Static
        }
        (Some(u), None) => parse_url(doc, &at(path, &["openid_configuration"]), u, &mut errors)
            .map_or(Source::Static, Source::Discovery),
        (None, Some(u)) => {
            parse_url(doc, &at(path, &["jwks_uri"]), u, &mut errors).map_or(Source::Static, Source::Jwks)
        }
        (None, None) => {
            if cfg.keys.is_empty() && cfg.hmac_secret.is_none() {
                errors.push(doc.error(
                    path,
                    "a provider needs `openid_configuration`, `jwks_uri`, inline `keys` or an `hmac_secret`",
                ));
            }
            Source::Static
        }
    };
    let mut algorithms = AlgSet::ASYMMETRIC;
    if let Some(list) = &cfg.algorithms {
        let mut set = Vec::new();
        for (i, a) in list.iter().enumerate() {
            let mut p = at(path, &["algorithms"]);
            p.push(PathSeg::Index(i));
            match Alg::parse(a) {
                Some(alg) => set.push(alg),
                None if a.eq_ignore_ascii_case("none") => {
                    errors.push(doc.error(&p, "`none` is never accepted: tokens must be signed"))
                }
                None => errors.push(doc.error(
                    &p,
                    format!("unknown algorithm `{a}` (expected one of: {})", AlgSet::of(&Alg::ALL).names().join(", ")),
                )),
            }
        }
        algorithms = AlgSet::of(&set);
        if list.is_empty() {
            errors.push(doc.error(&at(path, &["algorithms"]), "at least one algorithm is needed"));
        }
    } else if cfg.hmac_secret.is_some() {
        algorithms = AlgSet::of(&Alg::ALL);
    }
    let hmac_algs = algorithms.intersect(AlgSet::HMAC);
    let mut statics = Vec::new();
    match &cfg.hmac_secret {
        Some(secret) => {
            if secret.len() < 32 {
                errors.push(
                    doc.error(
                        &at(path, &["hmac_secret"]),
                        "the shared secret must be at least 32 bytes (RFC 7518 §3.2)",
                    ),
                );
            } else if hmac_algs.is_empty() {
                errors
                    .push(doc.error(&at(path, &["algorithms"]), "`hmac_secret` is set but no HS algorithm is allowed"));
            } else {
                statics.push(Arc::new(VerifyKey::hmac(secret.as_bytes(), hmac_algs)));
            }
        }
        None if !hmac_algs.is_empty() => errors.push(doc.error(
            &at(path, &["algorithms"]),
            "HS256/HS384/HS512 need an `hmac_secret`; they are never verified with a public key",
        )),
        None => {}
    }
    for (i, jwk) in cfg.keys.iter().enumerate() {
        let mut p = at(path, &["keys"]);
        p.push(PathSeg::Index(i));
        match VerifyKey::from_jwk(jwk, algorithms) {
            Ok(k) => statics.push(Arc::new(k)),
            Err(why) => errors.push(doc.error(&p, format!("unusable key: {why}"))),
        }
    }
    if let Some(iss) = &cfg.issuer {
        if iss.is_empty() {
            errors.push(doc.error(&at(path, &["issuer"]), "issuer must not be empty"));
        }
    }
    let d = |v: crate::config::Duration| v.0;
    if d(cfg.refresh_interval) < Duration::from_secs(1) {
        errors.push(doc.error(&at(path, &["refresh_interval"]), "refresh_interval must be at least 1s"));
    }
    if d(cfg.min_refetch_interval) < Duration::from_millis(100) {
        errors.push(doc.error(&at(path, &["min_refetch_interval"]), "min_refetch_interval must be at least 100ms"));
    }
    if d(cfg.fetch_timeout).is_zero() || d(cfg.fetch_timeout) > Duration::from_secs(60) {
        errors.push(doc.error(&at(path, &["fetch_timeout"]), "fetch_timeout must be between 1ms and 60s"));
    }
    let base_dir = std::path::Path::new(doc.file()).parent().unwrap_or(std::path::Path::new(""));
    let ca = cfg.ca.as_ref().map(|p| base_dir.join(p));
    if let Some(file) = &ca {
        if let Err(msg) = crate::upstream::tls::load_certs(file) {
            errors.push(doc.error(&at(path, &["ca"]), msg));
        }
    }
    if cfg.token_cache_size > 10_000_000 {
        errors.push(doc.error(&at(path, &["token_cache_size"]), "token_cache_size must be at most 10000000"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ProviderSpec {
        name: name.into(),
        source,
        issuer: cfg.issuer.clone(),
        statics,
        algorithms,
        refresh_interval: d(cfg.refresh_interval),
        min_refetch_interval: d(cfg.min_refetch_interval),
        unknown_kid_ttl: d(cfg.unknown_kid_ttl),
        fetch_timeout: d(cfg.fetch_timeout),
        token_cache_size: cfg.token_cache_size,
        ca,
        config: cfg,
    })
}

/// The running providers, by name; see the module doc.
#[derive(Debug)]
pub struct Registry {
    online: bool,
    live: Mutex<HashMap<Arc<str>, Weak<Provider>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// The gateway's registry: providers fetch keys.
    pub fn new() -> Registry {
        Registry { online: true, live: Mutex::new(HashMap::new()) }
    }

    /// For `gatehouse check`: providers are built (so their config is checked) but never fetch.
    pub fn offline() -> Registry {
        Registry { online: false, live: Mutex::new(HashMap::new()) }
    }

    /// The running provider for `spec`: the same one while name and config are unchanged.
    pub fn provider(&self, spec: ProviderSpec) -> Arc<Provider> {
        let mut live = self.live.lock();
        live.retain(|_, w| w.strong_count() > 0);
        if let Some(p) = live.get(&spec.name).and_then(Weak::upgrade) {
            if p.spec().config == spec.config {
                return p;
            }
        }
        let name = spec.name.clone();
        let p = Provider::new(Arc::new(spec), self.online);
        live.insert(name, Arc::downgrade(&p));
        p
    }

    /// Starts the key refresh of every live provider; for providers built before the Tokio
    /// runtime existed (the first compile of `gatehouse run`). Must run inside the runtime.
    pub fn start(&self) {
        let live: Vec<_> = self.live.lock().values().filter_map(Weak::upgrade).collect();
        for p in live {
            p.ensure_started();
        }
    }

    /// The running provider called `name`, if any snapshot still uses one (admin and tests).
    pub fn get(&self, name: &str) -> Option<Arc<Provider>> {
        self.live.lock().get(name).and_then(Weak::upgrade)
    }
}
