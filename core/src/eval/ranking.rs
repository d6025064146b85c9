//! Scores ranked once, then read as a sweep over their distinct values.
//!
//! Every threshold metric here (ROC, precision–recall, PRO) is a walk over the samples sorted by
//! descending score, emitting one curve point per *distinct* score: samples with equal scores
//! cross any threshold together, which is exactly how scikit-learn's `_binary_clf_curve` treats
//! ties. Sorting is the only super-linear step, so a whole test set of anomaly maps (millions of
//! pixels) is ranked once and every metric reads the same ranking.
//!
//! A sample is packed into one `u64`: the high half is an order-reversing key of the score (so
//! an ascending sort gives descending scores), the low half a payload (the label, or a region id
//! for PRO). Sorting plain integers is far faster than sorting `(f32, bool)` pairs with a float
//! comparator, and lets a radix sort do it in linear time.

/// Rank key of a score: ascending keys are descending scores, and the key is a bijection on
/// non-NaN values once `-0.0` is folded into `+0.0` (they are equal scores, so one group).
fn descending_key(score: f32) -> u32 {
    // `+ 0.0` turns -0.0 into +0.0 and leaves every other value alone.
    let bits = (score + 0.0).to_bits();
    // The usual total-order trick: flip all bits of negatives, only the sign bit of positives;
    // the unsigned order of the result is then the numeric order. Negate it for descending.
    let ascending = if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    };
    !ascending
}

/// The score a key was made from (inverse of [`descending_key`]).
fn score_of_key(key: u32) -> f32 {
    let ascending = !key;
    let bits = if ascending & 0x8000_0000 != 0 {
        ascending & 0x7fff_ffff
    } else {
        !ascending
    };
    f32::from_bits(bits)
}

/// Packs a score and a 32-bit payload; `None` for NaN, which has no rank.
pub(crate) fn pack(score: f32, payload: u32) -> Option<u64> {
    if score.is_nan() {
        return None;
    }
    Some((u64::from(descending_key(score)) << 32) | u64::from(payload))
}

/// The payload half of a packed sample.
pub(crate) fn payload(packed: u64) -> u32 {
    // Truncation keeps exactly the low half, which is the payload.
    packed as u32
}

/// Sorts packed samples by descending score. The payload order within a group of equal scores
/// is irrelevant, so only the high half is sorted (LSD radix, 11-bit digits: 3 passes).
pub(crate) fn sort_packed(keys: &mut Vec<u64>) {
    // For small inputs the counting arrays cost more than a comparison sort.
    if keys.len() < 4096 {
        keys.sort_unstable();
        return;
    }
    const DIGIT_BITS: u32 = 11;
    const BUCKETS: usize = 1 << DIGIT_BITS;
    let mut scratch = vec![0u64; keys.len()];
    for shift in [32, 32 + DIGIT_BITS, 32 + 2 * DIGIT_BITS] {
        let digit = |k: u64| ((k >> shift) as usize) & (BUCKETS - 1);
        let mut counts = vec![0usize; BUCKETS];
        for &k in keys.iter() {
            counts[digit(k)] += 1;
        }
        // A pass where every key shares the digit would be the identity: skip the copy. This
        // is the common case for the top digit (scores of one sign and similar magnitude).
        if counts.contains(&keys.len()) {
            continue;
        }
        let mut next = 0usize;
        for c in counts.iter_mut() {
            let start = next;
            next += *c;
            *c = start;
        }
        for &k in keys.iter() {
            let d = digit(k);
            scratch[counts[d]] = k;
            counts[d] += 1;
        }
        std::mem::swap(keys, &mut scratch);
    }
}

/// Iterator over groups of equal scores in sorted packed samples: yields the group's score and
/// its samples, highest score first.
pub(crate) struct Groups<'a> {
    rest: &'a [u64],
}

impl<'a> Groups<'a> {
    /// Groups of `sorted` (as left by [`sort_packed`]).
    pub(crate) fn new(sorted: &'a [u64]) -> Self {
        Groups { rest: sorted }
    }
}

