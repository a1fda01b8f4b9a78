//! `POST /api/v1/datastreams/token`: the seed's single reading, written with a device token.
//!
//! Body `{"value": "25.5" | 25.5, "variableName": "temperature", "recievedAt": "..."}`
//! (`receivedAt` too; `sensor` optional when the device owns exactly one sensor). Answers
//! `201 {"data": {"id", "sensor", "variable", "value", "time"}}` once the reading is durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aemos_ingest::validate::{
    check_sensor, check_time_bounds, check_time_ms, check_value, check_variable, parse_rfc3339_ms,
};
use aemos_ingest::{RejectReason, RejectionCounts, TimeBounds};
use aemos_storage::schema::ReadingsBuilder;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::write::storage_error;
use super::{ApiError, AppState};
use crate::auth::Principal;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SingleReading {
    value: Option<Value>,
    variable_name: Option<String>,
    /// The seed's spelling.
    recieved_at: Option<Value>,
    received_at: Option<Value>,
    sensor: Option<String>,
}

/// Ids of single readings: the process's start time and a counter, unique across restarts.
fn next_id() -> String {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| chrono::Utc::now().timestamp_millis());
    format!("{start:x}-{:x}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn parse_value(value: Option<&Value>) -> Result<f64, ApiError> {
    let bad = |why: String| ApiError::BadRequest(format!("`value`: {why}"));
    let v = match value {
        None => return Err(ApiError::BadRequest("missing field `value`".into())),
        Some(Value::Number(n)) => n
            .as_f64()
            .ok_or_else(|| bad(format!("{n} is not a double")))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| bad(format!("{s:?} is not a number")))?,
        Some(Value::Bool(b)) => f64::from(u8::from(*b)),
        Some(other) => {
            return Err(bad(format!(
                "expected a number or a numeric string, got {other}"
            )))
        }
    };
    check_value(v).map_err(bad)?;
    Ok(v)
}

fn parse_time(
    value: Option<&Value>,
    now_ms: i64,
    bounds: &TimeBounds,
) -> Result<i64, (RejectReason, ApiError)> {
    let bad = |why: String| ApiError::BadRequest(format!("`recievedAt`: {why}"));
    let invalid = |why: String| (RejectReason::Invalid, bad(why));
    let time = match value {
        None | Some(Value::Null) => return Ok(now_ms),
        Some(Value::String(s)) => parse_rfc3339_ms(s).map_err(invalid)?,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| invalid(format!("{n} is not integer epoch milliseconds")))
            .and_then(|ms| check_time_ms(ms).map_err(invalid))?,
        Some(other) => return Err(invalid(format!("expected an RFC 3339 string, got {other}"))),
    };
    check_time_bounds(time, now_ms, bounds).map_err(|why| {
        let kind = if time < now_ms {
            RejectReason::Retention
        } else {
            RejectReason::Future
        };
        (kind, bad(why))
    })?;
    Ok(time)
}

/// A single reading that passed validation.
struct Accepted {
    time: i64,
    sensor: String,
    device: Arc<str>,
    variable: String,
    value: f64,
}

/// The reading of `body`, validated for `principal`; or why not, and what kind of refusal.
fn accept(
    state: &AppState,
    principal: &Principal,
    body: &[u8],
) -> Result<Accepted, (RejectReason, ApiError)> {
    let malformed = |e: ApiError| (RejectReason::Malformed, e);
    let invalid = |e: ApiError| (RejectReason::Invalid, e);
    let reading: SingleReading = serde_json::from_slice(body)
        .map_err(|e| malformed(ApiError::BadRequest(format!("reading: {e}"))))?;
    let variable = reading
        .variable_name
        .ok_or_else(|| malformed(ApiError::BadRequest("missing field `variableName`".into())))?;
    check_variable(&variable)
        .map_err(|e| invalid(ApiError::BadRequest(format!("`variableName`: {e}"))))?;
    let value = parse_value(reading.value.as_ref()).map_err(invalid)?;
    let now = state.storage.now_ms();
    let time = parse_time(
        reading
            .recieved_at
            .as_ref()
            .or(reading.received_at.as_ref()),
        now,
        &TimeBounds::of(&state.storage),
    )?;
    let (sensor, device): (String, Arc<str>) = match principal {
        Principal::Device(d) => {
            let sensor = match reading.sensor {
                Some(s) => s,
                None if d.sensors.len() == 1 => d
                    .sensors
                    .iter()
                    .next()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                None if d.sensors.is_empty() => d.id.to_string(),
                None => {
                    return Err(malformed(ApiError::BadRequest(format!(
                        "missing field `sensor`: device {:?} has {} sensors",
                        d.id,
                        d.sensors.len()
                    ))))
                }
            };
            check_sensor(&sensor)
                .map_err(|e| invalid(ApiError::BadRequest(format!("`sensor`: {e}"))))?;
            if !d.owns(&sensor) {
                return Err((
                    RejectReason::Forbidden,
                    ApiError::Forbidden(format!(
                        "sensor {sensor:?} is not a sensor of device {:?}",
                        d.id
                    )),
                ));
            }
            (sensor, Arc::clone(&d.id))
        }
        Principal::User(_) | Principal::Anonymous => {
            let sensor = reading.sensor.ok_or_else(|| {
                malformed(ApiError::BadRequest(
                    "missing field `sensor` (only a device token implies it)".into(),
                ))
            })?;
            check_sensor(&sensor)
                .map_err(|e| invalid(ApiError::BadRequest(format!("`sensor`: {e}"))))?;
            let device = match state.auth.registry.owner(&sensor) {
                Some(owner) => owner,
                None if state.auth.production() => {
                    return Err((RejectReason::Forbidden, ApiError::BadRequest(format!(
                        "sensor {sensor:?} is not registered (production mode accepts only the sensors of registered devices)"
                    ))))
                }
                None => Arc::from(sensor.as_str()),
            };
            (sensor, device)
        }
    };
    Ok(Accepted {
        time,
        sensor,
        device,
        variable,
        value,
    })
}

pub(super) async fn write_one(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Accepted {
        time,
        sensor,
        device,
        variable,
        value,
    } = accept(&state, &principal, &body).map_err(|(kind, e)| {
        state
            .metrics
            .count_rejections("http", &RejectionCounts::one(kind));
        e
    })?;
    state
        .storage
        .check_admission()
        .map_err(|e| storage_error(&state, e))?;
    let mut builder = ReadingsBuilder::with_capacity(1);
    builder.push(time, &device, &sensor, &variable, value);
    state
        .storage
        .write(builder.finish())
        .await
        .map_err(|e| storage_error(&state, e))?;
    state.metrics.readings_accepted.inc();
    state.metrics.ingested("http", "datastream").inc();
    let time = chrono::DateTime::from_timestamp_millis(time)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(Stored {
            data: StoredReading {
                id: next_id(),
                device: &device,
                sensor: &sensor,
                variable: &variable,
                value,
                time,
            },
        }),
    )
        .into_response())
}

/// The answer: `{"data": {...}}`, serialized straight from the request's own strings.
#[derive(Serialize)]
struct Stored<'a> {
    data: StoredReading<'a>,
}

#[derive(Serialize)]
struct StoredReading<'a> {
    id: String,
    device: &'a str,
    sensor: &'a str,
    variable: &'a str,
    value: f64,
    time: String,
}
