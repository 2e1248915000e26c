//! The weighted split of one route: cumulative weights for the per-request random draw and the
//! same ranges laid over a fixed space of [`BUCKETS`] cohort buckets, in declared order.

use rand::Rng;

use super::cohort::BUCKETS;

/// Cumulative ranges over a route's versions. A version with weight 0 has an empty range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// `cumulative[i]` is the sum of weights of versions `0..=i`.
    cumulative: Vec<u64>,
    /// `bucket_ends[i]` is the first bucket after version `i`'s range.
    bucket_ends: Vec<u32>,
}

impl Split {
    /// Lays out the ranges of `weights`, one per version in declared order.
    pub fn new(weights: &[u32]) -> Self {
        let mut sum = 0u64;
        let cumulative: Vec<u64> = weights
            .iter()
            .map(|w| {
                sum += u64::from(*w);
                sum
            })
            .collect();
        let bucket_ends = cumulative
            .iter()
            // c <= sum, so the quotient is at most BUCKETS and fits u32; all-zero weights own none.
            .map(|c| (c * u64::from(BUCKETS)).checked_div(sum).unwrap_or(0) as u32)
            .collect();
        Split {
            cumulative,
            bucket_ends,
        }
    }

    /// The sum of all weights.
    pub fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// True when no version has a positive weight.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The version a uniformly random draw falls into.
    pub fn by_random<R: Rng + ?Sized>(&self, rng: &mut R) -> Option<usize> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let draw = rng.random_range(0..total);
        self.cumulative.iter().position(|c| draw < *c)
    }

    /// The version whose bucket range holds `bucket` (0..BUCKETS).
    pub fn by_bucket(&self, bucket: u32) -> Option<usize> {
        self.bucket_ends.iter().position(|end| bucket < *end)
    }

    /// The share of buckets each version owns, in hundredths of a percent.
    pub fn bucket_share(&self, version: usize) -> u32 {
        let start = match version {
            0 => 0,
            v => self.bucket_ends.get(v - 1).copied().unwrap_or(0),
        };
        self.bucket_ends
            .get(version)
            .map_or(0, |end| end.saturating_sub(start))
    }
}
