//! Write-ahead log: append-only segment files with checksummed records and group commit.
//!
//! ```text
//! {data-dir}/wal/{segment:020}.wal
//! segment = MAGIC record*
//! record  = len:u32le crc32(payload):u32le payload      payload = one Arrow IPC stream
//! ```
//!
//! A record may carry a tag (a key and a value in its IPC schema's metadata) written and made
//! durable with its rows in the same sync: what a writer needs to know, after a crash, about
//! the writes that landed (the external MQTT broker's packet ids). Replay hands the tags back
//! in log order ([`ReplayReport::tags`]); the rows in the buffer carry none.
//!
//! One writer thread owns the open segment. Callers encode their batch on their own thread
//! (a small one, of at most [`COALESCE_ROWS`] rows, is left to the writer), queue it on a
//! bounded channel (a full channel is backpressure) and wait. The writer drains everything
//! queued, concatenates the small batches into one record, writes it all with one `write`,
//! makes it durable with one `fdatasync`, inserts the batches into the [`Buffer`] in log order
//! and only then answers the callers: many concurrent writes share one fsync, and many small
//! ones one record. A rotation request goes through the same queue, so the
//! generation it seals in the buffer holds exactly the records of the segments it closes.
//!
//! On open, segments are replayed in order; a record whose length or checksum does not match
//! (a torn write at the tail of the last segment) ends the replay and is truncated away.
//!
//! Failures fail closed. A `write` that fails (a full disk) is cut off the file, its group is
//! refused, and the next group is written where the log ends, so space coming back brings the
//! log back. A `fdatasync` that fails is final: the kernel may have dropped the dirty pages and
//! cleared the error, so a later sync could succeed without the data. The group is cut off,
//! refused, and every later write too, until a restart replays what is on disk; the failure is
//! in [`Wal::failure`] for health and readiness.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

use crate::buffer::{Buffer, Generation};
use crate::error::{Error, Result};
use crate::faults::Faults;

const MAGIC: &[u8; 8] = b"AEMOSWL1";
const HEADER: usize = 8;
/// Records above this size are refused at encode time and treated as corruption on replay.
pub const MAX_RECORD_BYTES: usize = 1 << 30;
/// Most requests folded into one group commit.
const MAX_GROUP: usize = 4096;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SegmentId(pub u64);

impl SegmentId {
    fn file_name(self) -> String {
        format!("{:020}.wal", self.0)
    }
}

/// Records of at most this many rows, untagged, are not encoded by their writer: the WAL
/// writer concatenates the ones of a group commit and encodes them as one record (one IPC
/// stream, one checksum, one batch in the buffer and for the observer), so a thousand
/// single-reading requests cost one encoding, not a thousand.
pub(crate) const COALESCE_ROWS: usize = 64;

/// A batch ready to be appended: encoded by its writer, or left for the WAL writer to
/// coalesce with the other small ones of its group.
#[derive(Debug)]
pub struct WalRecord {
    /// `None`: small and untagged, encoded in its group's coalesced record.
    payload: Option<Vec<u8>>,
    batch: RecordBatch,
}

/// The metadata key of a record's tag: `aemos.tag.{key}`.
const TAG_PREFIX: &str = "aemos.tag.";

impl WalRecord {
    pub fn encode(batch: RecordBatch) -> Result<Self> {
        Self::encode_tagged(batch, None)
    }

    /// A record whose rows come back on replay with `tag` (`(key, value)`) beside them.
    pub fn encode_tagged(batch: RecordBatch, tag: Option<(&str, &str)>) -> Result<Self> {
        let written = match tag {
            None if batch.num_rows() <= COALESCE_ROWS => {
                return Ok(Self {
                    payload: None,
                    batch,
                })
            }
            None => batch.clone(),
            Some((key, value)) => {
                let mut metadata = batch.schema().metadata().clone();
                metadata.insert(format!("{TAG_PREFIX}{key}"), value.to_owned());
                let schema = batch.schema().as_ref().clone().with_metadata(metadata);
                batch.clone().with_schema(Arc::new(schema))?
            }
        };
        let mut payload = Vec::with_capacity(batch.get_array_memory_size() / 2 + 1024);
        write_ipc(&mut payload, &written)?;
        Ok(Self {
            payload: Some(payload),
            batch,
        })
    }

