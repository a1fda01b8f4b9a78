//! `GET /api/v1/devices/{id}/state`: what aemos knows of a device now, from the parts that
//! know it: online and the active rule states from the engine (the device's watch and the
//! chains that notify about it), the latest values and the last time it was seen from
//! storage, the fan speed and power from its acknowledged commands, and its running pre-clean.

use axum::extract::{Path, State};
use axum::Json;
use serde_json::{json, Value};

use super::device_data::latest_rows;
use super::{ApiError, AppState};
use crate::notify::notify_targets;

pub(super) async fn state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let latest = latest_rows(&state, &id).await?;
    let last_seen = latest
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row.get("time").and_then(Value::as_str))
        .max()
        .map(str::to_owned);
    let engine = &state.rules.engine;
    // Without a watch (a registration the engine has not taken yet) nothing is known.
    let online = engine.presence(&id).map(|p| p.online());
    let mut states = Vec::new();
    for chain in engine.chains() {
        let Some(status) = engine.status(chain.id()).filter(|s| s.active) else {
            continue;
        };
        for target in notify_targets(&chain.spec, true, false) {
            if target.device == id {
                states.push(json!({
                    "chain": chain.id(),
                    "state": target.state,
                    "value": target.new,
                    "values": status.values.iter().map(|(k, v)| (k.clone(), json!(v)))
                        .collect::<serde_json::Map<_, _>>(),
                }));
            }
        }
    }
    let settings = state.commands.settings(&id);
    let timeout = state
        .auth
        .registry
        .get(&id)
        .map(|d| humantime::format_duration(d.inactivity_timeout).to_string());
    let now = state.commands.now_ms();
    let preclean = state.precleans.running(&id).await.map(|p| p.to_json(now));
    Ok(Json(json!({
        "device": id,
        "online": online,
        "lastSeen": last_seen,
        "inactivityTimeout": timeout,
        "fanSpeed": settings.fan_speed,
        "power": settings.power,
        "states": states,
        "precleanActive": preclean.is_some(),
        "preclean": preclean,
        "latest": latest,
    })))
}
