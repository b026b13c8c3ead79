//! The cache behind the caching policies: `cache-lookup`/`cache-store` (HTTP responses) and
//! `cache-lookup-value`/`cache-store-value`/`cache-remove-value` (values). The policies build
//! keys and decide what may be stored ([`control`] holds the RFC 9111 rules); this room keeps
//! the bytes.
//!
//! Two places an entry can live: [`Memory`], a bounded in-process cache (total bytes from
//! `cache: { memory: 64MiB }`, kept in `PolicyEnv` so a reload keeps its entries), and Redis
//! when `cluster.redis` is configured, so every node shares the entries. A policy's
//! `caching_type` picks one ([`CachingType`]). Redis is reached through the rate limiter's
//! client (`ratelimit::Redis`): the same connection, `redis_timeout` and circuit breaker, so a
//! Redis failure costs at most one bounded wait and then fails fast; for the cache a failure
//! is a miss, never an error.

pub mod control;
pub mod entry;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Deserialize;

use crate::config::units::ByteSize;
use crate::ratelimit::Limits;

/// The default bound of the in-memory cache.
pub const DEFAULT_MEMORY: u64 = 64 << 20;

/// `cache: { memory: 64MiB }` (top level).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Total bytes the in-memory cache holds (keys, stored headers and bodies); 0 turns it off.
    #[serde(default = "default_memory")]
    pub memory: ByteSize,
}

fn default_memory() -> ByteSize {
    ByteSize(DEFAULT_MEMORY)
}

/// Where a policy's entries live (APIM `caching-type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CachingType {
    /// This node's memory only.
    Internal,
    /// Redis only (`cluster.redis` must be configured); a Redis failure is a miss.
    External,
    /// Redis when configured, else memory; while Redis fails, memory stands in.
    #[default]
    PreferExternal,
}

/// One stored blob and when it expires.
#[derive(Clone)]
struct Stored {
    data: Bytes,
    expires: Instant,
}

#[derive(Clone)]
struct Weigh;

/// Bookkeeping per entry on top of key and data (map slot, `Stored`, allocation headers).
const ENTRY_OVERHEAD: u64 = 96;

impl quick_cache::Weighter<String, Stored> for Weigh {
    fn weight(&self, key: &String, v: &Stored) -> u64 {
        key.len() as u64 + v.data.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The in-process cache: bounded by total bytes, least useful entries evicted first (CLOCK-Pro),
/// expired entries dropped when read.
pub struct Memory {
    map: quick_cache::sync::Cache<String, Stored, Weigh>,
    capacity: u64,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("capacity", &self.capacity).field("bytes", &self.map.weight()).finish()
    }
}

impl Memory {
    pub fn new(capacity: u64) -> Memory {
        // An estimate for the table's first size: entries of a few KiB.
        let items = usize::try_from(capacity / 4096).unwrap_or(usize::MAX).clamp(16, 1 << 20);
        Memory { map: quick_cache::sync::Cache::with_weighter(items, capacity.max(1), Weigh), capacity }
    }

    pub fn get(&self, key: &str) -> Option<Bytes> {
        let s = self.map.get(key)?;
        if s.expires <= Instant::now() {
            self.map.remove(key);
            return None;
        }
        Some(s.data)
    }

    /// Stores `data` for `ttl`; an entry larger than the whole cache is not stored.
    pub fn set(&self, key: String, data: Bytes, ttl: Duration) {
        if key.len() as u64 + data.len() as u64 + ENTRY_OVERHEAD > self.capacity {
            self.map.remove(&key);
            return;
        }
        self.map.insert(key, Stored { data, expires: Instant::now() + ttl });
    }

    pub fn remove(&self, key: &str) {
        self.map.remove(key);
    }

    /// Bytes held now (as weighed).
    pub fn weight(&self) -> u64 {
        self.map.weight()
    }
}

/// The in-memory cache as `PolicyEnv` holds it: sized by the first compile that sees the
/// `cache:` section (or its absence), made on first use, then kept for the life of the gateway.
#[derive(Default)]
pub struct CacheCell {
    memory: OnceLock<Arc<Memory>>,
    size: parking_lot::Mutex<Option<u64>>,
}

impl std::fmt::Debug for CacheCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCell").field("memory", &self.memory.get()).finish()
    }
}

impl CacheCell {
    /// Applies the `cache:` section (`None` when absent). A new size after the cache exists
    /// takes effect at the next start.
    pub fn configure(&self, cfg: Option<&CacheConfig>) {
        let bytes = cfg.map_or(DEFAULT_MEMORY, |c| c.memory.0);
        match self.memory.get() {
            Some(m) if m.capacity != bytes => {
                tracing::warn!("changes to `cache.memory` take effect when the gateway restarts")
            }
            Some(_) => {}
            None => *self.size.lock() = Some(bytes),
        }
    }

    /// The in-memory cache (made now if no policy used it yet).
    pub fn memory(&self) -> &Arc<Memory> {
        self.memory.get_or_init(|| Arc::new(Memory::new(self.size.lock().unwrap_or(DEFAULT_MEMORY))))
    }
}