    pub fn rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// Appends `batch` to `out` as one Arrow IPC stream.
fn write_ipc(out: &mut Vec<u8>, batch: &RecordBatch) -> Result<()> {
    let mut writer = StreamWriter::try_new(&mut *out, &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

/// Appends one framed record (`len crc payload`) to `bytes`.
fn frame(bytes: &mut Vec<u8>, payload: &[u8]) {
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    bytes.extend_from_slice(payload);
}

/// Encodes `batch` straight into `bytes` as one framed record; on error `bytes` is as before.
fn frame_batch(bytes: &mut Vec<u8>, batch: &RecordBatch) -> Result<()> {
    let start = bytes.len();
    bytes.extend_from_slice(&[0; 8]);
    if let Err(e) = write_ipc(bytes, batch) {
        bytes.truncate(start);
        return Err(e);
    }
    let payload = &bytes[start + 8..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    bytes[start..start + 4].copy_from_slice(&len.to_le_bytes());
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A record's batches and its tags (`(key, value)`).
fn decode_payload(payload: &[u8]) -> Result<(Vec<RecordBatch>, Vec<(String, String)>)> {
    let reader = StreamReader::try_new(payload, None)?;
    let tags = reader
        .schema()
        .metadata()
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix(TAG_PREFIX)?.to_owned(), v.clone())))
        .collect();
    // Records written before the schema's last columns existed are read into it.
    let batches = reader
        .map(|b| crate::schema::conform(b?))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((batches, tags))
}

enum Request {
    Append {
        record: WalRecord,
        done: oneshot::Sender<Result<(), WriteError>>,
    },
    Rotate {
        done: oneshot::Sender<Arc<Generation>>,
    },
}

/// Sees every group of batches once it is durable and in the buffer, in log order, on the WAL
/// writer thread, before the writers are answered: a slow observer holds acknowledgements
/// back (backpressure). Replayed records are not observed.
pub trait DurableObserver: Send + Sync + 'static {
    fn durable(&self, batches: &[RecordBatch]);
}

/// Why the writer refuses every write, once it does.
pub type WalFailure = Arc<Mutex<Option<String>>>;

/// Why a group was not made durable: the reason, and whether only space was missing (the log
/// goes on once there is space again; the writers are told to retry later).
#[derive(Debug, Clone)]
struct WriteError {
    reason: String,
    disk_full: bool,
}

/// No space or no quota left on the data directory's file system.
fn is_disk_full(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EDQUOT: i32 = 122;
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(ENOSPC) | Some(EDQUOT))
}

pub struct WalArgs {
    pub dir: PathBuf,
    /// Observes the time of each group commit's `fdatasync`.
    pub sync_seconds: Option<prometheus::Histogram>,
    pub observer: Option<Arc<dyn DurableObserver>>,
    /// Segments up to and including this one are already persisted (from the catalog).
    pub persisted_through: Option<SegmentId>,
    pub buffer: Arc<Buffer>,
    /// Bound of the request queue.
    pub queue: usize,
    /// Woken when the buffer's open generation reaches `persist_rows`.
    pub persist_notify: Arc<Notify>,
    pub persist_rows: usize,
    pub faults: Option<Arc<dyn Faults>>,
}

/// Handle to the WAL writer thread.
#[derive(Debug, Clone)]
pub struct Wal {
    tx: mpsc::Sender<Request>,
    dir: PathBuf,
    failure: WalFailure,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub segments: usize,
    pub records: usize,
    pub rows: usize,
    pub truncated_bytes: u64,
    /// The replayed records' tags (`(key, value)`), in log order.
    pub tags: Vec<(String, String)>,
}

