//! The catalog: which Parquet files exist, their time ranges and row counts, and how far each
//! writer's WAL is persisted.
//!
//! Versioned JSON documents at `{prefix}/catalog/{version:020}.json`. A commit writes version
//! `n + 1` with a conditional put (`PutMode::Create`); when another writer got there first, the
//! commit reloads the newest version and applies its change again on top. Writers sharing one
//! object store therefore never lose each other's entries. Old versions are pruned.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tracing::debug;

use crate::error::{Error, Result};
use crate::paths::{catalog_dir, catalog_path, catalog_version};
use crate::wal::SegmentId;

/// Versions kept behind the newest one. A writer whose view is this far behind could
/// re-create a pruned version number with a conditional put, so commits start from a freshly
/// read version and old ones are kept far longer than one commit can lag.
const KEEP_VERSIONS: u64 = 1000;
/// Pruning runs on every this many versions.
const PRUNE_EVERY: u64 = 100;
const MAX_ATTEMPTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId(pub u64);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParquetFile {
    pub id: FileId,
    pub table: String,
    /// Key relative to the object store root.
    pub path: String,
    /// Hour partition, see [`crate::paths::HourPartition`].
    pub partition: i64,
    pub min_time: i64,
    pub max_time: i64,
    pub rows: u64,
    pub size_bytes: u64,
    /// The file's per-key summary ([`crate::summary`]); absent for files written before
    /// summaries existed, which queries then read row by row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<SummaryFile>,
}

/// A summary object beside a Parquet file: written with it, removed with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryFile {
    pub path: String,
    pub size_bytes: u64,
}

/// A file removed from the catalog, deleted from the object store after a grace period so that
/// queries planned against an older version can finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tombstone {
    pub path: String,
    pub removed_at: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CatalogState {
    pub version: u64,
    /// Keyed by object path, which conditional puts make unique across writers.
    #[serde(default)]
    pub files: BTreeMap<String, ParquetFile>,
    #[serde(default)]
    pub tombstones: Vec<Tombstone>,
    /// Per writer (data directory), the last WAL segment whose rows are in `files`.
    #[serde(default)]
    pub writers: BTreeMap<String, SegmentId>,
    #[serde(default)]
    pub next_file_id: u64,
    /// Per log of an upper layer (`{writer}/{table}`, see `log_tables.rs`), the last sealed
    /// segment whose records are in `files`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub logs: BTreeMap<String, u64>,
    /// Unique per commit: lets a writer check that the version it wrote is still its own.
    #[serde(default)]
    pub commit_id: String,
}

impl CatalogState {
    pub fn files_of<'a>(&'a self, table: &'a str) -> impl Iterator<Item = &'a ParquetFile> + 'a {
        self.files.values().filter(move |f| f.table == table)
    }

    /// Removes files and leaves tombstones; returns how many were present.
    pub fn remove_files(&mut self, paths: &[String], now_ms: i64) -> usize {
        let mut removed = 0;
        for path in paths {
            if let Some(file) = self.files.remove(path) {
                if let Some(summary) = file.summary {
                    self.tombstones.push(Tombstone {
                        path: summary.path,
                        removed_at: now_ms,
                    });
                }
                self.tombstones.push(Tombstone {
                    path: file.path,
                    removed_at: now_ms,
                });
                removed += 1;
            }
        }
        removed
    }

    pub fn add_file(&mut self, file: ParquetFile) {
        self.next_file_id = self.next_file_id.max(file.id.0 + 1);
        self.files.insert(file.path.clone(), file);
    }
}

#[derive(Debug)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    state: RwLock<Arc<CatalogState>>,
    verify_after: Option<Duration>,
    commits: AtomicU64,
    tag: u64,
}

impl Catalog {
    pub async fn load(store: Arc<dyn ObjectStore>, prefix: Path) -> Result<Self> {
        let state = read_latest(&store, &prefix).await?.unwrap_or_default();
        Ok(Self {
            store,
            prefix,
            state: RwLock::new(Arc::new(state)),
            verify_after: None,
            commits: AtomicU64::new(0),
            tag: RandomState::new().hash_one(std::process::id()),
        })
    }

    /// After each commit, wait `delay` and read the version back; if another writer's
    /// document replaced it, treat the commit as a conflict. For S3-compatible servers whose
    /// `If-None-Match: *` is a check followed by a write rather than one atomic step (s3s-fs,
    /// moto): two racing creates both succeed there, and the later one silently wins.
    pub fn with_commit_verification(mut self, delay: Option<Duration>) -> Self {
        self.verify_after = delay;
        self
    }

