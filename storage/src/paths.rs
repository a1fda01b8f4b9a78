//! Every object-store key format lives here, zero-padded so that listings sort.
//!
//! ```text
//! {prefix}/catalog/{version:020}.json
//! {prefix}/readings/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet
//! {prefix}/readings_summary/{yyyy-mm-dd}/{hh}/{file_id:020}-{writer}.parquet
//! ```
//!
//! A data file's key names the writer that uploaded it, so writers sharing a store never
//! upload to one key: their file ids come from their own view of the catalog and may be
//! equal, and an S3-compatible server whose conditional put is a check and then a write
//! (s3s-fs, moto) would let the later of two equal keys replace the earlier one's rows.

use chrono::{DateTime, Utc};
use object_store::path::Path;

pub const CATALOG_DIR: &str = "catalog";
pub const READINGS_TABLE: &str = "readings";
/// Where the summaries of the `readings` files live, under the same partition and file id.
pub const READINGS_SUMMARY_DIR: &str = "readings_summary";

/// An hour of time: the unit of partitioning for persisted files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HourPartition(pub i64);

impl HourPartition {
    pub const MILLIS: i64 = 3_600_000;

    pub fn of(time_ms: i64) -> Self {
        Self(time_ms.div_euclid(Self::MILLIS))
    }

    pub fn start_ms(self) -> i64 {
        self.0 * Self::MILLIS
    }

    /// `yyyy-mm-dd/hh`.
    pub fn key(self) -> String {
        let t = DateTime::<Utc>::from_timestamp_millis(self.start_ms()).unwrap_or_default();
        t.format("%Y-%m-%d/%H").to_string()
    }
}

pub fn catalog_path(prefix: &Path, version: u64) -> Path {
    prefix
        .clone()
        .join(CATALOG_DIR)
        .join(format!("{version:020}.json"))
}

pub fn catalog_dir(prefix: &Path) -> Path {
    prefix.clone().join(CATALOG_DIR)
}

/// Parses the version out of a catalog file name, `None` for anything else.
pub fn catalog_version(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

/// `{prefix}/documents/{namespace}/{name}.json`: documents the upper layers keep beside the
/// data (rule chains), one object each; `name` is percent-encoded where a path needs it.
pub fn document_path(prefix: &Path, namespace: &str, name: &str) -> Path {
    document_dir(prefix, namespace).join(format!("{name}.json").as_str())
}

pub fn document_dir(prefix: &Path, namespace: &str) -> Path {
    prefix.clone().join(DOCUMENTS_DIR).join(namespace)
}

const DOCUMENTS_DIR: &str = "documents";

/// Where the change markers of a namespace's documents go (see `documents.rs`).
pub fn change_dir(prefix: &Path, namespace: &str) -> Path {
    prefix.clone().join(CHANGES_DIR).join(namespace)
}

const CHANGES_DIR: &str = "changes";

pub fn parquet_path(
    prefix: &Path,
    table: &str,
    partition: HourPartition,
    file_id: u64,
    writer: &str,
) -> Path {
    let mut path = prefix.clone().join(table);
    for part in partition.key().split('/') {
        path = path.join(part);
    }
    path.join(format!("{file_id:020}-{writer}.parquet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_and_partitioned_by_hour() {
        let prefix = Path::from("data");
        let hour = HourPartition::of(1_768_905_000_000); // 2026-01-20T10:30:00Z
        assert_eq!(hour.key(), "2026-01-20/10");
        assert_eq!(
            parquet_path(&prefix, READINGS_TABLE, hour, 7, "w1f").as_ref(),
            "data/readings/2026-01-20/10/00000000000000000007-w1f.parquet"
        );
        let catalog = catalog_path(&prefix, 42);
        assert_eq!(catalog.as_ref(), "data/catalog/00000000000000000042.json");
        assert_eq!(catalog_version(&catalog), Some(42));
        assert_eq!(HourPartition::of(-1).0, -1);
    }
}
