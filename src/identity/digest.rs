//! SHA-256 of presented credentials (bearer tokens, subscription keys), remembered per thread
//! for the last few.
//!
//! Both hot-path lookups are keyed by a credential's SHA-256 (the verified-token cache and the
//! subscription-key index never hold a credential itself), and a client sends the same token
//! and key on every request. Hashing costs about 40 ns per 64-byte block here (SHA extensions):
//! 170 ns for the benchmark's 190-byte token, about 1 µs for a 1.5 KiB RS256 token from an
//! enterprise identity provider — most of what a cached `validate-jwt` costs. A repeat is
//! answered from a small direct-mapped table per thread instead.
//!
//! The table holds the last credentials verbatim (as the request buffers that carried them
//! do, and only in this process's memory); a lookup compares the whole credential in constant
//! time, so a hit or a miss says nothing about a remembered credential's bytes. It memoizes a
//! pure function: an entry can never be stale, and a credential that collides with another's
//! slot only costs the hash it would have cost anyway.

use std::cell::RefCell;

/// What the credential is; each kind has its own table, so one never evicts the other.
#[derive(Clone, Copy)]
pub enum Kind {
    Token,
    Key,
}

/// Slots per kind and thread.
const SLOTS: usize = 8;
/// Longer credentials are hashed every time (and not copied).
const MAX_REMEMBERED: usize = 4096;

#[derive(Default)]
struct Slot {
    /// Empty: unused (an empty credential is never remembered).
    bytes: Vec<u8>,
    digest: [u8; 32],
}

type Table = RefCell<[Slot; SLOTS]>;

thread_local! {
    static TOKENS: Table = RefCell::new(Default::default());
    static KEYS: Table = RefCell::new(Default::default());
}

/// The SHA-256 of `bytes`.
pub fn sha256(kind: Kind, bytes: &[u8]) -> [u8; 32] {
    if bytes.is_empty() || bytes.len() > MAX_REMEMBERED {
        return compute(bytes);
    }
    let table = match kind {
        Kind::Token => &TOKENS,
        Kind::Key => &KEYS,
    };
    // Off a thread whose locals are being torn down, it is just hashed.
    table
        .try_with(|t| {
            let Ok(mut t) = t.try_borrow_mut() else { return compute(bytes) };
            let slot = &mut t[slot_of(bytes)];
            if slot.bytes.len() == bytes.len() && same_bytes(&slot.bytes, bytes) {
                return slot.digest;
            }
            let digest = compute(bytes);
            slot.bytes.clear();
            slot.bytes.extend_from_slice(bytes);
            slot.digest = digest;
            digest
        })
        .unwrap_or_else(|_| compute(bytes))
}

fn compute(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// A slot from the last 8 bytes (a token's signature, a key's random tail) and the length. A
/// caller can steer its credentials into one slot; that only makes them miss.
fn slot_of(bytes: &[u8]) -> usize {
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    let h = (u64::from_le_bytes(tail) ^ bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 61) as usize % SLOTS
}

/// Equal slices of equal length, in time that depends on the length only: every word is
/// compared, with no early exit (`subtle`'s byte-wise form costs more than the hash saved).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (wa.remainder(), wb.remainder());
    // A chunk of `chunks_exact(8)` is 8 bytes: the conversion cannot fail.
    let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or_default());
    let mut diff = 0u64;
    for (x, y) in wa.zip(wb) {
        diff |= word(x) ^ word(y);
    }
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    use super::*;

    fn reference(b: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(b).into()
    }

    #[test]
    fn repeats_and_slot_collisions_give_each_credential_its_own_digest() {
        // Same length, same last 8 bytes: the same slot; they differ in the first byte only.
        let a = b"a0123456789-token-tail-12345678".to_vec();
        let mut b = a.clone();
        b[0] = b'b';
        assert_eq!(slot_of(&a), slot_of(&b));
        for _ in 0..3 {
            for x in [&a, &b] {
                assert_eq!(sha256(Kind::Token, x), reference(x));
                assert_eq!(sha256(Kind::Token, x), reference(x), "repeat");
            }
        }
        // Many distinct credentials, both kinds, all lengths around the word size.
        for len in 1..40usize {
            let v: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            assert_eq!(sha256(Kind::Key, &v), reference(&v));
            assert_eq!(sha256(Kind::Token, &v), reference(&v));
        }
        assert_eq!(sha256(Kind::Key, &a), reference(&a), "a key table does not answer from the token table");
    }

    #[test]
    fn empty_and_long_credentials_are_hashed_without_being_kept() {
        assert_eq!(sha256(Kind::Token, b""), reference(b""));
        let long = vec![b'x'; MAX_REMEMBERED + 1];
        assert_eq!(sha256(Kind::Token, &long), reference(&long));
        TOKENS.with_borrow(|t| assert!(t.iter().all(|s| s.bytes.len() <= MAX_REMEMBERED)));
    }

    #[test]
    fn the_comparison_sees_every_byte() {
        let base: Vec<u8> = (0..37u8).collect();
        assert!(same_bytes(&base, &base.clone()));
        for i in 0..base.len() {
            let mut other = base.clone();
            other[i] ^= 0x80;
            assert!(!same_bytes(&base, &other), "byte {i}");
        }
        assert!(!same_bytes(&base, &base[..36]));
    }
}
