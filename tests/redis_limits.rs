//! The shared-counter engine against the real Redis at 127.0.0.1:6379 (these tests fail, not
//! skip, when it is missing). Each test writes under its own key prefix and deletes it after.
//! Outages are made with a TCP proxy owned by the test, never by touching the machine's Redis.

mod redis_support;

use std::time::{Duration, Instant};

use gatehouse::ratelimit::{
    Check, ClusterConfig, Decision, FailMode, Limits, Period, QuotaSpec, RateSpec, Redis, SyncMode, Verdict,
};
use redis_support::{cleanup, prefix, TcpCut, REDIS};

fn engine(url: &str, prefix: &str, f: impl FnOnce(&mut ClusterConfig)) -> Limits {
    let mut cfg = ClusterConfig::new(url);
    cfg.key_prefix = prefix.to_string();
    f(&mut cfg);
    Limits::new(Some(Redis::new(cfg).expect("redis config")), None)
}

async fn take(l: &Limits, key: &str, spec: RateSpec) -> Decision {
    match l.try_rate(key, spec, 1) {
        Check::Done(d) => d,
        Check::Pending => l.rate(key, spec, 1).await,
    }
}

/// Waits, if needed, so that a burst of a few seconds stays inside one fixed window of Redis'
/// clock (a burst across a boundary is judged by the sliding estimate, which the count-based
/// assertions below do not model).
async fn away_from_window_edge(period_ms: u64) {
    let mut c = redis_support::conn().await;
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(&mut c).await.expect("TIME");
    let now = s * 1000 + us / 1000;
    let left = period_ms - now % period_ms;
    if left < 8_000 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

#[tokio::test]
async fn exact_mode_admits_exactly_the_limit_across_three_nodes() {
    let p = prefix("exact");
    let nodes: Vec<Limits> = (0..3).map(|_| engine(REDIS, &p, |c| c.sync = SyncMode::Exact)).collect();
    let spec = RateSpec { limit: 20, period_ms: 60_000 };
    away_from_window_edge(spec.period_ms).await;
    let mut admitted = 0;
    for i in 0..60 {
        if take(&nodes[i % 3], "sub:1", spec).await.allowed() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 20);
    let trips: u64 = nodes.iter().map(|n| n.redis().expect("redis").round_trips()).sum();
    // One trip per admitted call, and a refused caller is remembered until its retry time.
    assert!(trips <= 23, "{trips} round trips for 60 requests");
    let refused = take(&nodes[0], "sub:1", spec).await;
    assert_eq!(refused.verdict, Verdict::Limited);
    assert!(refused.retry_after_ms > 0);
    cleanup(&p).await;
}

#[tokio::test]
async fn lease_mode_stays_within_the_bound_with_few_round_trips() {
    let p = prefix("lease");
    let nodes: Vec<Limits> = (0..3).map(|_| engine(REDIS, &p, |_| {})).collect();
    let spec = RateSpec { limit: 100, period_ms: 60_000 };
    away_from_window_edge(spec.period_ms).await;
    let mut admitted = 0u64;
    for i in 0..300 {
        if take(&nodes[i % 3], "k", spec).await.allowed() {
            admitted += 1;
        }
    }
    // Lease 5 (5 % of 100): never more than the limit, at most 3 × 4 stranded calls fewer.
    assert!((88..=100).contains(&admitted), "admitted {admitted}");
    let trips: u64 = nodes.iter().map(|n| n.redis().expect("redis").round_trips()).sum();
    println!("lease mode: admitted {admitted} of limit 100 over 3 nodes; {trips} Redis round trips for 300 requests");
    assert!(trips <= 40, "{trips} round trips");
    // Redis holds what was leased: the limit, no more.
    let mut c = redis_support::conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query_async(&mut c).await.expect("KEYS");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let leased: u64 = redis::cmd("GET").arg(&keys[0]).query_async(&mut c).await.expect("GET");
    assert_eq!(leased, 100);
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut c).await.expect("PTTL");
    assert!(ttl > 0 && ttl <= 121_000, "window keys expire: {ttl}");
    cleanup(&p).await;
}

