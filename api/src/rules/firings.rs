//! The record of every firing: an append-only log in `{data-dir}/firings`, one checksummed
//! JSON object per line (`json_lines`), written and fsynced in groups by its own thread before
//! the firings go further. The log is sealed into numbered segments (`firing_segments.rs`),
//! each persisted to Parquet once sealed (`firings_table.rs`): `rule_firings` is those files and
//! the records of the segments still here, so the records in memory stay bounded.
//!
//! On start the log gives each chain's last recorded state; after the engine has rebuilt its
//! state from storage, a chain whose state differs gets one firing to record the change it
//! made while the server was down (see `rebuild.rs`), so no transition is missed or recorded
//! twice across a restart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aemos_engine::{Firing, FiringKind, Subject};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::commands::rule::{command_targets, CommandTarget};
use crate::devices::presence;
use crate::json_lines::{encode_line, read_json_lines, LineFile};
use crate::notify::{notify_targets, Notifier, NotifyTarget};

use super::firing_segments::{
    list_segments, read_states, segment_path, sync_dir, write_states, States,
};

/// Records handed to the reconciliation of the rules' commands at start.
pub const MAX_RECENT: usize = 100_000;
/// A segment is sealed at this many records (the bound on the records in memory, with the
/// segment kept and those the object store has not taken yet)...
pub const SEGMENT_RECORDS: usize = 65_536;
/// ...or when its first record is this old (`--firings-seal-after`).
pub const SEAL_AFTER: Duration = Duration::from_secs(600);

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringRecord {
    pub time: i64,
    pub chain: String,
    pub device: String,
    /// `activated`, `cleared`, `repeated`, `scheduled`, or `restored` variants of the first
    /// two when recorded at start (see the module docs).
    pub kind: String,
    pub active: bool,
    pub values: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// The device states this firing changes: its notifications (see `notify`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTarget>,
    /// The device commands this firing makes (see `commands::rule`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<CommandTarget>,
}

fn to_map(pairs: &[(String, f64)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::json!(v)))
        .collect()
}

impl FiringRecord {
    pub fn from_firing(f: &Firing) -> Self {
        let kind = match f.kind {
            FiringKind::Activated => "activated",
            FiringKind::Cleared => "cleared",
            FiringKind::Repeated => "repeated",
            FiringKind::Scheduled => "scheduled",
        };
        let repeated = matches!(f.kind, FiringKind::Repeated | FiringKind::Scheduled);
        let chain = match &f.subject {
            Subject::Chain(chain) => chain,
            Subject::Presence(p) => {
                return presence::record(p.device(), kind, f.kind.active(), f.time_ms)
            }
        };
        FiringRecord {
            time: f.time_ms,
            chain: chain.id().to_owned(),
            device: chain.spec.device().to_owned(),
            kind: kind.to_owned(),
            active: f.kind.active(),
            values: to_map(&f.values),
            fields: to_map(&f.fields),
            notify: notify_targets(&chain.spec, f.kind.active(), repeated),
            commands: command_targets(&chain.spec, f.kind.active()),
        }
    }

    /// The values read and the fields computed, in one object.
    pub fn all_values(&self) -> Map<String, Value> {
        let mut all = self.values.clone();
        all.extend(self.fields.clone());
        all
    }
}

/// The log's records in memory: those of every segment still on the local disk.
#[derive(Debug)]
struct Inner {
    /// By segment, oldest first; the last is the open one.
    segments: BTreeMap<u64, Vec<FiringRecord>>,
    last_active: HashMap<String, bool>,
    /// The states at the start of the open segment: `states.json` once it is sealed.
    base: States,
    /// `before` of the `states.json` on disk: older segments may go once persisted.
    written_before: u64,
}

