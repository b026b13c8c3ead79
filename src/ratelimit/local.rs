//! In-process counters: a sharded map (one `parking_lot` mutex per shard, so two requests
//! contend only when their keys land in the same shard) and the sliding-window arithmetic that
//! both the in-process and the Redis engines use.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use parking_lot::Mutex;

const SHARDS: usize = 64;
/// A shard is swept for expired entries when it has grown to this many since the last sweep.
const MIN_SWEEP_LEN: usize = 256;

/// A value that can tell when it no longer matters (its window or period is over).
pub(crate) trait Expiring {
    fn expired(&self, now_ms: u64) -> bool;
}

/// A counter's key with its hash: one keyed hash per lookup both picks the shard and places the
/// key in the shard's table (the table does not hash the key again).
struct Key {
    hash: u64,
    text: Box<str>,
}

/// What a lookup borrows a stored [`Key`] as: its hash and text.
trait KeyView {
    fn hash(&self) -> u64;
    fn text(&self) -> &str;
}

impl KeyView for Key {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn text(&self) -> &str {
        &self.text
    }
}

/// A looked-up key, not stored.
struct Probe<'a> {
    hash: u64,
    text: &'a str,
}

impl KeyView for Probe<'_> {
    fn hash(&self) -> u64 {
        self.hash
    }
    fn text(&self) -> &str {
        self.text
    }
}

impl<'a> Borrow<dyn KeyView + 'a> for Key {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

// `Key` and `dyn KeyView` hash and compare alike, as `Borrow` requires.
impl Hash for dyn KeyView + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(KeyView::hash(self));
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        KeyView::hash(self) == KeyView::hash(other) && self.text() == other.text()
    }
}

impl Eq for dyn KeyView + '_ {}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && self.text == other.text
    }
}

impl Eq for Key {}

struct Shard<V> {
    map: HashMap<Key, V, crate::hashing::BuildPrecomputed>,
    sweep_at: usize,
}

/// `HashMap<key, V>` split into shards; entries are swept lazily when a shard grows, so memory
/// stays proportional to the keys active in the current window.
pub(crate) struct ShardedMap<V> {
    shards: Box<[Mutex<Shard<V>>]>,
    hasher: RandomState,
}

impl<V: Expiring> ShardedMap<V> {
    pub fn new() -> Self {
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(Shard { map: HashMap::default(), sweep_at: MIN_SWEEP_LEN }))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        ShardedMap { shards, hasher: RandomState::new() }
    }

    /// The key's hash and shard. The shard comes from middle bits: the table places keys by the
    /// low bits and tags them with the top ones, so all three stay independent.
    fn locate<'k>(&self, key: &'k str) -> (Probe<'k>, &Mutex<Shard<V>>) {
        let hash = self.hasher.hash_one(key);
        let i = ((hash >> 32) as usize) % SHARDS;
        (Probe { hash, text: key }, &self.shards[i])
    }

    /// Runs `f` on the entry for `key`, creating it with `init` first if needed.
    pub fn with<R>(&self, key: &str, now_ms: u64, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let (probe, shard) = self.locate(key);
        let mut shard = shard.lock();
        if let Some(v) = shard.map.get_mut(&probe as &dyn KeyView) {
            return f(v);
        }
        if shard.map.len() >= shard.sweep_at {
            shard.map.retain(|_, v| !v.expired(now_ms));
            shard.sweep_at = (shard.map.len() * 2).max(MIN_SWEEP_LEN);
        }
        f(shard.map.entry(Key { hash: probe.hash, text: key.into() }).or_insert_with(init))
    }

    /// Runs `f` on the entry for `key` if there is one.
    pub fn get<R>(&self, key: &str, f: impl FnOnce(Option<&mut V>) -> R) -> R {
        let (probe, shard) = self.locate(key);
        f(shard.lock().map.get_mut(&probe as &dyn KeyView))
    }

    /// Removes the entry for `key` when `pred` says so.
    pub fn remove_if(&self, key: &str, pred: impl FnOnce(&V) -> bool) {
        let (probe, shard) = self.locate(key);
        let mut shard = shard.lock();
        if shard.map.get(&probe as &dyn KeyView).is_some_and(pred) {
            shard.map.remove(&probe as &dyn KeyView);
        }
    }

    /// Visits every entry (shard by shard, never two locks at once).
    pub fn for_each(&self, mut f: impl FnMut(&str, &mut V)) {
        for shard in self.shards.iter() {
            for (k, v) in shard.lock().map.iter_mut() {
                f(&k.text, v);
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }
}

/// The sliding-window counter (two fixed windows, the previous one weighted by how much of it
/// still overlaps the sliding window): `estimate = prev × (period − elapsed) / period + cur`.
/// It never admits more than `limit` in any window of `period` under a steady rate and needs
/// two integers per key, which is why it is used rather than a log of timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    pub idx: u64,
    pub cur: u64,
    pub prev: u64,
}

