//! The `cluster:` section and the Redis side of shared counters: the client with its short
//! timeout and circuit breaker, and the Lua scripts that make each decision atomic.
//!
//! Every Redis operation is bounded by `redis_timeout`. After a failure the client answers
//! "unavailable" at once (no request waits on a dead Redis) and lets one request probe again
//! after a back-off that doubles up to 2 s; the first success closes the breaker, so service
//! recovers by itself. The connection is dropped on every failure and made anew on the next
//! probe, so a half-open TCP connection (Redis behind a dead proxy) cannot outlive a failure.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisResult, Script};
use serde::Deserialize;

use crate::config::units;

/// `cluster: { redis: "redis://127.0.0.1:6379", on_redis_failure: open, … }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]` or `rediss://…` (TLS is not compiled in yet).
    pub redis: String,
    /// What a limit does while Redis cannot be reached: `open` admits, `closed` refuses (503).
    #[serde(default)]
    pub on_redis_failure: FailMode,
    /// Longest wait for one Redis operation (connect included).
    #[serde(default = "default_timeout")]
    pub redis_timeout: units::Duration,
    /// `lease` (default): nodes take slices of each budget; `exact`: one Redis call per request.
    #[serde(default)]
    pub sync: SyncMode,
    /// Calls per lease; default: 5 % of the limit, at least 1, at most 100.
    #[serde(default)]
    pub lease: Option<u32>,
    /// Prefix of every key the gateway writes, so several gateways can share one Redis.
    #[serde(default = "default_prefix")]
    pub key_prefix: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    #[default]
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    #[default]
    Lease,
    Exact,
}

fn default_timeout() -> units::Duration {
    units::Duration(Duration::from_millis(100))
}

fn default_prefix() -> String {
    "gatehouse:".into()
}

impl ClusterConfig {
    pub fn new(redis: impl Into<String>) -> Self {
        ClusterConfig {
            redis: redis.into(),
            on_redis_failure: FailMode::default(),
            redis_timeout: default_timeout(),
            sync: SyncMode::default(),
            lease: None,
            key_prefix: default_prefix(),
        }
    }

    /// Problems with the section, as `(key, message)` for the caller to locate (no I/O here).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match redis::Client::open(self.redis.as_str()) {
            Ok(c) if matches!(c.get_connection_info().addr(), redis::ConnectionAddr::TcpTls { .. }) => {
                out.push(("redis", "rediss:// (TLS) is not supported yet; use redis://".into()))
            }
            Ok(_) => {}
            // The URL may hold a password: say what is wrong without echoing it.
            Err(_) => out.push(("redis", "not a valid redis:// URL".into())),
        }
        let t = self.redis_timeout.0;
        if t.is_zero() || t > Duration::from_secs(5) {
            out.push(("redis_timeout", "must be more than 0 and at most 5s".into()));
        }
        if self.lease == Some(0) {
            out.push(("lease", "must be at least 1".into()));
        }
        out
    }

    /// Calls taken per lease for a budget of `limit`.
    pub fn lease_size(&self, limit: u64) -> u64 {
        match self.sync {
            SyncMode::Exact => 1,
            SyncMode::Lease => self.lease.map_or((limit / 20).clamp(1, 100), u64::from).min(limit.max(1)),
        }
    }
}

/// Redis is not answering (or the breaker is open); the policy applies `on_redis_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The shared-counter client.
pub struct Redis {
    pub(crate) config: ClusterConfig,
    client: redis::Client,
    conn: parking_lot::Mutex<Option<ConnectionManager>>,
    epoch: Instant,
    /// Milliseconds since `epoch` before which calls fail fast; 0 when healthy.
    blocked_until: AtomicU64,
    failures: AtomicU32,
    round_trips: AtomicU64,
    pub(crate) sliding: Script,
    pub(crate) refund: Script,
    pub(crate) quota: Script,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may carry a password.
        f.debug_struct("Redis").field("key_prefix", &self.config.key_prefix).finish_non_exhaustive()
    }
}

/// Sliding-window counter (see `local::Window`) with leases: grants up to `want` calls at once.
/// Redis' own clock decides the window, so nodes with skewed clocks still agree.
/// Returns {granted, available after, ms to window end, window index, prev, cur, elapsed}.
const SLIDING_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local idx = math.floor(now / period)
local elapsed = now - idx * period
local ck = KEYS[1] .. ':' .. string.format('%d', idx)
local cur = tonumber(redis.call('GET', ck) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. string.format('%d', idx - 1)) or '0')
local avail = limit - cur - math.ceil(prev * (period - elapsed) / period)
if avail < 0 then avail = 0 end
local grant = want
if grant > avail then grant = avail end
if grant > 0 then
  redis.call('INCRBY', ck, grant)
  redis.call('PEXPIRE', ck, 2 * period + 1000)
end
return {grant, avail - grant, period - elapsed, idx, prev, cur + grant, elapsed}
";

/// Gives back calls that did not meet an increment condition (never below zero).
const REFUND_LUA: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
local n = tonumber(ARGV[1])
if n > v then n = v end
if n > 0 then redis.call('DECRBY', KEYS[1], n) end
return n
";

