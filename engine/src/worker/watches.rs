//! Worker 0's presence watches: per watched raw key, the time of its latest reading, and per
//! watch whether that is within its timeout. The dataflow sees a watch's `offline` row only
//! when it changes, at the millisecond it does.
//!
//! A watch was a `count` window over its device's readings: every reading went into the
//! window with its retraction 10 minutes ahead, so the arrangements' batchers held and merged
//! again at every tick all the readings of the last 10 minutes (10,000 devices sending every
//! second: 6 million updates, merged a thousand times a second), and the window's reduce went
//! over all of a device's readings at each new one. Presence asks only whether the latest one
//! is recent enough: a reading now costs a hash lookup, and an expiry one heap entry per
//! online watch (skipped and pushed again when a later reading moved it).

use crate::dataflow::{ChainNo, Diff, Time};
use crate::keys::Id;
use crate::presence::Presence;
use differential_dataflow::input::InputSession;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// The `offline` input: a watch's number while its device is offline.
pub(crate) type OfflineInput = InputSession<Time, ChainNo, Diff>;

#[derive(Default)]
pub(super) struct Watches {
    by_raw: HashMap<u64, Watched, foldhash::fast::RandomState>,
    /// When an online watch's device may go offline (`Reverse` for the earliest first).
    expiries: BinaryHeap<Reverse<(Time, u64, ChainNo)>>,
}

/// The watches over one raw key.
struct Watched {
    /// The check of the identity whose readings count.
    check: u64,
    /// The time of the latest reading since the key was first watched.
    last: Option<i64>,
    /// Each watch's number, timeout and whether its device is online.
    watches: Vec<(ChainNo, i64, bool)>,
}

impl Watched {
    fn online(&self, timeout_ms: i64, epoch: Time) -> bool {
        self.last.is_some_and(|t| expiry(t, timeout_ms) > epoch)
    }
}

impl Watches {
    /// Whether an online device may go offline (time must move on for it).
    pub(super) fn has_expiries(&self) -> bool {
        !self.expiries.is_empty()
    }

    /// Starts watch `no` at tick `epoch`: online if the key's latest reading is recent
    /// enough for its timeout (a replaced watch's readings count), offline otherwise.
    pub(super) fn install(
        &mut self,
        no: ChainNo,
        presence: &Presence,
        epoch: Time,
        offline: &mut OfflineInput,
    ) {
        let raw = presence.raw;
        let watched = self.by_raw.entry(raw.key).or_insert_with(|| Watched {
            check: raw.check,
            last: None,
            watches: Vec::new(),
        });
        let timeout = presence.timeout_ms();
        let online = watched.online(timeout, epoch);
        watched.watches.push((no, timeout, online));
        match watched.last {
            Some(t) if online => self
                .expiries
                .push(Reverse((expiry(t, timeout), raw.key, no))),
            _ => offline.update(no, 1),
        }
    }

    /// Ends watch `no`: its `offline` row goes (an unwatched device is neither). The key's
    /// latest reading is kept for a watch replacing it until [`Watches::forget_unwatched`].
    pub(super) fn remove(&mut self, no: ChainNo, presence: &Presence, offline: &mut OfflineInput) {
        let Some(watched) = self.by_raw.get_mut(&presence.raw.key) else {
            return;
        };
        if let Some(at) = watched.watches.iter().position(|(n, _, _)| *n == no) {
            let (_, _, online) = watched.watches.swap_remove(at);
            if !online {
                offline.update(no, -1);
            }
        }
    }

    /// Forgets the keys of `raws` that no watch reads any more.
    pub(super) fn forget_unwatched(&mut self, raws: impl IntoIterator<Item = u64>) {
        for raw in raws {
            if self.by_raw.get(&raw).is_some_and(|w| w.watches.is_empty()) {
                self.by_raw.remove(&raw);
            }
        }
    }

    /// A reading of `raw` at `t_ms`, fed at tick `epoch`: the watches it brings back online
    /// leave `offline`. `None` when no watch reads the key; `Some(false)` when the key belongs
    /// to another identity (a collision: the reading counts for nothing).
    pub(super) fn seen(
        &mut self,
        raw: Id,
        t_ms: i64,
        epoch: Time,
        offline: &mut OfflineInput,
    ) -> Option<bool> {
        let watched = self.by_raw.get_mut(&raw.key)?;
        if watched.check != raw.check {
            return Some(false);
        }
        if watched.last.is_some_and(|last| last >= t_ms) {
            return Some(true);
        }
        watched.last = Some(t_ms);
        for (no, timeout, online) in &mut watched.watches {
            let until = expiry(t_ms, *timeout);
            if !*online && until > epoch {
                *online = true;
                offline.update(*no, -1);
                self.expiries.push(Reverse((until, raw.key, *no)));
            }
        }
        Some(true)
    }

    /// Takes the watches offline whose latest reading is older than their timeout at a time
    /// before `next` (the tick about to open), each at the millisecond it expired (not before
    /// `epoch`, the tick closing): no later reading can keep them online any more.
    pub(super) fn expire_before(&mut self, next: Time, epoch: Time, offline: &mut OfflineInput) {
        while let Some(&Reverse((at, raw, no))) = self.expiries.peek() {
            if at >= next {
                break;
            }
            self.expiries.pop();
            let Some(watched) = self.by_raw.get_mut(&raw) else {
                continue;
            };
            let last = watched.last;
            let Some((_, timeout, online)) = watched.watches.iter_mut().find(|(n, _, _)| *n == no)
            else {
                continue; // removed since
            };
            if !*online {
                continue;
            }
            let until = last.map_or(at, |t| expiry(t, *timeout));
            if until > at {
                // A later reading moved it.
                self.expiries.push(Reverse((until, raw, no)));
                continue;
            }
            *online = false;
            offline.update_at(no, at.max(epoch), 1);
        }
    }
}

/// When a reading at `t_ms` stops counting for a timeout.
fn expiry(t_ms: i64, timeout_ms: i64) -> Time {
    t_ms.saturating_add(timeout_ms).max(0) as Time
}
