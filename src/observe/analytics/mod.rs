//! Analytics: per-minute aggregates of finished requests by API, operation, product,
//! subscription, status class and failed layer — requests, bytes sent and a latency histogram —
//! kept for days in the store (or the last day in memory without one) and served at
//! `GET /analytics` on the admin listener.
//!
//! Recording ([`Analytics::record`]) runs when a response body ends: no I/O, no await, one short
//! lock of one of [`SHARDS`] maps (chosen by the key's hash) and, in the usual case, no
//! allocation — the key is compared against the request's borrowed names and only cloned (a few
//! `Arc`s) the first time a minute sees it. Cardinality is bounded per minute
//! ([`MAX_KEYS_PER_MINUTE`]): further keys fold into an `~other` key and are counted.
//!
//! The writer task (`writer.rs`) moves finished minutes out of the shards into the `done` queue
//! and, with a store, writes that queue in batched transactions, removing rows only once they
//! are committed; a failed write keeps them (bounded) for the next attempt, so a lost store never
//! blocks or fails a request. Queries (`query.rs`) read the store and everything still in memory
//! under the same lock the writer holds while writing, so a row is counted exactly once.

pub mod config;
pub mod hist;
pub mod query;
pub mod writer;

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hashbrown::HashTable;
use parking_lot::Mutex;

use super::metrics::{layer_index, status_index, RequestFacts, RouteSeries};
pub use config::{AnalyticsConfig, AnalyticsSpec};
pub use hist::Hist;

/// Lock shards of the live minutes.
pub const SHARDS: usize = 8;
/// Distinct keys one minute may hold before further ones share the `~other` key.
pub const MAX_KEYS_PER_MINUTE: usize = 16_384;
/// Finished rows kept in memory: the backlog while the store is unreachable, or the history
/// when there is no store. Beyond this the oldest are dropped (and counted).
pub const MAX_DONE_ROWS: usize = 200_000;
/// Without a store: the history kept (one day of minutes).
pub const MEMORY_WINDOW_S: i64 = 86_400;
/// The name every overflowing key is folded into (as in the metrics' product cap).
pub const OTHER: &str = "~other";

/// What one aggregate is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `""`: the request matched no route.
    pub api: Arc<str>,
    /// `""`: the API has no operation for the request.
    pub operation: Arc<str>,
    pub product: Option<Arc<str>>,
    pub subscription: Option<Arc<str>>,
    /// Index of `metrics::STATUS_CLASSES` (0 = 1xx … 4 = 5xx).
    pub status: u8,
    /// Index of `metrics::LAYERS` (0 = none failed).
    pub layer: u8,
}

impl Key {
    /// A failure: the gateway made the response (a layer failed) or it is a 5xx.
    pub fn is_error(&self) -> bool {
        self.layer != 0 || self.status == 4
    }
}

/// What one aggregate counts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agg {
    pub requests: u64,
    pub bytes_sent: u64,
    pub latency: Hist,
}

impl Agg {
    fn add(&mut self, f: &RequestFacts) {
        self.requests += 1;
        self.bytes_sent += f.bytes_sent;
        self.latency.observe(f.duration);
    }
}

/// One finished aggregate: a minute (Unix seconds of its start), its key and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub minute: i64,
    pub key: Key,
    pub agg: Agg,
}

struct Entry {
    hash: u64,
    /// The address of the series whose names the key holds (0 for `~other`): a request's key
    /// compares it rather than the names (the series are interned, see `record_at`).
    series: usize,
    key: Key,
    agg: Agg,
}

struct MinuteTable {
    minute: i64,
    table: HashTable<Entry>,
}

#[derive(Default)]
struct Shard {
    /// Oldest first; normally one or two (the current minute and the one just ended).
    minutes: Vec<MinuteTable>,
}

/// Finished rows in order, with the sequence number of the first, so the writer can remove
/// exactly the rows it wrote even if older ones were dropped meanwhile.
#[derive(Default)]
struct Done {
    rows: VecDeque<Row>,
    head: u64,
}

/// The aggregator; lives in `Telemetry`, across reloads.
pub struct Analytics {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
    done: Mutex<Done>,
    other: Arc<str>,
    /// Keys per shard and minute (`MAX_KEYS_PER_MINUTE / SHARDS`), finished rows kept.
    keys_per_shard: usize,
    max_done: usize,
    /// Held by the writer while a batch is in flight and by queries, so a row is never seen both
    /// in the store and in memory, nor in neither.
    pub(crate) io: tokio::sync::Mutex<()>,
    /// Requests folded into `~other` because their minute had too many keys.
    pub overflowed: AtomicU64,
    /// Rows dropped: the backlog or the memory history was full.
    pub dropped: AtomicU64,
    pub write_failures: AtomicU64,
    pub rows_written: AtomicU64,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Analytics")
    }
}

