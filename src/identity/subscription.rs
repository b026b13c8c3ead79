//! Subscription-key checks on the request path (APIM's subscription model, product.md §3).
//!
//! The store is never queried per request: [`SubscriptionIndex`] holds every subscription in
//! memory, keyed by the SHA-256 digest of each of its two keys, behind an `ArcSwap` (one atomic
//! load per request). A refresher task polls the store for rows written since the last revision
//! it saw (`Store::changes_since`, one indexed query per `store.poll_interval`, default 1 s) and
//! swaps in a new map. Polling rather than PostgreSQL LISTEN/NOTIFY: it is one code path for
//! SQLite and PostgreSQL, it sees writes made by the CLI in another process on the same SQLite
//! file, and it cannot lose a change while a connection is down (a notification sent then is
//! gone; a revision number is not). If the store is unreachable the last known subscriptions
//! keep being served.
//!
//! Looking up by digest leaks nothing through timing: an attacker who learns how a probe's
//! digest compares with stored digests learns nothing about any key (SHA-256 preimage).
//!
//! [`ProductTable`] compiles `products:` into what one API's check needs ([`ApiAccess`]).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::header::{HeaderMap, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use http::{StatusCode, Uri};
use tokio_util::sync::CancellationToken;

use crate::config::store::{ProductConfig, SubscriptionKeyConfig};
use crate::config::{ConfigError, Document, PathSeg};
use crate::identity::digest;
use crate::respond::{Layer, Problem};
use crate::store::keys::{is_key_text, KeyHash};
use crate::store::{unix_now, Scope, State, Store, StoreError, SubscriptionRecord};

/// Who is calling (APIM `context.Subscription`): the pipeline's type, set on the exchange.
/// `product` is `None` for API-scoped and all-APIs subscriptions (APIM applies no product
/// policies to those).
pub use crate::policy::exchange::Caller;

/// Why a key was refused. Texts are fixed: a key never appears in a response or a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No key in the header or the query (401, APIM `SubscriptionKeyNotFound`).
    Missing,
    /// Not a key of any subscription (401, APIM `SubscriptionKeyInvalid`).
    Invalid,
    /// A known key of a suspended or cancelled subscription (403).
    Inactive(State),
    /// A known key of an expired subscription (403).
    Expired,
    /// A valid key whose subscription does not cover this API (403).
    OutOfScope,
}

impl Denial {
    pub fn status(self) -> StatusCode {
        match self {
            Denial::Missing | Denial::Invalid => StatusCode::UNAUTHORIZED,
            _ => StatusCode::FORBIDDEN,
        }
    }

    /// Suffix of the problem `type` URN.
    pub fn kind(self) -> &'static str {
        match self {
            Denial::Missing => "subscription-key-missing",
            Denial::Invalid => "subscription-key-invalid",
            Denial::Inactive(_) => "subscription-inactive",
            Denial::Expired => "subscription-expired",
            Denial::OutOfScope => "subscription-scope",
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Denial::Missing => "a subscription key is required",
            Denial::Invalid => "the subscription key is not valid",
            Denial::Inactive(State::Cancelled) => "the subscription is cancelled",
            Denial::Inactive(_) => "the subscription is suspended",
            Denial::Expired => "the subscription has expired",
            Denial::OutOfScope => "the subscription does not give access to this API",
        }
    }

    /// The problem+json answer (`layer: policy`, `policy: subscription`; the pipeline fills in
    /// the scope). A 401 names where the key goes, as RFC 9110 §11.6.1 wants a challenge.
    pub fn problem(self, names: &KeyNames) -> Problem {
        let mut p = Problem::new(self.status(), self.kind(), Layer::Policy, self.detail());
        p.policy = Some("subscription");
        if self.status() == StatusCode::UNAUTHORIZED {
            p.headers.insert(WWW_AUTHENTICATE, names.challenge.clone());
        }
        p
    }
}

/// Where callers of one API put their key (`apis.X.subscription_key`), compiled.
#[derive(Debug, Clone)]
pub struct KeyNames {
    pub header: HeaderName,
    pub query: Box<str>,
    challenge: HeaderValue,
}

