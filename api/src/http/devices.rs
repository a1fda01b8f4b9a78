//! `GET /api/v1/devices/{id}/statistics?from=&to=&variable=`.

use std::collections::BTreeMap;

use aemos_ingest::validate::{check_device, check_variable, parse_rfc3339_ms};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub(super) struct StatisticsParams {
    from: Option<String>,
    to: Option<String>,
    variable: Option<String>,
}

/// RFC 3339 or integer epoch milliseconds.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
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
