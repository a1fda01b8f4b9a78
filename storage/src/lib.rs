//! Storage for readings, in the style of InfluxDB 3: write-ahead log, queryable buffer,
//! Parquet files on object storage, catalog.
//!
//! As a batch arrives it is encoded as an Arrow IPC record and appended to the WAL; the WAL
//! writer groups concurrent appends into one `write` + `fdatasync` (group commit), then inserts
//! the batches into the in-memory [`Buffer`] and acknowledges. From then on the rows are visible
//! to queries ([`Storage::read_snapshot`]). Every `persist_interval`, or when the buffer reaches
//! `persist_rows`, the WAL rotates and the sealed generation is sorted by
//! `(sensor, variable, time)`, split by hour and written as Parquet, each file with a summary
//! (rows, min, max and sum per key, [`summary`]); the files are recorded in
//! the [`Catalog`] together with the WAL segment they cover, and only then are the rows dropped
//! from the buffer and the segments deleted. On start the catalog tells which segments are
//! already persisted; the rest are replayed into the buffer.
//!
//! On disk and on the object store:
//!
//! ```text
//! {data-dir}/wal/{segment:020}.wal                              WAL segments (see wal.rs)
//! {data-dir}/writer-id                                          this writer's id in the catalog
//! {prefix}/catalog/{version:020}.json                           catalog versions
//! {prefix}/readings/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet  persisted readings
//! {prefix}/readings_summary/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet  per-key summary of that file
//! {prefix}/documents/{namespace}/{name}.json                    documents of upper layers (rule chains)
//! {prefix}/{table}/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet  tables of upper layers' logs (rule_firings, log_tables.rs)
//! ```
//!
//! Writes are admitted by priority behind a circuit breaker on the WAL queue and the buffer
//! ([`Storage::admit`], `admission.rs`).
//!
//! Background maintenance compacts partitions with many small files, drops files older than the
//! retention period and deletes removed files after a grace period; a probe of its own tells
//! health whether the object store answers ([`Storage::run_probe`]).

mod admission;
mod buffer;
mod catalog;
mod documents;
mod error;
mod faults;
mod log_tables;
mod maintenance;
mod object_store_config;
pub mod paths;
mod persist;
mod probe;
pub mod schema;
mod storage;
pub mod summary;
mod wal;

pub use admission::{AdmissionStatus, BreakerArgs, CircuitState, Priority};
/// The clock storage takes (re-exported: one clock type for all of aemos).
pub use aemos_clock::{Clock, ManualClock, SystemClock};
pub use buffer::{Buffer, Generation};
pub use catalog::{Catalog, CatalogState, FileId, ParquetFile, SummaryFile, Tombstone};
pub use documents::{DocumentChanges, DocumentWatch, CHANGE_MARGIN_MS, CHANGE_RETENTION_MS};
pub use error::{Error, Result};
pub use faults::Faults;
pub use log_tables::LogTableSnapshot;
pub use maintenance::MaintenanceStatus;
pub use object_store_config::ObjectStoreConfig;
pub use persist::{
    decode_parquet, encode_parquet, sort_and_split, writer_properties, SortedPartition,
};
pub use probe::ObjectStoreHealth;
pub use storage::{
    read_only_snapshot, PersistReport, ReadSnapshot, Storage, StorageArgs, StorageHistograms,
};
pub use wal::{
    read_unpersisted, DurableObserver, ReplayReport, SegmentId, Wal, WalArgs, WalFailure,
    WalRecord, MAX_RECORD_BYTES,
};