impl KeyNames {
    pub fn new(cfg: &SubscriptionKeyConfig) -> Result<KeyNames, String> {
        let header = HeaderName::try_from(cfg.header.as_str())
            .map_err(|_| format!("`{}` is not a valid header name", cfg.header))?;
        let query = cfg.query.as_str();
        if query.is_empty()
            || !query.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
        {
            return Err(format!("`{query}` is not a valid query parameter name (letters, digits, - _ . ~)"));
        }
        let challenge = HeaderValue::try_from(format!("SubscriptionKey header=\"{}\", query=\"{query}\"", cfg.header))
            .map_err(|_| "invalid subscription key names".to_string())?;
        Ok(KeyNames { header, query: query.into(), challenge })
    }
}

impl Default for KeyNames {
    fn default() -> Self {
        // The defaults are valid by construction.
        match KeyNames::new(&SubscriptionKeyConfig::default()) {
            Ok(n) => n,
            Err(e) => unreachable!("default subscription key names: {e}"),
        }
    }
}

/// What a check for one API needs to know, compiled from `products:` with the config.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub api: Arc<str>,
    /// Products that list this API: a subscription to any of them covers it.
    pub products: Box<[Arc<str>]>,
    /// A key must be presented (some product listing the API requires a subscription and none
    /// that lists it is open). When false, a presented key is still checked and identifies
    /// the caller, but a request without one goes through.
    pub required: bool,
}

/// `products:` compiled: which products exist and which products list each API.
#[derive(Debug, Default, Clone)]
pub struct ProductTable {
    products: BTreeMap<String, bool>,
    by_api: HashMap<String, (Vec<Arc<str>>, bool, bool)>,
}

impl ProductTable {
    /// Validates `products:` (found at `path`, normally `[products]`) against the API names and
    /// collects every error.
    pub fn compile(
        doc: &Document,
        path: &[PathSeg],
        products: &BTreeMap<String, ProductConfig>,
        apis: &BTreeSet<String>,
        errors: &mut Vec<ConfigError>,
    ) -> ProductTable {
        let mut table = ProductTable::default();
        for (name, p) in products {
            table.products.insert(name.clone(), p.subscription_required);
            let product: Arc<str> = name.as_str().into();
            let mut seen = BTreeSet::new();
            for (i, api) in p.apis.iter().enumerate() {
                let at = [path, &[PathSeg::Key(name.clone()), PathSeg::Key("apis".into()), PathSeg::Index(i)]].concat();
                if !apis.contains(api) {
                    errors.push(doc.error(&at, format!("no API named `{api}` in `apis`")));
                    continue;
                }
                if !seen.insert(api.as_str()) {
                    errors.push(doc.error(&at, format!("`{api}` is listed twice")));
                    continue;
                }
                let e = table.by_api.entry(api.clone()).or_default();
                e.0.push(product.clone());
                if p.subscription_required {
                    e.1 = true;
                } else {
                    e.2 = true;
                }
            }
        }
        table
    }

    pub fn has_product(&self, name: &str) -> bool {
        self.products.contains_key(name)
    }

    pub fn product_names(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    /// The compiled access rule for `api`.
    pub fn access(&self, api: &str) -> ApiAccess {
        let (products, protected, open) = self.by_api.get(api).cloned().unwrap_or_default();
        ApiAccess { api: api.into(), products: products.into(), required: protected && !open }
    }
}

/// A map key that feeds [`crate::hashing::Precomputed`] one `u64`: the digest is uniformly
/// distributed and cannot be steered by a caller, so its first eight bytes are the hash.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest(KeyHash);

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0 .0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

type KeyMap = HashMap<Digest, Arc<Entry>, crate::hashing::BuildPrecomputed>;

#[derive(Debug)]
enum EntryScope {
    Product(Arc<str>),
    Api(Arc<str>),
    All,
}

#[derive(Debug)]
struct Entry {
    caller: Arc<Caller>,
    scope: EntryScope,
    state: State,
    expires_at: Option<i64>,
}

impl Entry {
    fn new(rec: &SubscriptionRecord) -> Entry {
        let s = &rec.subscription;
        let (scope, product) = match &s.scope {
            Scope::Product(p) => {
                let p: Arc<str> = p.as_str().into();
                (EntryScope::Product(p.clone()), Some(p))
            }
            Scope::Api(a) => (EntryScope::Api(a.as_str().into()), None),
            Scope::AllApis => (EntryScope::All, None),
        };
        let caller = Arc::new(Caller {
            subscription_id: s.id.as_str().into(),
            subscription_name: s.name.as_str().into(),
            product,
        });
        Entry { caller, scope, state: s.state, expires_at: s.expires_at }
    }
}

/// What the refresher remembers between polls.
#[derive(Default)]
struct SyncState {
    rev: i64,
    by_id: HashMap<String, (KeyHash, KeyHash)>,
}

/// Every subscription in memory, keyed by key digest. Shared by all snapshots (long-lived).
#[derive(Default)]
pub struct SubscriptionIndex {
    keys: ArcSwap<KeyMap>,
    sync: tokio::sync::Mutex<SyncState>,
    failing: AtomicBool,
}

impl std::fmt::Debug for SubscriptionIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriptionIndex").field("keys", &self.keys.load().len()).finish()
    }
}