impl ReplayReport {
    /// The values of the replayed records tagged `key`, in log order.
    pub fn tagged<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Wal {
    /// Replays unpersisted segments into the buffer, then starts the writer on a new segment.
    pub fn open(args: WalArgs) -> Result<(Self, ReplayReport)> {
        let WalArgs {
            dir,
            sync_seconds,
            observer,
            persisted_through,
            buffer,
            queue,
            persist_notify,
            persist_rows,
            faults,
        } = args;
        std::fs::create_dir_all(&dir).map_err(|source| Error::WalIo {
            path: dir.clone(),
            source,
        })?;
        let segments = list_segments(&dir)?;
        let mut report = ReplayReport::default();
        let last = segments.last().copied();
        for &segment in &segments {
            if persisted_through.is_some_and(|p| segment <= p) {
                remove_segment(&dir, segment);
                continue;
            }
            let is_last = Some(segment) == last;
            replay_segment(&dir, segment, is_last, true, &buffer, &mut report)?;
            report.segments += 1;
        }
        let next = SegmentId(
            last.map(|s| s.0)
                .max(persisted_through.map(|s| s.0))
                .map_or(1, |s| s + 1),
        );
        let file = create_segment(&dir, next)?;
        let (tx, rx) = mpsc::channel(queue.max(1));
        let failure = WalFailure::default();
        let writer = Writer {
            dir: dir.clone(),
            segment: next,
            file,
            len: HEADER as u64,
            buffer,
            persist_notify,
            persist_rows,
            observer,
            failed: Arc::clone(&failure),
            faults,
            sync_seconds,
        };
        std::thread::Builder::new()
            .name("aemos-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| Error::WalIo {
                path: dir.clone(),
                source,
            })?;
        if report.records > 0 || report.truncated_bytes > 0 {
            info!(
                segments = report.segments,
                records = report.records,
                rows = report.rows,
                truncated_bytes = report.truncated_bytes,
                tags = report.tags.len(),
                "wal replayed"
            );
        }
        Ok((Self { tx, dir, failure }, report))
    }

    /// Why every write is refused, once the writer has failed for good.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Appends a record and returns once it is durable and in the buffer.
    pub async fn append(&self, record: WalRecord) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Append { record, done })
            .await
            .map_err(|_| Error::WalClosed)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(WriteError {
                reason,
                disk_full: true,
            })) => Err(Error::DiskFull {
                path: self.dir.clone(),
                reason,
            }),
            Ok(Err(WriteError { reason, .. })) => Err(Error::WalIo {
                path: self.dir.clone(),
                source: std::io::Error::other(reason),
            }),
            Err(_) => Err(Error::WalClosed),
        }
    }

    /// Closes the open segment and seals the buffer generation that holds its records.
    pub async fn rotate(&self) -> Result<Arc<Generation>> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request::Rotate { done })
            .await
            .map_err(|_| Error::WalClosed)?;
        wait.await.map_err(|_| Error::WalClosed)
    }

    /// Deletes segments whose records are persisted.
    pub fn remove_through(&self, through: crate::wal::SegmentId) -> Result<()> {
        for segment in list_segments(&self.dir)? {
            if segment <= through {
                remove_segment(&self.dir, segment);
            }
        }
        Ok(())
    }

    /// Requests queued and not yet taken by the writer.
    pub fn queue_depth(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

fn list_segments(dir: &Path) -> Result<Vec<SegmentId>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::WalIo {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut segments: Vec<SegmentId> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".wal")?.parse().ok().map(SegmentId)
        })
        .collect();
    segments.sort();
    Ok(segments)
}

fn remove_segment(dir: &Path, segment: SegmentId) {
    let path = dir.join(segment.file_name());
    if let Err(e) = std::fs::remove_file(&path) {
        warn!(path = %path.display(), error = %e, "could not remove persisted wal segment");
    }
}

fn create_segment(dir: &Path, segment: SegmentId) -> Result<File> {
    let path = dir.join(segment.file_name());
    let io = |source| Error::WalIo {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(MAGIC).map_err(io)?;
    file.sync_all().map_err(io)?;
    // Make the new directory entry durable too.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| Error::WalIo {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(file)
}

/// Reads the unpersisted segments of a WAL directory without changing anything (a torn tail
/// is skipped, not truncated): for reading a data directory beside, or without, a server.
pub fn read_unpersisted(
    dir: &Path,
    persisted_through: Option<SegmentId>,
) -> Result<(Buffer, ReplayReport)> {
    let buffer = Buffer::default();
    let mut report = ReplayReport::default();
    if !dir.exists() {
        return Ok((buffer, report));
    }
    let segments = list_segments(dir)?;
    let last = segments.last().copied();
    for segment in segments {
        if persisted_through.is_some_and(|p| segment <= p) {
            continue;
        }
        replay_segment(
            dir,
            segment,
            Some(segment) == last,
            false,
            &buffer,
            &mut report,
        )?;
        report.segments += 1;
    }
    Ok((buffer, report))
}

fn replay_segment(
    dir: &Path,
    segment: SegmentId,
    is_last: bool,
    repair: bool,
    buffer: &Buffer,
    report: &mut ReplayReport,
) -> Result<()> {
    let path = dir.join(segment.file_name());
    let io = |source| Error::WalIo {
        path: path.clone(),
        source,
    };
    let file = File::open(&path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; HEADER];
    let corrupt = |offset: u64, reason: String| Error::WalCorrupt {
        path: path.clone(),
        offset,
        reason,
    };
    if file_len < HEADER as u64 {
        // Crashed while creating the segment: nothing in it was ever acknowledged.
        return truncate_tail(&path, 0, file_len, is_last, repair, report, "short header");
    }
    reader.read_exact(&mut magic).map_err(io)?;
    if &magic != MAGIC {
        return Err(corrupt(0, "bad magic".into()));
    }
    let mut offset = HEADER as u64;
    let mut payload = Vec::new();
    loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            return Ok(());
        }
        if let Some(torn) = read_record(&mut reader, remaining, &mut payload).map_err(io)? {
            return truncate_tail(&path, offset, file_len, is_last, repair, report, torn);
        }
        let (batches, tags) = decode_payload(&payload)
            .map_err(|e| corrupt(offset, format!("undecodable record: {e}")))?;
        report.tags.extend(tags);
        report.records += 1;
        report.rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        buffer.insert(batches);
        offset += 8 + payload.len() as u64;
    }
}

