//! Worker 0's latest value per key, and what each key held before each change of a tick that
//! is not complete yet: worker 0 runs ahead of the dataflow, so when a tick's firings
//! are built, the values the firing reports are read back as of that tick.
//!
//! One hash lookup per reading applies it, drops the key's undo entries of complete ticks and
//! notes the new one (in a per-key vector whose capacity is kept, so the steady state allocates
//! nothing). The collector applying ticks only moves a frontier: entries older than it are
//! never asked about again (a lookup at a tick skips entries at or before it; the collector
//! fires due schedules before it reports a tick applied) and go at the key's next write.
//! (Forgetting them eagerly, a second lookup per reading, was 4% of the engine bench's
//! profile.)
//!
//! Which keys chains read is a table of counters by hash (see `watch`), so chains on silent
//! sensors add nothing to the map every reading looks up (a map entry per watched key cost 23
//! to 25% with 100,000 idle chains, tracking every key cost 20% without them). Readings of a key
//! enter the dataflow once the key is admitted: when a chain starts reading it
//! ([`Latest::admit`]) or a reading arrives while its counter is set (a key sharing a counter
//! with a watched one is admitted too). A key stays admitted. Readings of keys never admitted
//! are kept here only, so a reading that no chain ever read costs one lookup and nothing else.

use crate::dataflow::{Time, Val};
use std::collections::HashMap;

#[derive(Default)]
struct Entry {
    val: Option<Val>,
    /// Whether `val` is in the dataflow's `latest` collection (then every change goes there).
    admitted: bool,
    /// `(tick, value before that tick's first change)`, oldest first.
    undo: Vec<(Time, Option<Val>)>,
}

/// Slots of the watch counters: 2^22 bytes, 4 MiB, indexed by a key's top bits. 275,000
/// watched keys (110,000 chains) mark 6% of them; with 2^20 slots they marked a fifth, and the
/// readings of unwatched keys that went into the dataflow with them cost a third of what
/// 100,000 idle chains cost.
const WATCH_BITS: u32 = 22;

pub(crate) struct Latest {
    /// Keys are hashes of names that clients choose, and public: the map's hasher is seeded
    /// per process (foldhash; this map's lookups with SipHash were 12% of the engine bench's
    /// profile, and an unseeded multiply would let crafted names pile into one bucket).
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    /// How many chain slots read keys hashing to each counter. A key shares its counter with
    /// others (a false positive only sends a reading into the dataflow that no term joins, and
    /// records an undo entry nobody reads); a counter stays far smaller than a map of every key
    /// chains read, so silent sensors' chains cost readings nothing.
    watch: Vec<u8>,
    /// Ticks before this one are complete: their undo entries can go.
    complete_before: Time,
}

impl Latest {
    /// Applies a reading at `tick`. Returns what the dataflow's `latest` collection must do:
    /// `Some(Some(old))` replace `old`, `Some(None)` insert (a first value, or a key chains
    /// started reading), `None` nothing (a reading older than the latest one or the same, or
    /// of a key no chain reads).
    pub(crate) fn upsert(&mut self, key: u64, val: Val, tick: Time) -> Option<Option<Val>> {
        let entry = self.entries.entry(key).or_default();
        let old = entry.val;
        if old.is_some_and(|o| o.t > val.t || o == val) {
            return None;
        }
        entry.val = Some(val);
        if entry
            .undo
            .first()
            .is_some_and(|(t, _)| *t < self.complete_before)
        {
            let done = entry
                .undo
                .partition_point(|(t, _)| *t < self.complete_before);
            entry.undo.drain(..done);
        }
        let watched = self.watch[watch_slot(key)] > 0;
        // Admitted keys keep undo entries even once no chain watches them: a removed chain's
        // firings of earlier ticks may still be built, and read the values as of those ticks.
        if (watched || entry.admitted) && entry.undo.last().is_none_or(|(t, _)| *t != tick) {
            entry.undo.push((tick, old));
        }
        if entry.admitted {
            Some(old)
        } else if watched {
            entry.admitted = true;
            Some(None)
        } else {
            None
        }
    }

    /// The value of a key as of `tick` (not before the collector's oldest unapplied tick, the
    /// frontier given to `forget_before`).
    pub(crate) fn at(&self, key: u64, tick: Time) -> Option<Val> {
        let entry = self.entries.get(&key)?;
        match entry.undo.iter().find(|(t, _)| *t > tick) {
            Some((_, before)) => *before,
            None => entry.val,
        }
    }

    /// Ticks before `frontier` are complete: nobody asks about them any more.
    pub(crate) fn forget_before(&mut self, frontier: Time) {
        self.complete_before = self.complete_before.max(frontier);
    }

    /// A key a chain starts reading: its latest value, if it has one that the dataflow does
    /// not have yet (the caller inserts it, at the chain's tick).
    pub(crate) fn admit(&mut self, key: u64) -> Option<Val> {
        let entry = self.entries.get_mut(&key)?;
        if entry.admitted {
            return None;
        }
        entry.admitted = entry.val.is_some();
        entry.val
    }

    /// Counts a chain slot reading `key` in (`diff` 1) or out (-1).
    pub(crate) fn watch(&mut self, key: u64, diff: isize) {
        let n = &mut self.watch[watch_slot(key)];
        // A counter that reached its maximum stays there: its keys stay watched (a false
        // positive) rather than ever being unwatched while a chain reads them.
        if *n != u8::MAX {
            *n = n.saturating_add_signed(diff.clamp(-1, 1) as i8);
        }
    }
}

impl Default for Latest {
    fn default() -> Self {
        Latest {
            entries: HashMap::default(),
            watch: resident_zeros(1 << WATCH_BITS),
            complete_before: 0,
        }
    }
}

/// A zeroed table whose pages are resident from the start: a fixed cost of the engine, rather
/// than memory that appears page by page as chains register (at 10,000 chains that looked like
/// 400 bytes per chain).
fn resident_zeros(len: usize) -> Vec<u8> {
    let mut table = vec![0; len];
    std::hint::black_box(&mut table).fill(0);
    table
}

fn watch_slot(key: u64) -> usize {
    (key >> (64 - WATCH_BITS)) as usize
}
