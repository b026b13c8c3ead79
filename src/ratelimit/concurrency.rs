//! `limit-concurrency` permits: a count per key, per node (a permit is held for the length of a
//! request, far too short for a Redis round trip to be worth it).

use std::sync::Arc;

use super::local::{Expiring, ShardedMap};

pub(crate) struct Slot(u32);

impl Expiring for Slot {
    fn expired(&self, _now: u64) -> bool {
        self.0 == 0
    }
}

/// One admitted execution; dropping it lets the next one in.
pub struct Permit {
    map: Arc<ShardedMap<Slot>>,
    key: Box<str>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

pub(crate) fn acquire(map: &Arc<ShardedMap<Slot>>, key: &str, max: u32) -> Option<Permit> {
    let ok = map.with(
        key,
        0,
        || Slot(0),
        |s| {
            if s.0 < max {
                s.0 += 1;
                true
            } else {
                false
            }
        },
    );
    ok.then(|| Permit { map: map.clone(), key: key.into() })
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.map.get(&self.key, |s| {
            if let Some(s) = s {
                s.0 = s.0.saturating_sub(1);
            }
        });
        self.map.remove_if(&self.key, |s| s.0 == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_counted_per_key_and_released_on_drop() {
        let map = Arc::new(ShardedMap::new());
        let a1 = acquire(&map, "a", 2).expect("first");
        let a2 = acquire(&map, "a", 2).expect("second");
        assert!(acquire(&map, "a", 2).is_none(), "third is over the limit");
        let b = acquire(&map, "b", 2).expect("other key");
        drop(a1);
        let a3 = acquire(&map, "a", 2).expect("a slot was freed");
        drop((a2, a3, b));
        assert_eq!(map.len(), 0, "idle keys are removed");
    }
}
