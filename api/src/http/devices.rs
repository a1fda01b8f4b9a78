//! `/api/v1/devices`: the registry (register, list, get, replace, remove, rotate the token)
//! and `GET /api/v1/devices/{id}/statistics?from=&to=&variable=`.

use std::collections::BTreeMap;

use aemos_ingest::validate::{check_device, check_variable, parse_rfc3339_ms};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::rulechains::engine_call;
use super::{ApiError, AppState};
use crate::devices::{presence, Device, DeviceSpec};

#[derive(Debug, Deserialize)]
pub(super) struct StatisticsParams {
    from: Option<String>,
    to: Option<String>,
    variable: Option<String>,
}

/// RFC 3339 or integer epoch milliseconds.
pub(super) fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    match text.parse::<i64>() {
        Ok(ms) => Ok(ms),
        Err(_) => {
            parse_rfc3339_ms(text).map_err(|e| ApiError::BadRequest(format!("`{name}`: {e}")))
        }
    }
}

pub(super) async fn statistics(
    State(state): State<AppState>,
    Path(device): Path<String>,
    Query(params): Query<StatisticsParams>,
) -> Result<Json<Value>, ApiError> {
    check_device(&device).map_err(ApiError::BadRequest)?;
    if let Some(v) = &params.variable {
        check_variable(v).map_err(ApiError::BadRequest)?;
    }
    let from = params
        .from
        .as_deref()
        .map(|t| parse_time("from", t))
        .transpose()?;
    let to = params
        .to
        .as_deref()
        .map(|t| parse_time("to", t))
        .transpose()?;
    let stats = state
        .queries
        .device_statistics(&device, from, to, params.variable.as_deref())
        .await?;
    let variables: BTreeMap<_, _> = stats
        .into_iter()
        .map(|s| {
            (
                s.variable,
                json!({ "min": s.min, "max": s.max, "avg": s.avg, "count": s.count }),
            )
        })
        .collect();
    Ok(Json(
        json!({ "device": device, "from": from, "to": to, "variables": variables }),
    ))
}

/// `POST /api/v1/devices`: `201` with the device and its token (shown once).
pub(super) async fn create(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse_spec(&body)?;
    let (device, token) = state.auth.registry.create(spec).await?;
    track_presence(&state, &device).await?;
    let mut answer = device.to_json();
    answer["token"] = Value::String(token);
    Ok((StatusCode::CREATED, Json(answer)))
}

pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    Json(Value::Array(
        state
            .auth
            .registry
            .list()
            .iter()
            .map(|d| d.to_json())
            .collect(),
    ))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .auth
        .registry
        .get(&id)
        .map(|d| Json(d.to_json()))
        .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))
}

pub(super) async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let spec = parse_spec(&body)?;
    let device = state.auth.registry.update(&id, spec).await?;
    track_presence(&state, &device).await?;
    Ok(Json(device.to_json()))
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.auth.registry.delete(&id).await?;
    engine_call(&state.rules.engine, move |e| e.unwatch(&[&id])).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Watches the device's presence (again, at a new timeout).
async fn track_presence(state: &AppState, device: &Device) -> Result<(), ApiError> {
    let spec = presence::watch_spec(device);
    engine_call(&state.rules.engine, move |e| e.watch(vec![spec])).await
}

/// `POST /api/v1/devices/{id}/token`: a new token; the old one stops working at once.
pub(super) async fn rotate_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (device, token) = state.auth.registry.rotate(&id).await?;
    let mut answer = device.to_json();
    answer["token"] = Value::String(token);
    Ok(Json(answer))
}

fn parse_spec(body: &[u8]) -> Result<DeviceSpec, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("device: {e}")))
}