/// What the window arithmetic says about taking `n` calls now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Take {
    pub granted: bool,
    /// Calls still available after this decision.
    pub remaining: u64,
    /// Milliseconds until the current fixed window ends.
    pub reset_ms: u64,
    /// When refused: milliseconds until `n` calls would be admitted.
    pub retry_ms: u64,
}

impl Window {
    /// Moves the window to the one containing `now_ms`.
    pub fn advance(&mut self, now_ms: u64, period_ms: u64) {
        let idx = now_ms / period_ms;
        if idx == self.idx {
            return;
        }
        self.prev = if idx == self.idx + 1 { self.cur } else { 0 };
        self.cur = 0;
        self.idx = idx;
    }

    /// Calls that may still be admitted now (the estimate rounded up, so never over the limit).
    pub fn available(&self, now_ms: u64, period_ms: u64, limit: u64) -> u64 {
        let elapsed = now_ms - self.idx * period_ms;
        let weighted = (u128::from(self.prev) * u128::from(period_ms - elapsed)).div_ceil(u128::from(period_ms));
        let used = u128::from(self.cur) + weighted;
        u64::try_from(u128::from(limit).saturating_sub(used)).unwrap_or(0)
    }

    /// Takes `n` calls if the limit allows.
    pub fn take(&mut self, now_ms: u64, period_ms: u64, limit: u64, n: u64) -> Take {
        self.advance(now_ms, period_ms);
        let avail = self.available(now_ms, period_ms, limit);
        let reset_ms = (self.idx + 1) * period_ms - now_ms;
        if n <= avail {
            self.cur += n;
            Take { granted: true, remaining: avail - n, reset_ms, retry_ms: 0 }
        } else {
            let retry_ms = self.retry_ms(now_ms, period_ms, limit, n);
            Take { granted: false, remaining: avail, reset_ms, retry_ms }
        }
    }

    /// Gives back `n` calls taken in window `idx` (a request that did not meet the increment
    /// condition). Calls from an earlier window are already history and stay counted.
    pub fn give_back(&mut self, idx: u64, n: u64) {
        if idx == self.idx {
            self.cur = self.cur.saturating_sub(n);
        } else if idx + 1 == self.idx {
            self.prev = self.prev.saturating_sub(n);
        }
    }

    /// Milliseconds until `n` calls fit, assuming no other calls arrive.
    pub fn retry_ms(&self, now_ms: u64, period_ms: u64, limit: u64, n: u64) -> u64 {
        retry_ms(self.prev, self.cur, now_ms - self.idx * period_ms, period_ms, limit, n)
    }
}

