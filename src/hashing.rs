//! Hash maps whose keys carry their hash already: a digest (uniformly random, and not steerable
//! by a caller) or a keyed hash computed once per request. [`Precomputed`] passes that value
//! through instead of hashing it again with SipHash.

use std::hash::{BuildHasherDefault, Hasher};

/// A `Hasher` whose result is the `u64` written to it (keys implement `Hash` with one
/// `write_u64`), or, for keys hashed as bytes (a digest array), their 8-byte words folded.
#[derive(Default)]
pub struct Precomputed(u64);

impl Hasher for Precomputed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(word);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// The `BuildHasher` of maps keyed by precomputed hashes.
pub type BuildPrecomputed = BuildHasherDefault<Precomputed>;

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;

    #[test]
    fn a_written_u64_is_the_hash_and_bytes_are_folded() {
        let build = BuildPrecomputed::default();
        assert_eq!(build.hash_one(0x1234_5678_9abc_def0_u64), 0x1234_5678_9abc_def0);
        let a = [1u8; 32];
        let mut b = a;
        b[31] = 2;
        // Every byte of a digest counts, not only its first word.
        assert_ne!(build.hash_one(a), build.hash_one(b));
        let mut h = Precomputed::default();
        a.hash(&mut h);
        assert_eq!(h.finish(), build.hash_one(a));
    }
}
