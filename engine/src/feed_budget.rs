//! The readings fed to the engine and not yet taken by worker 0, bounded: the feed channel
//! counts feeds (group commits), and a group commit of batches holds thousands of readings, so
//! 64 of them were about a second of readings queued at 10,000 chains, a second that every
//! notification of a batch waited behind. A feed waits while the readings queued before it
//! and its own exceed the bound (a feed alone is always let in, whatever its size), and worker
//! 0 gives them back as it takes each feed. The WAL writer, which feeds, waits with it, and
//! ingestion behind it: backpressure, not growth.

use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};

#[derive(Debug)]
pub(crate) struct FeedBudget {
    max: usize,
    state: Mutex<State>,
    room: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queued: usize,
    /// Worker 0 has ended: nothing will be given back.
    closed: bool,
}

impl FeedBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            state: Mutex::default(),
            room: Condvar::new(),
        }
    }

    /// Waits for room for `n` readings and takes it.
    pub(crate) fn take(&self, n: usize) -> Result<()> {
        let mut s = self.state.lock().map_err(|_| Error::Stopped)?;
        while !s.closed && s.queued > 0 && s.queued + n > self.max {
            s = self.room.wait(s).map_err(|_| Error::Stopped)?;
        }
        if s.closed {
            return Err(Error::Stopped);
        }
        s.queued += n;
        Ok(())
    }

    /// `n` readings taken by worker 0 (or never sent).
    pub(crate) fn give_back(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.queued = s.queued.saturating_sub(n);
        self.room.notify_all();
    }

    /// Worker 0 has ended: every waiting feed fails.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.room.notify_all();
    }

    pub(crate) fn queued(&self) -> usize {
        self.state.lock().map_or(0, |s| s.queued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_feed_waits_for_room_and_a_lone_feed_always_goes() {
        let budget = Arc::new(FeedBudget::new(10));
        budget.take(25).unwrap(); // alone: in, however large
        let waiting = {
            let b = Arc::clone(&budget);
            std::thread::spawn(move || b.take(3))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished(), "25 queued, no room for 3 more");
        budget.give_back(25);
        waiting.join().unwrap().unwrap();
        assert_eq!(budget.queued(), 3);
        budget.take(7).unwrap();
        let stopped = {
            let b = Arc::clone(&budget);
            std::thread::spawn(move || b.take(1))
        };
        std::thread::sleep(Duration::from_millis(20));
        budget.close();
        assert!(matches!(stopped.join().unwrap(), Err(Error::Stopped)));
    }
}
