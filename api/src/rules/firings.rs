//! The record of every firing: an append-only log, `{data-dir}/firings/firings.log`, one
//! checksummed JSON object per line (`json_lines`), written and fsynced in groups by its own
//! thread before the firings go further; the recent rows are the `rule_firings` table.
//!
//! On start the log gives each chain's last recorded state; after the engine has rebuilt its
//! state from storage, a chain whose state differs gets one firing to record the change it
//! made while the server was down (see `rebuild.rs`), so no transition is missed or recorded
//! twice across a restart.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aemos_engine::{Firing, FiringKind};
use aemos_queries::SnapshotSource;
use arrow::array::{BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tracing::warn;

use crate::commands::rule::{command_targets, CommandTarget};
use crate::devices::presence;
use crate::json_lines::{encode_line, LineFile};
use crate::notify::{notify_targets, Notifier, NotifyTarget};

/// Rows of `rule_firings` kept in memory; older firings stay in the log file only.
pub const MAX_RECENT: usize = 100_000;

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
        FiringRecord {
            time: f.time_ms,
            chain: f.chain.id().to_owned(),
            device: f.chain.spec.device().to_owned(),
            kind: kind.to_owned(),
            active: f.kind.active(),
            values: to_map(&f.values),
            fields: to_map(&f.fields),
            notify: notify_targets(&f.chain.spec, f.kind.active(), repeated),
            commands: command_targets(&f.chain.spec, f.kind.active()),
        }
    }

    /// The values read and the fields computed, in one object.
    pub fn all_values(&self) -> Map<String, Value> {
        let mut all = self.values.clone();
        all.extend(self.fields.clone());
        all
    }
}

#[derive(Debug)]
struct Inner {
    recent: VecDeque<FiringRecord>,
    last_active: HashMap<String, bool>,
}

#[derive(Debug)]
pub struct FiringLog {
    path: PathBuf,
    /// Held across the write and fsync of a group, apart from `inner` so that readers of the
    /// recent records and states never wait for the disk.
    file: Mutex<LineFile>,
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
    /// Opens the log, reading what it holds (the notifier numbers its notifications again);
    /// a torn tail (a crash mid-write) is cut off, a damaged record before readable ones
    /// skipped.
    pub fn open(dir: &Path, notifier: Arc<Notifier>) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("firings.log");
        let mut recent = VecDeque::new();
        let mut last_active = HashMap::new();
        let read = crate::json_lines::read_json_lines(&path, |r: FiringRecord| {
            notifier.record(std::slice::from_ref(&r), false);
            last_active.insert(r.chain.clone(), r.active);
            recent.push_back(r);
            if recent.len() > MAX_RECENT {
                recent.pop_front();
            }
        })?;
        let file = LineFile::open(&path, read.good_len)?;
        Ok(Arc::new(Self {
            path,
            file: Mutex::new(file),
            skipped_at_open: read.skipped,
            failed: std::sync::OnceLock::new(),
            inner: Mutex::new(Inner {
                recent,
                last_active,
            }),
            notifier,
            commands: std::sync::OnceLock::new(),
        }))
    }

    /// Where the records that make commands go once durable.
    pub fn set_command_outlet(&self, outlet: tokio::sync::mpsc::Sender<FiringRecord>) {
        let _ = self.commands.set(outlet);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why appends are refused (after a failed fsync), if they are.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Damaged records skipped when the log was opened.
    pub fn skipped_at_open(&self) -> u64 {
        self.skipped_at_open
    }

    /// Appends and syncs; only then are the records visible in `rule_firings` and their
    /// notifications delivered.
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
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = file.append(&bytes) {
            if let Some(reason) = file.failure() {
                let _ = self.failed.set(reason.to_owned());
            }
            return Err(e);
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for r in records {
            inner.last_active.insert(r.chain.clone(), r.active);
            inner.recent.push_back(r.clone());
        }
        while inner.recent.len() > MAX_RECENT {
            inner.recent.pop_front();
        }
        drop(inner);
        // Numbered under the file's lock, so seqs follow the log's order.
        self.notifier.record(records, true);
        drop(file);
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

    /// The state the log last recorded for a chain.
    pub fn last_active(&self, chain: &str) -> Option<bool> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_active
            .get(chain)
            .copied()
    }

    /// The most recent records, oldest first.
    pub fn recent(&self, limit: usize) -> Vec<FiringRecord> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .recent
            .iter()
            .skip(inner.recent.len().saturating_sub(limit))
            .cloned()
            .collect()
    }
}

/// `rule_firings(time, rule_chain, device, active, kind, values)`.
pub fn rule_firings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("rule_chain", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("active", DataType::Boolean, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("values", DataType::Utf8, false),
    ]))
}

impl SnapshotSource for FiringLog {
    fn schema(&self) -> SchemaRef {
        rule_firings_schema()
    }

    fn batches(&self) -> Vec<RecordBatch> {
        let rows = self.recent(MAX_RECENT);
        if rows.is_empty() {
            return Vec::new();
        }
        let values = |r: &FiringRecord| Value::Object(r.all_values()).to_string();
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.time))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.chain.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.device.as_str()),
            )),
            Arc::new(BooleanArray::from(
                rows.iter().map(|r| r.active).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.kind.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(rows.iter().map(values))),
        ];
        match RecordBatch::try_new(rule_firings_schema(), columns) {
            Ok(b) => vec![b],
            Err(e) => {
                warn!(error = %e, "rule_firings snapshot");
                Vec::new()
            }
        }
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
            while let Ok(first) = firings.recv() {
                group.extend(Some(FiringRecord::from_firing(&first)).filter(news));
                while group.len() < 4096 {
                    match firings.try_recv() {
                        Ok(f) => group.extend(Some(FiringRecord::from_firing(&f)).filter(news)),
                        Err(_) => break,
                    }
                }
                if let Err(e) = log.append(&group) {
                    warn!(error = %e, path = %log.path().display(), "firing log append failed");
                }
                group.clear();
            }
        })
}
