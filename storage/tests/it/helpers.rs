use std::path::Path;
use std::sync::Arc;

use aemos_storage::schema::ReadingsBuilder;
use aemos_storage::{ManualClock, ObjectStoreConfig, Storage, StorageArgs};
use arrow::array::RecordBatch;

pub(crate) const T0: i64 = 1_768_905_000_000; // 2026-01-20T10:30:00Z

/// `n` readings of sensor `s-{k}`, one per millisecond from `start`.
pub(crate) fn batch(start: i64, n: usize, tag: &str) -> RecordBatch {
    let mut b = ReadingsBuilder::with_capacity(n);
    for i in 0..n {
        let sensor = format!("s-{tag}-{}", i % 7);
        b.push(start + i as i64, &sensor, &sensor, "temperature", i as f64);
    }
    b.finish()
}

pub(crate) fn args(dir: &Path, store: ObjectStoreConfig, clock: Arc<ManualClock>) -> StorageArgs {
    let mut a = StorageArgs::new(dir.to_path_buf(), store, clock);
    a.persist_interval = std::time::Duration::from_secs(3600);
    a
}

pub(crate) fn local_store(dir: &Path) -> ObjectStoreConfig {
    ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir)).unwrap()
}

pub(crate) async fn open(dir: &Path) -> Arc<Storage> {
    Storage::open(args(dir, local_store(dir), Arc::new(ManualClock::new(T0))))
        .await
        .unwrap()
}

pub(crate) fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}
