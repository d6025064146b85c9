//! Cutting a batch into one contiguous shard per device, for data-parallel training and for
//! extracting features on several devices.

/// Sizes of the contiguous shards a batch of `n` samples is cut into for `replicas` replicas:
/// as equal as possible, the first ones larger, none empty (fewer shards than replicas when the
/// batch is smaller).
pub fn shard_sizes(n: usize, replicas: usize) -> Vec<usize> {
    let parts = replicas.max(1).min(n.max(1));
    (0..parts)
        .map(|r| n / parts + usize::from(r < n % parts))
        .filter(|&s| s > 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order_and_differ_by_at_most_one() {
        assert_eq!(shard_sizes(8, 2), vec![4, 4]);
        assert_eq!(shard_sizes(7, 3), vec![3, 2, 2]);
        assert_eq!(shard_sizes(2, 4), vec![1, 1]);
        assert_eq!(shard_sizes(5, 1), vec![5]);
        for n in 1..40 {
            for r in 1..9 {
                let s = shard_sizes(n, r);
                assert_eq!(s.iter().sum::<usize>(), n, "{n} over {r}");
                assert!(s.len() <= r && !s.contains(&0));
                assert!(s.windows(2).all(|w| w[0] >= w[1] && w[0] - w[1] <= 1));
            }
        }
    }
}