impl SubscriptionIndex {
    /// An index filled from the store (start-up waits for this: no request is refused for want
    /// of a first load).
    pub async fn load(store: &Store) -> Result<Arc<SubscriptionIndex>, StoreError> {
        let index = Arc::new(SubscriptionIndex::default());
        index.refresh(store).await?;
        Ok(index)
    }

    /// Applies the store's changes since the last refresh; returns how many subscriptions changed.
    pub async fn refresh(&self, store: &Store) -> Result<usize, StoreError> {
        let mut sync = self.sync.lock().await;
        let changes = store.changes_since(sync.rev).await?;
        if changes.is_empty() {
            return Ok(0);
        }
        self.apply(&mut sync, &changes);
        Ok(changes.len())
    }

    /// Swaps in a map with `changes` applied (the caller holds the sync lock).
    fn apply(&self, sync: &mut SyncState, changes: &[SubscriptionRecord]) {
        let mut map: KeyMap = (**self.keys.load()).clone();
        for rec in changes {
            if let Some((p, s)) = sync.by_id.remove(&rec.subscription.id) {
                map.remove(&Digest(p));
                map.remove(&Digest(s));
            }
            let entry = Arc::new(Entry::new(rec));
            map.insert(Digest(rec.primary), entry.clone());
            map.insert(Digest(rec.secondary), entry);
            sync.by_id.insert(rec.subscription.id.clone(), (rec.primary, rec.secondary));
            sync.rev = sync.rev.max(rec.rev);
        }
        self.keys.store(Arc::new(map));
    }

    /// Start-up glue: the first load from `store` (so no request is refused for want of it),
    /// then the refresher. Policies compiled earlier against this index see the subscriptions.
    pub async fn attach(
        self: &Arc<Self>,
        store: &Store,
        every: Duration,
        stop: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, StoreError> {
        self.refresh(store).await?;
        Ok(self.spawn_refresher(store.clone(), every, stop))
    }

    /// Polls the store every `every` until `stop`; errors are logged once per outage while the
    /// last known subscriptions keep serving.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        store: Store,
        every: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let index = self.clone();
        let every = every.max(Duration::from_millis(50));
        // A hung connection must not stall refreshes forever.
        let limit = (every * 5).clamp(Duration::from_secs(2), Duration::from_secs(15));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let result = match tokio::time::timeout(limit, index.refresh(&store)).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {limit:?}")),
                };
                match result {
                    Ok(n) => {
                        if index.failing.swap(false, Ordering::Relaxed) {
                            tracing::info!("The subscription store is reachable again.");
                        }
                        if n > 0 {
                            tracing::debug!(changed = n, "Subscriptions refreshed.");
                        }
                    }
                    Err(e) => {
                        if !index.failing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "Cannot read subscriptions from the store; the last known ones keep serving.");
                        }
                    }
                }
            }
        })
    }

    /// Number of keys indexed (two per subscription).
    pub fn len(&self) -> usize {
        self.keys.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Judges a presented key for `access.api`. `None` or an empty key is a missing key.
    pub fn check(&self, access: &ApiAccess, key: Option<&str>) -> Result<Arc<Caller>, Denial> {
        let key = match key {
            None | Some("") => return Err(Denial::Missing),
            Some(k) => k,
        };
        // Garbage (binary, oversized) is refused before it is hashed.
        if !is_key_text(key) {
            return Err(Denial::Invalid);
        }
        let map = self.keys.load();
        let Some(entry) = map.get(&Digest(KeyHash(digest::sha256(digest::Kind::Key, key.as_bytes())))) else {
            return Err(Denial::Invalid);
        };
        if entry.state != State::Active {
            return Err(Denial::Inactive(entry.state));
        }
        if entry.expires_at.is_some_and(|t| unix_now() >= t) {
            return Err(Denial::Expired);
        }
        let covered = match &entry.scope {
            EntryScope::All => true,
            EntryScope::Api(a) => **a == *access.api,
            EntryScope::Product(p) => access.products.iter().any(|x| x == p),
        };
        if !covered {
            return Err(Denial::OutOfScope);
        }
        Ok(entry.caller.clone())
    }

    /// The whole inbound step: finds the key (header first, then query, as APIM does), removes
    /// both from the request so the backend never sees a key, and checks it. `Ok(None)`: no key
    /// and none required.
    pub fn authenticate(
        &self,
        access: &ApiAccess,
        names: &KeyNames,
        request: &mut http::request::Parts,
    ) -> Result<Option<Arc<Caller>>, Denial> {
        let from_query = remove_query_param(&mut request.uri, &names.query);
        let from_header = take_header(&mut request.headers, &names.header);
        match from_header.as_ref().map(Taken::key).or(from_query.as_deref()) {
            None if !access.required => Ok(None),
            presented => self.check(access, presented).map(Some),
        }
    }
}

