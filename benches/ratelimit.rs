//! Micro-benchmarks of the rate-limit engine's per-request decision.
//!
//! - `ratelimit/local_hot_key`: one in-process sliding-window check on a key that is used by
//!   every iteration (the common case: one subscription hammering one limit). Target: < 1 µs.
//! - `ratelimit/local_10k_keys`: the same spread over 10,000 keys (cache misses, shard spread).
//! - `ratelimit/local_refused`: a check on an exhausted limit (the cost of a 429 decision).
//! - `ratelimit/lease_hit`: cluster mode when this node still holds leased calls: the check
//!   that replaces a Redis round trip (needs the real Redis at 127.0.0.1:6379 for the first
//!   lease; the loop itself does no I/O).
//! - `ratelimit/concurrency`: acquiring and dropping a `limit-concurrency` permit.
//!
//! Run with `cargo bench --bench ratelimit`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gatehouse::ratelimit::{Check, ClusterConfig, Limits, RateSpec, Redis};

fn local(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit");
    let l = Limits::default();
    let spec = RateSpec { limit: u64::MAX / 4, period_ms: 60_000 };
    g.bench_function("local_hot_key", |b| {
        b.iter(|| black_box(l.try_rate(black_box("rlk|api:orders|sub-0001"), spec, 1)))
    });
    let keys: Vec<String> = (0..10_000).map(|i| format!("rlk|api:orders|sub-{i:05}")).collect();
    let mut i = 0;
    g.bench_function("local_10k_keys", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(l.try_rate(&keys[i], spec, 1))
        })
    });
    let tight = RateSpec { limit: 1, period_ms: 3_600_000 };
    let _ = l.try_rate("exhausted", tight, 1);
    g.bench_function("local_refused", |b| b.iter(|| black_box(l.try_rate(black_box("exhausted"), tight, 1))));
    g.bench_function("concurrency", |b| b.iter(|| black_box(l.acquire(black_box("backend:orders"), 100))));
    g.finish();
}

fn lease(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut cfg = ClusterConfig::new("redis://127.0.0.1:6379");
    cfg.key_prefix = format!("gatehouse-bench:{}:", std::process::id());
    cfg.lease = Some(u32::MAX);
    let l = Limits::new(Some(Redis::new(cfg).expect("redis")), None);
    let spec = RateSpec { limit: u64::MAX / 4, period_ms: 3_600_000 };
    let first = rt.block_on(l.rate("bench", spec, 1));
    assert!(first.allowed(), "the real Redis at 127.0.0.1:6379 is needed for the lease benchmark");
    let mut g = c.benchmark_group("ratelimit");
    g.bench_function("lease_hit", |b| {
        b.iter(|| {
            let Check::Done(d) = l.try_rate(black_box("bench"), spec, 1) else { panic!("lease ran out") };
            black_box(d)
        })
    });
    g.finish();
    rt.block_on(async {
        let client = redis::Client::open("redis://127.0.0.1:6379").expect("url");
        let mut c = client.get_multiplexed_async_connection().await.expect("redis");
        let keys: Vec<String> = redis::cmd("KEYS").arg("gatehouse-bench:*").query_async(&mut c).await.expect("KEYS");
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(keys).query_async(&mut c).await.expect("DEL");
        }
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = local, lease
}
criterion_main!(benches);