    pub fn snapshot(&self) -> Arc<CatalogState> {
        Arc::clone(&self.state.read().expect("catalog lock"))
    }

    /// Reads the newest version from the object store (to see other writers' commits).
    pub async fn refresh(&self) -> Result<Arc<CatalogState>> {
        if let Some(latest) = read_latest(&self.store, &self.prefix).await? {
            self.install(latest);
        }
        Ok(self.snapshot())
    }

    /// Applies `change` to the newest version and writes the result as the next version.
    /// `change` may run several times (once per conflict) and returns `false` to abandon the
    /// commit (its precondition no longer holds), in which case `None` is returned.
    pub async fn commit<F>(&self, mut change: F) -> Result<Option<Arc<CatalogState>>>
    where
        F: FnMut(&mut CatalogState) -> bool,
    {
        let mut base = self.refresh().await?;
        for _ in 0..MAX_ATTEMPTS {
            let mut next = (*base).clone();
            if !change(&mut next) {
                return Ok(None);
            }
            next.version = base.version + 1;
            next.commit_id = format!(
                "{:016x}-{}",
                self.tag,
                self.commits.fetch_add(1, Ordering::Relaxed)
            );
            let path = catalog_path(&self.prefix, next.version);
            let body = serde_json::to_vec(&next)?;
            let opts = PutOptions::from(PutMode::Create);
            match self
                .store
                .put_opts(&path, PutPayload::from(body), opts)
                .await
            {
                Ok(_) if !self.still_ours(&path, &next.commit_id).await? => {
                    debug!(
                        version = next.version,
                        "catalog commit overwritten by another writer, retrying"
                    );
                    base = match read_latest(&self.store, &self.prefix).await? {
                        Some(latest) => self.install(latest),
                        None => base,
                    };
                }
                Ok(_) => {
                    let next = self.install(next);
                    self.prune(next.version).await;
                    return Ok(Some(next));
                }
                Err(object_store::Error::AlreadyExists { .. })
                | Err(object_store::Error::Precondition { .. }) => {
                    debug!(version = next.version, "catalog commit conflict, retrying");
                    base = match read_latest(&self.store, &self.prefix).await? {
                        Some(latest) => self.install(latest),
                        None => base,
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::CatalogContention {
            attempts: MAX_ATTEMPTS,
        })
    }

    async fn still_ours(&self, path: &Path, commit_id: &str) -> Result<bool> {
        let Some(delay) = self.verify_after else {
            return Ok(true);
        };
        tokio::time::sleep(delay).await;
        let bytes = self.store.get(path).await?.bytes().await?;
        let written: CatalogState = serde_json::from_slice(&bytes)?;
        Ok(written.commit_id == commit_id)
    }

    /// Keeps the newest of the installed and the given state.
    fn install(&self, state: CatalogState) -> Arc<CatalogState> {
        let mut current = self.state.write().expect("catalog lock");
        if state.version >= current.version {
            *current = Arc::new(state);
        }
        Arc::clone(&current)
    }

    async fn prune(&self, newest: u64) {
        if newest <= KEEP_VERSIONS || !newest.is_multiple_of(PRUNE_EVERY) {
            return;
        }
        let Ok(versions) = list_versions(&self.store, &self.prefix).await else {
            return;
        };
        for v in versions.into_iter().filter(|v| *v + KEEP_VERSIONS < newest) {
            let _ = self.store.delete(&catalog_path(&self.prefix, v)).await;
        }
    }
}

async fn list_versions(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Vec<u64>> {
    let metas: Vec<_> = store.list(Some(&catalog_dir(prefix))).try_collect().await?;
    Ok(metas
        .iter()
        .filter_map(|m| catalog_version(&m.location))
        .collect())
}

async fn read_latest(store: &Arc<dyn ObjectStore>, prefix: &Path) -> Result<Option<CatalogState>> {
    // A version can be pruned between the listing and the read: list again.
    for _ in 0..10 {
        let Some(version) = list_versions(store, prefix).await?.into_iter().max() else {
            return Ok(None);
        };
        match store.get(&catalog_path(prefix, version)).await {
            Ok(got) => {
                let bytes = got.bytes().await?;
                let mut state: CatalogState = serde_json::from_slice(&bytes)?;
                state.version = version;
                return Ok(Some(state));
            }
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}
