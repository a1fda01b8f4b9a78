//! `/api/v1/schedules`: weekly schedules of devices (`POST` 201, `GET ?device=`, and
//! `GET|PUT|DELETE /api/v1/schedules/{id}`, the `GET` with the schedule's execution history).
//! See `commands::schedule` for what a schedule means and `commands::scheduler` for how it
//! runs.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::device_data::registered;
use super::{ApiError, AppState};
use crate::commands::schedule::ScheduleSpec;
use crate::commands::scheduler::ScheduleError;

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Invalid(reason) => ApiError::BadRequest(reason),
            ScheduleError::NotFound(reason) => ApiError::NotFound(reason),
            ScheduleError::Conflict(reason) => ApiError::Conflict(reason),
            e @ ScheduleError::Storage(_) => ApiError::internal(e),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    device: Option<String>,
}

fn parse(state: &AppState, body: &[u8]) -> Result<ScheduleSpec, ApiError> {
    let spec: ScheduleSpec =
        serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("schedule: {e}")))?;
    registered(state, &spec.device)?;
    Ok(spec)
}

pub(super) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse(&state, &body)?;
    let stored = state.schedules.put(spec, None).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Query(params): Query<ListParams>,
) -> Json<Value> {
    Json(Value::Array(state.schedules.list(params.device.as_deref())))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .schedules
        .get(&id)
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no schedule {id:?}")))
}

pub(super) async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec = parse(&state, &body)?;
    Ok(Json(state.schedules.put(spec, Some(&id)).await?))
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.schedules.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
