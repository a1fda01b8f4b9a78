//! [`Storage`]: the WAL, the buffer, persistence, compaction and retention wired together.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::sync::{watch, Mutex, Notify};
use tracing::{debug, info, warn};

use crate::admission::{Admission, AdmissionStatus, BreakerArgs, Priority, Refusal};
use crate::buffer::{Buffer, Generation};
use crate::catalog::{Catalog, FileId, ParquetFile, SummaryFile};
use crate::error::{Error, Result};
use crate::maintenance::{panic_message, MaintenanceRecord, MaintenanceStatus};
use crate::object_store_config::ObjectStoreConfig;
use crate::paths::{parquet_path, HourPartition, READINGS_SUMMARY_DIR, READINGS_TABLE};
use crate::persist::{decode_parquet, encode_parquet, sort_and_split, SortedPartition};
use crate::probe::{ObjectStoreHealth, ProbeRecord};
use crate::summary::{encode_summary, summarize};
use crate::wal::{ReplayReport, Wal, WalArgs, WalRecord};
use aemos_clock::Clock;
use futures::FutureExt;

/// Files deleted from the catalog stay on the object store this long, for queries in flight.
const TOMBSTONE_GRACE_MS: i64 = 60_000;

pub struct StorageArgs {
    pub data_dir: PathBuf,
    pub object_store: ObjectStoreConfig,
    /// Persist the buffer at least this often.
    pub persist_interval: Duration,
    /// Persist as soon as the buffer holds this many rows.
    pub persist_rows: usize,
    /// Readings older than this are deleted (and refused at write time by the decoders).
    pub retention: Duration,
    /// Readings further ahead of the clock than this are refused by the decoders.
    pub max_future: Duration,
    /// A partition with at least this many files is compacted into one.
    pub compaction_min_files: usize,
    /// Largest number of rows compaction writes into one file.
    pub compaction_max_rows: u64,
    /// Bound of the WAL request queue.
    pub wal_queue: usize,
    /// Writes are refused while the buffer holds this many rows (persistence is behind, or
    /// the object store is unreachable): memory stays bounded.
    pub max_buffered_rows: usize,
    pub time: Arc<dyn Clock>,
    /// Told of every batch made durable (the rule engine's input).
    pub observer: Option<Arc<dyn crate::wal::DurableObserver>>,
    /// Faults injected into the WAL writer and the background maintenance (tests).
    pub faults: Option<Arc<dyn crate::faults::Faults>>,
    /// The circuit breaker's thresholds (see `admission`).
    pub breaker: BreakerArgs,
    /// Latency histograms of the server's metrics: WAL `fdatasync`, persistence rounds.
    pub histograms: StorageHistograms,
}

/// Where storage observes its latencies (histograms registered by the server); none by default.
#[derive(Debug, Clone, Default)]
pub struct StorageHistograms {
    pub wal_sync_seconds: Option<prometheus::Histogram>,
    /// A persistence round that wrote rows: Parquet encoding, upload, catalog commit.
    pub persist_seconds: Option<prometheus::Histogram>,
}

impl StorageArgs {
    pub fn new(data_dir: PathBuf, object_store: ObjectStoreConfig, time: Arc<dyn Clock>) -> Self {
        Self {
            data_dir,
            object_store,
            persist_interval: Duration::from_secs(10),
            persist_rows: 10_000_000,
            retention: Duration::from_secs(90 * 24 * 3600),
            max_future: Duration::from_secs(3600),
            compaction_min_files: 8,
            compaction_max_rows: 20_000_000,
            wal_queue: 1024,
            max_buffered_rows: 30_000_000,
            time,
            observer: None,
            faults: None,
            breaker: BreakerArgs::default(),
            histograms: StorageHistograms::default(),
        }
    }
}

/// What queries read: buffered batches not yet in the listed files, and the files.
#[derive(Debug, Clone)]
pub struct ReadSnapshot {
    pub batches: Vec<RecordBatch>,
    pub files: Vec<ParquetFile>,
}

