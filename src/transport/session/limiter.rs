//! The per-connection publish limits (`publish_rate`, `publish_bytes_rate`
//! and their bursts), and the count of refusals in a row that ends in a
//! 1008 close.

use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The per-connection publish limits: messages and payload bytes per
/// second, each with a burst (`None`: no limit).
pub(super) struct PublishLimiter {
    messages: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
    /// Rate-limited publishes in a row.
    pub(super) strikes: usize,
}

impl PublishLimiter {
    pub(super) fn new(config: &crate::Config) -> PublishLimiter {
        let limiter = |rate: u32, burst: u32| {
            let rate = NonZeroU32::new(rate)?;
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Some(RateLimiter::direct(
                Quota::per_second(rate).allow_burst(burst),
            ))
        };
        PublishLimiter {
            messages: limiter(config.publish_rate, config.publish_burst),
            bytes: limiter(config.publish_bytes_rate, config.publish_bytes_burst),
            strikes: 0,
        }
    }

    /// Whether a publish of `len` payload bytes may go now.
    pub(super) fn allow(&mut self, len: usize) -> bool {
        let message_ok = self.messages.as_ref().is_none_or(|l| l.check().is_ok());
        let bytes_ok = match (
            &self.bytes,
            NonZeroU32::new(len.min(u32::MAX as usize) as u32),
        ) {
            (Some(limiter), Some(n)) => matches!(limiter.check_n(n), Ok(Ok(()))),
            _ => true,
        };
        let ok = message_ok && bytes_ok;
        self.strikes = if ok { 0 } else { self.strikes + 1 };
        ok
    }
}
