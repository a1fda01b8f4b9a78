//! Which publish each packet id last carried, so that a redelivery after a crash is stored
//! exactly once.
//!
//! aemos acknowledges a QoS 1 publish to the external broker only once its readings are in
//! the WAL. Killed between the WAL sync and the PUBACK, it gets the publish again after
//! reconnecting (same packet id, DUP set) and would store it twice. So every write records,
//! for each publish in it, its packet id and its content id (a checksum of topic and payload)
//! as the WAL record's tag ([`tag`]): durable in the same sync as the readings. After the
//! acknowledgement a dedicated thread copies them into a file of 65,536 slots (one per packet
//! id, 8 bytes), off the acknowledgement's path; the WAL keeps the tags until its segment is
//! persisted, long after. At start the file is read and the tags replayed from the WAL are
//! applied over it in log order ([`DeliverySlots::open`]), so the slots hold every publish
//! acknowledged-or-about-to-be before the crash. A publish with DUP set whose packet id holds
//! its own content id is acknowledged without being stored again; any other publish is
//! stored, and takes the slot.
//!
//! The limits. (1) Identity by packet id: a publish byte-identical to the one stored before
//! under the same packet id, received and not yet stored when aemos dies, is redelivered with
//! DUP set and taken for that one. It needs an identical topic and payload (no timestamp, the
//! same values) and the broker reusing the packet id within one write's window (Mosquitto
//! counts packet ids up: 65,535 publishes apart). (2) A WAL segment persisted to Parquet and
//! removed in the milliseconds between a write and the slot thread's sync of it, followed by a
//! crash in the same milliseconds, loses those tags: the redeliveries are stored twice.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tracing::error;

const SLOTS: usize = 1 << 16;
const SLOT_BYTES: usize = 8;
/// One slot in a tag: packet id (4 hex digits) and content id (16).
const TAG_ENTRY: usize = 4 + 16;
/// Writes whose slots wait for the slot thread: a full queue holds the acknowledgements back.
const PENDING_WRITES: usize = 64;

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

/// The WAL tag of a write: every slot it takes, in order.
pub(super) fn tag(taken: &[Taken]) -> String {
    let mut tag = String::with_capacity(taken.len() * TAG_ENTRY);
    for t in taken {
        let _ = write!(tag, "{:04x}{:016x}", t.pkid, t.id);
    }
    tag
}

/// The slots of a WAL tag; `None` when it is not one.
fn parse_tag(tag: &str) -> Option<Vec<(u16, u64)>> {
    if tag.len() % TAG_ENTRY != 0 || !tag.is_ascii() {
        return None;
    }
    (0..tag.len() / TAG_ENTRY)
        .map(|i| {
            let entry = &tag[i * TAG_ENTRY..(i + 1) * TAG_ENTRY];
            Some((
                u16::from_str_radix(&entry[..4], 16).ok()?,
                u64::from_str_radix(&entry[4..], 16).ok()?,
            ))
        })
        .collect()
}

#[derive(Debug)]
pub(super) struct DeliverySlots {
    file: File,
    /// The content id each packet id was last taken with (in a write, or stored).
    taken: Mutex<Box<[u64]>>,
}