/// Fixed-period quota in a hash {c = calls, b = bytes}; ARGV: calls limit (-1 none), bytes limit
/// (-1 none), want, expire-at unix ms (0 never). Returns {granted, calls left or -1}.
const QUOTA_LUA: &str = r"
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
local b = tonumber(redis.call('HGET', KEYS[1], 'b') or '0')
local cl = tonumber(ARGV[1])
local bl = tonumber(ARGV[2])
local grant = tonumber(ARGV[3])
if bl >= 0 and b >= bl then return {0, 0} end
if cl >= 0 then
  local left = cl - c
  if left < 0 then left = 0 end
  if grant > left then grant = left end
end
if grant > 0 then
  redis.call('HINCRBY', KEYS[1], 'c', grant)
  if tonumber(ARGV[4]) > 0 then redis.call('PEXPIREAT', KEYS[1], ARGV[4]) end
end
local rem = -1
if cl >= 0 then rem = cl - c - grant end
return {grant, rem}
";

impl Redis {
    /// Builds the client; no connection is made until the first call.
    pub fn new(config: ClusterConfig) -> Result<Self, String> {
        let client = redis::Client::open(config.redis.as_str()).map_err(|_| "not a valid redis:// URL".to_string())?;
        Ok(Redis {
            config,
            client,
            conn: parking_lot::Mutex::new(None),
            epoch: Instant::now(),
            blocked_until: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            round_trips: AtomicU64::new(0),
            sliding: Script::new(SLIDING_LUA),
            refund: Script::new(REFUND_LUA),
            quota: Script::new(QUOTA_LUA),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Redis operations attempted so far (for benchmarks and tests).
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// True while the breaker is open (Redis failed recently).
    pub fn is_down(&self) -> bool {
        self.blocked_until.load(Ordering::Relaxed) != 0
    }

    /// `key_prefix` + `{id}`: the braces make every key of one counter hash to one Redis
    /// Cluster slot, as the scripts need.
    pub fn key(&self, kind: &str, id: &str) -> String {
        let mut k = String::with_capacity(self.config.key_prefix.len() + kind.len() + id.len() + 3);
        k.push_str(&self.config.key_prefix);
        k.push_str(kind);
        k.push('{');
        k.push_str(id);
        k.push('}');
        k
    }

    fn connection(&self) -> RedisResult<ConnectionManager> {
        let mut slot = self.conn.lock();
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let t = self.config.redis_timeout.0;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let c = ConnectionManager::new_lazy_with_config(self.client.clone(), cfg)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs one operation within `redis_timeout`, through the circuit breaker.
    pub async fn call<T, F, Fut>(&self, op: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let timeout = self.config.redis_timeout.0;
        let until = self.blocked_until.load(Ordering::Acquire);
        if until != 0 {
            let now = self.now_ms();
            if now < until {
                return Err(Unavailable);
            }
            // One probe at a time: whoever moves the deadline probes, the others fail fast.
            let hold = now + timeout.as_millis() as u64 + 50;
            if self.blocked_until.compare_exchange(until, hold, Ordering::AcqRel, Ordering::Acquire).is_err() {
                return Err(Unavailable);
            }
        }
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let result = match self.connection() {
            Ok(conn) => tokio::time::timeout(timeout, op(conn)).await.map_err(|_| "timed out".to_string()),
            Err(e) => Err(format!("{:?}", e.kind())),
        };
        match result {
            Ok(Ok(v)) => {
                if self.failures.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!("cluster: redis is reachable again; shared counters resume");
                }
                self.blocked_until.store(0, Ordering::Release);
                Ok(v)
            }
            Ok(Err(e)) => Err(self.failed(&format!("{:?}", e.kind()))),
            Err(why) => Err(self.failed(&why)),
        }
    }

    fn failed(&self, why: &str) -> Unavailable {
        *self.conn.lock() = None;
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let backoff = (50u64 << n.min(6)).min(2_000);
        self.blocked_until.store(self.now_ms() + backoff, Ordering::Release);
        if n == 1 {
            tracing::warn!(reason = why, "cluster: redis unreachable; limits follow on_redis_failure until it returns");
        }
        Unavailable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_size_scales_with_the_limit() {
        let mut c = ClusterConfig::new("redis://127.0.0.1:6379");
        assert_eq!(c.lease_size(100), 5);
        assert_eq!(c.lease_size(10), 1);
        assert_eq!(c.lease_size(1_000_000), 100);
        c.lease = Some(50);
        assert_eq!(c.lease_size(10), 10, "never more than the whole budget");
        c.sync = SyncMode::Exact;
        assert_eq!(c.lease_size(100), 1);
    }

    #[test]
    fn problems_never_echo_the_password() {
        let mut c = ClusterConfig::new("http://user:s3cret@host");
        c.redis_timeout = units::Duration(Duration::ZERO);
        c.lease = Some(0);
        let p = c.problems();
        assert_eq!(p.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["redis", "redis_timeout", "lease"]);
        assert!(p.iter().all(|(_, m)| !m.contains("s3cret")));
        assert!(ClusterConfig::new("redis://127.0.0.1:6379/2").problems().is_empty());
    }
}
