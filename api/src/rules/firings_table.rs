//! `rule_firings` over all history: each sealed segment of the firing log becomes a Parquet
//! file of the table (`Storage::persist_log_segment`, once per segment, recorded in the
//! catalog), then leaves the local disk; a query reads the files and the records of the
//! segments not yet in them.
//!
//! A scan takes the log's records first and the catalog second, and a segment's records leave
//! memory only after the catalog that holds its file is installed: every record is read
//! exactly once, from memory or from a file.

use std::sync::Arc;
use std::time::Duration;

use aemos_queries::SnapshotSource;
use aemos_storage::{ReadSnapshot, Storage};
use arrow::array::{ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;
use tokio::sync::watch;
use tracing::warn;

use super::firings::{FiringLog, FiringRecord};

pub const RULE_FIRINGS: &str = "rule_firings";

/// How often sealed segments are looked for.
const PERSIST_EVERY: Duration = Duration::from_secs(1);

/// `rule_firings(time, rule_chain, device, active, kind, values)`.
pub fn rule_firings_schema() -> SchemaRef {
    static SCHEMA: std::sync::LazyLock<SchemaRef> = std::sync::LazyLock::new(|| {
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
    });
    Arc::clone(&SCHEMA)
}

/// The records as rows of `rule_firings`.
pub(super) fn firings_batch(records: &[FiringRecord]) -> arrow::error::Result<RecordBatch> {
    let values = |r: &FiringRecord| Value::Object(r.all_values()).to_string();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(
            TimestampMillisecondArray::from_iter_values(records.iter().map(|r| r.time))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.chain.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.device.as_str()),
        )),
        Arc::new(BooleanArray::from_iter(
            records.iter().map(|r| Some(r.active)),
        )),
        Arc::new(StringArray::from_iter_values(
            records.iter().map(|r| r.kind.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(records.iter().map(values))),
    ];
    RecordBatch::try_new(rule_firings_schema(), columns)
}

/// The table's source: the log's unpersisted records and the catalog's files.
#[derive(Debug)]
pub struct FiringsTable {
    pub log: Arc<FiringLog>,
    pub storage: Arc<Storage>,
}

impl FiringsTable {
    /// The batches of the segments after `after`, by segment.
    fn batches_after(&self, after: Option<u64>) -> Vec<(u64, RecordBatch)> {
        self.log
            .with_segments_after(after, |segment, records| {
                (!records.is_empty()).then(|| (segment, firings_batch(records)))
            })
            .into_iter()
            .flatten()
            .filter_map(|(segment, batch)| match batch {
                Ok(b) => Some((segment, b)),
                Err(e) => {
                    warn!(error = %e, segment, "rule_firings rows");
                    None
                }
            })
            .collect()
    }
}

impl SnapshotSource for FiringsTable {
    fn schema(&self) -> SchemaRef {
        rule_firings_schema()
    }

    fn batches(&self) -> Vec<RecordBatch> {
        self.snapshot().batches
    }

    fn snapshot(&self) -> ReadSnapshot {
        // A hint first, so that segments surely persisted are not turned into rows; then the
        // records, then the catalog that decides (see the module docs).
        let hint = self
            .storage
            .log_table_snapshot(RULE_FIRINGS)
            .persisted_through;
        let batches = self.batches_after(hint);
        let persisted = self.storage.log_table_snapshot(RULE_FIRINGS);
        ReadSnapshot {
            batches: batches
                .into_iter()
                .filter(|(s, _)| persisted.persisted_through.is_none_or(|p| *s > p))
                .map(|(_, b)| b)
                .collect(),
            files: persisted.files,
        }
    }
}

/// Persists each sealed segment in order, then deletes the persisted ones the log no longer
/// needs; a failure is retried on the next round, the records staying in memory and on disk.
pub async fn run_persister(
    log: Arc<FiringLog>,
    storage: Arc<Storage>,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(PERSIST_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = persist_sealed(&log, &storage).await {
            warn!(error = %e, "persisting the firing log to rule_firings failed; retrying");
        }
    }
}

/// One round of the persister.
pub async fn persist_sealed(log: &Arc<FiringLog>, storage: &Storage) -> anyhow::Result<()> {
    let through = storage.log_table_snapshot(RULE_FIRINGS).persisted_through;
    for segment in log.sealed_segments() {
        if through.is_some_and(|t| segment <= t) {
            continue;
        }
        let Some(rows) = log.with_segment(segment, |records| {
            let range = records.iter().fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.time), hi.max(r.time))
            });
            firings_batch(records).map(|b| (b, range))
        }) else {
            continue;
        };
        let (batch, range) = rows?;
        storage
            .persist_log_segment(RULE_FIRINGS, segment, batch, range)
            .await?;
    }
    if let Some(through) = storage.log_table_snapshot(RULE_FIRINGS).persisted_through {
        let log = Arc::clone(log);
        tokio::task::spawn_blocking(move || log.forget_persisted(through)).await??;
    }
    Ok(())
}
