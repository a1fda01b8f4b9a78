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
    /// Every query slot is taken (`--query-concurrency`): retry shortly.
    #[error(
        "{running} queries are running, the most at once (--query-concurrency); retry shortly"
    )]
    Busy { running: usize },
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
            | D::Configuration(_)
            // More memory than `--query-memory`: the query's size, the user's to change.
            | D::ResourcesExhausted(_) => Self::Query(e),
            // Errors of the data the query computes on (1/0, a failed cast): the user's too.
            D::ArrowError(inner, _)
                if matches!(
                    **inner,
                    arrow::error::ArrowError::DivideByZero
                        | arrow::error::ArrowError::CastError(_)
                        | arrow::error::ArrowError::ComputeError(_)
                        | arrow::error::ArrowError::ArithmeticOverflow(_)
                        | arrow::error::ArrowError::ParseError(_)
                        | arrow::error::ArrowError::InvalidArgumentError(_)
                ) =>
            {
                Self::Query(e)
            }
            D::Execution(m) if m.contains(TIMEOUT_MARK) => Self::Query(e),
            _ => Self::Execution(e),
        }
    }

    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::Query(_) | Self::Format(_))
    }
}

/// What the message of an execution error stopped by the query timeout contains.
pub(crate) const TIMEOUT_MARK: &str = "ran longer than";

pub type Result<T, E = Error> = std::result::Result<T, E>;
