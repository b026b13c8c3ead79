//! The last five minutes, second by second, for the dashboard: requests, failures by layer and a
//! coarse latency histogram per second, in a ring of atomics (no lock on the request path). Top
//! APIs and subscriptions come from the analytics (`observe::analytics`).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::metrics::{layer_index, RequestFacts};

/// Seconds kept.
pub const WINDOW: usize = 300;
/// Latency buckets: bucket `i` holds durations below `50 µs × 2^(i/2)`; the last one the rest.
const BUCKETS: usize = 32;

#[derive(Default)]
struct Slot {
    second: AtomicU64,
    requests: AtomicU64,
    /// Failures by layer index (see `metrics::LAYERS`; index 0, "none", is unused).
    failed: [AtomicU64; 5],
    latency: [AtomicU32; BUCKETS],
}

fn bound_us(i: usize) -> f64 {
    50.0 * 2f64.powf(i as f64 / 2.0)
}

/// Upper bounds of the buckets in nanoseconds, computed once: `bucket` runs on every request.
static BOUNDS_NS: std::sync::LazyLock<[u64; BUCKETS - 1]> =
    std::sync::LazyLock::new(|| std::array::from_fn(|i| (bound_us(i) * 1e3) as u64));

fn bucket(d: Duration) -> usize {
    // `as_nanos` in 64 bits (its `u128` costs more), saturating where it would not fit.
    let ns = d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()));
    BOUNDS_NS.partition_point(|b| *b <= ns)
}

pub struct Recent {
    slots: Box<[Slot]>,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recent")
    }
}

impl Default for Recent {
    fn default() -> Self {
        Recent { slots: (0..WINDOW).map(|_| Slot::default()).collect() }
    }
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One second of the dashboard's series.
#[derive(Debug, serde::Serialize)]
pub struct Second {
    pub t: u64,
    pub requests: u64,
    pub edge: u64,
    pub policy: u64,
    pub backend: u64,
    pub gateway: u64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl Recent {
    pub fn record(&self, f: &RequestFacts) {
        self.record_in_second(now_s(), f);
    }

    /// [`Recent::record`] for a request that ended in second `now` (Unix seconds): the
    /// caller's clock reading, shared with the analytics.
    pub fn record_in_second(&self, now: u64, f: &RequestFacts) {
        let slot = &self.slots[(now % WINDOW as u64) as usize];
        let seen = slot.second.load(Ordering::Relaxed);
        if seen != now && slot.second.compare_exchange(seen, now, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            // This thread moved the slot to a new second: clear what the old one counted. A
            // request of the same second racing this may be lost; the dashboard can bear it.
            slot.requests.store(0, Ordering::Relaxed);
            slot.failed.iter().for_each(|c| c.store(0, Ordering::Relaxed));
            slot.latency.iter().for_each(|c| c.store(0, Ordering::Relaxed));
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        let layer = layer_index(f.layer);
        if layer != 0 {
            slot.failed[layer].fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket(f.duration)].fetch_add(1, Ordering::Relaxed);
    }

    /// The last `WINDOW` seconds, oldest first (seconds without traffic are zeros).
    pub fn series(&self) -> Vec<Second> {
        let now = now_s();
        (0..WINDOW as u64)
            .rev()
            .map(|ago| {
                let t = now.saturating_sub(ago);
                let slot = &self.slots[(t % WINDOW as u64) as usize];
                if slot.second.load(Ordering::Relaxed) != t {
                    return Second {
                        t,
                        requests: 0,
                        edge: 0,
                        policy: 0,
                        backend: 0,
                        gateway: 0,
                        p50_ms: None,
                        p95_ms: None,
                        p99_ms: None,
                    };
                }
                let hist: Vec<u32> = slot.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                let f = |i: usize| slot.failed[i].load(Ordering::Relaxed);
                Second {
                    t,
                    requests: slot.requests.load(Ordering::Relaxed),
                    edge: f(1),
                    policy: f(2),
                    backend: f(3),
                    gateway: f(4),
                    p50_ms: quantile(&hist, 0.5),
                    p95_ms: quantile(&hist, 0.95),
                    p99_ms: quantile(&hist, 0.99),
                }
            })
            .collect()
    }
}

/// The upper bound (ms) of the bucket holding quantile `q`.
fn quantile(hist: &[u32], q: f64) -> Option<f64> {
    let total: u64 = hist.iter().map(|&n| u64::from(n)).sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, &n) in hist.iter().enumerate() {
        seen += u64::from(n);
        if seen >= rank {
            return Some(bound_us(i) / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets_double_every_two() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(49)), 0);
        assert_eq!(bucket(Duration::from_micros(50)), 1);
        assert_eq!(bucket(Duration::from_micros(71)), 2); // 50·√2 ≈ 70.7
        assert_eq!(bucket(Duration::from_micros(100)), 3);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        assert_eq!(bucket(Duration::MAX), BUCKETS - 1);
    }

    #[test]
    fn the_current_second_counts_failures_and_latency() {
        let r = Recent::default();
        let mut f = RequestFacts { duration: Duration::from_millis(3), ..RequestFacts::default() };
        for _ in 0..99 {
            r.record(&f);
        }
        f.layer = Some(crate::respond::Layer::Backend);
        f.duration = Duration::from_millis(900);
        r.record(&f);
        let s = r.series();
        assert_eq!(s.len(), WINDOW);
        // The 100 requests may straddle a second boundary.
        assert_eq!(s.iter().map(|s| s.requests).sum::<u64>(), 100);
        assert_eq!(s.iter().map(|s| s.backend).sum::<u64>(), 1);
        let busiest = s.iter().max_by_key(|s| s.requests).expect("a second with traffic");
        let p50 = busiest.p50_ms.expect("p50");
        assert!((3.0..4.5).contains(&p50), "{p50}");
    }
}
