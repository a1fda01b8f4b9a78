//! Tables of the upper layers' logs: a sealed segment becomes one Parquet file recorded with
//! the segment's number, once, however often (and after however many restarts) it is offered.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use crate::helpers::{batch, open, T0};

fn segment(rows: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "time",
        DataType::Int64,
        false,
    )]));
    let times = Int64Array::from_iter_values((0..rows).map(|i| T0 + i));
    RecordBatch::try_new(schema, vec![Arc::new(times)]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_is_persisted_once_across_offers_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let storage = open(dir.path()).await;
    assert_eq!(storage.log_table_snapshot("log_t").persisted_through, None);
    let range = (T0, T0 + 9);
    assert!(storage
        .persist_log_segment("log_t", 1, segment(10), range)
        .await
        .unwrap());
    assert!(
        !storage
            .persist_log_segment("log_t", 1, segment(10), range)
            .await
            .unwrap(),
        "offered again: skipped"
    );
    drop(storage);

    let storage = open(dir.path()).await;
    assert!(!storage
        .persist_log_segment("log_t", 1, segment(10), range)
        .await
        .unwrap());
    // An empty segment is recorded without a file.
    assert!(storage
        .persist_log_segment("log_t", 2, segment(0), (i64::MAX, i64::MIN))
        .await
        .unwrap());
    assert!(storage
        .persist_log_segment("log_t", 3, segment(5), (T0, T0 + 4))
        .await
        .unwrap());
    let snapshot = storage.log_table_snapshot("log_t");
    assert_eq!(snapshot.persisted_through, Some(3));
    let rows: Vec<u64> = snapshot.files.iter().map(|f| f.rows).collect();
    assert_eq!(rows, vec![10, 5]);
    assert!(snapshot
        .files
        .iter()
        .all(|f| f.summary.is_none() && f.path.split('/').any(|part| part == "log_t")));
    // The readings see none of it, and their own files are unaffected.
    storage.write(batch(T0, 100, "a")).await.unwrap();
    storage.persist().await.unwrap();
    let readings = storage.read_snapshot();
    assert_eq!(readings.files.len(), 1);
    assert!(
        readings.files[0]
            .path
            .split('/')
            .any(|part| part == "readings"),
        "{}",
        readings.files[0].path
    );
    assert_eq!(storage.log_table_snapshot("log_t").files.len(), 2);
}
