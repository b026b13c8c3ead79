//! The counting engine behind `rate-limit`, `rate-limit-by-key`, `quota`, `quota-by-key` and
//! `limit-concurrency`: it decides, the policies only build keys and answers.
//!
//! [`Limits`] lives in `PolicyEnv`, outside config snapshots, so counters survive a reload. By
//! default every counter is in-process ([`local`]: a sharded map, one short lock per decision).
//! With `cluster.redis` rate and quota counters are shared through Redis ([`cluster`]) and nodes
//! *lease* slices of each budget ([`lease`]), so most decisions still need no round trip; the
//! error bound is stated in `docs/rate-limits.md`. Concurrency limits are always per node.
//!
//! Every decision has a synchronous first step ([`Limits::try_rate`], [`Limits::try_quota`])
//! that answers without allocating a future when it can, and an async completion for when it
//! cannot (a lease to refill, a persisted quota to load).

pub mod answer;
pub mod cluster;
mod concurrency;
mod lease;
pub mod local;
pub mod policy_support;
pub mod quota;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use cluster::{ClusterConfig, FailMode, Redis, SyncMode};
pub use concurrency::Permit;
pub use quota::{Period, PersistError, PersistFuture, QuotaPersistence, QuotaRecord, QuotaSpec};

use local::{Expiring, ShardedMap, Window};
use quota::QuotaSlot;

/// How often dirty in-process quota counters are written through [`QuotaPersistence`].
const PERSIST_EVERY: Duration = Duration::from_secs(5);

/// A rate limit: `limit` calls per sliding `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateSpec {
    pub limit: u64,
    pub period_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the limit: 429 (rate) or 403 (quota).
    Limited,
    /// Redis is unreachable and `on_redis_failure: closed`.
    Unavailable,
}

/// Identifies where taken calls came from, to give them back ([`Limits::refund_rate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ticket {
    generation: u64,
    window: u64,
}

/// One decision, with what the `RateLimit-*` and `Retry-After` headers need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub limit: u64,
    /// Calls left (in cluster mode: this node's lease plus what Redis had left at the last grant).
    pub remaining: u64,
    /// Milliseconds until the current window or period ends (0: never).
    pub reset_ms: u64,
    /// When not allowed: milliseconds until a retry can succeed.
    pub retry_after_ms: u64,
    pub ticket: Ticket,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allowed
    }

    /// Redis could not be asked. `limit` is reported as 0: nothing was counted, so no
    /// `RateLimit-*` headers are written.
    fn unavailable(mode: FailMode) -> Self {
        let verdict = match mode {
            FailMode::Open => Verdict::Allowed,
            FailMode::Closed => Verdict::Unavailable,
        };
        Decision { verdict, limit: 0, remaining: 0, reset_ms: 0, retry_after_ms: 1_000, ticket: Ticket::default() }
    }
}

/// The synchronous first step of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Done(Decision),
    /// Finish with the async call ([`Limits::rate`] / [`Limits::quota`]).
    Pending,
}

/// The engine: cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("cluster", &self.inner.redis).finish_non_exhaustive()
    }
}

struct Inner {
    epoch: Instant,
    rates: ShardedMap<RateSlot>,
    quotas: ShardedMap<QuotaSlot>,
    leases: ShardedMap<lease::LeaseSlot>,
    quota_leases: ShardedMap<lease::LeaseSlot>,
    concurrency: Arc<ShardedMap<concurrency::Slot>>,
    redis: Option<Redis>,
    /// Set at start, once the store is open (which happens after the first compile).
    persist: std::sync::OnceLock<Arc<dyn QuotaPersistence>>,
    flusher: AtomicBool,
    bytes: lease::PendingBytes,
}

struct RateSlot {
    window: Window,
    period_ms: u64,
}

impl Expiring for RateSlot {
    fn expired(&self, now_ms: u64) -> bool {
        // Two windows on, the previous window no longer weighs in.
        now_ms / self.period_ms > self.window.idx + 1
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(None, None)
    }
}

