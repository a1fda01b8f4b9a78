use std::path::PathBuf;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal io on {path}: {source}")]
    WalIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("wal segment {path} is corrupt at offset {offset}: {reason}")]
    WalCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the data directory {path} is full: {reason}; nothing was stored, retry once there is space")]
    DiskFull { path: PathBuf, reason: String },
    #[error("the wal writer has stopped")]
    WalClosed,
    #[error("overloaded: {buffered} readings wait in memory for persistence (limit {limit})")]
    Overloaded { buffered: usize, limit: usize },
    #[error("overloaded: {depth} writes wait for the wal (capacity {capacity})")]
    WalQueueFull { depth: usize, capacity: usize },
    #[error("overloaded: {priority}-priority writes are shed while the circuit breaker is {circuit} (load {load_percent}% of the queues' bounds)")]
    Shed {
        priority: &'static str,
        circuit: &'static str,
        load_percent: u32,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("catalog: {0}")]
    CatalogFormat(#[from] serde_json::Error),
    #[error("catalog commit gave up after {attempts} conflicting attempts")]
    CatalogContention { attempts: usize },
    #[error("invalid object store url {url:?}: {reason}")]
    ObjectStoreUrl { url: String, reason: String },
    #[error("io on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// A refusal for load (a full queue or a shed priority): answered `503` with a time to
    /// retry (HTTP `Retry-After`, CoAP Max-Age), retried by the MQTT edge.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            Error::Overloaded { .. } | Error::WalQueueFull { .. } | Error::Shed { .. }
        )
    }

    /// A refusal that clears by itself: load, or a full data directory (the WAL writes on where
    /// it ended once there is space). Answered `503` with a time to retry, like load, and
    /// retried by the MQTT edge; nothing of the refused write was stored.
    pub fn retry_later(&self) -> bool {
        self.is_overload() || matches!(self, Error::DiskFull { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
