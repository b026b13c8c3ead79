//! Service identity: the gateway's own OAuth2 client-credentials tokens for backends (APIM's
//! `authentication-managed-identity`, off Azure).
//!
//! A [`Client`] is one compiled credential set (token endpoint or discovery, client id, client
//! secret or `private_key_jwt` key, scope/resource); it is rebuilt on every reload, so a rotated
//! client secret is used from the next fetch on. The tokens themselves live in a [`Tokens`]
//! registry that outlives snapshots (it sits in `PolicyEnv`), keyed by endpoint + client id +
//! scope + resource, so a reload neither drops a valid token nor fetches a new one.
//!
//! Per key one [`Entry`]: the cached token is handed out without I/O until shortly before it
//! expires; from `refresh_at` on, the first request starts one background refresh and everyone
//! keeps using the current token; only without a usable token do requests wait — for the single
//! fetch in flight, never for one each. A failed fetch is remembered for a moment so an outage
//! of the identity provider is not multiplied by the request rate.

pub mod assertion;
pub mod http;

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use ::http::{HeaderValue, StatusCode, Uri};
use parking_lot::Mutex;
use serde::Deserialize;

use crate::secrets::Secret;
use assertion::Assertion;
use http::{form_pair, Http};

/// A token is not handed out when it has less than this left: it must survive the trip to the
/// backend and a clock that runs a little differently there.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);
/// Refresh starts this long before expiry (at most half the lifetime).
pub const REFRESH_AHEAD: Duration = Duration::from_secs(300);
/// Without `expires_in` in the response, a token is kept this long.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// After a failed fetch, waiting requests get the same error for this long instead of a new fetch each.
pub const FAILURE_HOLD: Duration = Duration::from_secs(2);

/// Why no token could be had. Shown in the gateway's log; the client sees a fixed detail.
/// Never holds a credential: the token endpoint's answer contributes only its `error` code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TokenError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(std::io::ErrorKind),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the response body is larger than {} bytes or failed", http::MAX_BODY_BYTES)]
    Body,
    #[error("refused with status {status}{}", oauth_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Refused { status: StatusCode, oauth_error: Option<String> },
    #[error("unusable response: {0}")]
    Response(String),
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("cannot sign the client assertion: {0}")]
    Assertion(String),
}

impl TokenError {
    /// The endpoint is down or slow (503, worth retrying) rather than refusing or misbehaving (502).
    pub fn unavailable(&self) -> bool {
        match self {
            TokenError::Timeout(_) | TokenError::Connect(_) => true,
            TokenError::Refused { status, .. } => status.is_server_error(),
            _ => false,
        }
    }
}

/// Where the token endpoint is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Token(Uri),
    /// An OIDC discovery document (`identity_providers.X.openid_configuration`) naming it.
    Discovery(Uri),
}

impl Endpoint {
    fn key(&self) -> String {
        match self {
            Endpoint::Token(u) => u.to_string(),
            Endpoint::Discovery(u) => format!("discovery:{u}"),
        }
    }
}

/// How the client proves who it is (RFC 6749 §2.3, RFC 7523).
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the form-encoded id and secret.
    SecretBasic(Secret),
    /// `client_secret_post`: id and secret in the form.
    SecretPost(Secret),
    /// `private_key_jwt`: a signed, short-lived client assertion.
    PrivateKeyJwt(Arc<Assertion>),
}

/// One compiled client: everything a token request needs.
#[derive(Debug)]
pub struct Client {
    pub endpoint: Endpoint,
    pub client_id: String,
    pub auth: ClientAuth,
    pub scope: Option<String>,
    pub resource: Option<String>,
    pub http: Http,
}

/// What tokens are cached under: the same endpoint, client and audience get the same token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    endpoint: String,
    client_id: String,
    scope: Option<String>,
    resource: Option<String>,
}

impl Client {
    pub fn key(&self) -> TokenKey {
        TokenKey {
            endpoint: self.endpoint.key(),
            client_id: self.client_id.clone(),
            scope: self.scope.clone(),
            resource: self.resource.clone(),
        }
    }
}

/// The long-lived token store: one [`Entry`] per [`TokenKey`] while some policy uses it.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: Mutex<HashMap<TokenKey, Weak<Entry>>>,
}

impl Tokens {
    /// The entry for `key`, shared with every policy (of this and older snapshots) that uses it.
    pub fn entry(&self, key: TokenKey) -> Arc<Entry> {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get(&key).and_then(Weak::upgrade) {
            return e;
        }
        entries.retain(|_, e| e.strong_count() > 0);
        let e = Arc::new(Entry::default());
        entries.insert(key, Arc::downgrade(&e));
        e
    }
}