impl Limits {
    /// In-process counters; `redis` shares rate and quota counters through Redis instead, and
    /// `persist` keeps in-process quota counters across restarts (unused with Redis, where the
    /// quotas live).
    pub fn new(redis: Option<Redis>, persist: Option<Arc<dyn QuotaPersistence>>) -> Self {
        Limits {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                rates: ShardedMap::new(),
                quotas: ShardedMap::new(),
                leases: ShardedMap::new(),
                quota_leases: ShardedMap::new(),
                concurrency: Arc::new(ShardedMap::new()),
                redis,
                persist: persist.map(std::sync::OnceLock::from).unwrap_or_default(),
                flusher: AtomicBool::new(false),
                bytes: lease::PendingBytes::default(),
            }),
        }
    }

    /// The Redis client when counters are shared.
    pub fn redis(&self) -> Option<&Redis> {
        self.inner.redis.as_ref()
    }

    /// Milliseconds on the engine's monotonic clock (never 0).
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX / 2) + 1
    }

    fn unix_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
    }

    // ---- rate limits -------------------------------------------------------------------

    /// Takes `n` calls from the rate counter `key` when that needs no I/O.
    pub fn try_rate(&self, key: &str, spec: RateSpec, n: u64) -> Check {
        match &self.inner.redis {
            None => Check::Done(self.local_rate(key, spec, n)),
            Some(_) => lease::try_take(self, key, spec.limit, n, false),
        }
    }

    /// Takes `n` calls from the rate counter `key`.
    pub async fn rate(&self, key: &str, spec: RateSpec, n: u64) -> Decision {
        match &self.inner.redis {
            None => self.local_rate(key, spec, n),
            Some(redis) => lease::take_rate(self, redis, key, spec, n).await,
        }
    }

    fn local_rate(&self, key: &str, spec: RateSpec, n: u64) -> Decision {
        let now = self.mono_ms();
        let period_ms = spec.period_ms.max(1);
        let init = || RateSlot { window: Window { idx: now / period_ms, cur: 0, prev: 0 }, period_ms };
        let (take, idx) = self.inner.rates.with(key, now, init, |s| {
            if s.period_ms != period_ms {
                *s = init();
            }
            let t = s.window.take(now, period_ms, spec.limit, n);
            (t, s.window.idx)
        });
        Decision {
            verdict: if take.granted { Verdict::Allowed } else { Verdict::Limited },
            limit: spec.limit,
            remaining: take.remaining,
            reset_ms: take.reset_ms,
            retry_after_ms: take.retry_ms,
            ticket: Ticket { generation: 0, window: idx },
        }
    }

    /// Gives back `n` calls taken with `ticket` (the request did not meet the increment
    /// condition). Never blocks: with Redis in `exact` mode the refund is sent in the background.
    pub fn refund_rate(&self, key: &str, spec: RateSpec, n: u64, ticket: Ticket) {
        match &self.inner.redis {
            None => self.inner.rates.get(key, |s| {
                if let Some(s) = s {
                    s.window.give_back(ticket.window, n);
                }
            }),
            Some(_) => lease::refund(self, key, spec, n, ticket),
        }
    }

    // ---- quotas ------------------------------------------------------------------------

    /// Takes `n` calls from the quota counter `key` when that needs no I/O.
    pub fn try_quota(&self, key: &str, spec: &QuotaSpec, n: u64) -> Check {
        self.ensure_flusher();
        match &self.inner.redis {
            Some(_) => lease::try_take(self, key, spec.calls.unwrap_or(0), n, true),
            None => {
                let loaded = self.inner.persist.get().is_none();
                let now = Self::unix_ms();
                self.inner.quotas.with(
                    key,
                    now,
                    || QuotaSlot::new(loaded),
                    |s| if s.loaded { Check::Done(quota_decision(s.take(now, spec, n), spec)) } else { Check::Pending },
                )
            }
        }
    }

    /// Takes `n` calls from the quota counter `key` (loading it from the store the first time).
    pub async fn quota(&self, key: &str, spec: &QuotaSpec, n: u64) -> Decision {
        if let Some(redis) = &self.inner.redis {
            return lease::take_quota(self, redis, key, spec, n).await;
        }
        if let Check::Done(d) = self.try_quota(key, spec, n) {
            return d;
        }
        let record = match self.inner.persist.get() {
            Some(p) => match p.load_quota(key).await {
                Ok(r) => r,
                Err(e) => {
                    // Count from zero rather than refuse service; the next save overwrites.
                    tracing::warn!(error = %e, "quota: loading a persisted counter failed");
                    None
                }
            },
            None => None,
        };
        let now = Self::unix_ms();
        self.inner.quotas.with(
            key,
            now,
            || QuotaSlot::new(false),
            |s| {
                if !s.loaded {
                    s.roll(now, &spec.period);
                    match record {
                        Some(r) => s.merge(&r),
                        None => s.loaded = true,
                    }
                }
                quota_decision(s.take(now, spec, n), spec)
            },
        )
    }

    /// Gives back `n` calls of the quota counter `key` (the request did not meet the increment
    /// condition). With Redis the calls go back into this node's lease, or to Redis in the
    /// background.
    pub fn refund_quota(&self, key: &str, spec: &QuotaSpec, n: u64) {
        match &self.inner.redis {
            Some(redis) => lease::refund_quota(self, redis, key, spec, n),
            None => {
                let now = Self::unix_ms();
                let end = spec.period.end_ms(now);
                self.inner.quotas.get(key, |s| {
                    if let Some(s) = s.filter(|s| s.period_end == end) {
                        s.calls = s.calls.saturating_sub(n);
                        s.dirty = true;
                    }
                });
            }
        }
    }

    /// Adds transferred bytes to the quota counter `key` (after the response).
    pub fn add_quota_bytes(&self, key: &str, spec: &QuotaSpec, bytes: u64) {
        if bytes == 0 {
            return;
        }
        match &self.inner.redis {
            Some(redis) => {
                let end = spec.period.end_ms(Self::unix_ms());
                self.inner.bytes.add(lease::quota_key(redis, key, end), end, bytes);
            }
            None => {
                let now = Self::unix_ms();
                self.inner.quotas.get(key, |s| {
                    if let Some(s) = s {
                        s.roll(now, &spec.period);
                        s.bytes += bytes;
                        s.dirty = true;
                    }
                });
            }
        }
    }

    /// Writes dirty quota counters (in-process: through [`QuotaPersistence`]; Redis: pending
    /// byte counts). Runs every few seconds by itself; call it on shutdown too.
    pub async fn flush(&self) {
        if let Some(redis) = &self.inner.redis {
            self.inner.bytes.flush(redis).await;
            return;
        }
        let Some(persist) = self.inner.persist.get() else { return };
        let mut batch = Vec::new();
        self.inner.quotas.for_each(|k, s| {
            if s.dirty && s.loaded {
                s.dirty = false;
                batch.push((k.to_string(), s.record()));
            }
        });
        if batch.is_empty() {
            return;
        }
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        if let Err(e) = persist.save_quotas(batch).await {
            tracing::warn!(error = %e, "quota: saving counters failed; will retry");
            for k in keys {
                self.inner.quotas.get(&k, |s| {
                    if let Some(s) = s {
                        s.dirty = true;
                    }
                });
            }
        }
    }

    /// Starts the periodic flush the first time a quota is used inside a runtime.
    fn ensure_flusher(&self) {
        if self.inner.persist.get().is_none() && self.inner.redis.is_none() {
            return;
        }
        if self.inner.flusher.load(Ordering::Relaxed) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        if self.inner.flusher.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let every = if self.inner.redis.is_some() { lease::BYTES_EVERY } else { PERSIST_EVERY };
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Limits { inner }.flush().await;
            }
        });
    }

    // ---- concurrency -------------------------------------------------------------------

    /// A permit for one of `max` concurrent executions under `key` (per node), or `None`.
    pub fn acquire(&self, key: &str, max: u32) -> Option<Permit> {
        concurrency::acquire(&self.inner.concurrency, key, max)
    }
}