impl DeliverySlots {
    /// Opens (or creates) the slot file and applies over it `replayed`, the tags of this
    /// connection's writes replayed from the WAL, in log order; the result is made durable
    /// before this returns.
    pub(super) fn open<'a>(
        path: &Path,
        replayed: impl Iterator<Item = &'a str>,
    ) -> std::io::Result<Arc<Self>> {
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
        let mut taken: Box<[u64]> = bytes
            .chunks_exact(SLOT_BYTES)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let mut replayed_slots = Vec::new();
        for value in replayed {
            match parse_tag(value) {
                Some(slots) => replayed_slots.extend(slots),
                None => error!(
                    tag = value,
                    "mqtt: a WAL tag is not a list of delivery slots"
                ),
            }
        }
        for &(pkid, id) in &replayed_slots {
            taken[pkid as usize] = id;
        }
        let slots = Self {
            file,
            taken: Mutex::new(taken),
        };
        slots.persist(replayed_slots.iter().copied())?;
        Ok(Arc::new(slots))
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

    /// Records slots on disk, in order (blocking: one write per slot, one `fdatasync`).
    fn persist(&self, slots: impl Iterator<Item = (u16, u64)>) -> std::io::Result<()> {
        for (pkid, id) in slots {
            self.file
                .write_all_at(&id.to_le_bytes(), (pkid as usize * SLOT_BYTES) as u64)?;
        }
        self.file.sync_data()
    }

    /// Starts the thread that copies the stored writes' slots into the file, in the order
    /// sent; the sender waits when it is `PENDING_WRITES` writes behind.
    pub(super) fn start_recorder(self: &Arc<Self>) -> std::io::Result<mpsc::Sender<Vec<Taken>>> {
        let (tx, mut rx) = mpsc::channel::<Vec<Taken>>(PENDING_WRITES);
        let slots = Arc::clone(self);
        std::thread::Builder::new()
            .name("aemos-mqtt-slots".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut writes = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        writes.push(next);
                    }
                    let stored = writes.iter().flatten().map(|t| (t.pkid, t.id));
                    // The WAL still holds these slots as tags: a restart recovers them.
                    if let Err(e) = slots.persist(stored) {
                        error!(error = %e, "mqtt: recording delivered packet ids failed");
                    }
                }
            })?;
        Ok(tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("aemos-slots-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (dir.join("slots"), dir)
    }

    #[test]
    fn slots_survive_reopening_and_failed_writes_give_theirs_back() {
        let (path, dir) = temp_path("reopen");
        let slots = DeliverySlots::open(&path, std::iter::empty()).unwrap();
        let a = content_id("aemos/devices/d/telemetry", b"{\"t\":1}");
        let b = content_id("aemos/devices/d/telemetry", b"{\"t\":2}");
        assert_ne!(a, b);
        assert!(!slots.is_redelivery(7, a));
        let stored = slots.take(7, a);
        slots
            .persist([(stored.pkid, stored.id)].into_iter())
            .unwrap();
        // Taken by a write that then fails: the slot holds what it held before.
        let failed = slots.take(7, b);
        assert!(slots.is_redelivery(7, b));
        slots.give_back(&[failed]);
        assert!(slots.is_redelivery(7, a));
        assert!(!slots.is_redelivery(7, b));
        // Only persisted slots survive.
        let _unsaved = slots.take(8, b);
        drop(slots);
        let reopened = DeliverySlots::open(&path, std::iter::empty()).unwrap();
        assert!(reopened.is_redelivery(7, a));
        assert!(!reopened.is_redelivery(8, b));
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            (SLOTS * SLOT_BYTES) as u64
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn replayed_tags_apply_over_the_file_in_log_order_and_are_kept() {
        let (path, dir) = temp_path("tags");
        let (a, b, c) = (
            content_id("t", b"a"),
            content_id("t", b"b"),
            content_id("t", b"c"),
        );
        let slots = DeliverySlots::open(&path, std::iter::empty()).unwrap();
        let on_disk = slots.take(1, a);
        slots
            .persist([(on_disk.pkid, on_disk.id)].into_iter())
            .unwrap();
        // Two writes acknowledged before the crash, not yet copied into the file: the second
        // reuses packet id 1 and must win; one tag that is not a slot list is skipped.
        let first = tag(&[slots.take(1, b), slots.take(2, b)]);
        let second = tag(&[slots.take(1, c)]);
        assert_eq!(first.len(), 2 * TAG_ENTRY);
        drop(slots);
        let tags = [first.as_str(), "not a tag", second.as_str()];
        let reopened = DeliverySlots::open(&path, tags.into_iter()).unwrap();
        assert!(reopened.is_redelivery(1, c));
        assert!(reopened.is_redelivery(2, b));
        drop(reopened);
        // Made durable by the open itself: gone from the WAL, still known.
        let again = DeliverySlots::open(&path, std::iter::empty()).unwrap();
        assert!(again.is_redelivery(1, c) && again.is_redelivery(2, b));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_recorder_copies_stored_writes_into_the_file() {
        let (path, dir) = temp_path("recorder");
        let slots = DeliverySlots::open(&path, std::iter::empty()).unwrap();
        let recorder = slots.start_recorder().unwrap();
        let id = content_id("t", b"x");
        recorder.send(vec![slots.take(9, id)]).await.unwrap();
        drop(recorder);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reopened = DeliverySlots::open(&path, std::iter::empty()).unwrap();
            if reopened.is_redelivery(9, id) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never recorded");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
