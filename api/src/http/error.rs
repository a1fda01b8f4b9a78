//! One error type for every handler: client errors carry a precise message, internal detail is
//! logged once and never sent.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use aemos_ingest::Rejection;

#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Rejected {
        error: String,
        rejected: Vec<Rejection>,
        rejected_count: usize,
    },
    NotFound(String),
    Conflict(String),
    /// A rule chain refused at registration: the node index and the column in its expression.
    InvalidChain {
        error: String,
        node: Option<usize>,
        position: Option<u64>,
    },
    Overloaded {
        retry_after_secs: u64,
    },
    Internal(String),
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Rejected { .. } | Self::InvalidChain { .. } => {
                StatusCode::BAD_REQUEST
            }
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<aemos_queries::Error> for ApiError {
    fn from(e: aemos_queries::Error) -> Self {
        if e.is_user_error() {
            Self::BadRequest(e.to_string())
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<aemos_engine::Error> for ApiError {
    fn from(e: aemos_engine::Error) -> Self {
        match e {
            aemos_engine::Error::InvalidChain {
                message,
                node,
                position,
            } => Self::InvalidChain {
                error: message,
                node,
                position,
            },
            aemos_engine::Error::UnknownChain(_) => Self::NotFound(e.to_string()),
            aemos_engine::Error::ChainExists(_) => Self::Conflict(e.to_string()),
            aemos_engine::Error::Stopped | aemos_engine::Error::Start(_) => Self::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::BadRequest(error) | Self::NotFound(error) | Self::Conflict(error) => {
                (status, Json(json!({ "error": error }))).into_response()
            }
            Self::InvalidChain { error, node, position } => (
                status,
                Json(json!({ "error": error, "node": node, "position": position })),
            )
                .into_response(),
            Self::Rejected {
                error,
                rejected,
                rejected_count,
            } => (
                status,
                Json(json!({ "error": error, "rejected": rejected, "rejectedCount": rejected_count })),
            )
                .into_response(),
            Self::Overloaded { retry_after_secs } => (
                status,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(json!({ "error": "overloaded: writes are arriving faster than they can be made durable and persisted, retry later" })),
            )
                .into_response(),
            Self::Internal(detail) => {
                error!(%detail, "internal error");
                (status, Json(json!({ "error": "internal error" }))).into_response()
            }
        }
    }
}