impl Default for Analytics {
    fn default() -> Self {
        Analytics::with_limits(MAX_KEYS_PER_MINUTE, MAX_DONE_ROWS)
    }
}

impl Analytics {
    /// An aggregator with other bounds (tests).
    pub fn with_limits(keys_per_minute: usize, max_done: usize) -> Analytics {
        Analytics {
            keys_per_shard: (keys_per_minute / SHARDS).max(1),
            max_done,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            done: Mutex::default(),
            other: OTHER.into(),
            io: tokio::sync::Mutex::new(()),
            overflowed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            rows_written: AtomicU64::new(0),
        }
    }
}

/// The start of the current minute, in Unix seconds.
pub fn current_minute() -> i64 {
    let s = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(s - s % 60).unwrap_or(i64::MAX)
}

/// The request's names, borrowed, to find its aggregate without cloning anything.
struct Probe<'a> {
    api: &'a str,
    operation: &'a str,
    product: Option<&'a str>,
    subscription: Option<&'a str>,
    status: u8,
    layer: u8,
}

impl Probe<'_> {
    /// Whether `k` is this key (the `~other` keys are found so; a request's own key by its
    /// series and [`Probe::matches_beside_names`]).
    fn matches(&self, k: &Key) -> bool {
        *k.api == *self.api && *k.operation == *self.operation && self.matches_beside_names(k)
    }

    /// [`Probe::matches`] but for the API and operation names.
    fn matches_beside_names(&self, k: &Key) -> bool {
        k.status == self.status
            && k.layer == self.layer
            && k.product.as_deref() == self.product
            && k.subscription.as_deref() == self.subscription
    }
}

impl Analytics {
    /// Counts one finished request; `series` holds its interned API and operation names.
    pub fn record(&self, series: &RouteSeries, f: &RequestFacts) {
        self.record_at(current_minute(), series, f);
    }

    /// [`Analytics::record`] for a request that ended in second `now_s` (Unix seconds): the
    /// caller's clock reading, shared with the dashboard.
    pub fn record_in_second(&self, now_s: u64, series: &RouteSeries, f: &RequestFacts) {
        self.record_at(i64::try_from(now_s - now_s % 60).unwrap_or(i64::MAX), series, f);
    }

    pub(crate) fn record_at(&self, minute: i64, series: &RouteSeries, f: &RequestFacts) {
        let probe = Probe {
            api: &series.api,
            operation: &series.operation,
            product: f.product.as_deref(),
            subscription: f.subscription.as_deref(),
            status: status_index(f.status) as u8,
            layer: layer_index(f.layer) as u8,
        };
        // The series stands for its API and operation names: it is interned, one per name pair
        // in the registry that lives as long as this aggregator, so equal names mean the same
        // series (hashing its address instead of the two names saves most of the hashing).
        // The names of a product and subscription, when there are any, are hashed; the rest
        // is a few small numbers, mixed by one multiplication.
        let names = match (probe.product, probe.subscription) {
            (None, None) => 0,
            names => self.hasher.hash_one(names),
        };
        let id = std::ptr::from_ref(series) as usize;
        let hash = mix(id as u64
            ^ names.rotate_left(29)
            ^ (u64::from(probe.status) << 8 | u64::from(probe.layer)).rotate_right(16));
        let mut shard = self.shards[(hash >> 59) as usize % SHARDS].lock();
        let table = shard.minute(minute);
        if let Some(e) = table.find_mut(hash, |e| e.series == id && probe.matches_beside_names(&e.key)) {
            e.agg.add(f);
            return;
        }
        if table.len() < self.keys_per_shard {
            let key = Key {
                api: series.api.clone(),
                operation: series.operation.clone(),
                product: f.product.clone(),
                subscription: f.subscription.clone(),
                status: probe.status,
                layer: probe.layer,
            };
            let mut agg = Agg::default();
            agg.add(f);
            table.insert_unique(hash, Entry { hash, series: id, key, agg }, |e| e.hash);
            return;
        }
        // Too many keys this minute: keep the counts, lose the names. The `~other` key lives in
        // this shard whatever its hash (there are at most 25 per shard and minute).
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        let other = Probe { api: OTHER, operation: OTHER, product: None, subscription: None, ..probe };
        let ohash = u64::from(probe.status) << 8 | u64::from(probe.layer);
        if let Some(e) = table.find_mut(ohash, |e| other.matches(&e.key)) {
            e.agg.add(f);
            return;
        }
        let key = Key {
            api: self.other.clone(),
            operation: self.other.clone(),
            product: None,
            subscription: None,
            status: probe.status,
            layer: probe.layer,
        };
        let mut agg = Agg::default();
        agg.add(f);
        table.insert_unique(ohash, Entry { hash: ohash, series: 0, key, agg }, |e| e.hash);
    }

