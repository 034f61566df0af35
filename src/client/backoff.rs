//! How long to wait between reconnect attempts: a pure function of the
//! attempt and a random draw, so its bounds are tested without waiting.

use std::time::Duration;

/// How long to wait before connection attempt `attempt` (0 for the first
/// after a drop): "full jitter", a uniform draw in [0, min(max, base × 2^attempt)],
/// so that clients dropped together do not come back together.
pub(super) fn backoff_delay(attempt: u32, base: Duration, max: Duration, random: u64) -> Duration {
    let bound = base.saturating_mul(2u32.saturating_pow(attempt)).min(max);
    let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX);
    // `random` as a fraction of 2^64, times the bound: uniform, no modulo bias.
    let drawn = (u128::from(nanos) * u128::from(random)) >> 64;
    Duration::from_nanos(u64::try_from(drawn).unwrap_or(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_draws_from_a_bound_that_doubles_up_to_the_max() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        // The largest draw falls short of the bound by less than a nanosecond per second.
        let bound = |attempt| {
            let longest = backoff_delay(attempt, base, max, u64::MAX);
            Duration::from_millis(u64::try_from(longest.as_nanos().div_ceil(1_000_000)).unwrap())
        };
        assert_eq!(bound(0), Duration::from_millis(100));
        assert_eq!(bound(1), Duration::from_millis(200));
        assert_eq!(bound(6), Duration::from_millis(6_400));
        assert_eq!(bound(7), max, "capped");
        assert_eq!(bound(1_000), max, "no overflow however long it goes on");
        assert_eq!(
            backoff_delay(0, base, max, 1 << 63),
            Duration::from_millis(50),
            "the middle of the range"
        );
        assert_eq!(
            backoff_delay(3, base, max, 0),
            Duration::ZERO,
            "full jitter starts at zero"
        );
        for seed in 0..1_000u64 {
            let random = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert!(backoff_delay(2, base, max, random) <= Duration::from_millis(400));
        }
    }
}