/// Milliseconds since the Unix epoch: stored-at times are wall-clock so every node reads the
/// same `Age` from a shared entry.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// One policy's view of the storage: where its entries go. Cheap to clone (two `Arc`s).
#[derive(Clone)]
pub struct Store {
    memory: Arc<Memory>,
    /// The engine holding the Redis client, when `caching_type` may use Redis.
    limits: Option<Limits>,
    fallback: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("external", &self.is_external()).field("fallback", &self.fallback).finish()
    }
}

impl Store {
    /// `None` when `mode` is `external` and no Redis is configured (a config error).
    pub fn new(memory: &Arc<Memory>, limits: &Limits, mode: CachingType) -> Option<Store> {
        let redis = limits.redis().is_some().then(|| limits.clone());
        let limits = match mode {
            CachingType::Internal => None,
            CachingType::External => Some(redis?),
            CachingType::PreferExternal => redis,
        };
        Some(Store { memory: memory.clone(), limits, fallback: mode == CachingType::PreferExternal })
    }

    /// Whether entries go to Redis (so reads and writes wait).
    pub fn is_external(&self) -> bool {
        self.limits.is_some()
    }

    /// The entry at `key` without waiting, when the store is memory.
    pub fn get_now(&self, key: &str) -> Option<Bytes> {
        self.memory.get(key)
    }

    /// Removes the entry at `key` without waiting, when the store is memory.
    pub fn remove_now(&self, key: &str) {
        self.memory.remove(key)
    }

    pub async fn get(&self, key: &str) -> Option<Bytes> {
        let Some(redis) = self.limits.as_ref().and_then(Limits::redis) else {
            return self.memory.get(key);
        };
        let k = redis.key("cache", key);
        let got = redis
            .call(|mut c| async move { redis::cmd("GET").arg(&k).query_async::<Option<Vec<u8>>>(&mut c).await })
            .await;
        match got {
            Ok(v) => v.map(Bytes::from),
            Err(_) if self.fallback => self.memory.get(key),
            Err(_) => None,
        }
    }

    pub async fn set(&self, key: String, data: Bytes, ttl: Duration) {
        let Some(redis) = self.limits.as_ref().and_then(Limits::redis) else {
            return self.memory.set(key, data, ttl);
        };
        let k = redis.key("cache", &key);
        let px = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let value = data.clone();
        let done = redis
            .call(|mut c| async move {
                redis::cmd("SET").arg(&k).arg(value.as_ref()).arg("PX").arg(px).query_async::<()>(&mut c).await
            })
            .await;
        if done.is_err() && self.fallback {
            self.memory.set(key, data, ttl);
        }
    }

    /// [`Store::set`] without making the caller wait: memory at once, Redis in the background.
    pub fn set_soon(&self, key: String, data: Bytes, ttl: Duration) {
        if !self.is_external() {
            return self.memory.set(key, data, ttl);
        }
        let store = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(async move { store.set(key, data, ttl).await })),
            Err(_) => tracing::debug!("cache: no runtime to store an entry in"),
        }
    }

    pub async fn remove(&self, key: &str) {
        let Some(redis) = self.limits.as_ref().and_then(Limits::redis) else {
            return self.memory.remove(key);
        };
        let k = redis.key("cache", key);
        let _ = redis.call(|mut c| async move { redis::cmd("DEL").arg(&k).query_async::<()>(&mut c).await }).await;
        if self.fallback {
            // An entry written while Redis was failing must not outlive the removal.
            self.memory.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_expires_entries_and_stays_within_its_bound() {
        let m = Memory::new(64 << 10);
        m.set("a".into(), Bytes::from_static(b"one"), Duration::from_secs(60));
        m.set("gone".into(), Bytes::from_static(b"x"), Duration::ZERO);
        assert_eq!(m.get("a").as_deref(), Some(&b"one"[..]));
        assert_eq!(m.get("gone"), None);
        // Larger than the whole cache: not stored (and an older value under the key goes).
        m.set("a".into(), Bytes::from(vec![0u8; 70 << 10]), Duration::from_secs(60));
        assert_eq!(m.get("a"), None);
        for i in 0..200 {
            m.set(format!("k{i}"), Bytes::from(vec![1u8; 1024]), Duration::from_secs(60));
        }
        assert!(m.weight() <= 64 << 10, "{} bytes held", m.weight());
        assert!(m.get("k199").is_some());
    }

    #[test]
    fn stores_pick_memory_or_redis_by_caching_type() {
        let cell = CacheCell::default();
        cell.configure(Some(&CacheConfig { memory: ByteSize(1 << 20) }));
        let local = Limits::default();
        assert!(Store::new(cell.memory(), &local, CachingType::External).is_none());
        let s = Store::new(cell.memory(), &local, CachingType::PreferExternal).expect("memory");
        assert!(!s.is_external());
        assert_eq!(cell.memory().capacity, 1 << 20);
        let cfg = crate::ratelimit::ClusterConfig::new("redis://127.0.0.1:6379");
        let shared = Limits::new(Some(crate::ratelimit::Redis::new(cfg).expect("client")), None);
        assert!(Store::new(cell.memory(), &shared, CachingType::External).expect("redis").is_external());
        assert!(!Store::new(cell.memory(), &shared, CachingType::Internal).expect("memory").is_external());
    }
}