/// Reads the next record's payload into `payload`; `Some(reason)` when the record is torn or
/// fails its checksum. `remaining` is what the file holds from the record's start.
fn read_record(
    reader: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> std::io::Result<Option<&'static str>> {
    if remaining < 8 {
        return Ok(Some("torn record header"));
    }
    let mut head = [0u8; 8];
    reader.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
    if len > remaining - 8 || len as usize > MAX_RECORD_BYTES {
        return Ok(Some("torn record body"));
    }
    payload.resize(len as usize, 0);
    reader.read_exact(payload)?;
    if crc32fast::hash(payload) != crc {
        return Ok(Some("checksum mismatch"));
    }
    Ok(None)
}

fn truncate_tail(
    path: &Path,
    offset: u64,
    file_len: u64,
    is_last: bool,
    repair: bool,
    report: &mut ReplayReport,
    reason: &str,
) -> Result<()> {
    if !is_last && repair {
        return Err(Error::WalCorrupt {
            path: path.to_path_buf(),
            offset,
            reason: format!("{reason} in a segment that is not the last"),
        });
    }
    warn!(path = %path.display(), offset, reason, "dropping torn wal tail");
    report.truncated_bytes += file_len - offset;
    if !repair {
        return Ok(());
    }
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| Error::WalIo {
            path: path.to_path_buf(),
            source,
        })?;
    let keep = offset;
    file.set_len(keep)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::WalIo {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(())
}

struct Writer {
    dir: PathBuf,
    segment: SegmentId,
    file: File,
    len: u64,
    buffer: Arc<Buffer>,
    persist_notify: Arc<Notify>,
    persist_rows: usize,
    observer: Option<Arc<dyn DurableObserver>>,
    failed: WalFailure,
    faults: Option<Arc<dyn Faults>>,
    sync_seconds: Option<prometheus::Histogram>,
}

type Done = oneshot::Sender<Result<(), WriteError>>;

/// One group commit being gathered: the framed records, the batches they hold (in log order)
/// and who waits for them; the small records wait in `small` to be coalesced at commit.
#[derive(Default)]
struct Group {
    bytes: Vec<u8>,
    batches: Vec<RecordBatch>,
    waiters: Vec<Done>,
    small: Vec<(RecordBatch, Done)>,
}

impl Group {
    fn push(&mut self, record: WalRecord, done: Done) {
        match record.payload {
            Some(payload) => {
                frame(&mut self.bytes, &payload);
                self.batches.push(record.batch);
                self.waiters.push(done);
            }
            None => self.small.push((record.batch, done)),
        }
    }

    fn is_empty(&self) -> bool {
        self.waiters.is_empty() && self.small.is_empty()
    }

