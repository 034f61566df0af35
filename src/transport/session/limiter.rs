//! The per-connection publish limits (`publish_rate`, `publish_bytes_rate`
//! and their bursts), and the count of refusals in a row that ends in a
//! 1008 close.
//!
//! The limiters are made at a connection's first publish: most connections
//! of a broker are viewers that never publish, and each costs nothing here.
//! They share their core's clock: governor's default makes a new `quanta`
//! clock per limiter, calibrating it each time, which was a third of the
//! CPU a node spent accepting a connection.

use std::num::NonZeroU32;

use governor::clock::QuantaClock;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

thread_local! {
    /// One calibrated clock per core thread, cloned into every limiter.
    static CLOCK: QuantaClock = QuantaClock::default();
}

/// The two limits, once a connection has published.
struct Limiters {
    messages: Option<DefaultDirectRateLimiter>,
    bytes: Option<DefaultDirectRateLimiter>,
}

/// The per-connection publish limits: messages and payload bytes per
/// second, each with a burst (`None`: no limit).
pub(super) struct PublishLimiter {
    /// Messages per second and burst, bytes per second and burst.
    quotas: [(u32, u32); 2],
    limiters: Option<Box<Limiters>>,
    /// Rate-limited publishes in a row.
    pub(super) strikes: usize,
}

impl PublishLimiter {
    pub(super) fn new(config: &crate::Config) -> PublishLimiter {
        PublishLimiter {
            quotas: [
                (config.publish_rate, config.publish_burst),
                (config.publish_bytes_rate, config.publish_bytes_burst),
            ],
            limiters: None,
            strikes: 0,
        }
    }

    fn limiters(&mut self) -> &Limiters {
        let [messages, bytes] = self.quotas;
        self.limiters.get_or_insert_with(|| {
            let limiter = |(rate, burst): (u32, u32)| {
                let rate = NonZeroU32::new(rate)?;
                let burst = NonZeroU32::new(burst).unwrap_or(rate);
                let clock = CLOCK.with(Clone::clone);
                Some(RateLimiter::direct_with_clock(
                    Quota::per_second(rate).allow_burst(burst),
                    clock,
                ))
            };
            Box::new(Limiters {
                messages: limiter(messages),
                bytes: limiter(bytes),
            })
        })
    }

    /// Whether a publish of `len` payload bytes may go now.
    pub(super) fn allow(&mut self, len: usize) -> bool {
        let limiters = self.limiters();
        let message_ok = limiters.messages.as_ref().is_none_or(|l| l.check().is_ok());
        let bytes_ok = match (
            &limiters.bytes,
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