#[derive(Debug)]
struct Cached {
    /// `Bearer …`, marked sensitive.
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    token: Option<Cached>,
    /// A background refresh is running, or failed and may not start again before this.
    refresh_blocked_until: Option<Instant>,
    refreshing: bool,
    failed: Option<(Instant, TokenError)>,
    /// The token endpoint found by discovery.
    discovered: Option<Uri>,
    fetches: u64,
}

/// One cached token and its single-flight fetch.
#[derive(Debug, Default)]
pub struct Entry {
    state: Mutex<State>,
    fetch: tokio::sync::Mutex<()>,
}

impl Entry {
    /// The cached token when it is still usable; past `refresh_at` this also starts the one
    /// background refresh. No I/O, no allocation beyond the header's reference count.
    pub fn cached(self: &Arc<Self>, client: &Arc<Client>) -> Option<HeaderValue> {
        let now = Instant::now();
        let mut s = self.state.lock();
        let c = s.token.as_ref()?;
        if now >= c.expires_at {
            return None;
        }
        let header = c.header.clone();
        if now >= c.refresh_at && !s.refreshing && s.refresh_blocked_until.is_none_or(|t| now >= t) {
            s.refreshing = true;
            let (entry, client) = (self.clone(), client.clone());
            tokio::spawn(async move { entry.refresh(&client).await });
        }
        Some(header)
    }

    /// A usable token, fetching one if needed; concurrent callers share the one fetch.
    pub async fn token(self: &Arc<Self>, client: &Arc<Client>) -> Result<HeaderValue, TokenError> {
        if let Some(h) = self.cached(client) {
            return Ok(h);
        }
        if let Some(e) = self.recent_failure() {
            return Err(e);
        }
        let _flight = self.fetch.lock().await;
        // Whoever held the lock may have fetched (or failed) meanwhile.
        if let Some(h) = self.cached(client) {
            return Ok(h);
        }
        if let Some(e) = self.recent_failure() {
            return Err(e);
        }
        self.fetch_and_store(client).await
    }

    /// How many token requests were sent (for tests and diagnostics).
    pub fn fetches(&self) -> u64 {
        self.state.lock().fetches
    }

    fn recent_failure(&self) -> Option<TokenError> {
        let s = self.state.lock();
        match &s.failed {
            Some((at, e)) if at.elapsed() < FAILURE_HOLD => Some(e.clone()),
            _ => None,
        }
    }

    async fn refresh(self: Arc<Self>, client: &Arc<Client>) {
        let result = {
            let _flight = self.fetch.lock().await;
            let fresh = self.state.lock().token.as_ref().is_some_and(|c| Instant::now() < c.refresh_at);
            if fresh {
                // A foreground fetch (after an expiry) got there first.
                Ok(())
            } else {
                self.fetch_and_store(client).await.map(drop)
            }
        };
        let mut s = self.state.lock();
        s.refreshing = false;
        if let Err(e) = result {
            // The current token stays in use; try again a little later, not on every request.
            s.refresh_blocked_until = Some(Instant::now() + FAILURE_HOLD * 2);
            tracing::warn!(client_id = %client.client_id, error = %e, "Service token refresh failed; the current token stays in use.");
        }
    }

    async fn fetch_and_store(&self, client: &Client) -> Result<HeaderValue, TokenError> {
        let started = Instant::now();
        let discovered = self.state.lock().discovered.clone();
        let result = fetch(client, discovered).await;
        let mut s = self.state.lock();
        s.fetches += 1;
        match result {
            Ok((token, endpoint)) => {
                if matches!(client.endpoint, Endpoint::Discovery(_)) {
                    s.discovered = Some(endpoint);
                }
                let header = token.header.clone();
                // Lifetimes count from when the request left: the response may have taken a while.
                let lifetime = token.lifetime;
                let ahead = REFRESH_AHEAD.min(lifetime / 2);
                s.token = Some(Cached {
                    header: token.header,
                    refresh_at: started + lifetime.saturating_sub(ahead),
                    expires_at: started + lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 4)),
                });
                s.failed = None;
                s.refresh_blocked_until = None;
                Ok(header)
            }
            Err(e) => {
                s.failed = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }
}

struct Fetched {
    header: HeaderValue,
    lifetime: Duration,
}

/// RFC 6749 §5.1.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: String,
    expires_in: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

#[derive(Deserialize)]
struct Discovery {
    token_endpoint: String,
}

