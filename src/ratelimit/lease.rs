//! Cluster mode: counters in Redis, leased to nodes in slices.
//!
//! A node asks Redis (one atomic script) for up to `lease` calls of a budget at once and spends
//! them locally until they run out or their window ends; only then does a request wait for
//! Redis. Granted calls are counted in Redis when they are leased, so the cluster never admits
//! more than the limit; the price is that calls leased by a node that then sees no more
//! traffic go unused: at most `nodes × (lease − 1)` fewer admissions per window (the bound in
//! `docs/rate-limits.md`). A refusal is remembered until its retry time, so a client hammering
//! an exhausted limit costs no round trips either. `sync: exact` is the same with a lease of one.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::local::{retry_ms, Expiring};
use super::{Check, Decision, Limits, QuotaSpec, RateSpec, Redis, Ticket, Verdict};

/// How often byte counts for bandwidth quotas are pushed to Redis.
pub(crate) const BYTES_EVERY: Duration = Duration::from_secs(1);
/// How long a refusal from Redis is reused before asking again: long enough that a client
/// hammering an exhausted limit costs about one round trip per second per node, short enough
/// that refunds and new periods are seen soon.
const DENIAL_MEMORY: u64 = 1_000;

pub(crate) struct LeaseSlot {
    tokens: u64,
    /// Monotonic ms: the lease (and the window it belongs to) ends here.
    valid_until: u64,
    generation: u64,
    /// Monotonic ms: refused without asking Redis until then (at most [`DENIAL_MEMORY`]).
    denied_until: u64,
    /// Monotonic ms: when the last refusal said a retry can succeed.
    retry_at: u64,
    /// Redis' count of calls left after the last grant.
    remaining: u64,
    window: u64,
    refill: Arc<tokio::sync::Mutex<()>>,
}

impl LeaseSlot {
    fn new() -> Self {
        LeaseSlot {
            tokens: 0,
            valid_until: 0,
            generation: 0,
            denied_until: 0,
            retry_at: 0,
            remaining: 0,
            window: 0,
            refill: Arc::new(tokio::sync::Mutex::new(())),
        }
    }
}

impl Expiring for LeaseSlot {
    fn expired(&self, now_ms: u64) -> bool {
        now_ms >= self.valid_until && now_ms >= self.denied_until && Arc::strong_count(&self.refill) == 1
    }
}

fn map(l: &Limits, quota: bool) -> &super::ShardedMap<LeaseSlot> {
    if quota {
        &l.inner.quota_leases
    } else {
        &l.inner.leases
    }
}

/// Spends from this node's lease, or says a round trip is needed.
pub(crate) fn try_take(l: &Limits, key: &str, limit: u64, n: u64, quota: bool) -> Check {
    let now = l.mono_ms();
    map(l, quota).get(key, |s| match s {
        Some(s) if now < s.denied_until => Check::Done(Decision {
            verdict: Verdict::Limited,
            limit,
            remaining: 0,
            reset_ms: s.valid_until.saturating_sub(now),
            retry_after_ms: s.retry_at.saturating_sub(now).max(1),
            ticket: Ticket { generation: s.generation, window: s.window },
        }),
        Some(s) if now < s.valid_until && s.tokens >= n => {
            s.tokens -= n;
            Check::Done(Decision {
                verdict: Verdict::Allowed,
                limit,
                remaining: s.tokens + s.remaining,
                reset_ms: s.valid_until - now,
                retry_after_ms: 0,
                ticket: Ticket { generation: s.generation, window: s.window },
            })
        }
        _ => Check::Pending,
    })
}

fn rate_key(redis: &Redis, key: &str, period_ms: u64) -> String {
    let mut k = redis.key("rl:", key);
    k.push(':');
    k.push_str(&period_ms.to_string());
    k
}

