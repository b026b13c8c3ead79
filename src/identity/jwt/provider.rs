//! One identity provider at run time: its current keys, the verified-token cache, and the work
//! that keeps the keys fresh.
//!
//! - A background task fetches the keys at start and every `refresh_interval` (discovery first,
//!   when configured); a failed fetch is retried with backoff (1 s doubling, at most 60 s) and
//!   the last good keys stay in use, so a provider outage does not become a gateway outage.
//! - A token naming a `kid` the set lacks asks for a refetch. Refetches are single-flight (every
//!   waiter shares one fetch) and at most one per `min_refetch_interval` (a request arriving
//!   during the pause waits for the next allowed fetch rather than failing, so a rotation never
//!   costs a request). A `kid` still missing after a successful fetch is remembered for
//!   `unknown_kid_ttl` and rejected without waiting: forged kids cannot hammer the provider.
//! - A provider is shared by every policy that names it and kept across reloads while its
//!   config is unchanged (`identity::providers::Registry`); the task ends when the last
//!   snapshot using the provider is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use http::Uri;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::cache::{self, Entry, TokenCache};
use super::claims::Verified;
use super::fetch::{FetchError, Fetcher};
use super::keys::{KeySet, VerifyKey};
use super::token::{self, MAX_TOKEN_BYTES};
use super::Invalid;
use crate::config::identity::JwkConfig;
use crate::identity::providers::{ProviderSpec, Source};

const MAX_BACKOFF: Duration = Duration::from_secs(60);
const MAX_NEGATIVE: usize = 4096;

/// What a synchronous check found.
pub enum Check {
    Verified(Entry),
    Failed(Invalid),
    /// The token names a key this provider does not have (yet): a refetch may help.
    NeedKeys(Option<Box<str>>),
}

#[derive(Default)]
struct Gate {
    in_flight: bool,
    last_started: Option<Instant>,
    last_ok: bool,
}

pub struct Provider {
    spec: Arc<ProviderSpec>,
    keys: ArcSwap<KeySet>,
    issuer: ArcSwapOption<String>,
    jwks_uri: Mutex<Option<Uri>>,
    cache: TokenCache,
    fetcher: Option<Fetcher>,
    gate: Mutex<Gate>,
    done: watch::Sender<u64>,
    negative: Mutex<HashMap<Box<str>, Instant>>,
    cancel: CancellationToken,
    started: AtomicBool,
    online: bool,
    fetches: AtomicU64,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider").field("name", &self.spec.name).finish_non_exhaustive()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: Option<String>,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct JwkSetDoc {
    keys: Vec<Value>,
}

