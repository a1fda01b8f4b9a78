//! Faults injected on purpose, so tests (and drills) see what aemos does when the disk or a
//! background task fails: each hook runs where the failure would happen and does nothing by
//! default.

/// Hooks into storage's failure points.
pub trait Faults: Send + Sync + std::fmt::Debug + 'static {
    /// Before each WAL `fdatasync`: an error fails that sync as the disk's would.
    fn before_sync(&self) -> std::io::Result<()> {
        Ok(())
    }

    /// Before each round of background maintenance (persist, compact, retention): may panic,
    /// as a bug in it would.
    fn before_maintenance(&self) {}

    /// Around persistence's catalog commit (and before compaction's): an error before it fails
    /// the commit as a store
    /// that refuses the write would (the files uploaded, nothing recorded); an error after it
    /// fails it as a lost answer would (the commit landed, the writer was told otherwise).
    fn before_commit(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn after_commit(&self) -> std::io::Result<()> {
        Ok(())
    }
}
