//! `/api/v1/rulechains`: register (POST, 201), replace or create (PUT, 200 or 201), remove
//! (DELETE, 204), list and get (with each chain's state). A chain is validated and compiled
//! before anything is stored; it is stored (one object per chain) before the engine takes it, so a
//! registered chain survives a restart.

use std::sync::Arc;

use aemos_engine::{ChainSpec, ChainStatus, CompiledChain, Engine};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::devices::presence;
use crate::rules::CHAINS;

fn parse(body: &[u8]) -> Result<ChainSpec, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("rule chain: {e}")))
}

fn compile(spec: &ChainSpec) -> Result<(), ApiError> {
    if presence::is_system(&spec.id) {
        return Err(ApiError::BadRequest(format!(
            "`id`: ids starting with {:?} are reserved for aemos's own chains",
            presence::SYSTEM_PREFIX
        )));
    }
    CompiledChain::compile(spec.clone())
        .map(|_| ())
        .map_err(ApiError::from)?;
    crate::commands::rule::check_chain_commands(spec).map_err(ApiError::BadRequest)
}

fn status_json(status: Option<ChainStatus>) -> Value {
    let s = status.unwrap_or_default();
    let values: serde_json::Map<String, Value> =
        s.values.into_iter().map(|(k, v)| (k, json!(v))).collect();
    json!({
        "active": s.active,
        "values": values,
        "firings": s.firings,
        "errors": s.errors,
        "lastError": s.last_error,
    })
}

fn chain_json(engine: &Engine, spec: &ChainSpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    v["status"] = status_json(engine.status(&spec.id));
    v
}

/// Runs a blocking engine call (it may wait for room in the command channel).
pub(super) async fn engine_call<T: Send + 'static>(
    engine: &Arc<Engine>,
    call: impl FnOnce(&Engine) -> aemos_engine::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || call(&engine))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

pub(super) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse(&body)?;
    compile(&spec)?;
    let _writes = state.rules.writes.lock().await;
    let engine = &state.rules.engine;
    if engine.chain(&spec.id).is_some() {
        return Err(ApiError::Conflict(format!(
            "rule chain {:?} already exists; PUT replaces it",
            spec.id
        )));
    }
    state
        .storage
        .put_document(
            CHAINS,
            &spec.id,
            &serde_json::to_value(&spec).map_err(ApiError::internal)?,
        )
        .await
        .map_err(ApiError::internal)?;
    let registered = spec.clone();
    engine_call(engine, move |e| e.register(registered)).await?;
    Ok((StatusCode::CREATED, Json(chain_json(engine, &spec))))
}

pub(super) async fn replace(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let spec = parse(&body)?;
    if spec.id != id {
        return Err(ApiError::BadRequest(format!(
            "the body's id {:?} is not the path's {id:?}",
            spec.id
        )));
    }
    compile(&spec)?;
    let _writes = state.rules.writes.lock().await;
    state
        .storage
        .put_document(
            CHAINS,
            &id,
            &serde_json::to_value(&spec).map_err(ApiError::internal)?,
        )
        .await
        .map_err(ApiError::internal)?;
    let engine = &state.rules.engine;
    let upserted = spec.clone();
    let (_, created) = engine_call(engine, move |e| e.upsert(upserted)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(chain_json(engine, &spec))))
}

pub(super) async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let _writes = state.rules.writes.lock().await;
    let stored = state
        .storage
        .remove_document(CHAINS, &id)
        .await
        .map_err(ApiError::internal)?;
    let engine = &state.rules.engine;
    let removed = engine_call(engine, move |e| Ok(e.remove(&id).is_ok())).await?;
    if stored || removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("no such rule chain".into()))
    }
}

pub(super) async fn list(State(state): State<AppState>) -> Json<Value> {
    let engine = &state.rules.engine;
    Json(Value::Array(
        engine
            .chains()
            .iter()
            .map(|c| chain_json(engine, &c.spec))
            .collect(),
    ))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let engine = &state.rules.engine;
    let chain = engine
        .chain(&id)
        .ok_or_else(|| ApiError::NotFound(format!("no rule chain {id:?}")))?;
    Ok(Json(chain_json(engine, &chain.spec)))
}
