//! A Prometheus histogram made of atomics: recording is a bucket search over a short constant
//! array plus two relaxed `fetch_add`s, with no lock and no allocation.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds (the exposition prints seconds). From 100 µs,
/// where the edge and policy layers live, to 10 s, where slow backends time out.
pub const BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

const LE: [&str; 16] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];

/// A duration placed: its bucket and microseconds.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    bucket: usize,
    us: u64,
}

impl Sample {
    pub fn of(d: Duration) -> Sample {
        // `as_micros` in 64 bits (its `u128` costs more), saturating where it would not fit.
        let us = d.as_secs().saturating_mul(1_000_000).saturating_add(u64::from(d.subsec_micros()));
        Sample { bucket: BOUNDS_US.partition_point(|b| *b < us), us }
    }
}

#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf` only. Their sum is the
    /// count, so recording keeps no count of its own.
    buckets: [AtomicU64; 17],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.add(Sample::of(d));
    }

    /// Records a sample measured once for several histograms.
    pub fn add(&self, s: Sample) {
        self.buckets[s.bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(s.us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_bucket`, `_sum` and `_count` samples; `labels` is the already escaped label
    /// list without braces (may be empty).
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in LE.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[16].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        // The count is the +Inf bucket, so the two always agree in one scrape.
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render("x", "a=\"b\"", &mut out);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.00025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn durations_beyond_the_microsecond_range_land_in_the_last_bucket() {
        let h = Histogram::default();
        h.observe(Duration::MAX);
        h.observe(Duration::new(u64::MAX / 1_000_000, 999_999_999));
        h.observe(Duration::new(u64::MAX / 1_000_000 - 1, 0));
        assert_eq!(h.buckets[16].load(Ordering::Relaxed), 3);
        assert_eq!(h.count(), 3);
    }
}