    /// Frames the small records as one record (each on its own if they do not concatenate,
    /// whose encoding failing refuses that one alone).
    fn coalesce(&mut self) {
        if self.small.is_empty() {
            return;
        }
        let batches: Vec<&RecordBatch> = self.small.iter().map(|(b, _)| b).collect();
        let schema = batches[0].schema();
        if let Ok(batch) = arrow::compute::concat_batches(&schema, batches) {
            if frame_batch(&mut self.bytes, &batch).is_ok() {
                self.batches.push(batch);
                self.waiters
                    .extend(self.small.drain(..).map(|(_, done)| done));
                return;
            }
        }
        for (batch, done) in self.small.drain(..) {
            match frame_batch(&mut self.bytes, &batch) {
                Ok(()) => {
                    self.batches.push(batch);
                    self.waiters.push(done);
                }
                Err(e) => {
                    let _ = done.send(Err(WriteError {
                        reason: format!("could not encode the readings for the wal: {e}"),
                        disk_full: false,
                    }));
                }
            }
        }
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut requests = Vec::with_capacity(MAX_GROUP);
        let mut group = Group {
            bytes: Vec::with_capacity(1 << 20),
            ..Group::default()
        };
        while let Some(first) = rx.blocking_recv() {
            requests.push(first);
            while requests.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(request) => requests.push(request),
                    Err(_) => break,
                }
            }
            for request in requests.drain(..) {
                match request {
                    Request::Append { record, done } => group.push(record, done),
                    Request::Rotate { done } => {
                        self.commit(&mut group);
                        let generation = self.rotate();
                        let _ = done.send(generation);
                    }
                }
            }
            self.commit(&mut group);
        }
    }

    /// Writes and syncs everything in `group`, then applies it to the buffer and answers.
    fn commit(&mut self, group: &mut Group) {
        if group.is_empty() {
            return;
        }
        let outcome = match self.failure() {
            Some(reason) => Err(WriteError {
                reason,
                disk_full: false,
            }),
            None => {
                group.coalesce();
                self.write_and_sync(&group.bytes)
            }
        };
        group.bytes.clear();
        let batches = std::mem::take(&mut group.batches);
        let waiters = group
            .waiters
            .drain(..)
            .chain(group.small.drain(..).map(|(_, done)| done));
        match outcome {
            Ok(()) => {
                let open_rows = self.buffer.insert(batches.iter().cloned());
                if open_rows >= self.persist_rows {
                    self.persist_notify.notify_one();
                }
                if let Some(observer) = &self.observer {
                    observer.durable(&batches);
                }
                for done in waiters {
                    let _ = done.send(Ok(()));
                }
            }
            Err(reason) => {
                for done in waiters {
                    let _ = done.send(Err(reason.clone()));
                }
            }
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Refuses every write from now on.
    fn fail(&self, reason: String) {
        warn!(%reason, "wal failed: refusing writes until restart");
        *self.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
    }

    fn write_and_sync(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        if let Err(e) = self.file.write_all(bytes) {
            // Cut off whatever part of the group reached the file and write the next group
            // where the log ends (the file is not in append mode: without the seek, it would
            // go after a hole, which replay reads as a torn tail, dropping it).
            let reason = format!("wal write failed: {e}");
            if let Err(e2) = self.cut() {
                self.fail(format!("{reason}; cutting it off failed: {e2}"));
            }
            // Space may come back: the next group is written where the log ends.
            let disk_full = is_disk_full(&e) && self.failure().is_none();
            return Err(WriteError { reason, disk_full });
        }
        let started = std::time::Instant::now();
        let synced = match &self.faults {
            Some(faults) => faults.before_sync(),
            None => Ok(()),
        }
        .and_then(|()| self.file.sync_data());
        if let Some(h) = &self.sync_seconds {
            h.observe(started.elapsed().as_secs_f64());
        }
        if let Err(e) = synced {
            let reason = format!("wal fdatasync failed: {e}; refusing writes until restart");
            // Best effort: the group was never acknowledged, keep it out of the next replay.
            let _ = self.cut();
            self.fail(reason.clone());
            return Err(WriteError {
                reason,
                disk_full: false,
            });
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the file back to its last durable record and writes on from there.
    fn cut(&mut self) -> std::io::Result<()> {
        self.file.set_len(self.len)?;
        self.file.seek(SeekFrom::Start(self.len))?;
        self.file.sync_all()
    }

    fn rotate(&mut self) -> Arc<Generation> {
        let sealed = self.segment;
        let generation = self.buffer.seal(sealed);
        let next = SegmentId(sealed.0 + 1);
        match create_segment(&self.dir, next) {
            Ok(file) => {
                self.file = file;
                self.segment = next;
                self.len = HEADER as u64;
            }
            Err(e) => {
                // Appending on to the sealed segment would let its deletion after persistence
                // take acknowledged records with it: refuse writes instead.
                self.fail(format!("could not open a new wal segment: {e}"));
            }
        }
        generation
    }
}
