//! `POST /api/v1/devices/{id}/commands` (202 once durable), `GET /api/v1/devices/{id}/commands`
//! (the audit log, newest first: `?limit=` up to 1000, default 100, and `?offset=`), and
//! `GET /api/v1/devices/{id}/commands/{commandId}`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::device_data::{page_limit, registered};
use super::{ApiError, AppState};
use crate::commands::{to_json, CreateError, NewCommand, Source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandSpec {
    action: String,
    #[serde(default)]
    value: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

pub(super) async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<CommandSpec>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    registered(&state, &id)?;
    let Json(spec) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let command = state
        .commands
        .create(NewCommand {
            device: &id,
            action: &spec.action,
            value: &spec.value,
            source: Source::Api,
            chain: None,
        })
        .await
        .map_err(|e| match e {
            CreateError::Invalid(reason) => ApiError::BadRequest(reason),
            e @ CreateError::Journal(_) => ApiError::internal(e),
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"commandId": command.command_id, "status": command.status.as_str()})),
    ))
}

pub(super) async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    registered(&state, &id)?;
    let limit = page_limit(page.limit, 1000)?;
    let offset = page.offset.unwrap_or(0);
    let (total, commands) = state.commands.history(&id, offset, limit);
    Ok(Json(json!({
        "total": total,
        "offset": offset,
        "commands": commands.iter().map(to_json).collect::<Vec<_>>(),
    })))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path((id, command_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    match state.commands.get(&command_id) {
        Some(c) if c.device == id => Ok(Json(to_json(&c))),
        _ => Err(ApiError::NotFound(format!(
            "no command {command_id:?} of device {id:?}"
        ))),
    }
}