    /// Moves the minutes that started before `before` (all of them when `None`) from the live
    /// shards to the done queue; returns how many rows moved. Call with [`Analytics::io`] held.
    pub fn finish_minutes(&self, before: Option<i64>) -> usize {
        let mut rows = Vec::new();
        for shard in self.shards.iter() {
            let mut s = shard.lock();
            let keep = s.minutes.iter().position(|m| before.is_some_and(|b| m.minute >= b)).unwrap_or(s.minutes.len());
            for m in s.minutes.drain(..keep) {
                rows.extend(m.table.into_iter().map(|e| Row { minute: m.minute, key: e.key, agg: e.agg }));
            }
        }
        let n = rows.len();
        rows.sort_by_key(|r| r.minute);
        let mut done = self.done.lock();
        done.rows.extend(rows);
        let excess = done.rows.len().saturating_sub(self.max_done);
        if excess > 0 {
            done.rows.drain(..excess);
            done.head += excess as u64;
            self.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        }
        n
    }

    /// Drops finished rows of minutes before `oldest` (the in-memory history's window).
    pub fn forget_before(&self, oldest: i64) {
        let mut done = self.done.lock();
        let n = done.rows.iter().take_while(|r| r.minute < oldest).count();
        done.rows.drain(..n);
        done.head += n as u64;
    }

    /// Up to `max` of the oldest finished rows, with the sequence number of the first.
    pub fn peek(&self, max: usize) -> (u64, Vec<Row>) {
        let done = self.done.lock();
        (done.head, done.rows.iter().take(max).cloned().collect())
    }

    /// Removes the rows `[seq, seq + n)` once written (those still queued).
    pub fn confirm(&self, seq: u64, n: usize) {
        let mut done = self.done.lock();
        let end = seq + n as u64;
        let k = usize::try_from(end.saturating_sub(done.head)).unwrap_or(usize::MAX).min(done.rows.len());
        done.rows.drain(..k);
        done.head += k as u64;
        self.rows_written.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Finished rows waiting (for the store, or kept as history).
    pub fn queued(&self) -> usize {
        self.done.lock().rows.len()
    }

    /// Calls `f` with every aggregate in memory (live and finished) whose minute is in
    /// `[from, to)`. Call with [`Analytics::io`] held (rows move between the two otherwise).
    pub fn visit(&self, from: i64, to: i64, mut f: impl FnMut(i64, &Key, &Agg)) {
        {
            let done = self.done.lock();
            for r in done.rows.iter().filter(|r| (from..to).contains(&r.minute)) {
                f(r.minute, &r.key, &r.agg);
            }
        }
        for shard in self.shards.iter() {
            let s = shard.lock();
            for m in s.minutes.iter().filter(|m| (from..to).contains(&m.minute)) {
                for e in m.table.iter() {
                    f(m.minute, &e.key, &e.agg);
                }
            }
        }
    }
}

/// Spreads `x` over all 64 bits (the shard takes the top ones, the table both ends): a
/// folded multiplication by the golden ratio.
fn mix(x: u64) -> u64 {
    let m = u128::from(x) * 0x9e37_79b9_7f4a_7c15;
    (m as u64) ^ ((m >> 64) as u64)
}

impl Shard {
    fn minute(&mut self, minute: i64) -> &mut HashTable<Entry> {
        // The current minute is the last; a request recorded just after a minute turned on
        // another core may land in the one before.
        let i = match self.minutes.iter().rposition(|m| m.minute == minute) {
            Some(i) => i,
            None => {
                let at = self.minutes.iter().position(|m| m.minute > minute).unwrap_or(self.minutes.len());
                self.minutes.insert(at, MinuteTable { minute, table: HashTable::new() });
                at
            }
        };
        &mut self.minutes[i].table
    }
}

#[cfg(test)]
mod tests;
