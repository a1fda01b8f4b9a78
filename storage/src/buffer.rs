//! The queryable in-memory buffer: Arrow record batches that are durable in the WAL and not yet
//! persisted to Parquet.
//!
//! Batches enter an *open* generation in WAL order (inserted by the WAL writer thread right
//! after the fsync that made them durable). A WAL rotation seals the open generation: it stays
//! queryable until its Parquet files are recorded in the catalog, then it is released.

use std::sync::{Arc, RwLock};

use arrow::array::RecordBatch;

use crate::wal::SegmentId;

/// Batches made durable in WAL segments up to and including `through`.
#[derive(Debug)]
pub struct Generation {
    pub through: SegmentId,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
}

#[derive(Debug, Default)]
struct Inner {
    open: Vec<RecordBatch>,
    open_rows: usize,
    sealed: Vec<Arc<Generation>>,
}

#[derive(Debug, Default)]
pub struct Buffer {
    inner: RwLock<Inner>,
}

impl Buffer {
    pub fn insert(&self, batches: impl IntoIterator<Item = RecordBatch>) -> usize {
        let mut inner = self.inner.write().expect("buffer lock");
        for batch in batches {
            inner.open_rows += batch.num_rows();
            inner.open.push(batch);
        }
        inner.open_rows
    }

    /// Moves the open generation to the sealed list (called by the WAL writer on rotation).
    pub(crate) fn seal(&self, through: SegmentId) -> Arc<Generation> {
        let mut inner = self.inner.write().expect("buffer lock");
        let generation = Arc::new(Generation {
            through,
            batches: std::mem::take(&mut inner.open),
            rows: std::mem::take(&mut inner.open_rows),
        });
        inner.sealed.push(Arc::clone(&generation));
        generation
    }

    /// Drops a sealed generation once its rows are in Parquet files recorded in the catalog.
    pub fn release(&self, through: SegmentId) {
        let mut inner = self.inner.write().expect("buffer lock");
        inner.sealed.retain(|g| g.through != through);
    }

    /// Every batch not yet released, with the segment its generation is sealed through
    /// (`None` for the open generation): what queries read beside the Parquet files.
    pub fn snapshot(&self) -> Vec<(Option<SegmentId>, Vec<RecordBatch>)> {
        let inner = self.inner.read().expect("buffer lock");
        inner
            .sealed
            .iter()
            .map(|g| (Some(g.through), g.batches.clone()))
            .chain(std::iter::once((None, inner.open.clone())))
            .collect()
    }

    /// Sealed generations, oldest first.
    pub fn sealed(&self) -> Vec<Arc<Generation>> {
        self.inner.read().expect("buffer lock").sealed.clone()
    }

    pub fn open_rows(&self) -> usize {
        self.inner.read().expect("buffer lock").open_rows
    }

    pub fn rows(&self) -> usize {
        let inner = self.inner.read().expect("buffer lock");
        inner.open_rows + inner.sealed.iter().map(|g| g.rows).sum::<usize>()
    }
}
