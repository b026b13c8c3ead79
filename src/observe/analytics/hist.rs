//! The latency histogram of an aggregate: fixed logarithmic buckets, four per doubling, from
//! 1 µs to about an hour, so histograms of different minutes and nodes add bucket by bucket and
//! a percentile of the sum is as good as one of any part (within the bucket width, ±9 % around
//! the reported middle). Kept sparse — most aggregates see a handful of buckets — as a short
//! list of (bucket, count), and stored as text `bucket:count,…`.

use std::fmt::Write;
use std::time::Duration;

/// Buckets: `i` holds durations in (2^((i-1)/4), 2^(i/4)] µs; 0 holds ≤ 1 µs; the last, the rest.
pub const BUCKETS: u8 = 128;

/// The bucket of a duration: how many of [`THRESHOLDS_NS`] it reaches (a `log2` per request
/// cost ~80 instructions), with exactly the result of [`bucket_by_log`]. The count starts from
/// the thresholds below the duration's power of two ([`BELOW_POW2`]), so only the few of its
/// doubling are compared.
pub fn bucket(d: Duration) -> u8 {
    // `as_nanos` in 64 bits (its `u128` costs more), saturating where it would not fit.
    let ns = d.as_secs().saturating_mul(1_000_000_000).saturating_add(u64::from(d.subsec_nanos()));
    let mut i = match ns.checked_ilog2() {
        Some(k) => usize::from(BELOW_POW2[k as usize]),
        None => 0,
    };
    let thresholds = &*THRESHOLDS_NS;
    while thresholds.get(i).is_some_and(|t| *t <= ns) {
        i += 1;
    }
    // At most 127 thresholds, so the count fits.
    i as u8
}

/// `BELOW_POW2[k]`: how many thresholds lie below `2^k` nanoseconds.
static BELOW_POW2: std::sync::LazyLock<[u8; 64]> = std::sync::LazyLock::new(|| {
    // At most 127 thresholds, so the count fits.
    std::array::from_fn(|k| THRESHOLDS_NS.partition_point(|t| *t < 1u64 << k) as u8)
});

/// `THRESHOLDS_NS[i]`: the shortest duration, in nanoseconds, whose bucket is above `i`;
/// found once by bisecting [`bucket_by_log`], which grows with the duration.
static THRESHOLDS_NS: std::sync::LazyLock<[u64; BUCKETS as usize - 1]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| {
        let above = |ns: u64| usize::from(bucket_by_log(Duration::from_nanos(ns))) > i;
        let (mut lo, mut hi) = (0u64, u64::MAX);
        // `above(hi)` holds (the last bucket takes everything from about an hour); find the
        // first such `ns`.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if above(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    })
});

/// The definition of the buckets: four per doubling of the microseconds, bounds inclusive.
fn bucket_by_log(d: Duration) -> u8 {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    // Four buckets per doubling; `ceil` keeps the bounds inclusive.
    let i = (us.log2() * 4.0).ceil();
    if i >= f64::from(BUCKETS - 1) {
        BUCKETS - 1
    } else {
        i as u8
    }
}

/// The middle (geometric) of bucket `i`, in milliseconds: what a percentile falling in it reports.
pub fn middle_ms(i: u8) -> f64 {
    if i == 0 {
        return 0.001;
    }
    2f64.powf((f64::from(i) - 0.5) / 4.0) / 1000.0
}

/// A sparse histogram: (bucket, count) pairs, unordered while recording.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hist(Vec<(u8, u64)>);

impl Hist {
    pub fn observe(&mut self, d: Duration) {
        self.add(bucket(d), 1);
    }

    pub fn add(&mut self, b: u8, n: u64) {
        match self.0.iter().position(|(i, _)| *i == b) {
            Some(k) => {
                self.0[k].1 += n;
                // Each hit moves its pair one ahead, so the buckets most latencies fall in come
                // first and the search usually stops after a pair or two.
                if k > 0 {
                    self.0.swap(k - 1, k);
                }
            }
            None => self.0.push((b, n)),
        }
    }

