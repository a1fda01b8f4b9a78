//! Documents (device registrations, rule chains, schedules): one small JSON object each on the
//! object store, `{prefix}/documents/{namespace}/{name}.json`, and a log of which moved.
//!
//! Every put or removal also writes an empty marker, `{prefix}/changes/{namespace}/
//! {micros:020}-{name}`, so that another server sharing the store learns which documents moved
//! by listing the markers after the newest it saw ([`DocumentWatch`]), not by reading every
//! document: one LIST request per poll however many documents there are. The markers are listed
//! again for [`CHANGE_MARGIN`] behind the newest seen (servers' clocks differ, and a slow
//! writer's marker may land late), so a watcher may be told twice of a change (reading a
//! document again is harmless) but not never. Markers older than [`CHANGE_RETENTION`] are
//! removed by whichever server polls; a watcher that could not poll for that long is told to
//! reload the whole namespace ([`DocumentChanges::Reload`]).

use std::collections::HashMap;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::error::Result;
use crate::paths::{change_dir, document_dir, document_path};
use crate::storage::Storage;

/// How far behind the newest marker seen a poll lists again.
pub const CHANGE_MARGIN_MS: i64 = 60_000;
/// Markers are removed after this long.
pub const CHANGE_RETENTION_MS: i64 = 3_600_000;
/// How many documents [`Storage::documents_as`] reads at once.
const DOCUMENT_READS: usize = 32;

fn parse_document<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Option<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| warn!(path = %path, error = %e, "unreadable document skipped"))
        .ok()
}

/// Where one watcher of a namespace is in its change log.
#[derive(Debug)]
pub struct DocumentWatch {
    namespace: String,
    /// The newest marker time seen (µs), or the watch's start.
    newest_us: i64,
    /// Markers seen within the margin behind `newest_us`, by key.
    seen: HashMap<String, i64>,
    /// When the last poll succeeded (ms).
    last_poll_ms: i64,
    /// When markers past their retention were last removed (ms).
    last_cleanup_ms: i64,
}

/// What a poll found.
#[derive(Debug, PartialEq, Eq)]
pub enum DocumentChanges {
    /// These documents may have changed (read each again: present or removed).
    Changed(Vec<String>),
    /// Changes may have been missed (no successful poll for longer than the markers are kept):
    /// read the whole namespace again.
    Reload,
}

impl Storage {
    /// Stores a document (replacing one with the same name) as its own object, so that every
    /// server sharing the object store sees it.
    pub async fn put_document(
        &self,
        namespace: &str,
        name: &str,
        value: &serde_json::Value,
    ) -> Result<()> {
        let path = document_path(&self.object_store().prefix, namespace, name);
        let body = serde_json::to_vec(value)?;
        self.object_store()
            .store
            .put(&path, PutPayload::from(body))
            .await?;
        self.mark_changed(namespace, name).await;
        Ok(())
    }

