/// Errors of the query layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The query itself is wrong (parse, plan, type errors): the user's to fix.
    #[error("{0}")]
    Query(datafusion::error::DataFusionError),
    /// Something failed while running a valid query.
    #[error("query execution: {0}")]
    Execution(datafusion::error::DataFusionError),
    #[error("encoding results: {0}")]
    Encode(#[from] arrow::error::ArrowError),
    #[error("encoding results as parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("storage: {0}")]
    Storage(#[from] aemos_storage::Error),
    #[error("unknown output format {0:?}: use json, ndjson, csv, arrow or parquet")]
    Format(String),
}

impl Error {
    /// Sorts DataFusion errors into the user's (plan, SQL, schema) and the system's.
    pub fn from_datafusion(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e.find_root() {
            D::SQL(..)
            | D::Plan(_)
            | D::SchemaError(..)
            | D::NotImplemented(_)
            | D::Configuration(_) => Self::Query(e),
            _ => Self::Execution(e),
        }
    }

    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::Query(_) | Self::Format(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
