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
