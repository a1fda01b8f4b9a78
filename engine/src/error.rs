use thiserror::Error;

/// Errors of the rule engine.
#[derive(Debug, Error)]
pub enum Error {
    /// The chain is refused; `node` is the index in `nodes`, `position` the 1-based column in
    /// that node's expression.
    #[error("{message}")]
    InvalidChain {
        message: String,
        node: Option<usize>,
        position: Option<u64>,
    },
    #[error("rule chain {0:?} does not exist")]
    UnknownChain(String),
    #[error("rule chain {0:?} already exists")]
    ChainExists(String),
    #[error("the engine has stopped")]
    Stopped,
    #[error("starting timely workers: {0}")]
    Start(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(message: impl Into<String>, node: Option<usize>) -> Self {
        Error::InvalidChain {
            message: message.into(),
            node,
            position: None,
        }
    }

    pub(crate) fn at(message: impl Into<String>, node: usize, position: u64) -> Self {
        Error::InvalidChain {
            message: message.into(),
            node: Some(node),
            position: (position > 0).then_some(position),
        }
    }
}
