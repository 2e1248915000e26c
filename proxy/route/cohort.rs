//! The cohort hash: `murmur3_x86_32(salt ":" key, seed 0) mod 10000`.
//!
//! MurmurHash3 x86_32 with seed 0 is what Unleash uses for its rollouts, so an SDK in any language
//! can reproduce which version a user lands in. The result depends only on the salt and the key,
//! never on the process, the build or the weights, so every proxy of a fleet agrees and a user's
//! bucket never changes; only the ranges laid over the buckets move as weights change.

use std::io::Read;

/// The size of the fixed bucket space: 0.01% resolution.
pub const BUCKETS: u32 = 10_000;

/// The bucket (0..BUCKETS) of a user key under a salt.
pub fn bucket_of(salt: &str, key: &[u8]) -> u32 {
    let mut input = salt.as_bytes().chain(&b":"[..]).chain(key);
    // Reading from in-memory slices cannot fail; 0 keeps the function total all the same.
    let hash = murmur3::murmur3_32(&mut input, 0).unwrap_or(0);
    hash % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_published_reference_values() {
        // Reference vectors of MurmurHash3_x86_32 with seed 0 (SMHasher / Unleash tests).
        let h = |s: &[u8]| murmur3::murmur3_32(&mut &s[..], 0).unwrap();
        assert_eq!(h(b""), 0);
        assert_eq!(h(b"hello"), 0x248b_fa47);
        assert_eq!(h(b"Hello, world!"), 0xc036_3e43);
    }

    #[test]
    fn bucket_is_stable_and_depends_on_salt() {
        assert_eq!(bucket_of("shop", b"user-1"), bucket_of("shop", b"user-1"));
        let differ = (0..100)
            .filter(|i| {
                let key = format!("user-{i}");
                bucket_of("a", key.as_bytes()) != bucket_of("b", key.as_bytes())
            })
            .count();
        assert!(
            differ > 90,
            "salts should give independent cohorts, {differ}/100 differ"
        );
    }
}