/// See [`Window::retry_ms`]; shared with the Redis script's caller.
pub fn retry_ms(prev: u64, cur: u64, elapsed: u64, period: u64, limit: u64, n: u64) -> u64 {
    let (p, c, e, big_p, l, n) =
        (u128::from(prev), u128::from(cur), u128::from(elapsed), u128::from(period), u128::from(limit), u128::from(n));
    if n > l {
        // Never fits; the config rejects this, so any answer is fine.
        return period;
    }
    // Still in this window: need ceil(p·(P−e')/P) + c + n ≤ l, i.e. p·(P−e') ≤ (l−c−n)·P.
    if c + n <= l {
        let room = (l - c - n) * big_p;
        if p == 0 || p * big_p <= room {
            return 0;
        }
        // Smallest e' with p·(P−e') ≤ room: e' = P − floor(room / p).
        let at = big_p - room / p;
        if at < big_p {
            return u64::try_from(at.saturating_sub(e).max(1)).unwrap_or(u64::MAX);
        }
    }
    // Next window: this window's `cur` becomes `prev`: c·(P−e'') ≤ (l−n)·P.
    let room = (l - n) * big_p;
    let at = room.checked_div(c).map_or(0, |q| big_p.saturating_sub(q));
    u64::try_from((big_p - e) + at).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_limit_per_window_then_refuses_with_retry() {
        let mut w = Window::default();
        for i in 0..5 {
            let t = w.take(1_000 + i, 60_000, 5, 1);
            assert!(t.granted, "call {i}");
            assert_eq!(t.remaining, 4 - i);
        }
        let t = w.take(2_000, 60_000, 5, 1);
        assert!(!t.granted);
        // The next window starts at 60 s; there the 5 calls of this window weigh 5·(60−e)/60,
        // so one call fits once that is ≤ 4: e ≥ 12 s. From t=2 s: 58 s + 12 s.
        assert_eq!(t.retry_ms, 58_000 + 12_000);
        assert_eq!(t.reset_ms, 58_000);
        // After that wait it really is admitted, and not a millisecond before.
        let mut early = w;
        assert!(!early.take(2_000 + t.retry_ms - 1, 60_000, 5, 1).granted);
        assert!(w.take(2_000 + t.retry_ms, 60_000, 5, 1).granted);
    }

    #[test]
    fn previous_window_weighs_in_and_decays() {
        let mut w = Window::default();
        for _ in 0..10 {
            assert!(w.take(59_000, 60_000, 10, 1).granted);
        }
        // Half-way through the next window half of the previous one still counts.
        assert_eq!(w.take(90_000, 60_000, 10, 0).remaining, 5);
        // A window later it is forgotten.
        assert_eq!(w.take(180_000, 60_000, 10, 0).remaining, 10);
    }

    #[test]
    fn retry_within_the_same_window() {
        let mut w = Window { idx: 1, cur: 2, prev: 10 };
        // At e = 30 s: 10·30/60 + 2 = 7 of 10 used. Three more fit, the fourth waits.
        for _ in 0..3 {
            assert!(w.take(90_000, 60_000, 10, 1).granted);
        }
        let t = w.take(90_000, 60_000, 10, 1);
        assert!(!t.granted);
        // Needs ceil(10·(60−e')/60) + 5 + 1 ≤ 10 → e' ≥ 36 s → 6 s from now.
        assert_eq!(t.retry_ms, 6_000);
        assert!(w.take(96_000, 60_000, 10, 1).granted);
    }

    #[test]
    fn give_back_returns_calls_of_the_current_window_only() {
        let mut w = Window::default();
        assert!(w.take(10, 1_000, 2, 2).granted);
        assert!(!w.take(20, 1_000, 2, 1).granted);
        w.give_back(0, 1);
        assert!(w.take(30, 1_000, 2, 1).granted);
        w.advance(5_000, 1_000);
        w.give_back(0, 1);
        assert_eq!(w, Window { idx: 5, cur: 0, prev: 0 });
    }

    struct E(u64);
    impl Expiring for E {
        fn expired(&self, now: u64) -> bool {
            self.0 < now
        }
    }

    #[test]
    fn sharded_map_sweeps_expired_entries_as_it_grows() {
        let m = ShardedMap::new();
        for i in 0..40_000u64 {
            m.with(&format!("k{i}"), i, || E(i + 10), |_| ());
        }
        // Entries live 10 ms; a full shard sweeps, so far fewer than 40 000 remain.
        assert!(m.len() < 40_000 / 2, "{} entries left", m.len());
        let mut hit = false;
        m.with("k39999", 39_999, || E(0), |e| hit = e.0 == 40_009);
        assert!(hit, "a live entry survives the sweep");
    }

    #[test]
    fn sharded_map_keys_are_their_own_entries() {
        let m = ShardedMap::new();
        let keys: Vec<String> = (0..2000).map(|i| format!("rlk|api:orders|60000|user-{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            m.with(k, 0, || E(i as u64), |_| ());
        }
        assert_eq!(m.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(m.get(k, |e| e.map(|e| e.0)), Some(i as u64), "{k}");
            m.with(k, 0, || E(u64::MAX), |e| assert_eq!(e.0, i as u64, "an existing entry is found, not made"));
        }
        assert!(!m.get("rlk|api:orders|60000|user-", |e| e.is_some()));
        m.remove_if(&keys[7], |e| e.0 == 8);
        assert_eq!(m.len(), keys.len(), "kept when the predicate says no");
        m.remove_if(&keys[7], |e| e.0 == 7);
        assert!(!m.get(&keys[7], |e| e.is_some()));
        let mut seen = Vec::new();
        m.for_each(|k, _| seen.push(k.to_owned()));
        seen.sort();
        let mut want: Vec<String> = keys.iter().filter(|k| *k != &keys[7]).cloned().collect();
        want.sort();
        assert_eq!(seen, want);
    }
}
