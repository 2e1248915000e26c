//! The cohort hash: `murmur3_x86_32(salt ":" key, seed 0) mod 10000`.
//!
//! MurmurHash3 x86_32 with seed 0 is what Unleash uses for its rollouts, so an SDK in any language
//! can reproduce which version a user lands in. The result depends only on the salt and the key,
//! never on the process, the build or the weights, so every proxy of a fleet agrees and a user's
//! bucket never changes; only the ranges laid over the buckets move as weights change.

use std::hash::Hasher;

use mur3::Hasher32;

/// The size of the fixed bucket space: 0.01% resolution.
pub const BUCKETS: u32 = 10_000;

/// The bucket (0..BUCKETS) of a user key under a salt.
pub fn bucket_of(salt: &str, key: &[u8]) -> u32 {
    // The streaming hasher gives the same result as hashing the concatenation, without building it.
    let mut hasher = Hasher32::with_seed(0);
    hasher.write(salt.as_bytes());
    hasher.write(b":");
    hasher.write(key);
    hasher.finish32() % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_the_published_reference_values() {
        // Reference vectors of MurmurHash3_x86_32 with seed 0 (SMHasher / Unleash tests).
        let h = |s: &[u8]| mur3::murmurhash3_x86_32(s, 0);
        assert_eq!(h(b""), 0);
        assert_eq!(h(b"hello"), 0x248b_fa47);
        assert_eq!(h(b"Hello, world!"), 0xc036_3e43);
    }

    #[test]
    fn streaming_hash_equals_hash_of_the_concatenation() {
        for (salt, key) in [
            ("", ""),
            ("s", "k"),
            ("shop-2026-11", "user-12345"),
            ("abc", "defgh"),
        ] {
            let joined = format!("{salt}:{key}");
            assert_eq!(
                bucket_of(salt, key.as_bytes()),
                mur3::murmurhash3_x86_32(joined.as_bytes(), 0) % BUCKETS
            );
        }
    }

    #[test]
    fn buckets_are_pinned_across_builds() {
        // Fixed answers: a change here would move users between versions across a fleet upgrade.
        assert_eq!(bucket_of("demo-2026", b"alice"), 265);
        assert_eq!(
            bucket_of("shop-2026-11", b"user-12345"),
            mur3::murmurhash3_x86_32(b"shop-2026-11:user-12345", 0) % BUCKETS
        );
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