    /// Removes a document; `false` if there was none.
    pub async fn remove_document(&self, namespace: &str, name: &str) -> Result<bool> {
        let path = document_path(&self.object_store().prefix, namespace, name);
        match self.object_store().store.head(&path).await {
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        match self.object_store().store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.mark_changed(namespace, name).await;
        Ok(true)
    }

    /// One document's path and bytes, `None` if there is none.
    async fn document_bytes(&self, namespace: &str, name: &str) -> Result<Option<(Path, Bytes)>> {
        let path = document_path(&self.object_store().prefix, namespace, name);
        match self.object_store().store.get(&path).await {
            Ok(got) => Ok(Some((path, got.bytes().await?))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// One document, `None` if there is none.
    pub async fn document(&self, namespace: &str, name: &str) -> Result<Option<serde_json::Value>> {
        match self.document_bytes(namespace, name).await? {
            Some((_, bytes)) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// One document read as a `T`; `None` if there is none or it is not a `T` (said in a
    /// warning: one bad document must not stop its readers).
    pub async fn document_as<T: DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<T>> {
        let found = self.document_bytes(namespace, name).await?;
        Ok(found.and_then(|(path, bytes)| parse_document(&path, &bytes)))
    }

    /// Every document of a namespace.
    pub async fn documents(&self, namespace: &str) -> Result<Vec<serde_json::Value>> {
        self.documents_as(namespace).await
    }

    /// Every document of a namespace read as a `T`, skipping (with a warning) those that are
    /// not. Read [`DOCUMENT_READS`] at a time (a restart with many devices waits on the object
    /// store's latency, not its bandwidth), each parsed straight from its bytes: a namespace of
    /// 100,000 devices never sits in memory as JSON trees.
    pub async fn documents_as<T: DeserializeOwned>(&self, namespace: &str) -> Result<Vec<T>> {
        let dir = document_dir(&self.object_store().prefix, namespace);
        let store = &self.object_store().store;
        let metas: Vec<_> = store.list(Some(&dir)).try_collect().await?;
        let mut out = Vec::with_capacity(metas.len());
        let mut reads = futures::stream::iter(metas)
            .map(|meta| async move {
                match store.get(&meta.location).await {
                    Ok(got) => Ok(Some((meta.location, got.bytes().await?))),
                    // Removed since the listing (by another server sharing the store).
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(DOCUMENT_READS);
        while let Some(read) = reads.try_next().await? {
            if let Some((path, bytes)) = read {
                out.extend(parse_document(&path, &bytes));
            }
        }
        Ok(out)
    }

    /// The document itself is stored when this runs: a marker that cannot be written leaves
    /// the change unseen by other servers until they reload, which is said, not hidden.
    async fn mark_changed(&self, namespace: &str, name: &str) {
        let micros = self.now_ms().saturating_mul(1000);
        let path = change_dir(&self.object_store().prefix, namespace)
            .join(format!("{micros:020}-{name}").as_str());
        if let Err(e) = self
            .object_store()
            .store
            .put(&path, PutPayload::default())
            .await
        {
            warn!(namespace, name, error = %e, "document change not announced to other servers");
        }
    }

    /// Starts watching a namespace from now: call it before reading the namespace, so that a
    /// change made during the read is reported.
    pub fn watch_documents(&self, namespace: &str) -> DocumentWatch {
        let now = self.now_ms();
        DocumentWatch {
            namespace: namespace.to_string(),
            newest_us: now.saturating_mul(1000),
            seen: HashMap::new(),
            last_poll_ms: now,
            last_cleanup_ms: now,
        }
    }

    /// The documents whose markers appeared since the last poll.
    pub async fn document_changes(&self, watch: &mut DocumentWatch) -> Result<DocumentChanges> {
        let now = self.now_ms();
        let dir = change_dir(&self.object_store().prefix, &watch.namespace);
        if now - watch.last_poll_ms > CHANGE_RETENTION_MS - CHANGE_MARGIN_MS {
            // Markers this watcher never saw may be gone already.
            watch.newest_us = now.saturating_mul(1000);
            watch.seen.clear();
            watch.last_poll_ms = now;
            return Ok(DocumentChanges::Reload);
        }
        let from_us = watch.newest_us - CHANGE_MARGIN_MS * 1000;
        let offset = dir.clone().join(format!("{from_us:020}").as_str());
        let markers = self.list_markers(&dir, Some(&offset)).await?;
        watch.last_poll_ms = now;
        let mut changed = Vec::new();
        // A document changed many times in one poll is read once (a set, not a search of
        // `changed`: a burst of registrations is thousands of markers).
        let mut names = std::collections::HashSet::new();
        for (key, micros, name) in markers {
            if micros < from_us || watch.seen.contains_key(&key) {
                continue;
            }
            watch.newest_us = watch.newest_us.max(micros);
            watch.seen.insert(key, micros);
            if names.insert(name.clone()) {
                changed.push(name);
            }
        }
        let keep_from = watch.newest_us - CHANGE_MARGIN_MS * 1000;
        watch.seen.retain(|_, micros| *micros >= keep_from);
        if now - watch.last_cleanup_ms > CHANGE_MARGIN_MS {
            watch.last_cleanup_ms = now;
            self.remove_old_markers(&dir, now).await;
        }
        Ok(DocumentChanges::Changed(changed))
    }

    /// The markers under `dir` (after `offset`): key, time (µs) and document name.
    async fn list_markers(
        &self,
        dir: &Path,
        offset: Option<&Path>,
    ) -> Result<Vec<(String, i64, String)>> {
        let store = &self.object_store().store;
        let metas: Vec<_> = match offset {
            Some(offset) => {
                store
                    .list_with_offset(Some(dir), offset)
                    .try_collect()
                    .await?
            }
            None => store.list(Some(dir)).try_collect().await?,
        };
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let key = meta.location.filename()?.to_string();
                let (micros, name) = key.split_once('-')?;
                let micros = micros.parse().ok()?;
                let name = percent_encoding::percent_decode_str(name)
                    .decode_utf8()
                    .ok()?
                    .into_owned();
                Some((key, micros, name))
            })
            .collect())
    }

    async fn remove_old_markers(&self, dir: &Path, now_ms: i64) {
        let cutoff_us = (now_ms - CHANGE_RETENTION_MS).saturating_mul(1000);
        let old = match self.list_markers(dir, None).await {
            Ok(markers) => markers,
            Err(e) => return warn!(error = %e, "listing document changes to remove old ones"),
        };
        for (key, _, _) in old.into_iter().filter(|m| m.1 < cutoff_us) {
            let path = dir.clone().join(key.as_str());
            match self.object_store().store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => warn!(path = %path, error = %e, "removing an old document change"),
            }
        }
    }
}
