//! Quotas: calls and/or bytes per long fixed period (APIM `quota`/`quota-by-key`), and the seam
//! through which in-process quota counters outlive a restart ([`QuotaPersistence`]).
//!
//! Periods are fixed windows counted from `first_period_start` in wall-clock time (a quota of
//! "10 000 per 30 days" must mean the same thing on every node and after a restart); a period
//! of zero never renews.

use std::future::Future;
use std::pin::Pin;

use super::local::Expiring;

/// Errors from the persistence backend; only logged (a quota keeps counting in memory).
pub type PersistError = Box<dyn std::error::Error + Send + Sync>;
pub type PersistFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, PersistError>> + Send + 'a>>;

/// One quota counter as stored: what was used in the period that ends at `period_end_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaRecord {
    /// Unix milliseconds at which the period ends; `None` for a quota that never renews.
    pub period_end_ms: Option<u64>,
    pub calls: u64,
    pub bytes: u64,
}

/// Where in-process quota counters are kept across restarts (the store: SQLite/PostgreSQL).
/// Keys are opaque strings of at most a few hundred bytes; a record whose period has ended is
/// ignored when loaded, so the store need not expire anything.
pub trait QuotaPersistence: Send + Sync + 'static {
    fn load_quota<'a>(&'a self, key: &'a str) -> PersistFuture<'a, Option<QuotaRecord>>;
    fn save_quotas(&self, batch: Vec<(String, QuotaRecord)>) -> PersistFuture<'_, ()>;
}

/// When a quota's periods start and how long they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Period {
    /// Unix milliseconds of the start of the first period.
    pub first_start_ms: i64,
    /// Zero: one period that never ends.
    pub length_ms: u64,
}

impl Period {
    /// The end (unix ms) of the period containing `now_ms`, `None` if it never ends.
    pub fn end_ms(&self, now_ms: u64) -> Option<u64> {
        if self.length_ms == 0 {
            return None;
        }
        let len = i128::from(self.length_ms);
        let since = i128::from(now_ms) - i128::from(self.first_start_ms);
        let idx = since.div_euclid(len);
        u64::try_from(i128::from(self.first_start_ms) + (idx + 1) * len).ok()
    }
}

/// Limits of one quota; at least one of them is set (the config checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuotaSpec {
    pub calls: Option<u64>,
    pub bytes: Option<u64>,
    pub period: Period,
}

/// An in-process quota counter.
#[derive(Debug, Clone)]
pub(crate) struct QuotaSlot {
    pub period_end: Option<u64>,
    pub calls: u64,
    pub bytes: u64,
    /// Changed since the last save.
    pub dirty: bool,
    /// The persisted value has been merged in (or there is no persistence).
    pub loaded: bool,
}

impl Expiring for QuotaSlot {
    fn expired(&self, now_ms: u64) -> bool {
        self.period_end.is_some_and(|end| end <= now_ms) && !self.dirty
    }
}

/// A quota decision before it is turned into a [`super::Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaTake {
    pub granted: bool,
    pub remaining: u64,
    pub reset_ms: u64,
}

impl QuotaSlot {
    pub fn new(loaded: bool) -> Self {
        QuotaSlot { period_end: None, calls: 0, bytes: 0, dirty: false, loaded }
    }

    /// Starts a new period when the current one is over.
    pub fn roll(&mut self, now_ms: u64, period: &Period) {
        let end = period.end_ms(now_ms);
        if end != self.period_end {
            self.period_end = end;
            self.calls = 0;
            self.bytes = 0;
            self.dirty = true;
        }
    }

    /// Merges a persisted record of the same period (calls counted here before the load finished
    /// are kept).
    pub fn merge(&mut self, rec: &QuotaRecord) {
        if rec.period_end_ms == self.period_end {
            self.calls += rec.calls;
            self.bytes += rec.bytes;
        }
        self.loaded = true;
    }

    pub fn take(&mut self, now_ms: u64, spec: &QuotaSpec, n: u64) -> QuotaTake {
        self.roll(now_ms, &spec.period);
        let reset_ms = self.period_end.map_or(0, |end| end.saturating_sub(now_ms));
        let bytes_ok = spec.bytes.is_none_or(|max| self.bytes < max);
        let calls_left = spec.calls.map_or(u64::MAX, |max| max.saturating_sub(self.calls));
        if bytes_ok && n <= calls_left {
            self.calls += n;
            self.dirty = true;
            QuotaTake { granted: true, remaining: calls_left - n, reset_ms }
        } else {
            QuotaTake { granted: false, remaining: if bytes_ok { calls_left } else { 0 }, reset_ms }
        }
    }

    pub fn record(&self) -> QuotaRecord {
        QuotaRecord { period_end_ms: self.period_end, calls: self.calls, bytes: self.bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn periods_count_from_the_first_start() {
        let p = Period { first_start_ms: 1_000, length_ms: DAY };
        assert_eq!(p.end_ms(1_000), Some(1_000 + DAY));
        assert_eq!(p.end_ms(1_000 + DAY - 1), Some(1_000 + DAY));
        assert_eq!(p.end_ms(1_000 + DAY), Some(1_000 + 2 * DAY));
        // Before the first start the periods extend backwards.
        assert_eq!(p.end_ms(0), Some(1_000));
        assert_eq!(Period { first_start_ms: 0, length_ms: 0 }.end_ms(5), None);
    }

    #[test]
    fn calls_and_bandwidth_both_limit() {
        let spec =
            QuotaSpec { calls: Some(3), bytes: Some(1_000), period: Period { first_start_ms: 0, length_ms: DAY } };
        let mut q = QuotaSlot::new(true);
        assert_eq!(q.take(10, &spec, 1), QuotaTake { granted: true, remaining: 2, reset_ms: DAY - 10 });
        q.bytes = 1_000;
        assert!(!q.take(20, &spec, 1).granted, "bandwidth used up");
        q.bytes = 0;
        assert!(q.take(30, &spec, 2).granted);
        assert!(!q.take(40, &spec, 1).granted, "calls used up");
        // A new period starts from zero.
        assert!(q.take(DAY + 1, &spec, 1).granted);
        assert_eq!(q.calls, 1);
    }

    #[test]
    fn merge_keeps_only_records_of_the_current_period() {
        let spec = QuotaSpec { calls: Some(10), bytes: None, period: Period { first_start_ms: 0, length_ms: DAY } };
        let mut q = QuotaSlot::new(false);
        q.roll(5, &spec.period);
        q.merge(&QuotaRecord { period_end_ms: Some(DAY), calls: 7, bytes: 0 });
        assert_eq!(q.take(6, &spec, 1).remaining, 2);
        let mut old = QuotaSlot::new(false);
        old.roll(DAY + 5, &spec.period);
        old.merge(&QuotaRecord { period_end_ms: Some(DAY), calls: 7, bytes: 0 });
        assert_eq!(old.take(DAY + 6, &spec, 1).remaining, 9, "last period's usage is not carried over");
    }
}
