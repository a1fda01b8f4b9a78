//! How much aemos sends to a source that has not shown it receives (RFC 7252 §11.3).
//!
//! UDP sources can be forged: a small GET with a victim's address as its source would make
//! aemos send the victim the device's last notification, and an Observe registration would
//! make it send every later one. So, until a source has acknowledged one of aemos's
//! confirmable messages (which needs it to have received it), what aemos sends it in a window
//! of 10 s is bounded by three times what it received from it, or 1,200 bytes, whichever is
//! more; all unverified sources together by `UNVERIFIED_TOTAL` per window. What is over the
//! bound is not sent (a real client retransmits its request). Verified sources stay verified
//! for an hour after their last acknowledgement; both tables are bounded. Loopback sources
//! count as verified.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);
/// Bytes per window to one unverified source at least (a response and a notification).
const FLOOR: u64 = 1200;
const FACTOR: u64 = 3;
/// Bytes per window to all unverified sources together.
const UNVERIFIED_TOTAL: u64 = 4 * 1024 * 1024;
const VERIFIED_FOR: Duration = Duration::from_secs(3600);
/// Sources tracked at once in each table.
const MAX_SOURCES: usize = 100_000;

#[derive(Debug, Default, Clone, Copy)]
struct Budget {
    received: u64,
    sent: u64,
}

#[derive(Debug)]
pub(super) struct Amplification {
    window_start: Instant,
    unverified: HashMap<IpAddr, Budget>,
    unverified_sent: u64,
    verified: HashMap<IpAddr, Instant>,
}

impl Amplification {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            unverified: HashMap::new(),
            unverified_sent: 0,
            verified: HashMap::new(),
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.duration_since(self.window_start) >= WINDOW {
            self.window_start = now;
            self.unverified.clear();
            self.unverified_sent = 0;
            self.verified
                .retain(|_, at| now.duration_since(*at) < VERIFIED_FOR);
        }
    }

    fn is_verified(&self, ip: &IpAddr, now: Instant) -> bool {
        // Loopback cannot be forged from the network (the kernel drops such packets).
        ip.is_loopback()
            || self
                .verified
                .get(ip)
                .is_some_and(|at| now.duration_since(*at) < VERIFIED_FOR)
    }

    /// A datagram of `bytes` from `ip`.
    pub(super) fn received(&mut self, ip: IpAddr, bytes: usize, now: Instant) {
        self.roll(now);
        if self.is_verified(&ip, now) {
            return;
        }
        if let Some(b) = self.budget(ip) {
            b.received += bytes as u64;
        }
    }

    fn budget(&mut self, ip: IpAddr) -> Option<&mut Budget> {
        if self.unverified.len() >= MAX_SOURCES && !self.unverified.contains_key(&ip) {
            return None;
        }
        Some(self.unverified.entry(ip).or_default())
    }

    /// `ip` acknowledged one of aemos's confirmable messages.
    pub(super) fn verify(&mut self, ip: IpAddr, now: Instant) {
        self.roll(now);
        if self.verified.len() < MAX_SOURCES || self.verified.contains_key(&ip) {
            self.verified.insert(ip, now);
            self.unverified.remove(&ip);
        }
    }

    /// Whether `bytes` may go to `ip` now (and counts them if so).
    pub(super) fn may_send(&mut self, ip: IpAddr, bytes: usize, now: Instant) -> bool {
        self.roll(now);
        if self.is_verified(&ip, now) {
            return true;
        }
        let bytes = bytes as u64;
        if self.unverified_sent + bytes > UNVERIFIED_TOTAL {
            return false;
        }
        // Untracked (the table is full): nothing beyond the floor's worth of one message.
        let Some(b) = self.budget(ip) else {
            return false;
        };
        if b.sent + bytes > (FACTOR * b.received).max(FLOOR) {
            return false;
        }
        b.sent += bytes;
        self.unverified_sent += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_sources_get_three_times_what_they_sent_until_they_acknowledge() {
        let now = Instant::now();
        let mut amp = Amplification::new(now);
        let victim: IpAddr = [192, 0, 2, 1].into();
        // A forged 40-byte GET: the floor's worth of answers, then nothing.
        amp.received(victim, 40, now);
        assert!(amp.may_send(victim, 1000, now));
        assert!(!amp.may_send(victim, 300, now));
        // Bigger requests earn more.
        amp.received(victim, 500, now);
        assert!(amp.may_send(victim, 500, now));
        // A new window starts from nothing.
        let later = now + WINDOW;
        assert!(amp.may_send(victim, 1200, later));
        assert!(!amp.may_send(victim, 1, later));
        // An acknowledgement verifies the source: no bound.
        amp.verify(victim, later);
        assert!((0..100).all(|_| amp.may_send(victim, 10_000, later)));
        // For an hour.
        let much_later = later + VERIFIED_FOR + WINDOW;
        assert!(amp.may_send(victim, 1200, much_later));
        assert!(!amp.may_send(victim, 1, much_later));
    }

    #[test]
    fn all_unverified_sources_together_are_bounded() {
        let now = Instant::now();
        let mut amp = Amplification::new(now);
        let sent = (0..100_000u32)
            .map(|i| IpAddr::from(i.to_be_bytes()))
            .filter(|ip| amp.may_send(*ip, 1000, now))
            .count() as u64;
        assert_eq!(sent, UNVERIFIED_TOTAL / 1000);
    }
}
