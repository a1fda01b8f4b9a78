//! Seed 003's device routes: `GET /api/v1/devices/{id}/latest` (the latest value of each of the
//! device's sensor variables) and `GET /api/v1/devices/{id}/data?from=&to=&limit=` (its readings,
//! newest first; `limit` 1 to 10,000, default 100). Both are SQL over `readings`; the id is
//! checked against the device charset before it is put in the query text.

use aemos_queries::{encode, OutputFormat};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::devices::parse_time;
use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub(super) struct DataParams {
    from: Option<String>,
    to: Option<String>,
    limit: Option<usize>,
}

/// A page's `limit`: 100 by default, from 1 to `max`.
pub(super) fn page_limit(limit: Option<usize>, max: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(100);
    if (1..=max).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::BadRequest(format!(
            "`limit`: from 1 to {max}, not {limit}"
        )))
    }
}

pub(super) fn registered(state: &AppState, id: &str) -> Result<(), ApiError> {
    match state.auth.registry.get(id) {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("no device {id:?}"))),
    }
}

/// A user's request: within the users' query limits (slots, timeout, memory).
async fn rows(state: &AppState, sql: &str) -> Result<Value, ApiError> {
    let (schema, batches) = state.queries.sql_limited(sql).await?;
    let bytes = encode(OutputFormat::Json, &schema, &batches)?;
    serde_json::from_slice(&bytes).map_err(ApiError::internal)
}

/// The latest value of each of a registered device's sensor variables, as JSON rows
/// `{sensor, variable, value, time}`.
pub(super) async fn latest_rows(state: &AppState, id: &str) -> Result<Value, ApiError> {
    registered(state, id)?;
    let sql = format!(
        "SELECT sensor, variable, last_value(value ORDER BY time) AS value, max(time) AS time \
         FROM readings WHERE device = '{id}' GROUP BY sensor, variable ORDER BY sensor, variable"
    );
    rows(state, &sql).await
}

pub(super) async fn latest(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let latest = latest_rows(&state, &id).await?;
    Ok(Json(json!({"device": id, "latest": latest})))
}

pub(super) async fn data(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<DataParams>,
) -> Result<Json<Value>, ApiError> {
    registered(&state, &id)?;
    let limit = page_limit(params.limit, 10_000)?;
    let mut filter = format!("device = '{id}'");
    if let Some(from) = params.from.as_deref() {
        let ms = parse_time("from", from)?;
        filter += &format!(" AND time >= to_timestamp_millis({ms})");
    }
    if let Some(to) = params.to.as_deref() {
        let ms = parse_time("to", to)?;
        filter += &format!(" AND time < to_timestamp_millis({ms})");
    }
    let sql = format!(
        "SELECT time, sensor, variable, value FROM readings WHERE {filter} \
         ORDER BY time DESC, sensor, variable LIMIT {limit}"
    );
    Ok(Json(
        json!({"device": id, "data": rows(&state, &sql).await?}),
    ))
}