/// What one call of [`Storage::persist`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PersistReport {
    pub generations: usize,
    pub rows: usize,
    pub files: usize,
    pub bytes: u64,
}

pub struct Storage {
    wal: Wal,
    buffer: Arc<Buffer>,
    catalog: Catalog,
    object_store: ObjectStoreConfig,
    pub(crate) writer_id: String,
    persist_lock: Mutex<()>,
    /// Files uploaded by a catalog commit that failed, whose fate the catalog has not told
    /// yet: deleted once a catalog read shows them unrecorded (see `settle_uncommitted`).
    uncommitted: std::sync::Mutex<Vec<ParquetFile>>,
    persist_notify: Arc<Notify>,
    /// Next Parquet file id to try (ids of files written but not yet committed included).
    next_file_id: AtomicU64,
    replay: ReplayReport,
    maintenance: MaintenanceRecord,
    probe: ProbeRecord,
    admission: Admission,
    args: StorageArgs,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("writer_id", &self.writer_id)
            .field("object_store", &self.object_store.url)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// Loads the catalog, replays the WAL into the buffer and starts the WAL writer. Replay is
    /// blocking file I/O run with `block_in_place`: call it on a multi-threaded runtime.
    pub async fn open(args: StorageArgs) -> Result<Arc<Self>> {
        let writer_id = writer_id(&args.data_dir, args.time.now_ms())?;
        let object_store = args.object_store.clone();
        let catalog = Catalog::load(Arc::clone(&object_store.store), object_store.prefix.clone())
            .await?
            .with_commit_verification(object_store.verify_commits);
        let persisted_through = catalog.snapshot().writers.get(&writer_id).copied();
        let buffer = Arc::new(Buffer::default());
        let persist_notify = Arc::new(Notify::new());
        let wal_args = WalArgs {
            dir: args.data_dir.join("wal"),
            sync_seconds: args.histograms.wal_sync_seconds.clone(),
            observer: args.observer.clone(),
            persisted_through,
            buffer: Arc::clone(&buffer),
            queue: args.wal_queue,
            persist_notify: Arc::clone(&persist_notify),
            persist_rows: args.persist_rows,
            faults: args.faults.clone(),
        };
        let (wal, replay) = tokio::task::block_in_place(|| Wal::open(wal_args))?;
        info!(writer_id, object_store = %object_store.url, replayed_rows = replay.rows, "storage open");
        Ok(Arc::new(Self {
            wal,
            buffer,
            catalog,
            object_store,
            writer_id,
            persist_lock: Mutex::new(()),
            uncommitted: std::sync::Mutex::new(Vec::new()),
            persist_notify,
            next_file_id: AtomicU64::new(0),
            replay,
            maintenance: MaintenanceRecord::default(),
            probe: ProbeRecord::default(),
            admission: Admission::new(args.breaker, args.time.now_ms()),
            args,
        }))
    }

    /// Whether a write would be admitted now: refused while the WAL queue is full or while
    /// too many rows wait for persistence. Callers check before decoding to shed load early;
    /// [`Storage::write`] checks again.
    pub fn check_admission(&self) -> Result<()> {
        self.admit(Priority::Normal)
    }

    /// Whether a write of `priority` is admitted now: the queues' hard bounds for every
    /// priority, then the circuit breaker (see `admission`).
    pub fn admit(&self, priority: Priority) -> Result<()> {
        let (depth, capacity) = (self.wal.queue_depth(), self.args.wal_queue);
        let buffered = self.buffer.rows();
        let full = if depth >= capacity {
            Some(Error::WalQueueFull { depth, capacity })
        } else if buffered >= self.args.max_buffered_rows {
            Some(Error::Overloaded {
                buffered,
                limit: self.args.max_buffered_rows,
            })
        } else {
            None
        };
        let load = load_of(depth, capacity, buffered, self.args.max_buffered_rows);
        let state = self.admission.observe(load, self.now_ms());
        if let Some(e) = full {
            self.admission.count(priority, Refusal::Full);
            return Err(e);
        }
        self.admission
            .decide(priority, state, load)
            .map_err(|_| Error::Shed {
                priority: priority.name(),
                circuit: state.name(),
                load_percent: (load * 100.0).round() as u32,
            })
    }