#[tokio::test]
async fn refunds_return_calls_to_the_shared_budget() {
    let p = prefix("refund");
    let a = engine(REDIS, &p, |c| c.sync = SyncMode::Exact);
    let b = engine(REDIS, &p, |c| c.sync = SyncMode::Exact);
    let spec = RateSpec { limit: 2, period_ms: 60_000 };
    away_from_window_edge(spec.period_ms).await;
    let d1 = take(&a, "k", spec).await;
    assert!(d1.allowed() && take(&a, "k", spec).await.allowed());
    assert!(!take(&b, "k", spec).await.allowed());
    a.refund_rate("k", spec, 1, d1.ticket);
    // The refund goes out in the background; another node sees it after its retry time.
    let deadline = Instant::now() + Duration::from_secs(3);
    let c = engine(REDIS, &p, |c| c.sync = SyncMode::Exact);
    loop {
        if take(&c, "k", spec).await.allowed() {
            break;
        }
        assert!(Instant::now() < deadline, "refund never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cleanup(&p).await;
}

#[tokio::test]
async fn quotas_live_in_redis_until_the_period_ends() {
    let p = prefix("quota");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let spec =
        QuotaSpec { calls: Some(7), bytes: None, period: Period { first_start_ms: now - 1_000, length_ms: 3_600_000 } };
    let a = engine(REDIS, &p, |c| c.lease = Some(2));
    let b = engine(REDIS, &p, |c| c.lease = Some(2));
    let mut admitted = 0;
    for i in 0..20 {
        let l = if i % 2 == 0 { &a } else { &b };
        let d = match l.try_quota("sub:1", &spec, 1) {
            Check::Done(d) => d,
            Check::Pending => l.quota("sub:1", &spec, 1).await,
        };
        if d.allowed() {
            admitted += 1;
        } else {
            assert!(d.retry_after_ms > 3_500_000, "retry at the end of the period: {d:?}");
        }
    }
    assert!((5..=7).contains(&admitted), "admitted {admitted}");
    let mut c = redis_support::conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query_async(&mut c).await.expect("KEYS");
    assert_eq!(keys.len(), 1);
    let ttl: i64 = redis::cmd("PTTL").arg(&keys[0]).query_async(&mut c).await.expect("PTTL");
    assert!((3_590_000..=3_661_000).contains(&ttl), "expires with the period: {ttl}");
    // A restarted node (new engine) continues from Redis.
    let fresh = engine(REDIS, &p, |c| c.lease = Some(2));
    assert!(!fresh.quota("sub:1", &spec, 1).await.allowed());
    cleanup(&p).await;
}

#[tokio::test]
async fn bandwidth_is_pushed_to_redis_and_refuses_everywhere() {
    let p = prefix("bytes");
    let spec =
        QuotaSpec { calls: None, bytes: Some(10_000), period: Period { first_start_ms: 0, length_ms: 86_400_000 } };
    let a = engine(REDIS, &p, |c| c.lease = Some(1));
    let b = engine(REDIS, &p, |c| c.lease = Some(1));
    assert!(a.quota("k", &spec, 1).await.allowed());
    a.add_quota_bytes("k", &spec, 10_000);
    a.flush().await;
    assert!(!b.quota("k", &spec, 1).await.allowed(), "the other node sees the bytes");
    cleanup(&p).await;
}

async fn decide_within(l: &Limits, key: &str, spec: RateSpec, limit: Duration) -> Decision {
    let t = Instant::now();
    let d = take(l, key, spec).await;
    assert!(t.elapsed() < limit, "a decision took {:?}", t.elapsed());
    d
}

#[tokio::test]
async fn redis_outage_fails_open_or_closed_fast_and_recovers() {
    let p = prefix("outage");
    let proxy = TcpCut::start().await;
    let spec = RateSpec { limit: 1_000, period_ms: 60_000 };
    let open = engine(&proxy.url(), &p, |c| {
        c.sync = SyncMode::Exact;
        c.redis_timeout = gatehouse::config::units::Duration(Duration::from_millis(100));
    });
    let closed = engine(&proxy.url(), &p, |c| {
        c.sync = SyncMode::Exact;
        c.on_redis_failure = FailMode::Closed;
        c.redis_timeout = gatehouse::config::units::Duration(Duration::from_millis(100));
    });
    assert!(decide_within(&open, "k", spec, Duration::from_secs(2)).await.allowed());
    assert!(decide_within(&closed, "k", spec, Duration::from_secs(2)).await.allowed());

    // Redis disappears behind a black hole: connections are accepted and never answered.
    proxy.blackhole();
    for _ in 0..20 {
        let d = decide_within(&open, "k", spec, Duration::from_millis(400)).await;
        assert_eq!(d.verdict, Verdict::Allowed, "fail-open admits");
        let d = decide_within(&closed, "k", spec, Duration::from_millis(400)).await;
        assert_eq!(d.verdict, Verdict::Unavailable, "fail-closed refuses");
    }
    assert!(open.redis().expect("redis").is_down());

    // Redis returns: both recover by themselves within the breaker's back-off.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let d = decide_within(&closed, "k", spec, Duration::from_millis(400)).await;
        if d.verdict == Verdict::Allowed {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery after Redis returned");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!closed.redis().expect("redis").is_down());
    // And the counts are shared again: the closed node's calls are in Redis.
    let mut c = redis_support::conn().await;
    let keys: Vec<String> = redis::cmd("KEYS").arg(format!("{p}*")).query_async(&mut c).await.expect("KEYS");
    assert_eq!(keys.len(), 1);
    cleanup(&p).await;
}

#[tokio::test]
async fn unreachable_redis_at_start_does_not_hang() {
    // Nothing listens on the proxy's port once it is refused.
    let proxy = TcpCut::start().await;
    proxy.refuse();
    let l = engine(&proxy.url(), &prefix("refused"), |c| c.on_redis_failure = FailMode::Closed);
    let d = decide_within(&l, "k", RateSpec { limit: 5, period_ms: 1_000 }, Duration::from_millis(500)).await;
    assert_eq!(d.verdict, Verdict::Unavailable);
}
