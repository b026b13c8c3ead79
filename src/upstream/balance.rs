//! Choosing a server of a backend: round robin (weighted), least request (power of two
//! choices), random (weighted) and consistent hashing (rendezvous) on a header or the client IP.
//!
//! A pick only considers servers that are up (active health), not ejected (passive health) and
//! not already tried by this request; the caller turns "none" into 503.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

use http::HeaderName;
use rand::Rng;

/// `backends.X.balance`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastRequest,
    Random,
    HashHeader(HeaderName),
    HashClientIp,
}

impl Balance {
    pub fn parse(s: &str) -> Result<Balance, String> {
        let s = s.trim();
        match s {
            "round_robin" => return Ok(Balance::RoundRobin),
            "least_request" => return Ok(Balance::LeastRequest),
            "random" => return Ok(Balance::Random),
            _ => {}
        }
        if let Some(inner) = s.strip_prefix("hash(").and_then(|r| r.strip_suffix(')')) {
            let inner = inner.trim();
            if inner == "client_ip" {
                return Ok(Balance::HashClientIp);
            }
            if let Some(name) = inner.strip_prefix("header:") {
                return HeaderName::from_bytes(name.trim().as_bytes())
                    .map(Balance::HashHeader)
                    .map_err(|_| format!("`{}` is not a valid header name", name.trim()));
            }
        }
        Err(format!(
            "unknown balance `{s}` (expected round_robin, least_request, random, hash(header:NAME) or hash(client_ip))"
        ))
    }
}

/// The per-backend state a pick needs.
#[allow(clippy::len_without_is_empty)] // a backend always has servers
pub trait Candidates {
    fn len(&self) -> usize;
    fn weight(&self, i: usize) -> u32;
    fn active(&self, i: usize) -> u32;
    fn available(&self, i: usize) -> bool;
}

/// Smooth weighted round-robin schedule, precomputed so a pick is one atomic increment.
#[derive(Debug)]
pub struct Picker {
    schedule: Vec<u16>,
    cursor: AtomicUsize,
}

