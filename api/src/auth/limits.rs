//! Rate limits per device and per client (`governor`'s keyed GCRA limiters), shared by every
//! protocol: HTTP answers 429 with `Retry-After`, CoAP 4.29, MQTT closes the connection
//! (MQTT 5: DISCONNECT with reason 0x96, message rate too high).
//!
//! A device is limited by its id whatever protocol it uses; a user by its `sub`; a request
//! without a credential by its source address. `0` turns a limit off. Keys not seen for a
//! while are swept ([`RateLimits::sweep`]), so addresses cannot grow the table without bound.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntCounterVec;

/// Messages per second and burst of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

pub struct RateLimits {
    device: Option<DefaultKeyedRateLimiter<String>>,
    client: Option<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
    refused: IntCounterVec,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("device", &self.device.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(rate: Rate) -> Option<DefaultKeyedRateLimiter<K>> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst.max(rate.per_second)).unwrap_or(per_second);
    Some(RateLimiter::keyed(
        Quota::per_second(per_second).allow_burst(burst),
    ))
}

impl RateLimits {
    /// `refused` counts refusals by protocol (its one label).
    pub fn new(device: Rate, client: Rate, refused: IntCounterVec) -> Self {
        Self {
            device: limiter(device),
            client: limiter(client),
            clock: DefaultClock::default(),
            refused,
        }
    }

    /// Whether devices and users are limited at all (callers skip building keys otherwise).
    pub fn limits_keys(&self) -> bool {
        self.device.is_some()
    }

    /// Takes one message of `key` (a device or user); `Err` is the wait before the next.
    pub fn check_key(&self, key: String, protocol: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.device else {
            return Ok(());
        };
        limiter.check_key(&key).map_err(|not_until| {
            self.refused.with_label_values(&[protocol]).inc();
            not_until.wait_time_from(self.clock.now())
        })
    }

    /// Takes one message of a client without credential, by address.
    pub fn check_addr(&self, addr: IpAddr, protocol: &str) -> Result<(), Duration> {
        let Some(limiter) = &self.client else {
            return Ok(());
        };
        limiter.check_key(&addr).map_err(|not_until| {
            self.refused.with_label_values(&[protocol]).inc();
            not_until.wait_time_from(self.clock.now())
        })
    }

    /// Forgets keys whose limit has fully recovered.
    pub fn sweep(&self) {
        if let Some(l) = &self.device {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.client {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
