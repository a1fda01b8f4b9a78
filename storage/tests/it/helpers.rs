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

/// An object store whose conditional put is a check and then a write, as in S3-compatible
/// servers such as s3s-fs and moto, taken to its worst case: every create overwrites, as when
/// two writers both pass the check before either writes.
#[derive(Debug)]
pub(crate) struct NonAtomicCreate(pub(crate) object_store::memory::InMemory);

impl std::fmt::Display for NonAtomicCreate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NonAtomicCreate({})", self.0)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for NonAtomicCreate {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        mut opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        if matches!(opts.mode, object_store::PutMode::Create) {
            opts.mode = object_store::PutMode::Overwrite;
        }
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}
