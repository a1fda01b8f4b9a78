//! The one notion of now that storage, the engine and device control share.
//!
//! Every part of aemos that reads the time (a reading's default timestamp and the persistence
//! horizon in storage, window ends and `no_data` deadlines in the engine, retries, timeouts,
//! schedules and pre-cleans in device control) takes an `Arc<dyn Clock>` made once at start:
//! [`SystemClock`] in the server, [`ManualClock`] in tests, which then drive hours of
//! retries, a daylight-saving change or a pre-clean's end without waiting. Loops that wait for
//! a deadline sleep for at most a second at a time and read the clock again, so a manual clock
//! moved forward is seen within that second.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Source of wall-clock time.
pub trait Clock: Debug + Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(before) => -(before.duration().as_millis() as i64),
        }
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_after_2020_and_a_manual_one_moves_when_told() {
        assert!(SystemClock.now_ms() > 1_577_836_800_000);
        let clock = ManualClock::new(10);
        clock.advance(5);
        assert_eq!(clock.now_ms(), 15);
        clock.set(3);
        assert_eq!(clock.now_ms(), 3);
    }
}