/// The engine as `PolicyEnv` holds it: set up by the first compile that sees the `cluster:`
/// section (or its absence), then kept for the life of the gateway, reloads included.
#[derive(Default)]
pub struct LimitsCell {
    limits: OnceLock<Limits>,
    cluster: parking_lot::Mutex<Option<ClusterConfig>>,
    persist: parking_lot::Mutex<Option<Arc<dyn QuotaPersistence>>>,
}

impl std::fmt::Debug for LimitsCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsCell").field("limits", &self.limits.get()).finish()
    }
}

impl LimitsCell {
    /// Where in-process quota counters are persisted (the store); call before the first compile.
    /// Also applies to an engine that already exists (the gateway opens its store after the
    /// first compile); counters first used before that count from zero.
    pub fn set_persistence(&self, p: Arc<dyn QuotaPersistence>) {
        *self.persist.lock() = Some(p.clone());
        if let Some(limits) = self.limits.get() {
            let _ = limits.inner.persist.set(p);
        }
    }

    /// Applies the `cluster:` section (`None` when absent); returns its problems as
    /// `(key, message)`. A change after the engine exists takes effect at the next start.
    pub fn configure(&self, cluster: Option<&ClusterConfig>) -> Vec<(&'static str, String)> {
        let problems = cluster.map(ClusterConfig::problems).unwrap_or_default();
        if !problems.is_empty() {
            return problems;
        }
        if self.limits.get().is_some() {
            if self.cluster.lock().as_ref() != cluster {
                tracing::warn!("changes to `cluster` take effect when the gateway restarts");
            }
            return Vec::new();
        }
        let redis = match cluster.map(|c| Redis::new(c.clone())).transpose() {
            Ok(r) => r,
            Err(msg) => return vec![("redis", msg)],
        };
        *self.cluster.lock() = cluster.cloned();
        let persist = self.persist.lock().clone();
        let _ = self.limits.set(Limits::new(redis, persist));
        Vec::new()
    }

    /// The engine (in-process when nothing configured it).
    pub fn get(&self) -> &Limits {
        self.limits.get_or_init(|| Limits::new(None, self.persist.lock().clone()))
    }
}

fn quota_decision(t: quota::QuotaTake, spec: &QuotaSpec) -> Decision {
    Decision {
        verdict: if t.granted { Verdict::Allowed } else { Verdict::Limited },
        limit: spec.calls.unwrap_or(0),
        remaining: t.remaining,
        reset_ms: t.reset_ms,
        retry_after_ms: if t.granted { 0 } else { t.reset_ms },
        ticket: Ticket::default(),
    }
}

#[cfg(test)]
mod tests;
