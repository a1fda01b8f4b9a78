use std::sync::Arc;

use aemos_storage::{Catalog, FileId, ObjectStoreConfig, ParquetFile};
use object_store::path::Path;

fn file(id: u64) -> ParquetFile {
    ParquetFile {
        id: FileId(id),
        table: "readings".into(),
        path: format!("readings/x/{id:020}.parquet"),
        partition: 0,
        min_time: 0,
        max_time: 1,
        rows: 1,
        size_bytes: 1,
        summary: None,
    }
}

/// Two catalogs (two writers) on one store commit concurrently: every entry survives.
pub(crate) async fn racing_writers_lose_nothing(store: ObjectStoreConfig, per_writer: u64) {
    let a = Arc::new(
        Catalog::load(Arc::clone(&store.store), store.prefix.clone())
            .await
            .unwrap(),
    );
    let b = Arc::new(
        Catalog::load(Arc::clone(&store.store), store.prefix.clone())
            .await
            .unwrap(),
    );
    let run = |catalog: Arc<Catalog>, base: u64| {
        tokio::spawn(async move {
            for i in 0..per_writer {
                catalog
                    .commit(|state| {
                        state.add_file(file(base + i));
                        true
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let (ra, rb) = (run(Arc::clone(&a), 0), run(Arc::clone(&b), 10_000));
    ra.await.unwrap();
    rb.await.unwrap();
    let fresh = Catalog::load(Arc::clone(&store.store), store.prefix.clone())
        .await
        .unwrap();
    let state = fresh.snapshot();
    assert_eq!(
        state.files.len() as u64,
        2 * per_writer,
        "an entry was lost"
    );
    assert_eq!(state.version, 2 * per_writer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir.path())).unwrap();
    racing_writers_lose_nothing(store, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_in_memory() {
    let store = ObjectStoreConfig::from_url("memory://").unwrap();
    racing_writers_lose_nothing(store, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_commit_writes_nothing() {
    let store = ObjectStoreConfig::from_url("memory://").unwrap();
    let catalog = Catalog::load(Arc::clone(&store.store), Path::default())
        .await
        .unwrap();
    assert!(catalog.commit(|_| false).await.unwrap().is_none());
    assert_eq!(catalog.refresh().await.unwrap().version, 0);
}