/// What `take_header` found.
enum Taken {
    One(HeaderValue),
    /// Sent more than once: not a key (reads as an invalid one, like a non-UTF-8 value).
    Several,
}

impl Taken {
    /// The key as presented; [`MALFORMED`] for a repeated or non-UTF-8 field.
    fn key(&self) -> &str {
        match self {
            Taken::One(v) => v.to_str().unwrap_or(MALFORMED),
            Taken::Several => MALFORMED,
        }
    }
}

/// Removes every `name` field from `headers` in the same lookup that reads it.
fn take_header(headers: &mut HeaderMap, name: &HeaderName) -> Option<Taken> {
    match headers.entry(name) {
        http::header::Entry::Vacant(_) => None,
        http::header::Entry::Occupied(e) => {
            let (_, mut values) = e.remove_entry_mult();
            let first = values.next()?;
            Some(if values.next().is_some() { Taken::Several } else { Taken::One(first) })
        }
    }
}

/// Stands for a header value that cannot be a key (not UTF-8, or sent twice); fails the
/// character check, so it reads as an invalid key rather than a missing one.
const MALFORMED: &str = "\u{0}";

/// Removes every `name=…` pair from the query of `uri` and returns the first value
/// (percent-decoded). The URI is rebuilt only when the parameter is there.
pub fn remove_query_param(uri: &mut Uri, name: &str) -> Option<String> {
    let query = uri.query()?;
    let matches = |pair: &str| pair.split('=').next().is_some_and(|n| n == name || percent_decode(n) == name);
    if !query.split('&').any(matches) {
        return None;
    }
    let mut value = None;
    let mut kept = String::with_capacity(query.len());
    for pair in query.split('&') {
        if matches(pair) {
            if value.is_none() {
                value = Some(percent_decode(pair.split_once('=').map_or("", |(_, v)| v)).into_owned());
            }
        } else if !pair.is_empty() {
            if !kept.is_empty() {
                kept.push('&');
            }
            kept.push_str(pair);
        }
    }
    let mut pq = String::with_capacity(uri.path().len() + 1 + kept.len());
    pq.push_str(uri.path());
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept);
    }
    let mut parts = std::mem::take(uri).into_parts();
    // The new path and query is a substring of a valid one, so it parses.
    parts.path_and_query = pq.parse().ok();
    *uri = Uri::from_parts(parts).unwrap_or_default();
    value
}

/// The query with the values of the parameters in `names` replaced by `REDACTED`, for the
/// access log (which records the request as received, before the policy removes the key).
/// Borrows when there is nothing to hide.
pub fn redact_query<'q>(query: &'q str, names: &[Box<str>]) -> Cow<'q, str> {
    let hit = |pair: &str| {
        let n = pair.split('=').next().unwrap_or("");
        names.iter().any(|name| n == &**name || percent_decode(n) == **name)
    };
    if !query.split('&').any(hit) {
        return Cow::Borrowed(query);
    }
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((n, _)) if hit(pair) => {
                out.push_str(n);
                out.push_str("=REDACTED");
            }
            _ => out.push_str(pair),
        }
    }
    Cow::Owned(out)
}

/// `%XX` decoding; invalid escapes and non-UTF-8 results come out as U+FFFD, which no key has.
fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
#[path = "subscription_tests.rs"]
mod tests;
