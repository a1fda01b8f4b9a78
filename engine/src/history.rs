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
//!
//! Each key is owned by the first identity seen under it (see `keys`): its entry keeps that
//! identity's check, and a key chains read before any reading of it keeps its owner in a side
//! map until the first reading creates the entry (`owners`). The same lookup that applies a
//! reading compares the check, so the check costs readings nothing but a comparison.

use crate::dataflow::{Time, Val};
use crate::keys::Id;
use std::collections::{hash_map, HashMap};

/// Something arrived under a key another identity owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Collision;

#[derive(Default)]
struct Entry {
    /// The check of the identity that owns the key.
    check: u64,
    val: Option<Val>,
    /// Whether `val` is in the dataflow's `latest` collection (then every change goes there).
    admitted: bool,
    /// `(tick, value before that tick's first change)`, oldest first.
    undo: Vec<(Time, Option<Val>)>,
}

/// The entry a key's first reading creates, owned by whoever claimed the key first.
#[cold]
#[inline(never)]
fn first_entry(owners: &mut HashMap<u64, u64, foldhash::fast::RandomState>, id: Id) -> Entry {
    Entry {
        check: owners.remove(&id.key).unwrap_or(id.check),
        ..Entry::default()
    }
}

/// Slots of the watch counters: 2^22 bytes, 4 MiB, indexed by a key's top bits. 275,000
/// watched keys (110,000 chains) mark 6% of them; with 2^20 slots they marked a fifth, and the
/// readings of unwatched keys that went into the dataflow with them cost a third of what
/// 100,000 idle chains cost.
const WATCH_BITS: u32 = 22;

pub(crate) struct Latest {
    /// Keys are keyed hashes of names that clients choose; the map's hasher is seeded per
    /// process all the same (foldhash; this map's lookups with SipHash were 12% of the engine
    /// bench's profile, and an unseeded multiply would let names that share low bits pile into
    /// one bucket).
    entries: HashMap<u64, Entry, foldhash::fast::RandomState>,
    /// Owners (checks) of keys that chains claimed before any reading created their entry:
    /// silent sensors' keys, and window and `no_data` value keys, which readings never have.
    /// Kept for the life of the process, like entries.
    owners: HashMap<u64, u64, foldhash::fast::RandomState>,
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
    /// of a key no chain reads); `Err` if another identity owns the key (the reading is left
    /// out).
    #[inline]
    pub(crate) fn upsert(
        &mut self,
        id: Id,
        val: Val,
        tick: Time,
    ) -> Result<Option<Option<Val>>, Collision> {
        let entry = match self.entries.entry(id.key) {
            hash_map::Entry::Occupied(e) => e.into_mut(),
            hash_map::Entry::Vacant(e) => e.insert(first_entry(&mut self.owners, id)),
        };
        if entry.check != id.check {
            return Err(Collision);
        }
        let old = entry.val;
        if old.is_some_and(|o| o.t > val.t || o == val) {
            return Ok(None);
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
        let watched = self.watch[watch_slot(id.key)] > 0;
        // Admitted keys keep undo entries even once no chain watches them: a removed chain's
        // firings of earlier ticks may still be built, and read the values as of those ticks.
        if (watched || entry.admitted) && entry.undo.last().is_none_or(|(t, _)| *t != tick) {
            entry.undo.push((tick, old));
        }
        Ok(if entry.admitted {
            Some(old)
        } else if watched {
            entry.admitted = true;
            Some(None)
        } else {
            None
        })
    }

    /// The check of the identity that owns `key`, if any does.
    fn owner(&self, key: u64) -> Option<u64> {
        match self.entries.get(&key) {
            Some(e) => Some(e.check),
            None => self.owners.get(&key).copied(),
        }
    }

    /// Claims the keys of a chain's identities for them: all of them, or none when one is owned
    /// by another identity or two of them share a key (`Err` with the index of the second).
    pub(crate) fn claim(&mut self, ids: &[Id]) -> Result<(), usize> {
        for (i, id) in ids.iter().enumerate() {
            let other = |o: &Id| o.key == id.key && o.check != id.check;
            if self.owner(id.key).is_some_and(|c| c != id.check) || ids[..i].iter().any(other) {
                return Err(i);
            }
        }
        for id in ids {
            if !self.entries.contains_key(&id.key) {
                self.owners.entry(id.key).or_insert(id.check);
            }
        }
        Ok(())
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
            owners: HashMap::default(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::Num;

    fn id(key: u64, check: u64) -> Id {
        Id { key, check }
    }

    fn val(v: f64) -> Val {
        Val { v: Num(v), t: 1 }
    }

    #[test]
    fn a_key_belongs_to_the_first_identity_seen_under_it() {
        let mut latest = Latest::default();
        // Chains claim keys no reading has created yet.
        assert_eq!(latest.claim(&[id(1, 10)]), Ok(()));
        assert_eq!(latest.claim(&[id(1, 10), id(2, 20)]), Ok(()));
        assert_eq!(latest.claim(&[id(3, 30), id(1, 11)]), Err(1));
        assert_eq!(latest.owner(3), None, "a refused chain claims nothing");
        assert_eq!(
            latest.claim(&[id(5, 50), id(5, 51)]),
            Err(1),
            "within one chain"
        );
        // The first reading of a claimed key finds its owner.
        assert_eq!(latest.upsert(id(1, 11), val(1.0), 5), Err(Collision));
        assert_eq!(latest.upsert(id(1, 10), val(1.0), 5), Ok(None));
        assert_eq!(latest.at(1, 5), Some(val(1.0)));
        // A reading owns the key it is the first under.
        assert_eq!(latest.upsert(id(4, 40), val(1.0), 5), Ok(None));
        assert_eq!(latest.claim(&[id(4, 41)]), Err(0));
        assert_eq!(latest.upsert(id(4, 41), val(2.0), 6), Err(Collision));
        assert_eq!(latest.at(4, 6), Some(val(1.0)));
        assert_eq!(latest.claim(&[id(4, 40)]), Ok(()));
    }
}