    /// The fuller of the WAL queue and the buffer, as a fraction of its bound.
    pub fn load(&self) -> f64 {
        load_of(
            self.wal.queue_depth(),
            self.args.wal_queue,
            self.buffer.rows(),
            self.args.max_buffered_rows,
        )
    }

    /// The breaker's state and counters, moved for the current load.
    pub fn admission_status(&self) -> AdmissionStatus {
        self.admission.status(self.load(), self.now_ms())
    }

    /// Writes of `priority` refused since start, shed (`full == false`) or at a hard bound.
    pub fn admission_refused(&self, priority: Priority, full: bool) -> u64 {
        let refusal = if full { Refusal::Full } else { Refusal::Shed };
        self.admission.refused(priority, refusal)
    }

    /// Closes the breaker (an operator's reset); the load may open it again at once.
    pub fn reset_admission(&self) {
        self.admission.reset(self.now_ms());
    }

    /// Makes a batch of readings durable; it is visible to queries when this returns.
    pub async fn write(&self, batch: RecordBatch) -> Result<()> {
        self.write_with(batch, Priority::Normal).await
    }

    /// [`Self::write`] admitted at `priority`.
    pub async fn write_with(&self, batch: RecordBatch, priority: Priority) -> Result<()> {
        self.append(batch, priority, None).await
    }

    /// [`Self::write_with`], the record tagged with `(key, value)`: durable in the same sync
    /// as the rows, and given back by [`Self::replay_report`] after a restart as long as the
    /// rows are not yet persisted (see `wal`).
    pub async fn write_tagged(
        &self,
        batch: RecordBatch,
        priority: Priority,
        tag: (&str, &str),
    ) -> Result<()> {
        self.append(batch, priority, Some(tag)).await
    }

    async fn append(
        &self,
        batch: RecordBatch,
        priority: Priority,
        tag: Option<(&str, &str)>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.admit(priority)?;
        self.wal.append(WalRecord::encode_tagged(batch, tag)?).await
    }

