//! Who may open a connection: the checks made before any WebSocket exists.
//! A cap on handshakes in progress and a per-IP handshake rate (both before
//! the request is read), an `Origin` allow-list, and a per-IP cap on
//! concurrent connections. Shared by every core; each check is one atomic,
//! one short lock or one rate-limiter cell.
//!
//! Per-IP state stays bounded however many addresses are seen: connection
//! counts are dropped when they reach zero (so there are at most as many as
//! connections), and the handshake limiter forgets idle addresses, and, if
//! still over `max_tracked_ips`, starts afresh.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::Config;

/// Why a connection was turned away before its upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("too many handshakes in progress")]
    Busy,
    #[error("too many handshakes from your address")]
    HandshakeRate,
    #[error("too many connections from your address")]
    PerIp,
}

/// The node's admission state.
pub(crate) struct Admission {
    in_progress: AtomicUsize,
    max_in_progress: usize,
    origins: Vec<String>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
    handshakes: Option<(Quota, RwLock<DefaultKeyedRateLimiter<IpAddr>>)>,
    max_tracked: usize,
}

/// A handshake in progress; dropping it frees its place.
pub(crate) struct HandshakeSlot {
    admission: Arc<Admission>,
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        self.admission.in_progress.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection counted against its address; dropping it uncounts it.
pub(crate) struct IpSlot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let Ok(mut per_ip) = self.admission.per_ip.lock() else {
            return;
        };
        if let Some(count) = per_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// An origin as compared: lower case, without a trailing slash.
fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Admission {
    pub(crate) fn new(config: &Config) -> Admission {
        let handshakes = NonZeroU32::new(config.handshake_rate_per_ip).map(|rate| {
            let quota = Quota::per_second(rate);
            (quota, RwLock::new(RateLimiter::keyed(quota)))
        });
        Admission {
            in_progress: AtomicUsize::new(0),
            max_in_progress: config.max_handshakes_in_progress,
            origins: config
                .allowed_origins
                .0
                .iter()
                .map(|o| normalize(o))
                .collect(),
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: config.max_connections_per_ip,
            handshakes,
            max_tracked: config.max_tracked_ips,
        }
    }

    /// Called on accept, before anything is read.
    pub(crate) fn begin_handshake(self: &Arc<Self>, ip: IpAddr) -> Result<HandshakeSlot, Refusal> {
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let slot = HandshakeSlot {
            admission: self.clone(),
        };
        if before >= self.max_in_progress {
            return Err(Refusal::Busy);
        }
        if let Some((quota, limiter)) = &self.handshakes {
            let allowed = limiter.read().map_or(true, |l| l.check_key(&ip).is_ok());
            self.bound_tracked(*quota, limiter);
            if !allowed {
                return Err(Refusal::HandshakeRate);
            }
        }
        Ok(slot)
    }

    /// Keeps the handshake limiter's state under `max_tracked`.
    fn bound_tracked(&self, quota: Quota, limiter: &RwLock<DefaultKeyedRateLimiter<IpAddr>>) {
        let len = limiter.read().map_or(0, |l| l.len());
        if len <= self.max_tracked {
            return;
        }
        if let Ok(mut limiter) = limiter.write() {
            limiter.retain_recent();
            if limiter.len() > self.max_tracked {
                *limiter = RateLimiter::keyed(quota);
            }
        }
    }

    /// Addresses whose handshake rate is tracked now.
    #[cfg(test)]
    fn tracked_ips(&self) -> usize {
        self.handshakes
            .as_ref()
            .and_then(|(_, l)| l.read().ok().map(|l| l.len()))
            .unwrap_or(0)
    }

    /// Whether a browser from `origin` may connect. Requests without an
    /// `Origin` header do not come from a browser page and pass.
    pub(crate) fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(origin) => {
                let origin = normalize(origin);
                self.origins.contains(&origin)
            }
        }
    }

    /// Counts a connection against its address.
    pub(crate) fn admit_ip(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, Refusal> {
        if self.max_per_ip == 0 {
            return Ok(None);
        }
        let Ok(mut per_ip) = self.per_ip.lock() else {
            return Ok(None);
        };
        let count = per_ip.entry(ip).or_insert(0);
        if *count >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        *count += 1;
        Ok(Some(IpSlot {
            admission: self.clone(),
            ip,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(f: impl FnOnce(&mut Config)) -> Arc<Admission> {
        let mut config = Config::default();
        f(&mut config);
        Arc::new(Admission::new(&config))
    }

    #[test]
    fn origins_are_compared_without_case_or_trailing_slash_and_non_browsers_pass() {
        let a = admission(|c| c.allowed_origins.0 = vec!["https://App.example.com/".into()]);
        assert!(a.origin_allowed(Some("https://app.example.com")));
        assert!(!a.origin_allowed(Some("https://evil.example.com")));
        assert!(a.origin_allowed(None));
        assert!(admission(|_| ()).origin_allowed(Some("https://anywhere")));
    }

    #[test]
    fn per_ip_slots_are_counted_and_freed() {
        let a = admission(|c| c.max_connections_per_ip = 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let one = a.admit_ip(ip).unwrap();
        let _two = a.admit_ip(ip).unwrap();
        assert_eq!(a.admit_ip(ip).err(), Some(Refusal::PerIp));
        assert!(a.admit_ip("10.0.0.2".parse().unwrap()).is_ok());
        drop(one);
        assert!(a.admit_ip(ip).is_ok());
    }

    #[test]
    fn handshake_rate_state_stays_bounded_however_many_addresses_come() {
        let a = admission(|c| {
            c.handshake_rate_per_ip = 1;
            c.max_tracked_ips = 100;
        });
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(a.begin_handshake(ip).is_ok());
        assert_eq!(a.begin_handshake(ip).err(), Some(Refusal::HandshakeRate));
        for n in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + n));
            let _ = a.begin_handshake(ip);
            assert!(
                a.tracked_ips() <= 101,
                "{} addresses tracked",
                a.tracked_ips()
            );
        }
    }

    #[test]
    fn handshakes_in_progress_are_capped() {
        let a = admission(|c| c.max_handshakes_in_progress = 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let first = a.begin_handshake(ip).unwrap();
        assert_eq!(a.begin_handshake(ip).err(), Some(Refusal::Busy));
        drop(first);
        assert!(a.begin_handshake(ip).is_ok());
    }
}
