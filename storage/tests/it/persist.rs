use std::sync::Arc;
use std::time::Duration;

use aemos_storage::paths::HourPartition;
use aemos_storage::{ManualClock, Storage};
use object_store::ObjectStoreExt;

use crate::helpers::{args, batch, local_store, rows, T0};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persist_moves_rows_to_parquet_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::helpers::open(dir.path()).await;
    // Two hours: two partitions, two files.
    storage.write(batch(T0, 1000, "a")).await.unwrap();
    storage
        .write(batch(T0 + 3_600_000, 500, "b"))
        .await
        .unwrap();
    let report = storage.persist().await.unwrap();
    assert_eq!((report.rows, report.files), (1500, 2));
    let snapshot = storage.read_snapshot();
    assert_eq!(rows(&snapshot.batches), 0);
    assert_eq!(snapshot.files.iter().map(|f| f.rows).sum::<u64>(), 1500);
    for f in &snapshot.files {
        assert!(f.path.starts_with("readings/2026-01-20/"), "{}", f.path);
        let bytes = storage
            .object_store()
            .store
            .get(&f.path.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, f.size_bytes);
    }
    // Nothing left to persist; the WAL holds no unpersisted record.
    assert_eq!(storage.persist().await.unwrap().rows, 0);
    drop(storage);
    let storage = crate::helpers::open(dir.path()).await;
    assert_eq!(storage.replay_report().rows, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_a_partition_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut a = args(dir.path(), local_store(dir.path()), Arc::clone(&clock));
    a.compaction_min_files = 4;
    let storage = Storage::open(a).await.unwrap();
    for i in 0..6 {
        storage
            .write(batch(T0 + i * 10_000, 100, "c"))
            .await
            .unwrap();
        storage.persist().await.unwrap();
    }
    assert_eq!(storage.read_snapshot().files.len(), 6);
    assert_eq!(storage.compact().await.unwrap(), 6);
    let snapshot = storage.read_snapshot();
    assert_eq!(snapshot.files.len(), 1);
    assert_eq!(snapshot.files[0].rows, 600);
    assert_eq!(snapshot.files[0].partition, HourPartition::of(T0).0);
    // The merged file has its own summary, covering all its rows.
    let summary = snapshot.files[0].summary.as_ref().expect("summary");
    let bytes = storage
        .object_store()
        .store
        .get(&summary.path.as_str().into())
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let summary_rows: i64 =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| {
                let b = b.unwrap();
                let rows = b.column_by_name(aemos_storage::summary::ROWS).unwrap();
                arrow::compute::sum(
                    rows.as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .unwrap(),
                )
                .unwrap()
            })
            .sum();
    assert_eq!(summary_rows, 600);
    // Replaced files and their summaries are deleted only after the grace period.
    let tombstones = storage.catalog().snapshot().tombstones.clone();
    assert_eq!(tombstones.len(), 12);
    assert_eq!(storage.collect_garbage().await.unwrap(), 0);
    clock.set(T0 + 61_000);
    assert_eq!(storage.collect_garbage().await.unwrap(), 12);
    for t in tombstones {
        let gone = storage
            .object_store()
            .store
            .head(&t.path.as_str().into())
            .await;
        assert!(matches!(gone, Err(object_store::Error::NotFound { .. })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut a = args(dir.path(), local_store(dir.path()), Arc::clone(&clock));
    a.retention = Duration::from_secs(24 * 3600);
    let storage = Storage::open(a).await.unwrap();
    storage
        .write(batch(T0 - 3 * 86_400_000, 10, "old"))
        .await
        .unwrap();
    storage
        .write(batch(T0 - 3_600_000, 10, "new"))
        .await
        .unwrap();
    storage.persist().await.unwrap();
    assert_eq!(storage.enforce_retention().await.unwrap(), 1);
    let files = storage.read_snapshot().files;
    assert_eq!(files.len(), 1);
    assert!(files[0].min_time >= T0 - 3_600_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_loop_persists_on_row_threshold_and_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(
        dir.path(),
        local_store(dir.path()),
        Arc::new(ManualClock::new(T0)),
    );
    a.persist_rows = 1000;
    let storage = Storage::open(a).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::clone(&storage).run_background(stopped));
    storage.write(batch(T0, 1500, "t")).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while storage.read_snapshot().files.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not persisted on the row threshold"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    storage.write(batch(T0 + 10_000, 10, "u")).await.unwrap();
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(
        storage
            .read_snapshot()
            .files
            .iter()
            .map(|f| f.rows)
            .sum::<u64>(),
        1510
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_when_too_much_waits_for_persistence() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(
        dir.path(),
        local_store(dir.path()),
        Arc::new(ManualClock::new(T0)),
    );
    a.max_buffered_rows = 100;
    let storage = Storage::open(a).await.unwrap();
    storage.write(batch(T0, 100, "a")).await.unwrap();
    let e = storage.write(batch(T0, 1, "b")).await.unwrap_err();
    assert!(
        matches!(
            e,
            aemos_storage::Error::Overloaded {
                buffered: 100,
                limit: 100
            }
        ),
        "{e}"
    );
    // Nothing of the refused batch was stored; persistence makes room again.
    assert_eq!(rows(&storage.read_snapshot().batches), 100);
    storage.persist().await.unwrap();
    storage.write(batch(T0, 1, "c")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_summary_upload_leaves_no_file_behind_and_loses_no_row() {
    use futures::TryStreamExt;
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::helpers::open(dir.path()).await;
    storage.write(batch(T0, 100, "a")).await.unwrap();
    // A plain file where the summaries' directory would go: every summary upload fails (even
    // for root), after its data file was uploaded.
    let blocker = dir.path().join("objects").join("readings_summary");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    assert!(storage.persist().await.is_err());
    let store = &storage.object_store().store;
    let left: Vec<_> = store
        .list(Some(&"readings".into()))
        .try_collect()
        .await
        .unwrap();
    assert!(left.is_empty(), "orphaned: {left:?}");
    let snapshot = storage.read_snapshot();
    assert!(snapshot.files.is_empty());
    assert_eq!(rows(&snapshot.batches), 100, "the rows stay queryable");
    // Once uploads work again, the same rows are persisted, once.
    std::fs::remove_file(&blocker).unwrap();
    assert_eq!(storage.persist().await.unwrap().rows, 100);
    let snapshot = storage.read_snapshot();
    assert_eq!(rows(&snapshot.batches), 0);
    assert_eq!(snapshot.files.iter().map(|f| f.rows).sum::<u64>(), 100);
}

/// `aemos sql` beside a running server: a snapshot read while the server persists (and deletes
/// the WAL segments it persisted) sees every acknowledged row exactly once, from a file or from
/// the WAL. Reading the catalog once and then the WAL missed the rows persisted in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_snapshot_beside_a_persisting_server_sees_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::helpers::open(dir.path()).await;
    let store = local_store(dir.path());
    let mut written = 0;
    for round in 0..150 {
        storage
            .write(batch(T0 + round * 10, 10, "r"))
            .await
            .unwrap();
        written += 10;
        let persisting = {
            let storage = Arc::clone(&storage);
            tokio::spawn(async move { storage.persist().await.unwrap() })
        };
        let snapshot = aemos_storage::read_only_snapshot(dir.path(), &store)
            .await
            .unwrap();
        let seen =
            rows(&snapshot.batches) as u64 + snapshot.files.iter().map(|f| f.rows).sum::<u64>();
        assert_eq!(seen, written, "round {round}");
        persisting.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_tags_come_back_on_replay_until_their_rows_are_persisted() {
    use aemos_storage::Priority;
    let dir = tempfile::tempdir().unwrap();
    let storage = crate::helpers::open(dir.path()).await;
    storage
        .write_tagged(batch(T0, 10, "a"), Priority::Normal, ("mqtt.x", "0001"))
        .await
        .unwrap();
    storage.write(batch(T0 + 10, 5, "b")).await.unwrap();
    storage
        .write_tagged(batch(T0 + 20, 3, "c"), Priority::Normal, ("mqtt.x", "0002"))
        .await
        .unwrap();
    storage
        .write_tagged(batch(T0 + 30, 2, "d"), Priority::Normal, ("mqtt.y", "0003"))
        .await
        .unwrap();
    drop(storage);
    let storage = crate::helpers::open(dir.path()).await;
    let report = storage.replay_report();
    assert_eq!((report.records, report.rows), (4, 20));
    assert_eq!(
        report.tagged("mqtt.x").collect::<Vec<_>>(),
        ["0001", "0002"]
    );
    assert_eq!(report.tagged("mqtt.y").collect::<Vec<_>>(), ["0003"]);
    // The rows carry no tag: one schema, the canonical one.
    let snapshot = storage.read_snapshot();
    assert_eq!(rows(&snapshot.batches), 20);
    for b in &snapshot.batches {
        assert_eq!(b.schema(), aemos_storage::schema::readings_schema());
    }
    assert_eq!(storage.persist().await.unwrap().rows, 20);
    drop(storage);
    let storage = crate::helpers::open(dir.path()).await;
    assert_eq!(storage.replay_report().tags.len(), 0);
}

/// Two writers sharing a store whose conditional put is not atomic (s3s-fs): each takes file
/// id 0 from the catalog it opened, and each one's rows are in the files the catalog lists.
/// With one key per file id, the second upload replaced the first writer's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_sharing_a_store_never_upload_to_one_key() {
    use arrow::array::AsArray;
    let store = aemos_storage::ObjectStoreConfig {
        store: Arc::new(crate::helpers::NonAtomicCreate(
            object_store::memory::InMemory::new(),
        )),
        prefix: object_store::path::Path::default(),
        url: "memory://".into(),
        verify_commits: None,
    };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clock = Arc::new(ManualClock::new(T0));
    let open = |dir: &std::path::Path| Storage::open(args(dir, store.clone(), clock.clone()));
    let (a, b) = (
        open(dirs.0.path()).await.unwrap(),
        open(dirs.1.path()).await.unwrap(),
    );
    a.write(batch(T0, 10, "a")).await.unwrap();
    b.write(batch(T0, 20, "b")).await.unwrap();
    a.persist().await.unwrap();
    b.persist().await.unwrap();
    let files = b.catalog().refresh().await.unwrap();
    let (mut of_a, mut of_b) = (0, 0);
    for file in files.files.values() {
        let got = store.store.get(&file.path.as_str().into()).await.unwrap();
        for batch in aemos_storage::decode_parquet(got.bytes().await.unwrap()).unwrap() {
            for sensor in batch
                .column(aemos_storage::schema::SENSOR_IDX)
                .as_string::<i32>()
                .iter()
                .flatten()
            {
                if sensor.starts_with("s-a-") {
                    of_a += 1;
                } else if sensor.starts_with("s-b-") {
                    of_b += 1;
                }
            }
        }
    }
    assert_eq!((of_a, of_b), (10, 20));
}