/// The segment appended to.
#[derive(Debug)]
struct Open {
    file: LineFile,
    segment: u64,
    records: usize,
    /// When its first record was appended.
    first_at: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct FiringLogArgs {
    /// `{data-dir}/firings`.
    pub dir: PathBuf,
    /// Numbers and delivers the notifications of the records.
    pub notifier: Arc<Notifier>,
    /// A segment is sealed (and then persisted to Parquet) at this many records...
    pub segment_records: usize,
    /// ...or when its first record is this old.
    pub seal_after: Duration,
}

impl FiringLogArgs {
    pub fn new(dir: PathBuf, notifier: Arc<Notifier>) -> Self {
        Self {
            dir,
            notifier,
            segment_records: SEGMENT_RECORDS,
            seal_after: SEAL_AFTER,
        }
    }
}

#[derive(Debug)]
pub struct FiringLog {
    args: FiringLogArgs,
    /// Held across the write and fsync of a group, apart from `inner` so that readers of the
    /// recent records and states never wait for the disk.
    file: Mutex<Open>,
    /// Damaged records skipped when the log was opened.
    skipped_at_open: u64,
    /// Why the file refuses appends (a failed fsync), once it does; read without the file's
    /// lock.
    failed: std::sync::OnceLock<String>,
    inner: Mutex<Inner>,
    notifier: Arc<Notifier>,
    /// Durable records that make commands, to the command service (set once it runs).
    commands: std::sync::OnceLock<tokio::sync::mpsc::Sender<FiringRecord>>,
}

impl FiringLog {
    /// Opens the log (see `firing_segments.rs`): the states, then the segments from the one
    /// they end at, numbered again by the notifier; a torn tail of the open segment (a crash
    /// mid-write) is cut off, a damaged record before readable ones skipped. The records of
    /// older segments still on disk (not yet persisted) are kept for `rule_firings` only.
    pub fn open(args: FiringLogArgs) -> std::io::Result<Arc<Self>> {
        let dir = &args.dir;
        std::fs::create_dir_all(dir)?;
        let notifier = Arc::clone(&args.notifier);
        let states = read_states(dir)?;
        notifier.restore_seqs(&states.seqs);
        let mut last_active = states.chains.clone();
        let mut listed = list_segments(dir)?;
        if listed.is_empty() {
            listed.push(states.before.max(1));
        }
        let open_segment = *listed.last().expect("one segment at least");
        let mut segments = BTreeMap::new();
        let mut skipped = 0;
        let mut base = states.clone();
        let mut good_len = 0;
        for &segment in &listed {
            if segment == open_segment {
                base = States {
                    before: segment,
                    chains: last_active.clone(),
                    seqs: notifier.seqs(),
                };
            }
            let counts = segment >= states.before;
            let mut records = Vec::new();
            let read = read_json_lines(&segment_path(dir, segment), |r: FiringRecord| {
                if counts {
                    notifier.record(std::slice::from_ref(&r), false);
                    last_active.insert(r.chain.clone(), r.active);
                }
                records.push(r);
            })?;
            skipped += read.skipped;
            good_len = read.good_len;
            segments.insert(segment, records);
        }
        let records = segments.get(&open_segment).map_or(0, Vec::len);
        let file = LineFile::open(&segment_path(dir, open_segment), good_len)?;
        Ok(Arc::new(Self {
            file: Mutex::new(Open {
                file,
                segment: open_segment,
                records,
                first_at: (records > 0).then(Instant::now),
            }),
            skipped_at_open: skipped,
            failed: std::sync::OnceLock::new(),
            inner: Mutex::new(Inner {
                segments,
                last_active,
                base,
                written_before: states.before,
            }),
            notifier,
            commands: std::sync::OnceLock::new(),
            args,
        }))
    }

    /// Where the records that make commands go once durable.
    pub fn set_command_outlet(&self, outlet: tokio::sync::mpsc::Sender<FiringRecord>) {
        let _ = self.commands.set(outlet);
    }

    pub fn dir(&self) -> &Path {
        &self.args.dir
    }

    /// Why appends are refused (after a failed fsync), if they are.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Damaged records skipped when the log was opened.
    pub fn skipped_at_open(&self) -> u64 {
        self.skipped_at_open
    }

    fn lock_inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_file(&self) -> std::sync::MutexGuard<'_, Open> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends and syncs; only then are the records visible in `rule_firings` and their
    /// notifications delivered. Seals the segment when it is due.
    pub fn append(&self, records: &[FiringRecord]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(records.len() * 170);
        for r in records {
            encode_line(&mut bytes, r)?;
        }
        // The file's lock is taken first and held until the records are numbered, so the
        // records become visible, and notifications are numbered, in the log's order.
        let mut open = self.lock_file();
        if let Err(e) = open.file.append(&bytes) {
            if let Some(reason) = open.file.failure() {
                let _ = self.failed.set(reason.to_owned());
            }
            return Err(e);
        }
        open.records += records.len();
        open.first_at.get_or_insert_with(Instant::now);
        let mut inner = self.lock_inner();
        for r in records {
            inner.last_active.insert(r.chain.clone(), r.active);
        }
        inner
            .segments
            .entry(open.segment)
            .or_default()
            .extend_from_slice(records);
        drop(inner);
        // Numbered under the file's lock, so seqs follow the log's order.
        self.notifier.record(records, true);
        self.seal_if_due(&mut open);
        drop(open);
        if let Some(outlet) = self.commands.get() {
            for r in records.iter().filter(|r| !r.commands.is_empty()) {
                // The writer thread waits for room; an append on the runtime (a firing recorded
                // at start) must not block it, and what it cannot hand over now is made by the
                // reconciliation at the next start.
                let handed = if tokio::runtime::Handle::try_current().is_ok() {
                    outlet.try_send(r.clone()).is_ok()
                } else {
                    outlet.blocking_send(r.clone()).is_ok()
                };
                if !handed {
                    warn!(chain = %r.chain, "a rule's commands wait for the next start");
                }
            }
        }
        Ok(())
    }

    /// Seals the open segment if it is full or old enough (the writer thread asks when idle).
    pub fn seal_when_due(&self) {
        let mut open = self.lock_file();
        self.seal_if_due(&mut open);
    }

