//! `POST /api/v1/devices/{id}/preclean` `{"fanMode", "duration"}` (202 once durable and its
//! command made), `POST .../preclean/cancel` (the saved speed restored at once), and
//! `GET .../preclean` (the device's last pre-clean, with `willEndAt`). See
//! `commands::preclean`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::device_data::{latest_rows, registered};
use super::{ApiError, AppState};
use crate::commands::preclean::PrecleanError;
use crate::commands::CreateError;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PrecleanSpec {
    fan_mode: Value,
    duration: Value,
}

impl From<PrecleanError> for ApiError {
    fn from(e: PrecleanError) -> Self {
        match e {
            PrecleanError::Invalid(reason) => ApiError::BadRequest(reason),
            PrecleanError::Conflict(reason) => ApiError::Conflict(reason),
            PrecleanError::Command(CreateError::Invalid(reason)) => ApiError::BadRequest(reason),
            e => ApiError::internal(e),
        }
    }
}

/// The speed to come back to: the last acknowledged `setFanSpeed`, else the device's latest
/// `fanSpeed` reading.
async fn current_speed(state: &AppState, id: &str) -> Result<Option<u64>, ApiError> {
    if let Some(speed) = state.commands.settings(id).fan_speed {
        return Ok(Some(speed));
    }
    let latest = latest_rows(state, id).await?;
    Ok(latest
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["variable"] == "fanSpeed")
        .filter_map(|row| row["value"].as_f64())
        .find(|v| v.fract() == 0.0 && (0.0..=5.0).contains(v))
        .map(|v| v as u64))
}

pub(super) async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<PrecleanSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    registered(&state, &id)?;
    let Json(spec) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let current = current_speed(&state, &id).await?;
    let p = state
        .precleans
        .start(&id, &spec.fan_mode, &spec.duration, current)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(p.to_json(state.commands.now_ms())),
    ))
}

pub(super) async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    registered(&state, &id)?;
    let p = state.precleans.cancel(&id).await?;
    Ok(Json(p.to_json(state.commands.now_ms())))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    registered(&state, &id)?;
    let p = state
        .precleans
        .get(&id)
        .await
        .ok_or_else(|| ApiError::NotFound(format!("device {id:?} has had no pre-clean")))?;
    Ok(Json(p.to_json(state.commands.now_ms())))
}