async fn token_endpoint(client: &Client, discovered: Option<Uri>) -> Result<Uri, TokenError> {
    let url = match &client.endpoint {
        Endpoint::Token(u) => return Ok(u.clone()),
        Endpoint::Discovery(u) => u,
    };
    if let Some(u) = discovered {
        return Ok(u);
    }
    let (status, body) = client.http.get(url).await.map_err(|e| TokenError::Discovery(e.to_string()))?;
    if status != StatusCode::OK {
        return Err(TokenError::Discovery(format!("status {status}")));
    }
    let doc: Discovery = serde_json::from_slice(&body)
        .map_err(|_| TokenError::Discovery("the document has no `token_endpoint`".into()))?;
    match doc.token_endpoint.parse::<Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Ok(u),
        _ => Err(TokenError::Discovery("`token_endpoint` is not an http(s) URL".into())),
    }
}

async fn fetch(client: &Client, discovered: Option<Uri>) -> Result<(Fetched, Uri), TokenError> {
    let endpoint = token_endpoint(client, discovered).await?;
    let mut form = String::with_capacity(256);
    form_pair(&mut form, "grant_type", "client_credentials");
    if let Some(scope) = &client.scope {
        form_pair(&mut form, "scope", scope);
    }
    if let Some(resource) = &client.resource {
        form_pair(&mut form, "resource", resource);
    }
    let mut authorization = None;
    match &client.auth {
        ClientAuth::SecretBasic(secret) => authorization = Some(basic(&client.client_id, secret.expose())),
        ClientAuth::SecretPost(secret) => {
            form_pair(&mut form, "client_id", &client.client_id);
            form_pair(&mut form, "client_secret", secret.expose());
        }
        ClientAuth::PrivateKeyJwt(a) => {
            let jwt = a.sign(&client.client_id, &endpoint.to_string()).map_err(TokenError::Assertion)?;
            form_pair(&mut form, "client_id", &client.client_id);
            form_pair(&mut form, "client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
            form_pair(&mut form, "client_assertion", &jwt);
        }
    }
    let (status, body) = client.http.post_form(&endpoint, form, authorization).await?;
    if !status.is_success() {
        let oauth_error = serde_json::from_slice::<ErrorResponse>(&body)
            .ok()
            .map(|e| e.error)
            .filter(|e| e.len() <= 64 && e.bytes().all(|b| b.is_ascii_graphic()));
        return Err(TokenError::Refused { status, oauth_error });
    }
    let t: TokenResponse = serde_json::from_slice(&body)
        .map_err(|_| TokenError::Response("not a token response (access_token, token_type)".into()))?;
    if !t.token_type.eq_ignore_ascii_case("bearer") {
        return Err(TokenError::Response(format!("token_type is not Bearer ({} characters)", t.token_type.len())));
    }
    let lifetime = match &t.expires_in {
        None => DEFAULT_LIFETIME,
        // Some servers send the number as a string.
        Some(v) => match v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())) {
            Some(secs) => Duration::from_secs(secs),
            None => return Err(TokenError::Response("expires_in is not a number of seconds".into())),
        },
    };
    if lifetime.is_zero() {
        return Err(TokenError::Response("the token expires immediately (expires_in: 0)".into()));
    }
    let mut header = HeaderValue::try_from(format!("Bearer {}", t.access_token))
        .map_err(|_| TokenError::Response("the access token is not a valid header value".into()))?;
    header.set_sensitive(true);
    Ok((Fetched { header, lifetime }, endpoint))
}

/// `Basic base64(urlencode(id):urlencode(secret))` (RFC 6749 §2.3.1).
fn basic(client_id: &str, secret: &str) -> HeaderValue {
    let mut pair = String::new();
    http::form_encode(&mut pair, client_id);
    pair.push(':');
    http::form_encode(&mut pair, secret);
    basic_header(&pair)
}

/// `Basic base64(text)`, marked sensitive.
pub fn basic_header(text: &str) -> HeaderValue {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    let mut h = HeaderValue::try_from(format!("Basic {encoded}")).unwrap_or_else(|_| HeaderValue::from_static("Basic"));
    h.set_sensitive(true);
    h
}

#[cfg(test)]
mod tests;

/// A path from the config, relative to the config file's directory (as the snapshot resolves
/// certificate paths).
pub fn config_path(doc: &crate::config::Document, p: &std::path::Path) -> std::path::PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    match std::path::Path::new(doc.file()).parent() {
        Some(dir) => dir.join(p),
        None => p.to_path_buf(),
    }
}