    /// The newest reading of every `(device, sensor, variable)`, from the files' summaries
    /// and the buffer's rows, without reading the files' rows: what the rule engine's state is
    /// rebuilt from at start, at a cost that grows with the keys, not with the history. `None`
    /// when a file has no summary with its newest readings (written by an older version): the
    /// caller then reads the rows.
    pub async fn newest_per_key(&self) -> Result<Option<crate::summary::NewestByKey>> {
        let snapshot = self.read_snapshot();
        let mut newest = crate::summary::NewestByKey::new();
        for file in &snapshot.files {
            let Some(summary) = &file.summary else {
                return Ok(None);
            };
            let path = object_store::path::Path::from(summary.path.as_str());
            let bytes = self.object_store.store.get(&path).await?.bytes().await?;
            // Decoding is CPU work: off the runtime's scheduler (a multi-threaded runtime).
            let complete = tokio::task::block_in_place(|| -> Result<bool> {
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)?
                        .with_batch_size(64 * 1024)
                        .build()?;
                for batch in reader {
                    if !crate::summary::fold_newest(&batch?, &mut newest) {
                        return Ok(false);
                    }
                }
                Ok(true)
            })?;
            if !complete {
                return Ok(None);
            }
        }
        tokio::task::block_in_place(|| {
            for batch in &snapshot.batches {
                crate::summary::fold_readings(batch, &mut newest);
            }
        });
        Ok(Some(newest))
    }

    pub fn replay_report(&self) -> &ReplayReport {
        &self.replay
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn object_store(&self) -> &ObjectStoreConfig {
        &self.object_store
    }

    pub fn buffered_rows(&self) -> usize {
        self.buffer.rows()
    }

    pub fn wal_queue_depth(&self) -> usize {
        self.wal.queue_depth()
    }

    /// Why the WAL refuses every write, once it has failed for good (an fsync error).
    pub fn wal_failure(&self) -> Option<String> {
        self.wal.failure()
    }

    pub fn wal_queue_capacity(&self) -> usize {
        self.args.wal_queue
    }

    /// Readings the buffer may hold before every write is refused.
    pub fn max_buffered_rows(&self) -> usize {
        self.args.max_buffered_rows
    }

    pub fn now_ms(&self) -> i64 {
        self.args.time.now_ms()
    }

    /// How long readings are kept.
    pub fn retention(&self) -> Duration {
        self.args.retention
    }

    /// How far ahead of the clock a reading may be stamped.
    pub fn max_future(&self) -> Duration {
        self.args.max_future
    }

    /// A consistent view: every acknowledged row exactly once, in the buffer or in a file.
    pub fn read_snapshot(&self) -> ReadSnapshot {
        // Buffer first, catalog second: a generation released after our buffer snapshot is
        // in the catalog we read next; one still in both is skipped by the writer's mark.
        let generations = self.buffer.snapshot();
        let catalog = self.catalog.snapshot();
        let persisted = catalog.writers.get(&self.writer_id).copied();
        let batches = generations
            .into_iter()
            .filter(|(through, _)| match (through, persisted) {
                (Some(t), Some(p)) => *t > p,
                _ => true,
            })
            .flat_map(|(_, batches)| batches)
            .collect();
        let files = catalog.files_of(READINGS_TABLE).cloned().collect();
        ReadSnapshot { batches, files }
    }

    /// Writes every sealed generation (after sealing the open one) to Parquet, records the
    /// files in the catalog, then drops the rows from the buffer and the segments from the WAL.
    pub async fn persist(&self) -> Result<PersistReport> {
        let _one_at_a_time = self.persist_lock.lock().await;
        if self.buffer.open_rows() == 0 && self.buffer.sealed().is_empty() {
            return Ok(PersistReport::default()); // idle: no rotation, no catalog version
        }
        let started = std::time::Instant::now();
        self.wal.rotate().await?;
        let mut report = PersistReport::default();
        for generation in self.buffer.sealed() {
            let (files, bytes) = self.persist_generation(&generation).await?;
            report.generations += 1;
            report.rows += generation.rows;
            report.files += files;
            report.bytes += bytes;
        }
        if report.rows > 0 {
            if let Some(h) = &self.args.histograms.persist_seconds {
                h.observe(started.elapsed().as_secs_f64());
            }
            debug!(?report, "persisted");
        }
        Ok(report)
    }

    async fn persist_generation(&self, generation: &Generation) -> Result<(usize, u64)> {
        // A commit that failed earlier may have landed: then this generation is in the
        // catalog already, and writing it again would store its rows twice.
        self.settle_uncommitted().await?;
        if self.committed_through(generation.through) {
            self.buffer.release(generation.through);
            self.wal.remove_through(generation.through)?;
            return Ok((0, 0));
        }
        let batches = generation.batches.clone();
        let parts = tokio::task::spawn_blocking(move || sort_and_split(&batches))
            .await
            .expect("sort task")?;
        let files = self.write_files(parts).await?;
        let bytes = files.iter().map(|f| f.size_bytes).sum();
        let count = files.len();
        let through = generation.through;
        if files.is_empty() {
            // Nothing to record: the sealed segments hold no rows.
            self.buffer.release(through);
            self.wal.remove_through(through)?;
            return Ok((0, 0));
        }
        let writer = self.writer_id.clone();
        let fault = |hook| self.injected(hook);
        let committed = match fault(|f| f.before_commit()) {
            Err(e) => Err(e),
            Ok(()) => self
                .catalog
                .commit(|state| {
                    for file in &files {
                        state.add_file(file.clone());
                    }
                    state.writers.insert(writer.clone(), through);
                    true
                })
                .await
                .and_then(|_| fault(|f| f.after_commit())),
        };
        if let Err(e) = committed {
            // Not a lost race (those are retried inside `commit`): the store failed. The
            // files are in no catalog unless the commit landed before the error; find out
            // now if the store answers, or before the next round.
            self.lock_uncommitted().extend(files.iter().cloned());
            let _ = self.settle_uncommitted().await;
            if !self.committed_through(through) {
                return Err(e);
            }
            warn!(error = %e, "a catalog commit reported an error but landed");
        }
        self.buffer.release(through);
        self.wal.remove_through(through)?;
        Ok((count, bytes))
    }

    /// A fault hook's error (tests), as the object store's.
    fn injected(&self, hook: fn(&dyn crate::faults::Faults) -> std::io::Result<()>) -> Result<()> {
        match &self.args.faults {
            Some(f) => hook(f.as_ref()).map_err(|e| {
                Error::ObjectStore(object_store::Error::Generic {
                    store: "injected fault",
                    source: Box::new(e),
                })
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn lock_uncommitted(&self) -> std::sync::MutexGuard<'_, Vec<ParquetFile>> {
        self.uncommitted.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the newest catalog version read says this writer's segments up to `through`
    /// are persisted.
    fn committed_through(&self, through: crate::wal::SegmentId) -> bool {
        self.catalog
            .snapshot()
            .writers
            .get(&self.writer_id)
            .is_some_and(|&t| t >= through)
    }

    /// Reads the catalog and deletes the files of failed commits that it does not record
    /// (counted in the maintenance status); the recorded ones were committed after all.
    /// Nothing to do, or the catalog unreadable (an error): the files wait for the next call.
    pub(crate) async fn settle_uncommitted(&self) -> Result<()> {
        if self.lock_uncommitted().is_empty() {
            return Ok(());
        }
        let state = self.catalog.refresh().await?;
        let orphans: Vec<ParquetFile> = std::mem::take(&mut *self.lock_uncommitted())
            .into_iter()
            .filter(|f| !state.files.contains_key(&f.path))
            .collect();
        if !orphans.is_empty() {
            self.delete_uncommitted(&orphans).await;
            self.maintenance.collected(orphans.len() as u64);
            info!(
                files = orphans.len(),
                "deleted the files of a failed catalog commit"
            );
        }
        Ok(())
    }

    /// Writes every part; if one fails, deletes the ones written before it (they are in no
    /// catalog, so nothing else would) and returns the error.
    async fn write_files(&self, parts: Vec<SortedPartition>) -> Result<Vec<ParquetFile>> {
        let mut written = Vec::with_capacity(parts.len());
        for part in parts {
            match self.write_file(part).await {
                Ok(file) => written.push(file),
                Err(e) => {
                    self.delete_uncommitted(&written).await;
                    return Err(e);
                }
            }
        }
        Ok(written)
    }

    /// Best-effort deletion of files (and their summaries) that no catalog version names.
    pub(crate) async fn delete_uncommitted(&self, files: &[ParquetFile]) {
        let mut paths: Vec<String> = Vec::new();
        for file in files {
            paths.push(file.path.clone());
            paths.extend(file.summary.as_ref().map(|s| s.path.clone()));
        }
        for path in &paths {
            let _ = self.object_store.store.delete(&path.as_str().into()).await;
        }
    }

    /// Encodes and uploads one file under a fresh key of this writer's.
    async fn write_file(&self, part: SortedPartition) -> Result<ParquetFile> {
        let SortedPartition {
            partition,
            batch,
            min_time,
            max_time,
        } = part;
        let rows = batch.num_rows() as u64;
        let (bytes, summary) = tokio::task::spawn_blocking(move || -> Result<_> {
            Ok((
                encode_parquet(&batch)?,
                encode_summary(&summarize(&batch)?)?,
            ))
        })
        .await
        .expect("encode task")?;
        let (id, path) = self
            .put_fresh(READINGS_TABLE, partition, bytes.clone())
            .await?;
        let store = &self.object_store.store;
        // The key is ours (this writer's, the conditional put), so is the summary's key.
        let summary_path = parquet_path(
            &self.object_store.prefix,
            READINGS_SUMMARY_DIR,
            partition,
            id,
            &self.writer_id,
        );
        let size_bytes = summary.len() as u64;
        if let Err(e) = store.put(&summary_path, PutPayload::from(summary)).await {
            // Not in the catalog: nothing would ever delete the data file.
            let _ = store.delete(&path).await;
            return Err(e.into());
        }
        Ok(ParquetFile {
            id: FileId(id),
            table: READINGS_TABLE.to_string(),
            path: path.to_string(),
            partition: partition.0,
            min_time,
            max_time,
            rows,
            size_bytes: bytes.len() as u64,
            summary: Some(SummaryFile {
                path: summary_path.to_string(),
                size_bytes,
            }),
        })
    }

    /// Uploads `bytes` as a file of `table` under a fresh id and a key of this writer's (see
    /// `paths.rs`); the conditional put skips ids a crashed run of this writer left uploaded
    /// and uncommitted. Returns the id and the key.
    pub(crate) async fn put_fresh(
        &self,
        table: &str,
        partition: HourPartition,
        bytes: Bytes,
    ) -> Result<(u64, object_store::path::Path)> {
        let mut id = self
            .next_file_id
            .load(Ordering::SeqCst)
            .max(self.catalog.snapshot().next_file_id);
        loop {
            let path = parquet_path(
                &self.object_store.prefix,
                table,
                partition,
                id,
                &self.writer_id,
            );
            let put = self
                .object_store
                .store
                .put_opts(
                    &path,
                    PutPayload::from(bytes.clone()),
                    PutOptions::from(PutMode::Create),
                )
                .await;
            match put {
                Ok(_) => {
                    self.next_file_id.fetch_max(id + 1, Ordering::SeqCst);
                    return Ok((id, path));
                }
                Err(object_store::Error::AlreadyExists { .. }) => id += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Merges partitions that have accumulated many files; returns the files removed.
    pub async fn compact(&self) -> Result<usize> {
        let state = self.catalog.snapshot();
        let mut by_partition: BTreeMap<i64, Vec<&ParquetFile>> = BTreeMap::new();
        for file in state.files_of(READINGS_TABLE) {
            by_partition.entry(file.partition).or_default().push(file);
        }
        let mut removed = 0;
        for (partition, mut files) in by_partition {
            if files.len() < self.args.compaction_min_files.max(2) {
                continue;
            }
            // Smallest first, up to the row cap.
            files.sort_by_key(|f| f.rows);
            let mut total = 0;
            let chosen: Vec<ParquetFile> = files
                .into_iter()
                .take_while(|f| {
                    total += f.rows;
                    total <= self.args.compaction_max_rows
                })
                .cloned()
                .collect();
            if chosen.len() < 2 {
                continue;
            }
            removed += self.compact_files(HourPartition(partition), chosen).await?;
        }
        Ok(removed)
    }

    async fn compact_files(
        &self,
        partition: HourPartition,
        files: Vec<ParquetFile>,
    ) -> Result<usize> {
        let mut batches = Vec::new();
        for file in &files {
            let path = object_store::path::Path::from(file.path.as_str());
            let bytes = self.object_store.store.get(&path).await?.bytes().await?;
            batches.extend(
                tokio::task::spawn_blocking(move || decode_parquet(bytes))
                    .await
                    .expect("decode task")?,
            );
        }
        let parts = tokio::task::spawn_blocking(move || sort_and_split(&batches))
            .await
            .expect("sort task")?;
        debug_assert!(parts.iter().all(|p| p.partition == partition));
        let written = self.write_files(parts).await?;
        let ids: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
        let now = self.now_ms();
        let committed = match self.injected(|f| f.before_commit()) {
            Err(e) => Err(e),
            Ok(()) => {
                self.catalog
                    .commit(|state| {
                        // Another writer compacted or expired some of these already: give up.
                        if !ids.iter().all(|id| state.files.contains_key(id)) {
                            return false;
                        }
                        state.remove_files(&ids, now);
                        for file in &written {
                            state.add_file(file.clone());
                        }
                        true
                    })
                    .await
            }
        };
        let committed = match committed {
            Ok(c) => c,
            Err(e) => {
                // As for persistence: unless the commit landed, the merged files are in no
                // catalog; collected now, or before the next round if the store is away.
                self.lock_uncommitted().extend(written.iter().cloned());
                let _ = self.settle_uncommitted().await;
                return Err(e);
            }
        };
        if committed.is_none() {
            self.delete_uncommitted(&written).await;
            return Ok(0);
        }
        info!(partition = partition.key(), files = ids.len(), "compacted");
        Ok(ids.len())
    }

    /// Removes files entirely older than the retention period; returns how many.
    pub async fn enforce_retention(&self) -> Result<usize> {
        let now = self.now_ms();
        let cutoff = now - self.args.retention.as_millis() as i64;
        let expired: Vec<String> = self
            .catalog
            .snapshot()
            .files
            .values()
            .filter(|f| f.max_time < cutoff)
            .map(|f| f.path.clone())
            .collect();
        if expired.is_empty() {
            return Ok(0);
        }
        let mut removed = 0;
        self.catalog
            .commit(|state| {
                removed = state.remove_files(&expired, now);
                removed > 0
            })
            .await?;
        info!(removed, "retention removed expired files");
        Ok(removed)
    }

    /// Deletes the objects of tombstones older than the grace period.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let now = self.now_ms();
        let due: Vec<String> = self
            .catalog
            .snapshot()
            .tombstones
            .iter()
            .filter(|t| now - t.removed_at >= TOMBSTONE_GRACE_MS)
            .map(|t| t.path.clone())
            .collect();
        for path in &due {
            match self.object_store.store.delete(&path.as_str().into()).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !due.is_empty() {
            self.catalog
                .commit(|state| {
                    state.tombstones.retain(|t| !due.contains(&t.path));
                    true
                })
                .await?;
        }
        Ok(due.len())
    }

    /// Persists on the interval or when the buffer is full, and compacts, expires and
    /// collects garbage after each persist, until `shutdown` turns true; then persists once more.
    pub async fn run_background(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.args.persist_interval) => {}
                _ = self.persist_notify.notified() => {}
                _ = shutdown.changed() => break,
            }
            // Supervised: a failed or panicking round is counted and the next one runs.
            self.maintenance.started();
            let round = std::panic::AssertUnwindSafe(self.maintain()).catch_unwind();
            match round.await {
                Ok(Ok(())) => self.maintenance.succeeded(),
                Ok(Err(e)) => {
                    warn!(error = %e, "storage maintenance failed, will retry");
                    self.maintenance.failed(e.to_string(), false);
                }
                Err(panic) => {
                    let reason = format!("panicked: {}", panic_message(&*panic));
                    tracing::error!(%reason, "storage maintenance panicked, will retry");
                    self.maintenance.failed(reason, true);
                }
            }
        }
        if let Err(e) = self.persist().await {
            warn!(error = %e, "final persist failed; the wal keeps the data");
        }
    }

    /// What the background maintenance has done (rounds, failures, panics, the last error).
    pub fn maintenance_status(&self) -> MaintenanceStatus {
        self.maintenance.status()
    }

    /// Probes the object store every `every`, each probe given `timeout`, until `shutdown`
    /// turns true (see `probe`); the first probe at once.
    pub async fn run_probe(
        self: Arc<Self>,
        every: Duration,
        timeout: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let version = self.catalog.snapshot().version;
            self.probe.probe(&self.object_store, version, timeout).await;
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => break,
            }
        }
    }

    /// What the object store probes found.
    pub fn object_store_health(&self) -> ObjectStoreHealth {
        self.probe.health()
    }

    async fn maintain(&self) -> Result<()> {
        if let Some(faults) = &self.args.faults {
            faults.before_maintenance();
        }
        self.persist().await?;
        self.catalog.refresh().await?;
        self.compact().await?;
        self.enforce_retention().await?;
        self.collect_garbage().await?;
        Ok(())
    }
}

/// What a server on `data_dir` would serve, read without starting a writer or changing any
/// file (`aemos sql`): the catalog's files and the WAL's unpersisted rows.
///
/// A server running beside it may persist between the two reads and then delete the WAL
/// segments it persisted: the catalog is read again after the WAL, and if the server's
/// persisted mark moved in between, both are read again, so every row is seen once, from a
/// file or from the WAL.
pub async fn read_only_snapshot(
    data_dir: &std::path::Path,
    object_store: &ObjectStoreConfig,
) -> Result<ReadSnapshot> {
    const ATTEMPTS: usize = 10;
    let writer = std::fs::read_to_string(data_dir.join("writer-id")).ok();
    let writer = writer.as_deref().map(str::trim);
    let wal_dir = data_dir.join("wal");
    let (_, mut mark) = catalog_and_mark(object_store, writer).await?;
    for _ in 0..ATTEMPTS {
        let read = tokio::task::block_in_place(|| crate::wal::read_unpersisted(&wal_dir, mark));
        let (state, now) = catalog_and_mark(object_store, writer).await?;
        if now == mark {
            let (buffer, _) = read?;
            return Ok(ReadSnapshot {
                batches: buffer.snapshot().into_iter().flat_map(|(_, b)| b).collect(),
                files: state.files_of(READINGS_TABLE).cloned().collect(),
            });
        }
        // Persisted meanwhile: a segment read may be gone, its rows now in a file.
        mark = now;
    }
    Err(Error::CatalogContention { attempts: ATTEMPTS })
}

/// The fuller of the WAL queue and the buffer, as a fraction of its bound.
fn load_of(depth: usize, capacity: usize, buffered: usize, max_buffered: usize) -> f64 {
    let wal = depth as f64 / capacity.max(1) as f64;
    let buffer = buffered as f64 / max_buffered.max(1) as f64;
    wal.max(buffer)
}

/// The newest catalog and the WAL segment up to which `writer` has persisted.
async fn catalog_and_mark(
    object_store: &ObjectStoreConfig,
    writer: Option<&str>,
) -> Result<(
    Arc<crate::catalog::CatalogState>,
    Option<crate::wal::SegmentId>,
)> {
    let catalog =
        Catalog::load(Arc::clone(&object_store.store), object_store.prefix.clone()).await?;
    let state = catalog.snapshot();
    let mark = writer.and_then(|w| state.writers.get(w).copied());
    Ok((state, mark))
}

/// A stable id for this data directory, created on first start.
fn writer_id(data_dir: &std::path::Path, now_ms: i64) -> Result<String> {
    let path = data_dir.join("writer-id");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
        path: data_dir.to_path_buf(),
        source,
    })?;
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        Ok(_) | Err(_) => {
            // The start time and 64 random bits: servers sharing a bucket may start in one
            // millisecond with one process id (each PID 1 in its container).
            use std::hash::BuildHasher;
            let random = std::hash::RandomState::new().hash_one((now_ms, data_dir));
            let id = format!("w{now_ms:x}-{random:016x}");
            let tmp = data_dir.join("writer-id.tmp");
            // Durable before the WAL is: a lost id would make a new writer replay (and store
            // again) what the old one had persisted.
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            std::io::Write::write_all(&mut file, id.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(data_dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
            Ok(id)
        }
    }
}
