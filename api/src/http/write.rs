//! `POST /api/v1/write`: decode, validate, make durable, then answer.

use aemos_ingest::{decode, DecodeArgs, Format, Precision};
use axum::body::Bytes;
use std::sync::Arc;

use aemos_ingest::SensorScope;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::auth::Principal;
use crate::devices::scope::{DeviceScope, RegistryScope};
use aemos_storage::Priority;

/// Bodies above this are decoded with `block_in_place`, off the async scheduler's hot path.
const LARGE_BODY: usize = 1 << 20;

#[derive(Debug, Default, Deserialize)]
pub(super) struct WriteParams {
    #[serde(default)]
    partial: bool,
    precision: Option<String>,
    /// `normal` (the default) or `low` (backfill: shed first under load).
    priority: Option<String>,
}

pub(super) async fn write(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let result = write_inner(&state, &principal, params, &headers, body).await;
    let status = match &result {
        Ok(_) => "200".to_string(),
        Err(e) => e.status().as_u16().to_string(),
    };
    state
        .metrics
        .write_requests
        .with_label_values(&[&status])
        .inc();
    result
}

/// The sensors `principal` may write and their devices (`None`: any, as named).
pub(super) fn scope_of(state: &AppState, principal: &Principal) -> Option<Arc<dyn SensorScope>> {
    match principal {
        Principal::Device(device) => Some(Arc::new(DeviceScope(Arc::clone(device)))),
        _ if !state.auth.production() && state.auth.registry.is_empty() => None,
        _ => Some(Arc::new(RegistryScope {
            registry: Arc::clone(&state.auth.registry),
            production: state.auth.production(),
        })),
    }
}

async fn write_inner(
    state: &AppState,
    principal: &Principal,
    params: WriteParams,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let precision = match params.precision.as_deref() {
        Some(p) => Precision::parse(p).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => Precision::default(),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(content_type, precision)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let priority = match params.priority.as_deref() {
        Some(p) => Priority::from_client(p).map_err(ApiError::BadRequest)?,
        None => Priority::Normal,
    };
    let decoded = decode_body(state, principal, format, &body, priority)?;
    if decoded.forbidden && !params.partial {
        return Err(forbidden(principal, &decoded));
    }
    if decoded.rejected_count > 0 && !params.partial {
        return Err(ApiError::Rejected {
            error: format!(
                "{} of {} readings rejected; nothing was stored (use ?partial=true to store the valid ones)",
                decoded.rejected_count,
                decoded.rejected_count + decoded.accepted()
            ),
            rejected: decoded.rejected,
            rejected_count: decoded.rejected_count,
        });
    }
    let (accepted, rejected, rejected_count) =
        (decoded.accepted(), decoded.rejected, decoded.rejected_count);
    store(state, decoded.batch, priority, format.name()).await?;
    if rejected_count > 0 {
        Ok(Json(json!({
            "accepted": accepted,
            "rejected": rejected,
            "rejectedCount": rejected_count,
        })))
    } else {
        Ok(Json(json!({ "accepted": accepted })))
    }
}

/// Admission at `priority` (a refused write is not decoded), then the body decoded and
/// validated for `principal` (its rejections counted).
pub(super) fn decode_body(
    state: &AppState,
    principal: &Principal,
    format: Format,
    body: &[u8],
    priority: Priority,
) -> Result<aemos_ingest::Decoded, ApiError> {
    state
        .storage
        .admit(priority)
        .map_err(|e| storage_error(state, e))?;
    let args = DecodeArgs::for_storage(&state.storage).with_scope(scope_of(state, principal));
    let decode = || decode(format, body, &args);
    let decoded = if body.len() > LARGE_BODY {
        tokio::task::block_in_place(decode)
    } else {
        decode()
    };
    let decoded = decoded.map_err(|e| match e {
        aemos_ingest::Error::Body { line, reason } => {
            let unreadable =
                aemos_ingest::RejectionCounts::one(aemos_ingest::RejectReason::Malformed);
            state.metrics.count_rejections("http", &unreadable);
            ApiError::Rejected {
                error: format!("unreadable body: {reason}"),
                rejected: vec![aemos_ingest::Rejection {
                    index: 0,
                    line,
                    reason,
                }],
                rejected_count: 1,
            }
        }
        other => ApiError::BadRequest(other.to_string()),
    })?;
    state.metrics.count_rejections("http", &decoded.rejected_by);
    Ok(decoded)
}

/// 403: a device credential named sensors it does not own.
pub(super) fn forbidden(principal: &Principal, decoded: &aemos_ingest::Decoded) -> ApiError {
    ApiError::Forbidden(format!(
        "{} may not write some of these sensors; nothing was stored: {}",
        principal.describe(),
        decoded
            .rejected
            .first()
            .map(|r| r.reason.as_str())
            .unwrap_or_default()
    ))
}

/// Makes `batch` durable (answers once it is in the WAL) and counts it, by `format`.
pub(super) async fn store(
    state: &AppState,
    batch: arrow::array::RecordBatch,
    priority: Priority,
    format: &'static str,
) -> Result<(), ApiError> {
    let accepted = batch.num_rows();
    state
        .storage
        .write_with(batch, priority)
        .await
        .map_err(|e| storage_error(state, e))?;
    state.metrics.readings_accepted.inc_by(accepted as u64);
    state
        .metrics
        .ingested("http", format)
        .inc_by(accepted as u64);
    Ok(())
}

/// Overload is 503 with `Retry-After` (and counted); a failed WAL is 503 with its reason
/// (nothing is stored until a restart); anything else is internal.
pub(super) fn storage_error(state: &AppState, e: aemos_storage::Error) -> ApiError {
    if let Some(reason) = state.storage.wal_failure() {
        return ApiError::Unavailable(format!("nothing was stored: {reason}"));
    }
    match e {
        e @ aemos_storage::Error::Shed { .. } => {
            state.metrics.overload_rejections.inc();
            ApiError::Overloaded {
                error: format!("{e}; nothing was stored, retry later"),
                retry_after_secs: 1,
            }
        }
        e @ aemos_storage::Error::DiskFull { .. } => ApiError::Overloaded {
            error: e.to_string(),
            retry_after_secs: 5,
        },
        e if e.is_overload() => {
            state.metrics.overload_rejections.inc();
            ApiError::Overloaded {
                error: "overloaded: writes are arriving faster than they can be made durable and persisted, retry later".into(),
                retry_after_secs: 1,
            }
        }
        other => ApiError::internal(other),
    }
}