/// Takes `n` calls of a rate limit, refilling the lease from Redis when needed.
pub(crate) async fn take_rate(l: &Limits, redis: &Redis, key: &str, spec: RateSpec, n: u64) -> Decision {
    let lock = l.inner.leases.with(key, l.mono_ms(), LeaseSlot::new, |s| s.refill.clone());
    let _one_refill_at_a_time = lock.lock().await;
    if let Check::Done(d) = try_take(l, key, spec.limit, n, false) {
        return d;
    }
    let period = spec.period_ms.max(1);
    let want = n.max(redis.config.lease_size(spec.limit));
    let rkey = rate_key(redis, key, period);
    let sent = l.mono_ms();
    let reply: Result<Vec<i64>, _> = redis
        .call(|mut c| {
            let rkey = &rkey;
            async move { redis.sliding.key(rkey).arg(spec.limit).arg(period).arg(want).invoke_async(&mut c).await }
        })
        .await;
    let Ok(v) = reply else {
        return Decision::unavailable(redis.config.on_redis_failure);
    };
    let [grant, left, to_end, idx, prev, cur, elapsed] =
        std::array::from_fn(|i| v.get(i).map_or(0, |&x| x.max(0) as u64));
    l.inner.leases.with(key, sent, LeaseSlot::new, |s| {
        let carried = if sent < s.valid_until && s.window == idx { s.tokens } else { 0 };
        s.generation += 1;
        s.window = idx;
        s.valid_until = sent + to_end;
        s.remaining = left;
        let ticket = Ticket { generation: s.generation, window: idx };
        let have = carried + grant;
        if have >= n {
            s.tokens = have - n;
            s.denied_until = 0;
            Decision {
                verdict: Verdict::Allowed,
                limit: spec.limit,
                remaining: s.tokens + left,
                reset_ms: to_end,
                retry_after_ms: 0,
                ticket,
            }
        } else {
            s.tokens = have;
            let retry = retry_ms(prev, cur, elapsed, period, spec.limit, n);
            s.retry_at = sent + retry;
            s.denied_until = sent + retry.min(DENIAL_MEMORY);
            Decision {
                verdict: Verdict::Limited,
                limit: spec.limit,
                remaining: 0,
                reset_ms: to_end,
                retry_after_ms: retry,
                ticket,
            }
        }
    })
}