impl<'a> Iterator for Groups<'a> {
    type Item = (f32, &'a [u64]);

    fn next(&mut self) -> Option<Self::Item> {
        let first = *self.rest.first()?;
        let high = first >> 32;
        let len = self
            .rest
            .iter()
            .position(|&k| k >> 32 != high)
            .unwrap_or(self.rest.len());
        let (group, rest) = self.rest.split_at(len);
        self.rest = rest;
        Some((score_of_key((high) as u32), group))
    }
}

/// One point of a binary classification curve: predicting "anomalous" for every score
/// `>= threshold` gives `true_positives` hits and `false_positives` false alarms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurvePoint {
    /// The decision threshold (one of the input scores).
    pub threshold: f32,
    /// Positives with score `>= threshold`.
    pub true_positives: u64,
    /// Negatives with score `>= threshold`.
    pub false_positives: u64,
}

/// Scores with binary labels (`true` = anomalous), ranked once so that several metrics can be
/// read without sorting again. Built in O(n) time and memory after an O(n) radix sort.
#[derive(Debug, Clone)]
pub struct ScoreRanking {
    sorted: Vec<u64>,
    positives: u64,
    negatives: u64,
}

impl ScoreRanking {
    /// Ranks `scores` with their `labels`. `None` when the lengths differ or a score is NaN
    /// (NaN has no place in a ranking; infinities are ranked like any other value).
    pub fn new(scores: &[f32], labels: &[bool]) -> Option<Self> {
        if scores.len() != labels.len() {
            return None;
        }
        Self::from_pairs(scores.iter().copied().zip(labels.iter().copied()))
    }

    /// Ranks `(score, label)` pairs, e.g. every pixel of a set of anomaly maps without first
    /// copying them into one slice. `None` when a score is NaN.
    pub fn from_pairs(pairs: impl IntoIterator<Item = (f32, bool)>) -> Option<Self> {
        let pairs = pairs.into_iter();
        let mut sorted = Vec::with_capacity(pairs.size_hint().0);
        let mut positives = 0u64;
        for (score, label) in pairs {
            positives += u64::from(label);
            sorted.push(pack(score, u32::from(label))?);
        }
        sort_packed(&mut sorted);
        let negatives = sorted.len() as u64 - positives;
        Some(ScoreRanking {
            sorted,
            positives,
            negatives,
        })
    }

    /// Number of positive (anomalous) samples.
    pub fn positives(&self) -> u64 {
        self.positives
    }

    /// Number of negative (normal) samples.
    pub fn negatives(&self) -> u64 {
        self.negatives
    }

    /// The curve points, one per distinct score, by descending threshold; counts are cumulative,
    /// so the last point holds every sample.
    pub fn curve(&self) -> impl Iterator<Item = CurvePoint> + '_ {
        let mut tp = 0u64;
        let mut fp = 0u64;
        Groups::new(&self.sorted).map(move |(threshold, group)| {
            let hits = group.iter().map(|&k| u64::from(payload(k))).sum::<u64>();
            tp += hits;
            fp += group.len() as u64 - hits;
            CurvePoint {
                threshold,
                true_positives: tp,
                false_positives: fp,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_and_invert() {
        let values = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            0.0,
            1e-40,
            0.25,
            7.0,
            f32::INFINITY,
        ];
        for w in values.windows(2) {
            assert!(descending_key(w[0]) > descending_key(w[1]), "{w:?}");
        }
        for v in values {
            assert_eq!(score_of_key(descending_key(v)).to_bits(), v.to_bits());
        }
        assert_eq!(descending_key(-0.0), descending_key(0.0));
    }

    #[test]
    fn radix_matches_comparison_sort() {
        // A deterministic pseudo-random sequence wide enough to take the radix path.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut keys: Vec<u64> = (0..20_000)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let score = ((state >> 40) as f32 / 1000.0) - 5000.0;
                pack(score, i % 3).unwrap_or(0)
            })
            .collect();
        let mut expected = keys.clone();
        expected.sort_unstable_by_key(|k| k >> 32);
        sort_packed(&mut keys);
        let high = |v: &[u64]| v.iter().map(|k| k >> 32).collect::<Vec<_>>();
        assert_eq!(high(&keys), high(&expected));
    }
}
