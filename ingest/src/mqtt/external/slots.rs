//! Which publish each packet id last carried, so that a redelivery after a crash is stored once
//! (at least once today: the WAL sync and this file's are two syncs; see the README).
//!
//! aemos acknowledges a QoS 1 publish to the external broker only once its readings are in
//! the WAL. Killed between the WAL sync and the PUBACK, it gets the publish again after
//! reconnecting (same packet id, DUP set) and would store it twice. So, after each WAL sync and
//! before the PUBACK, the packet id of every stored publish is recorded in a file of 65,536
//! slots (one per packet id, 8 bytes: a checksum of topic and payload) with one `fdatasync`.
//! A publish with DUP set whose packet id holds its own checksum is acknowledged without
//! being stored again; any other publish is stored, and takes the slot.
//!
//! The limit of identity by packet id: a publish byte-identical to the one stored before under
//! the same packet id, received and not yet stored when aemos dies, is redelivered with DUP set
//! and taken for that one. It needs an identical topic and payload (no timestamp, the same
//! values) and the broker reusing the packet id within one write's window (Mosquitto counts
//! packet ids up: 65,535 publishes apart).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

const SLOTS: usize = 1 << 16;
const SLOT_BYTES: usize = 8;

/// The identity of one publish's content: CRC-32 of the topic and of the payload, never 0
/// (an empty slot).
pub(super) fn content_id(topic: &str, payload: &[u8]) -> u64 {
    let id =
        (u64::from(crc32fast::hash(topic.as_bytes())) << 32) | u64::from(crc32fast::hash(payload));
    id.max(1)
}

/// A publish taken into a write: its slot and what the slot held before.
#[derive(Debug, Clone, Copy)]
pub(super) struct Taken {
    pkid: u16,
    id: u64,
    previous: u64,
}

#[derive(Debug)]
pub(super) struct DeliverySlots {
    file: File,
    /// The content id each packet id was last taken with (in a write, or stored).
    taken: Mutex<Box<[u64]>>,
}

impl DeliverySlots {
    /// Opens (or creates) the slot file.
    pub(super) fn open(path: &Path) -> std::io::Result<Arc<Self>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut bytes = Vec::with_capacity(SLOTS * SLOT_BYTES);
        file.read_to_end(&mut bytes)?;
        // A shorter file (new, or cut short by a crash while created) reads as empty slots.
        bytes.resize(SLOTS * SLOT_BYTES, 0);
        file.set_len((SLOTS * SLOT_BYTES) as u64)?;
        let taken = bytes
            .chunks_exact(SLOT_BYTES)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Arc::new(Self {
            file,
            taken: Mutex::new(taken),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<[u64]>> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a redelivered publish (DUP set) was already taken under its packet id.
    pub(super) fn is_redelivery(&self, pkid: u16, id: u64) -> bool {
        self.lock()[pkid as usize] == id
    }

    /// Takes the slot of a publish going into a write.
    pub(super) fn take(&self, pkid: u16, id: u64) -> Taken {
        let previous = std::mem::replace(&mut self.lock()[pkid as usize], id);
        Taken { pkid, id, previous }
    }

    /// Gives back the slots of a write that failed: its publishes are not stored, so their
    /// redeliveries must be.
    pub(super) fn give_back(&self, taken: &[Taken]) {
        let mut slots = self.lock();
        for t in taken.iter().rev() {
            if slots[t.pkid as usize] == t.id {
                slots[t.pkid as usize] = t.previous;
            }
        }
    }

    /// Records the stored publishes on disk (blocking: one write per slot, one `fdatasync`).
    pub(super) fn persist(&self, stored: &[Taken]) -> std::io::Result<()> {
        for t in stored {
            self.file
                .write_all_at(&t.id.to_le_bytes(), (t.pkid as usize * SLOT_BYTES) as u64)?;
        }
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_survive_reopening_and_failed_writes_give_theirs_back() {
        let dir = std::env::temp_dir().join(format!("aemos-slots-{}", std::process::id()));
        let path = dir.join("slots");
        let _ = std::fs::remove_dir_all(&dir);
        let slots = DeliverySlots::open(&path).unwrap();
        let a = content_id("aemos/devices/d/telemetry", b"{\"t\":1}");
        let b = content_id("aemos/devices/d/telemetry", b"{\"t\":2}");
        assert_ne!(a, b);
        assert!(!slots.is_redelivery(7, a));
        let stored = slots.take(7, a);
        slots.persist(&[stored]).unwrap();
        // Taken by a write that then fails: the slot holds what it held before.
        let failed = slots.take(7, b);
        assert!(slots.is_redelivery(7, b));
        slots.give_back(&[failed]);
        assert!(slots.is_redelivery(7, a));
        assert!(!slots.is_redelivery(7, b));
        // Only persisted slots survive.
        let _unsaved = slots.take(8, b);
        drop(slots);
        let reopened = DeliverySlots::open(&path).unwrap();
        assert!(reopened.is_redelivery(7, a));
        assert!(!reopened.is_redelivery(8, b));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (SLOTS * SLOT_BYTES) as u64
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
