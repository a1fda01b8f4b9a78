//! Tables kept by the upper layers as logs of their own (`rule_firings`): the owner writes and
//! fsyncs its log locally and seals it into numbered segments; each sealed segment becomes
//! one Parquet file of its table, recorded in the catalog in the same commit as the segment's
//! number (`CatalogState::logs`, keyed `{writer}/{table}`). A segment is therefore persisted
//! once however often it is offered (a crash between the commit and the owner's cleanup
//! offers it again), and a reader that takes the owner's unpersisted records first and the
//! catalog second sees every record exactly once ([`Storage::log_table_snapshot`]).
//!
//! ```text
//! {prefix}/{table}/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet    one sealed segment (hour of its first record)
//! ```
//!
//! Retention and garbage collection treat these files as they treat the readings' files.

use arrow::array::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use tracing::{info, warn};

use crate::catalog::{FileId, ParquetFile};
use crate::error::Result;
use crate::paths::HourPartition;
use crate::storage::Storage;

/// A table's persisted files and how far its log is in them, from one catalog version.
#[derive(Debug, Clone, Default)]
pub struct LogTableSnapshot {
    pub files: Vec<ParquetFile>,
    /// The last segment of this writer's log whose records are in `files`.
    pub persisted_through: Option<u64>,
}

impl Storage {
    fn log_key(&self, table: &str) -> String {
        format!("{}/{table}", self.writer_id)
    }

    /// The files of `table` and the last segment of this writer's log of it that they hold.
    pub fn log_table_snapshot(&self, table: &str) -> LogTableSnapshot {
        let state = self.catalog().snapshot();
        LogTableSnapshot {
            files: state.files_of(table).cloned().collect(),
            persisted_through: state.logs.get(&self.log_key(table)).copied(),
        }
    }

    /// Persists sealed segment `segment` of this writer's log of `table` as one Parquet file
    /// holding `batch`, whose times span `time_range` (epoch ms, inclusive). Segments are
    /// offered in order; one the catalog already holds is skipped (`Ok(false)`).
    pub async fn persist_log_segment(
        &self,
        table: &str,
        segment: u64,
        batch: RecordBatch,
        time_range: (i64, i64),
    ) -> Result<bool> {
        let key = self.log_key(table);
        let held = |through: Option<&u64>| through.is_some_and(|&t| t >= segment);
        self.settle_uncommitted().await?;
        if held(self.catalog().snapshot().logs.get(&key)) {
            return Ok(false);
        }
        let (min_time, max_time) = time_range;
        let file = if batch.num_rows() == 0 {
            None
        } else {
            let rows = batch.num_rows() as u64;
            let bytes = tokio::task::spawn_blocking(move || encode_log_parquet(&batch))
                .await
                .expect("encode task")?;
            let size_bytes = bytes.len() as u64;
            let partition = HourPartition::of(min_time);
            let (id, path) = self.put_fresh(table, partition, bytes).await?;
            Some(ParquetFile {
                id: FileId(id),
                table: table.to_string(),
                path: path.to_string(),
                partition: partition.0,
                min_time,
                max_time,
                rows,
                size_bytes,
                summary: None,
            })
        };
        let committed = self
            .catalog()
            .commit(|state| {
                if held(state.logs.get(&key)) {
                    return false;
                }
                if let Some(file) = &file {
                    state.add_file(file.clone());
                }
                state.logs.insert(key.clone(), segment);
                true
            })
            .await;
        match committed {
            Ok(Some(_)) => {
                info!(table, segment, "log segment persisted");
                Ok(true)
            }
            Ok(None) => {
                // Persisted by an earlier offer after all.
                self.delete_uncommitted(file.as_slice()).await;
                Ok(false)
            }
            Err(e) => {
                // As for readings: the commit may have landed; settle it now or before the
                // next offer, which skips the segment if it did.
                self.lock_uncommitted().extend(file.iter().cloned());
                let _ = self.settle_uncommitted().await;
                if held(self.catalog().snapshot().logs.get(&key)) {
                    warn!(error = %e, "a catalog commit reported an error but landed");
                    return Ok(true);
                }
                Err(e)
            }
        }
    }
}

/// A log segment as Parquet: zstd, page statistics for pruning, one row group.
fn encode_log_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_statistics_enabled(parquet::file::properties::EnabledStatistics::Page)
        .build();
    let mut out = Vec::with_capacity(batch.get_array_memory_size() / 4 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}
