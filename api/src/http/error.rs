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
    /// 413: a body beyond the limit (a gzip body once inflated).
    PayloadTooLarge(String),
    Conflict(String),
    /// A rule chain refused at registration: the node index and the column in its expression.
    InvalidChain {
        error: String,
        node: Option<usize>,
        position: Option<u64>,
    },
    /// 503 with `Retry-After`: shed load (writes faster than durability, every query slot
    /// taken).
    Overloaded {
        error: String,
        retry_after_secs: u64,
    },
    /// 503 without a time to retry: a part the request needs has failed (the WAL after an
    /// fsync error).
    Unavailable(String),
    /// 401: no credential, or one that is malformed, forged, expired or revoked.
    Unauthorized(String),
    /// 403: a valid credential that may not do this.
    Forbidden(String),
    /// 429.
    RateLimited {
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
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded { .. } | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<aemos_queries::Error> for ApiError {
    fn from(e: aemos_queries::Error) -> Self {
        if let aemos_queries::Error::Busy { .. } = e {
            return Self::Overloaded {
                error: e.to_string(),
                retry_after_secs: 1,
            };
        }
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

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        use crate::auth::AuthError;
        match e {
            AuthError::Missing | AuthError::Invalid(_) => Self::Unauthorized(e.to_string()),
            AuthError::Forbidden(reason) => Self::Forbidden(reason),
            AuthError::RateLimited { retry_after_ms } => Self::RateLimited {
                retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::BadRequest(error)
            | Self::NotFound(error)
            | Self::PayloadTooLarge(error)
            | Self::Conflict(error)
            | Self::Unavailable(error)
            | Self::Forbidden(error) => (status, Json(json!({ "error": error }))).into_response(),
            Self::Unauthorized(error) => (
                status,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": error })),
            )
                .into_response(),
            Self::RateLimited { retry_after_secs } => (
                status,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(json!({ "error": "rate limit exceeded, retry later" })),
            )
                .into_response(),
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
            Self::Overloaded {
                error,
                retry_after_secs,
            } => (
                status,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                Json(json!({ "error": error })),
            )
                .into_response(),
            Self::Internal(detail) => {
                error!(%detail, "internal error");
                (status, Json(json!({ "error": "internal error" }))).into_response()
            }
        }
    }
}