impl Picker {
    pub fn new(weights: &[u32]) -> Picker {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut schedule = Vec::with_capacity(total.min(100_000) as usize);
        let mut current: Vec<i64> = vec![0; weights.len()];
        let total_i = total as i64;
        for _ in 0..total.min(100_000) {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += i64::from(*w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total_i;
            schedule.push(best as u16);
        }
        // Start each generation at a random offset so many gateways don't hit server 0 together.
        let start = if schedule.is_empty() { 0 } else { rand::rng().random_range(0..schedule.len()) };
        Picker { schedule, cursor: AtomicUsize::new(start) }
    }

    /// Picks a server; `key` is the hash key for the hash strategies.
    pub fn pick(&self, balance: &Balance, c: &impl Candidates, key: Option<&[u8]>, tried: &[usize]) -> Option<usize> {
        let ok = |i: usize| c.available(i) && !tried.contains(&i);
        let n = c.len();
        match balance {
            Balance::RoundRobin => {
                let len = self.schedule.len();
                for _ in 0..len.min(n * 2 + len) {
                    let at = self.cursor.fetch_add(1, Ordering::Relaxed) % len.max(1);
                    let i = usize::from(*self.schedule.get(at)?);
                    if ok(i) {
                        return Some(i);
                    }
                }
                (0..n).find(|&i| ok(i))
            }
            Balance::Random => weighted_random(c, &ok),
            Balance::LeastRequest => {
                let live: Vec<usize> = (0..n).filter(|&i| ok(i)).collect();
                match live.len() {
                    0 => None,
                    1 => Some(live[0]),
                    len => {
                        let mut rng = rand::rng();
                        let a = live[rng.random_range(0..len)];
                        let mut b = live[rng.random_range(0..len - 1)];
                        if b == a {
                            b = live[len - 1];
                        }
                        // Compare active/weight without division: a.active * b.weight vs b.active * a.weight.
                        let la = u64::from(c.active(a)) * u64::from(c.weight(b));
                        let lb = u64::from(c.active(b)) * u64::from(c.weight(a));
                        Some(if la <= lb { a } else { b })
                    }
                }
            }
            Balance::HashHeader(_) | Balance::HashClientIp => match key {
                // Rendezvous hashing: stable when servers come and go, no ring to rebuild.
                Some(key) => (0..n).filter(|&i| ok(i)).max_by_key(|&i| {
                    let mut h = std::collections::hash_map::DefaultHasher::new();
                    key.hash(&mut h);
                    i.hash(&mut h);
                    let score = h.finish();
                    // Weighted rendezvous approximation: scale the score by the weight.
                    u128::from(score) * u128::from(c.weight(i))
                }),
                None => weighted_random(c, &ok),
            },
        }
    }
}

fn weighted_random(c: &impl Candidates, ok: &impl Fn(usize) -> bool) -> Option<usize> {
    let total: u64 = (0..c.len()).filter(|&i| ok(i)).map(|i| u64::from(c.weight(i))).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::rng().random_range(0..total);
    for i in (0..c.len()).filter(|&i| ok(i)) {
        let w = u64::from(c.weight(i));
        if roll < w {
            return Some(i);
        }
        roll -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        weights: Vec<u32>,
        active: Vec<u32>,
        up: Vec<bool>,
    }

    impl Candidates for Fake {
        fn len(&self) -> usize {
            self.weights.len()
        }
        fn weight(&self, i: usize) -> u32 {
            self.weights[i]
        }
        fn active(&self, i: usize) -> u32 {
            self.active[i]
        }
        fn available(&self, i: usize) -> bool {
            self.up[i]
        }
    }

    fn counts(b: &Balance, f: &Fake, n: usize, key: impl Fn(usize) -> Option<Vec<u8>>) -> Vec<usize> {
        let p = Picker::new(&f.weights);
        let mut out = vec![0; f.len()];
        for i in 0..n {
            let k = key(i);
            if let Some(s) = p.pick(b, f, k.as_deref(), &[]) {
                out[s] += 1;
            }
        }
        out
    }

    #[test]
    fn weighted_round_robin_follows_weights_and_skips_down_servers() {
        let f = Fake { weights: vec![2, 1, 1], active: vec![0; 3], up: vec![true, true, true] };
        assert_eq!(counts(&Balance::RoundRobin, &f, 400, |_| None), vec![200, 100, 100]);
        let f = Fake { weights: vec![2, 1, 1], active: vec![0; 3], up: vec![true, false, true] };
        let c = counts(&Balance::RoundRobin, &f, 300, |_| None);
        assert_eq!(c[1], 0);
        assert_eq!(c[0] + c[2], 300);
    }

    #[test]
    fn least_request_prefers_idle_servers() {
        let f = Fake { weights: vec![1, 1], active: vec![10, 0], up: vec![true, true] };
        assert_eq!(counts(&Balance::LeastRequest, &f, 100, |_| None), vec![0, 100]);
    }

    #[test]
    fn hashing_is_sticky_and_spreads() {
        let f = Fake { weights: vec![1, 1, 1], active: vec![0; 3], up: vec![true; 3] };
        let c = counts(&Balance::HashClientIp, &f, 300, |_| Some(b"10.0.0.1".to_vec()));
        assert_eq!(c.iter().filter(|&&n| n == 300).count(), 1);
        let c = counts(&Balance::HashClientIp, &f, 3000, |i| Some(i.to_le_bytes().to_vec()));
        assert!(c.iter().all(|&n| n > 700), "{c:?}");
    }

    #[test]
    fn none_when_all_down() {
        let f = Fake { weights: vec![1], active: vec![0], up: vec![false] };
        for b in [Balance::RoundRobin, Balance::Random, Balance::LeastRequest, Balance::HashClientIp] {
            assert_eq!(counts(&b, &f, 5, |_| Some(vec![1])), vec![0]);
        }
    }

    #[test]
    fn parse_balance() {
        assert_eq!(Balance::parse("hash(header:X-User)"), Ok(Balance::HashHeader(HeaderName::from_static("x-user"))));
        assert!(Balance::parse("fastest").is_err());
    }
}