impl Provider {
    /// A provider; `online` false (for `gatehouse check`) never fetches. The background task
    /// starts now when a Tokio runtime is running, else on first use.
    pub fn new(spec: Arc<ProviderSpec>, online: bool) -> Arc<Provider> {
        let fetcher = match &spec.source {
            Source::Static => None,
            Source::Jwks(u) | Source::Discovery(u) => {
                let tls = if u.scheme() == Some(&http::uri::Scheme::HTTPS)
                    || matches!(spec.source, Source::Discovery(_))
                {
                    Fetcher::tls(spec.ca.as_deref())
                        .map_err(|e| tracing::error!(provider = %spec.name, "TLS setup for key fetches failed: {e}"))
                        .ok()
                } else {
                    None
                };
                Some(Fetcher::new(tls, spec.fetch_timeout))
            }
        };
        let jwks_uri = match &spec.source {
            Source::Jwks(u) => Some(u.clone()),
            _ => None,
        };
        let p = Arc::new(Provider {
            keys: ArcSwap::from_pointee(KeySet::new(Vec::new(), &spec.statics, None)),
            issuer: ArcSwapOption::from(spec.issuer.clone().map(Arc::new)),
            jwks_uri: Mutex::new(jwks_uri),
            cache: TokenCache::new(spec.token_cache_size),
            fetcher,
            gate: Mutex::new(Gate::default()),
            done: watch::channel(0).0,
            negative: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            started: AtomicBool::new(false),
            online,
            fetches: AtomicU64::new(0),
            spec,
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            p.ensure_started();
        }
        p
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &Arc<ProviderSpec> {
        &self.spec
    }

    /// The issuer tokens must carry: configured, or from the discovery document.
    pub fn issuer(&self) -> Option<Arc<String>> {
        self.issuer.load_full()
    }

    /// How many key fetches (JWKS or discovery + JWKS) were started; for tests and metrics.
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// How many keys are loaded now.
    pub fn key_count(&self) -> usize {
        self.keys.load().len()
    }

    /// Starts the refresh task once (remote providers, online only).
    pub fn ensure_started(self: &Arc<Self>) {
        if self.fetcher.is_none() || !self.online || self.started.load(Ordering::Relaxed) {
            return;
        }
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let cancel = self.cancel.clone();
        tokio::spawn(refresher(weak, cancel));
    }

    /// The issuer tokens must carry, lent to `f` without touching reference counts when it is
    /// configured (a discovered one is read from the last discovery).
    pub fn with_issuer<R>(&self, f: impl FnOnce(Option<&str>) -> R) -> R {
        match &self.spec.issuer {
            // `issuer` never changes when it is configured (`load_keys` stores only discovered ones).
            Some(iss) => f(Some(iss)),
            None => f(self.issuer.load().as_deref().map(String::as_str)),
        }
    }

    /// The hot path of a repeated token: `f` of its cached verification, run under the cache's
    /// lock. `None` when the token is not cached (or its key was withdrawn): [`Provider::check`]
    /// decides then. The token's bytes need not be known to be text: only a verified token is
    /// ever found.
    pub fn cached<R>(&self, token: &[u8], now: u64, f: impl FnOnce(&Arc<Verified>) -> R) -> Option<R> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        let digest = TokenCache::digest(token);
        let keys = self.keys.load();
        self.cache.with(&digest, now, |e| keys.contains(&e.key).then(|| f(&e.verified))).flatten()
    }

    /// Everything that needs no waiting: cache, shape, key choice, signature.
    pub fn check(&self, token: &str, now: u64) -> Check {
        if token.len() > MAX_TOKEN_BYTES {
            return Check::Failed(Invalid::TooLarge);
        }
        let digest = TokenCache::digest(token.as_bytes());
        let keys = self.keys.load();
        if let Some(hit) = self.cache.get(&digest, now) {
            if keys.contains(&hit.key) {
                return Check::Verified(hit);
            }
            self.cache.remove(&digest);
        }
        let jws = match token::parse(token) {
            Ok(j) => j,
            Err(e) => return Check::Failed(e),
        };
        if !self.spec.algorithms.contains(jws.alg) {
            return Check::Failed(Invalid::Algorithm);
        }
        let mut tried = false;
        for key in keys.candidates(jws.kid.as_deref(), jws.alg) {
            tried = true;
            if key.verify(jws.alg, jws.signing_input.as_bytes(), jws.signature) {
                let claims = match token::claims_object(jws.payload) {
                    Ok(c) => c,
                    Err(e) => return Check::Failed(e),
                };
                let verified = Verified::new(claims);
                let until = match verified.times.exp {
                    Some(exp) if exp > 0.0 => (exp as u64).saturating_add(cache::MAX_SKEW),
                    Some(_) => 0,
                    None => now + cache::NO_EXP_TTL,
                };
                let entry = Entry { verified: Arc::new(verified), key: key.clone(), until };
                self.cache.insert(digest, entry.clone(), now);
                return Check::Verified(entry);
            }
        }
        let remote = self.fetcher.is_some();
        match jws.kid {
            Some(kid) if remote && !keys.has_kid(&kid) => Check::NeedKeys(Some(kid.into())),
            None if remote && !tried && keys.is_empty() => Check::NeedKeys(None),
            _ if tried => Check::Failed(Invalid::Signature),
            _ if keys.is_empty() => Check::Failed(Invalid::KeysUnavailable),
            _ => Check::Failed(Invalid::KeyNotFound),
        }
    }

    /// The full verification, waiting for a refetch when the token names an unknown key.
    pub async fn verify(self: &Arc<Self>, token: &str, now: u64) -> Result<Entry, Invalid> {
        self.ensure_started();
        let kid = match self.check(token, now) {
            Check::Verified(e) => return Ok(e),
            Check::Failed(i) => return Err(i),
            Check::NeedKeys(kid) => kid,
        };
        if !self.online {
            return Err(Invalid::KeysUnavailable);
        }
        if let Some(k) = &kid {
            if self.is_negative(k) {
                return Err(Invalid::KeyNotFound);
            }
        }
        let fetched_ok = self.refetch_and_wait().await;
        match self.check(token, now) {
            Check::Verified(e) => Ok(e),
            Check::Failed(i) => Err(i),
            Check::NeedKeys(kid) => {
                if let (Some(k), true) = (kid, fetched_ok) {
                    self.remember_unknown(k);
                }
                Err(if self.keys.load().is_empty() { Invalid::KeysUnavailable } else { Invalid::KeyNotFound })
            }
        }
    }

    fn is_negative(&self, kid: &str) -> bool {
        let mut neg = self.negative.lock();
        match neg.get(kid) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                neg.remove(kid);
                false
            }
            None => false,
        }
    }

    fn remember_unknown(&self, kid: Box<str>) {
        let mut neg = self.negative.lock();
        if neg.len() >= MAX_NEGATIVE {
            let now = Instant::now();
            neg.retain(|_, until| now < *until);
            if neg.len() >= MAX_NEGATIVE {
                neg.clear();
            }
        }
        neg.insert(kid, Instant::now() + self.spec.unknown_kid_ttl);
    }

    /// Asks for a fetch (shared with any in flight or scheduled) and waits for it to finish;
    /// true when it succeeded.
    async fn refetch_and_wait(self: &Arc<Self>) -> bool {
        let mut rx = self.done.subscribe();
        let delay = {
            let mut g = self.gate.lock();
            if g.in_flight {
                None
            } else {
                g.in_flight = true;
                let earliest = g.last_started.map(|t| t + self.spec.min_refetch_interval);
                Some(earliest.map(|t| t.saturating_duration_since(Instant::now())).unwrap_or_default())
            }
        };
        if let Some(delay) = delay {
            let me = self.clone();
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                me.fetch_now(false).await;
            });
        }
        let limit = self.spec.min_refetch_interval + self.spec.fetch_timeout * 2 + Duration::from_secs(1);
        match tokio::time::timeout(limit, rx.changed()).await {
            Ok(Ok(())) => self.gate.lock().last_ok,
            _ => false,
        }
    }

    /// One fetch; the caller has set `in_flight`. Wakes every waiter when done.
    async fn fetch_now(&self, rediscover: bool) -> bool {
        self.gate.lock().last_started = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = self.load_keys(rediscover).await;
        let ok = match result {
            Ok(set) => {
                tracing::debug!(provider = %self.spec.name, keys = set.len(), "signing keys refreshed");
                self.keys.store(Arc::new(set));
                true
            }
            Err(e) => {
                tracing::warn!(provider = %self.spec.name, "fetching signing keys failed, keeping the last good keys: {e}");
                false
            }
        };
        {
            let mut g = self.gate.lock();
            g.in_flight = false;
            g.last_ok = ok;
        }
        self.done.send_modify(|n| *n += 1);
        ok
    }

    /// A background refresh: joins a fetch already in flight, else runs one (with discovery).
    async fn refresh(&self) -> bool {
        let mut rx = self.done.subscribe();
        let join = {
            let mut g = self.gate.lock();
            let busy = g.in_flight;
            g.in_flight = true;
            busy
        };
        if join {
            let limit = self.spec.min_refetch_interval + self.spec.fetch_timeout * 2 + Duration::from_secs(1);
            return matches!(tokio::time::timeout(limit, rx.changed()).await, Ok(Ok(()))) && self.gate.lock().last_ok;
        }
        self.fetch_now(true).await
    }

    async fn load_keys(&self, rediscover: bool) -> Result<KeySet, LoadError> {
        let fetcher = self.fetcher.as_ref().ok_or(LoadError::Empty)?;
        let known = self.jwks_uri.lock().clone();
        let jwks_uri = match (&self.spec.source, known) {
            (Source::Discovery(url), known) if rediscover || known.is_none() => {
                let doc: Discovery = fetcher.get_json(url).await?;
                let uri: Uri = doc.jwks_uri.parse().map_err(|_| LoadError::BadDiscovery("jwks_uri is not a URL"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
                    return Err(LoadError::BadDiscovery("jwks_uri is not an http(s) URL"));
                }
                if self.spec.issuer.is_none() {
                    match doc.issuer {
                        Some(iss) => self.issuer.store(Some(Arc::new(iss))),
                        None => return Err(LoadError::BadDiscovery("no issuer")),
                    }
                }
                *self.jwks_uri.lock() = Some(uri.clone());
                uri
            }
            (_, Some(known)) => known,
            (_, None) => return Err(LoadError::Empty),
        };
        let doc: JwkSetDoc = fetcher.get_json(&jwks_uri).await?;
        let mut keys = Vec::with_capacity(doc.keys.len());
        for raw in doc.keys {
            let jwk: JwkConfig = match serde_json::from_value(raw) {
                Ok(j) => j,
                Err(_) => continue,
            };
            match VerifyKey::from_jwk(&jwk, self.spec.algorithms) {
                Ok(k) => keys.push(k),
                Err(why) => tracing::debug!(provider = %self.spec.name, kid = ?jwk.kid, "key skipped: {why}"),
            }
        }
        if keys.is_empty() {
            // An empty or unusable set is more likely a provider fault than a wish to reject
            // every token: keep the last good keys.
            return Err(LoadError::Empty);
        }
        let previous = self.keys.load();
        Ok(KeySet::new(keys, &self.spec.statics, Some(&previous)))
    }
}

#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("{0}")]
    Fetch(#[from] FetchError),
    #[error("discovery document: {0}")]
    BadDiscovery(&'static str),
    #[error("the key set has no usable signing key")]
    Empty,
}

async fn refresher(weak: Weak<Provider>, cancel: CancellationToken) {
    let mut delay = Duration::ZERO;
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let Some(p) = weak.upgrade() else { return };
        let ok = tokio::select! {
            _ = cancel.cancelled() => return,
            ok = p.refresh() => ok,
        };
        delay = if ok {
            backoff = Duration::from_secs(1);
            p.spec.refresh_interval
        } else {
            let d = backoff;
            backoff = (backoff * 2).min(MAX_BACKOFF).min(p.spec.refresh_interval.max(Duration::from_secs(1)));
            d
        };
    }
}