    pub fn merge(&mut self, other: &Hist) {
        for &(b, n) in &other.0 {
            self.add(b, n);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.iter().map(|(_, n)| n).sum()
    }

    /// The latencies of quantiles `qs` (each 0.0–1.0), in ms; `None` when empty.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [Option<f64>; N] {
        let mut sorted = self.0.clone();
        sorted.sort_unstable_by_key(|(b, _)| *b);
        let total = self.count();
        qs.map(|q| {
            if total == 0 {
                return None;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            sorted
                .iter()
                .find(|(_, n)| {
                    seen += n;
                    seen >= rank
                })
                .map(|(b, _)| (middle_ms(*b) * 1000.0).round() / 1000.0)
        })
    }

    /// `bucket:count,…` in bucket order.
    pub fn encode(&self) -> String {
        let mut sorted = self.0.clone();
        sorted.sort_unstable_by_key(|(b, _)| *b);
        let mut out = String::with_capacity(sorted.len() * 8);
        for (i, (b, n)) in sorted.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{b}:{n}");
        }
        out
    }

    /// Reads [`Hist::encode`]'s text; malformed pairs are skipped (a row written by a newer
    /// version must not break a query).
    pub fn decode(text: &str) -> Hist {
        let mut h = Hist::default();
        for pair in text.split(',').filter(|p| !p.is_empty()) {
            let parsed = pair.split_once(':').and_then(|(b, n)| Some((b.parse::<u8>().ok()?, n.parse::<u64>().ok()?)));
            if let Some((b, n)) = parsed.filter(|(b, _)| *b < BUCKETS) {
                h.add(b, n);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_have_inclusive_bounds_and_cover_an_hour() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(1)), 0);
        assert_eq!(bucket(Duration::from_micros(2)), 4);
        assert_eq!(bucket(Duration::from_micros(3)), 7);
        assert_eq!(bucket(Duration::from_millis(1)), 40);
        assert_eq!(bucket(Duration::from_secs(7200)), BUCKETS - 1);
        // Every duration reports within ±10 % of itself.
        for us in [3u64, 17, 250, 999, 4_321, 80_000, 1_234_567, 60_000_000] {
            let ms = middle_ms(bucket(Duration::from_micros(us)));
            let truth = us as f64 / 1000.0;
            assert!((ms - truth).abs() / truth < 0.1, "{us} µs reported as {ms} ms");
        }
    }

    #[test]
    fn the_table_gives_the_buckets_of_the_definition() {
        let mut ns = 0u64;
        while ns < 10_000_000_000_000 {
            for n in [ns.saturating_sub(1), ns, ns + 1] {
                let d = Duration::from_nanos(n);
                assert_eq!(bucket(d), bucket_by_log(d), "{n} ns");
            }
            ns = ns * 21 / 20 + 1;
        }
        for &t in THRESHOLDS_NS.iter() {
            for n in [t - 1, t, t + 1] {
                let d = Duration::from_nanos(n);
                assert_eq!(bucket(d), bucket_by_log(d), "{n} ns");
            }
        }
        assert_eq!(bucket(Duration::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_merged_histograms_equal_those_of_all_samples() {
        // 90 fast requests on one node, 10 slow ones on another.
        let (mut a, mut b) = (Hist::default(), Hist::default());
        for _ in 0..90 {
            a.observe(Duration::from_millis(2));
        }
        for _ in 0..10 {
            b.observe(Duration::from_millis(500));
        }
        let mut all = a.clone();
        all.merge(&b);
        assert_eq!(all.count(), 100);
        let [p50, p95, p99] = all.quantiles([0.5, 0.95, 0.99]).map(|q| q.expect("not empty"));
        assert!((1.8..2.2).contains(&p50), "{p50}");
        assert!((450.0..550.0).contains(&p95), "{p95}");
        assert!((450.0..550.0).contains(&p99), "{p99}");
        assert_eq!(a.quantiles([0.99])[0].map(|v| v < 2.2), Some(true));
        assert_eq!(Hist::default().quantiles([0.5]), [None]);
    }

    #[test]
    fn frequent_buckets_move_ahead_and_counts_stay() {
        let mut h = Hist::default();
        for b in [3, 5, 7, 7, 7, 7] {
            h.add(b, 1);
        }
        assert_eq!(h.0[0], (7, 4));
        assert_eq!(h.count(), 6);
        assert_eq!(h.encode(), "3:1,5:1,7:4");
    }

    #[test]
    fn text_form_round_trips_and_skips_garbage() {
        let mut h = Hist::default();
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_micros(3));
        h.observe(Duration::from_millis(5));
        assert_eq!(h.encode(), "7:1,50:2");
        assert_eq!(Hist::decode(&h.encode()).encode(), "7:1,50:2");
        assert_eq!(Hist::decode("7:1,x:2,200:1,50:2,9").encode(), "7:1,50:2");
        assert_eq!(Hist::decode("").count(), 0);
    }
}
