use std::fs::OpenOptions;
use std::io::Write;

use crate::helpers::{batch, open, rows, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_are_all_visible() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    let mut tasks = Vec::new();
    for t in 0..64 {
        let storage = std::sync::Arc::clone(&storage);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                storage
                    .write(batch(T0 + (t * 10 + i) * 100, 10, "c"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(rows(&storage.read_snapshot().batches), 64 * 10 * 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_are_replayed_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path()).await;
        for i in 0..5 {
            storage.write(batch(T0 + i * 1000, 100, "r")).await.unwrap();
        }
    }
    let storage = open(dir.path()).await;
    assert_eq!(storage.replay_report().rows, 500);
    assert_eq!(rows(&storage.read_snapshot().batches), 500);
}

/// Every distinct reading time among `batches`.
fn times(batches: &[arrow::array::RecordBatch]) -> std::collections::BTreeSet<i64> {
    use arrow::array::{Array, TimestampMillisecondArray};
    let mut out = std::collections::BTreeSet::new();
    for b in batches {
        let t = b
            .column(aemos_storage::schema::TIME_IDX)
            .as_any()
            .downcast_ref::<TimestampMillisecondArray>()
            .unwrap();
        out.extend((0..t.len()).map(|i| t.value(i)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_writes_are_coalesced_into_few_records_and_each_row_comes_back_once() {
    use aemos_storage::Priority;
    let dir = tempfile::tempdir().unwrap();
    let (writers, each) = (48i64, 20i64);
    {
        let storage = open(dir.path()).await;
        let mut tasks = Vec::new();
        for t in 0..writers {
            let storage = std::sync::Arc::clone(&storage);
            tasks.push(tokio::spawn(async move {
                for i in 0..each {
                    let at = T0 + (t * each + i) * 1000;
                    // Mostly single readings; now and then a large batch, or a tagged one,
                    // which are records of their own in the same groups.
                    match i % 10 {
                        3 => storage.write(batch(at, 200, "large")).await.unwrap(),
                        7 => storage
                            .write_tagged(
                                batch(at, 1, "tag"),
                                Priority::Normal,
                                ("t", &at.to_string()),
                            )
                            .await
                            .unwrap(),
                        _ => storage.write(batch(at, 1, "one")).await.unwrap(),
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
    let storage = open(dir.path()).await;
    let report = storage.replay_report();
    let writes = (writers * each) as usize;
    let (large, tagged) = (writes / 10, writes / 10);
    let expected_rows = large * 200 + (writes - large);
    assert_eq!(report.rows, expected_rows);
    assert_eq!(report.tagged("t").count(), tagged);
    // Large and tagged records are their own; the single readings share records.
    assert!(
        report.records < writes - 100,
        "{} records for {writes} writes",
        report.records
    );
    let batches = storage.read_snapshot().batches;
    assert_eq!(rows(&batches), expected_rows);
    assert_eq!(times(&batches).len(), expected_rows, "each row once");
}

fn newest_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| std::fs::metadata(p).unwrap().len() > 8)
        .collect();
    segs.sort();
    segs.pop().expect("a segment with records")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_dropped_and_earlier_records_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path()).await;
        storage.write(batch(T0, 100, "a")).await.unwrap();
        storage.write(batch(T0 + 1000, 50, "b")).await.unwrap();
    }
    // Cut the last record in half, as a crash mid-write would.
    let segment = newest_segment(dir.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.set_len(len - 40).unwrap();
    drop(file);

    let storage = open(dir.path()).await;
    let report = storage.replay_report();
    assert_eq!(report.rows, 100, "the intact first record only");
    assert!(report.truncated_bytes > 0);
    // The log is usable again: new writes append after the cut and survive another restart.
    storage.write(batch(T0 + 2000, 7, "c")).await.unwrap();
    drop(storage);
    let storage = open(dir.path()).await;
    assert_eq!(storage.replay_report().rows, 107);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checksum_at_the_tail_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path()).await;
        storage.write(batch(T0, 10, "a")).await.unwrap();
        storage.write(batch(T0 + 1000, 20, "b")).await.unwrap();
    }
    let segment = newest_segment(dir.path());
    let len = std::fs::metadata(&segment).unwrap().len();
    // Flip a byte inside the last record's payload.
    let mut bytes = std::fs::read(&segment).unwrap();
    let at = (len - 20) as usize;
    bytes[at] ^= 0xff;
    std::fs::File::create(&segment)
        .unwrap()
        .write_all(&bytes)
        .unwrap();

    let storage = open(dir.path()).await;
    assert_eq!(storage.replay_report().rows, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_segments_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let storage = open(dir.path()).await;
        storage.write(batch(T0, 100, "p")).await.unwrap();
        storage.persist().await.unwrap();
        storage.write(batch(T0 + 5000, 30, "q")).await.unwrap();
    }
    let storage = open(dir.path()).await;
    assert_eq!(storage.replay_report().rows, 30);
    let snapshot = storage.read_snapshot();
    assert_eq!(rows(&snapshot.batches), 30);
    assert_eq!(snapshot.files.iter().map(|f| f.rows).sum::<u64>(), 100);
}
