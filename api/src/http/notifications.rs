//! `GET /api/v1/devices/{device}/notifications?since_seq=N&limit=L`: what a client missed.
//!
//! Answers `{"device", "lastSeq", "oldestSeq", "notifications": [...]}`, oldest first. A
//! client that finds `oldestSeq > since_seq + 1` has missed notifications no longer kept
//! (the last 1000 per device are).

use aemos_ingest::validate::check_device;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::notify::REPLAY_PER_DEVICE;

#[derive(Debug, Deserialize)]
pub(super) struct ReplayParams {
    #[serde(default)]
    since_seq: u64,
    limit: Option<usize>,
}

pub(super) async fn replay(
    State(state): State<AppState>,
    Path(device): Path<String>,
    Query(params): Query<ReplayParams>,
) -> Result<Json<Value>, ApiError> {
    check_device(&device).map_err(|e| ApiError::BadRequest(format!("device: {e}")))?;
    let limit = params.limit.unwrap_or(REPLAY_PER_DEVICE);
    if limit == 0 {
        return Err(ApiError::BadRequest("`limit` must be at least 1".into()));
    }
    let replay = state.notifier.since(&device, params.since_seq, limit);
    Ok(Json(json!({
        "device": device,
        "lastSeq": replay.last_seq,
        "oldestSeq": replay.oldest_seq,
        "notifications": replay.notifications.iter().map(|n| &**n).collect::<Vec<_>>(),
    })))
}