    fn seal_if_due(&self, open: &mut Open) {
        let due = open.records >= self.args.segment_records
            || open
                .first_at
                .is_some_and(|t| t.elapsed() >= self.args.seal_after);
        if due && self.failed.get().is_none() {
            if let Err(e) = self.seal(open) {
                warn!(error = %e, dir = %self.dir().display(), "sealing a firing log segment failed; appends go on in the open one");
            }
        }
    }

    /// Opens the next segment and writes the states at the start of the sealed one.
    fn seal(&self, open: &mut Open) -> std::io::Result<()> {
        let dir = self.dir();
        let next = open.segment + 1;
        let next_path = segment_path(dir, next);
        let file = LineFile::open(&next_path, 0)?;
        let base = self.lock_inner().base.clone();
        if let Err(e) = sync_dir(dir).and_then(|()| write_states(dir, &base)) {
            drop(file);
            let _ = std::fs::remove_file(&next_path);
            return Err(e);
        }
        let seqs = self.notifier.seqs();
        let mut inner = self.lock_inner();
        inner.base = States {
            before: next,
            chains: inner.last_active.clone(),
            seqs,
        };
        inner.written_before = base.before;
        inner.segments.insert(next, Vec::new());
        drop(inner);
        *open = Open {
            file,
            segment: next,
            records: 0,
            first_at: None,
        };
        Ok(())
    }

    /// The sealed segments in memory, oldest first.
    pub fn sealed_segments(&self) -> Vec<u64> {
        let inner = self.lock_inner();
        let open = inner.segments.keys().next_back().copied();
        inner
            .segments
            .keys()
            .copied()
            .filter(|s| Some(*s) != open)
            .collect()
    }

    /// Hands `each` the records of every segment after `after`, segment by segment, oldest
    /// first, the open one included.
    pub fn with_segments_after<T>(
        &self,
        after: Option<u64>,
        mut each: impl FnMut(u64, &[FiringRecord]) -> T,
    ) -> Vec<T> {
        let inner = self.lock_inner();
        inner
            .segments
            .iter()
            .filter(|(s, _)| after.is_none_or(|a| **s > a))
            .map(|(s, records)| each(*s, records))
            .collect()
    }

    /// Hands `each` the records of `segment`, if it is in memory.
    pub fn with_segment<T>(
        &self,
        segment: u64,
        each: impl FnOnce(&[FiringRecord]) -> T,
    ) -> Option<T> {
        self.lock_inner().segments.get(&segment).map(|r| each(r))
    }

    /// Deletes the sealed segments up to `persisted_through` that the states on disk cover;
    /// returns how many.
    pub fn forget_persisted(&self, persisted_through: u64) -> std::io::Result<usize> {
        let gone: Vec<u64> = {
            let inner = self.lock_inner();
            inner
                .segments
                .keys()
                .copied()
                .filter(|s| *s <= persisted_through && *s < inner.written_before)
                .collect()
        };
        for &segment in &gone {
            match std::fs::remove_file(segment_path(self.dir(), segment)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            self.lock_inner().segments.remove(&segment);
        }
        if !gone.is_empty() {
            sync_dir(self.dir())?;
        }
        Ok(gone.len())
    }

    /// The state the log last recorded for a chain.
    pub fn last_active(&self, chain: &str) -> Option<bool> {
        self.lock_inner().last_active.get(chain).copied()
    }

    /// The most recent records in memory, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<FiringRecord> {
        let inner = self.lock_inner();
        let mut recent: Vec<FiringRecord> = inner
            .segments
            .values()
            .rev()
            .flat_map(|records| records.iter().rev())
            .take(limit)
            .cloned()
            .collect();
        recent.reverse();
        recent
    }
}

/// Records firings from the engine's sink: one thread, a group per fsync. The bounded channel
/// in front of it holds the engine back if the disk cannot keep up.
pub fn spawn_writer(
    log: Arc<FiringLog>,
    firings: std::sync::mpsc::Receiver<Firing>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("aemos-firings".into())
        .spawn(move || {
            let mut group = Vec::new();
            // A first firing that only confirms the presumed state changes nothing.
            let news = |r: &FiringRecord| {
                r.active != presence::presumed_active(&r.chain)
                    || log.last_active(&r.chain).is_some()
            };
            loop {
                let first = match firings.recv_timeout(Duration::from_secs(1)) {
                    Ok(f) => f,
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        log.seal_when_due();
                        continue;
                    }
                    Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                };
                group.extend(Some(FiringRecord::from_firing(&first)).filter(news));
                while group.len() < 4096 {
                    match firings.try_recv() {
                        Ok(f) => group.extend(Some(FiringRecord::from_firing(&f)).filter(news)),
                        Err(_) => break,
                    }
                }
                if let Err(e) = log.append(&group) {
                    warn!(error = %e, dir = %log.dir().display(), "firing log append failed");
                }
                group.clear();
            }
        })
}