/// Gives back calls: into the lease they came from when it is still current, else to Redis.
pub(crate) fn refund(l: &Limits, key: &str, spec: RateSpec, n: u64, ticket: Ticket) {
    let Some(redis) = l.redis() else { return };
    let now = l.mono_ms();
    let local = l.inner.leases.get(key, |s| match s {
        Some(s) if s.generation == ticket.generation && now < s.valid_until => {
            s.tokens += n;
            true
        }
        _ => false,
    });
    if local || ticket.generation == 0 {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let mut rkey = rate_key(redis, key, spec.period_ms.max(1));
    rkey.push(':');
    rkey.push_str(&ticket.window.to_string());
    let l = l.clone();
    rt.spawn(async move {
        if let Some(redis) = l.redis() {
            let _ = redis
                .call(|mut c| {
                    let rkey = &rkey;
                    async move { redis.refund.key(rkey).arg(n).invoke_async::<i64>(&mut c).await }
                })
                .await;
        }
    });
}

/// The Redis key of a quota counter for the period ending at `end` (unix ms).
pub(crate) fn quota_key(redis: &Redis, key: &str, end: Option<u64>) -> String {
    let mut k = redis.key("q:", key);
    k.push(':');
    k.push_str(&end.map_or_else(|| "forever".to_string(), |e| e.to_string()));
    k
}

/// Takes `n` calls of a quota, refilling the lease from Redis when needed.
pub(crate) async fn take_quota(l: &Limits, redis: &Redis, key: &str, spec: &QuotaSpec, n: u64) -> Decision {
    let limit = spec.calls.unwrap_or(0);
    let lock = l.inner.quota_leases.with(key, l.mono_ms(), LeaseSlot::new, |s| s.refill.clone());
    let _one_refill_at_a_time = lock.lock().await;
    if let Check::Done(d) = try_take(l, key, limit, n, true) {
        return d;
    }
    let unix = Limits::unix_ms();
    let end = spec.period.end_ms(unix);
    let to_end = end.map_or(u64::MAX / 4, |e| e.saturating_sub(unix));
    let want = n.max(redis.config.lease_size(spec.calls.unwrap_or(u64::MAX)));
    let qkey = quota_key(redis, key, end);
    let (cl, bl) = (spec.calls.map_or(-1, clamp_i64), spec.bytes.map_or(-1, clamp_i64));
    // Kept a minute past the period so a node with a slow clock still finds it.
    let expire_at = end.map_or(0, |e| e + 60_000);
    let sent = l.mono_ms();
    let reply: Result<Vec<i64>, _> = redis
        .call(|mut c| {
            let qkey = &qkey;
            async move { redis.quota.key(qkey).arg(cl).arg(bl).arg(want).arg(expire_at).invoke_async(&mut c).await }
        })
        .await;
    let Ok(v) = reply else {
        return Decision::unavailable(redis.config.on_redis_failure);
    };
    let grant = v.first().map_or(0, |&x| x.max(0) as u64);
    let left = v.get(1).map_or(u64::MAX, |&x| if x < 0 { u64::MAX } else { x as u64 });
    let reset_ms = if end.is_some() { to_end } else { 0 };
    l.inner.quota_leases.with(key, sent, LeaseSlot::new, |s| {
        s.generation += 1;
        s.valid_until = sent.saturating_add(to_end);
        s.remaining = if spec.calls.is_some() { left } else { 0 };
        let ticket = Ticket { generation: s.generation, window: 0 };
        if grant >= n {
            s.tokens = grant - n;
            s.denied_until = 0;
            Decision {
                verdict: Verdict::Allowed,
                limit,
                remaining: s.tokens + s.remaining,
                reset_ms,
                retry_after_ms: 0,
                ticket,
            }
        } else {
            s.tokens = grant;
            // Nothing frees a quota before its period ends, except a change of config.
            s.retry_at = sent.saturating_add(to_end);
            s.denied_until = sent + to_end.min(DENIAL_MEMORY);
            let retry_after_ms = if end.is_some() { to_end } else { 0 };
            Decision { verdict: Verdict::Limited, limit, remaining: 0, reset_ms, retry_after_ms, ticket }
        }
    })
}

/// Gives back quota calls: into this node's lease when it is still current, else to Redis.
pub(crate) fn refund_quota(l: &Limits, redis: &Redis, key: &str, spec: &QuotaSpec, n: u64) {
    let now = l.mono_ms();
    let local = l.inner.quota_leases.get(key, |s| match s {
        Some(s) if now < s.valid_until => {
            s.tokens += n;
            true
        }
        _ => false,
    });
    if local {
        return;
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    let qkey = quota_key(redis, key, spec.period.end_ms(Limits::unix_ms()));
    let l = l.clone();
    rt.spawn(async move {
        if let Some(redis) = l.redis() {
            let qkey = &qkey;
            let _ = redis
                .call(|mut c| async move {
                    redis::cmd("HINCRBY").arg(qkey).arg("c").arg(-clamp_i64(n)).query_async::<i64>(&mut c).await
                })
                .await;
        }
    });
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Byte counts for bandwidth quotas, summed locally and pushed every [`BYTES_EVERY`].
#[derive(Default)]
pub(crate) struct PendingBytes {
    pending: parking_lot::Mutex<HashMap<String, (u64, Option<u64>)>>,
}

impl PendingBytes {
    pub fn add(&self, key: String, end: Option<u64>, bytes: u64) {
        let mut p = self.pending.lock();
        let e = p.entry(key).or_insert((0, end));
        e.0 += bytes;
    }

    pub async fn flush(&self, redis: &Redis) {
        let batch = std::mem::take(&mut *self.pending.lock());
        if batch.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (key, (bytes, end)) in &batch {
            pipe.hincr(key, "b", *bytes).ignore();
            if let Some(end) = end {
                pipe.pexpire_at(key, clamp_i64(end + 60_000)).ignore();
            }
        }
        let pipe = &pipe;
        let sent = redis.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
        if sent.is_err() {
            // Keep the counts for the next flush rather than lose them.
            let mut p = self.pending.lock();
            for (key, (bytes, end)) in batch {
                p.entry(key).or_insert((0, end)).0 += bytes;
            }
        }
    }
}
