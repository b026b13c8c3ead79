//! In-process engine tests (the Redis engine is tested against a real Redis in
//! `tests/redis_limits.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::*;

#[test]
fn in_process_rate_limit_admits_the_limit_then_says_when_to_retry() {
    let l = Limits::default();
    let spec = RateSpec { limit: 3, period_ms: 60_000 };
    for i in 0..3 {
        let Check::Done(d) = l.try_rate("sub:a", spec, 1) else { panic!("in-process never pends") };
        assert!(d.allowed(), "call {i}");
        assert_eq!(d.remaining, 2 - i);
    }
    let Check::Done(d) = l.try_rate("sub:a", spec, 1) else { panic!() };
    assert_eq!(d.verdict, Verdict::Limited);
    assert!(d.retry_after_ms > 0 && d.retry_after_ms <= 120_000, "{d:?}");
    // Other keys are independent.
    let Check::Done(d) = l.try_rate("sub:b", spec, 1) else { panic!() };
    assert!(d.allowed());
}

#[test]
fn refunded_calls_can_be_used_again() {
    let l = Limits::default();
    let spec = RateSpec { limit: 1, period_ms: 60_000 };
    let Check::Done(d) = l.try_rate("k", spec, 1) else { panic!() };
    assert!(d.allowed());
    l.refund_rate("k", spec, 1, d.ticket);
    let Check::Done(d) = l.try_rate("k", spec, 1) else { panic!() };
    assert!(d.allowed(), "the refunded call is available");
    let Check::Done(d) = l.try_rate("k", spec, 1) else { panic!() };
    assert!(!d.allowed());
}

#[test]
fn counters_are_shared_by_clones_of_the_engine() {
    // A reload builds new policies with a clone of the same engine: the count goes on.
    let l = Limits::default();
    let spec = RateSpec { limit: 2, period_ms: 60_000 };
    let reloaded = l.clone();
    assert!(matches!(l.try_rate("k", spec, 2), Check::Done(d) if d.allowed()));
    assert!(matches!(reloaded.try_rate("k", spec, 1), Check::Done(d) if !d.allowed()));
}

#[derive(Default)]
struct MemoryStore(Mutex<HashMap<String, QuotaRecord>>);

impl QuotaPersistence for MemoryStore {
    fn load_quota<'a>(&'a self, key: &'a str) -> PersistFuture<'a, Option<QuotaRecord>> {
        Box::pin(async move { Ok(self.0.lock().get(key).copied()) })
    }
    fn save_quotas(&self, batch: Vec<(String, QuotaRecord)>) -> PersistFuture<'_, ()> {
        Box::pin(async move {
            self.0.lock().extend(batch);
            Ok(())
        })
    }
}

fn month_quota(calls: u64) -> QuotaSpec {
    QuotaSpec { calls: Some(calls), bytes: None, period: Period { first_start_ms: 0, length_ms: 30 * 86_400_000 } }
}

#[tokio::test]
async fn quota_survives_a_restart_through_persistence() {
    let store = Arc::new(MemoryStore::default());
    let spec = month_quota(5);
    let first = Limits::new(None, Some(store.clone()));
    assert_eq!(first.try_quota("sub:a", &spec, 1), Check::Pending, "first use loads from the store");
    for i in 0..3 {
        let d = first.quota("sub:a", &spec, 1).await;
        assert!(d.allowed());
        assert_eq!(d.remaining, 4 - i);
    }
    first.flush().await;
    drop(first);

    let second = Limits::new(None, Some(store.clone()));
    assert_eq!(second.quota("sub:a", &spec, 1).await.remaining, 1, "3 calls before the restart count");
    assert!(second.quota("sub:a", &spec, 1).await.allowed());
    let d = second.quota("sub:a", &spec, 1).await;
    assert_eq!(d.verdict, Verdict::Limited);
    assert!(d.retry_after_ms > 0, "retry when the period ends");
    second.flush().await;
    assert_eq!(store.0.lock().get("sub:a").map(|r| r.calls), Some(5));
}

#[tokio::test]
async fn bandwidth_quota_refuses_once_the_bytes_are_used() {
    let spec = QuotaSpec { calls: None, bytes: Some(1_000), period: month_quota(1).period };
    let l = Limits::default();
    assert!(l.quota("k", &spec, 1).await.allowed());
    l.add_quota_bytes("k", &spec, 999);
    assert!(l.quota("k", &spec, 1).await.allowed());
    l.add_quota_bytes("k", &spec, 1);
    assert!(!l.quota("k", &spec, 1).await.allowed());
}

#[test]
fn concurrency_permits() {
    let l = Limits::default();
    let p = l.acquire("backend", 1).expect("first");
    assert!(l.acquire("backend", 1).is_none());
    drop(p);
    assert!(l.acquire("backend", 1).is_some());
}
