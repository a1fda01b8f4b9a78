//! The operations endpoints of seed 004 on aemos's own queues: `GET /api/v1/metrics/queue`
//! (every queue a reading goes through, the circuit breaker, the refusals),
//! `GET /api/v1/metrics/queue/summary` and `POST /api/v1/metrics/backpressure/reset` (admin).

use std::sync::atomic::Ordering;

use aemos_storage::{CircuitState, Priority};
use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use super::health::Vitals;
use super::AppState;

/// `healthy`, `warning` (half-open, low-priority writes being shed, or health `degraded`) or
/// `critical` (open, or health `failing`): the breaker's view and every component's
/// ([`Vitals`]).
fn health(state: &AppState, circuit: CircuitState, load: f64, low_until: f64) -> &'static str {
    let overall = Vitals::collect(state).status();
    if circuit == CircuitState::Open || overall == "failing" {
        "critical"
    } else if circuit == CircuitState::HalfOpen || load >= low_until || overall == "degraded" {
        "warning"
    } else {
        "healthy"
    }
}

/// Refusals since start per priority: shed by the breaker, or at a queue's hard bound.
fn refusals(state: &AppState, full: bool) -> Map<String, Value> {
    Priority::ALL
        .iter()
        .map(|p| {
            (
                p.name().to_owned(),
                json!(state.storage.admission_refused(*p, full)),
            )
        })
        .collect()
}

pub(super) async fn queue(State(state): State<AppState>) -> Json<Value> {
    let storage = &state.storage;
    let admission = storage.admission_status();
    let maintenance = storage.maintenance_status();
    let engine = &state.rules.engine;
    let em = engine.metrics();
    Json(json!({
        "health": health(&state, admission.circuit_state, admission.load, admission.low_until),
        "circuit": admission,
        "wal": {
            "depth": storage.wal_queue_depth(),
            "capacity": storage.wal_queue_capacity(),
            "failure": storage.wal_failure(),
        },
        "buffer": {
            "rows": storage.buffered_rows(),
            "limit": storage.max_buffered_rows(),
        },
        "persistence": {
            "rounds": maintenance.rounds,
            "failures": maintenance.failures,
            "consecutiveFailures": maintenance.consecutive_failures,
        },
        "engine": {
            "workers": engine.workers(),
            "chains": engine.chain_count(),
            "readings": em.readings.load(Ordering::Relaxed),
            "ticks": em.ticks.load(Ordering::Relaxed),
            "firings": em.firings.load(Ordering::Relaxed),
            "frontier": em.frontier.load(Ordering::Relaxed),
        },
        "notifications": { "delivered": state.notifier.delivered() },
        "refused": { "shed": refusals(&state, false), "full": refusals(&state, true) },
    }))
}

pub(super) async fn summary(State(state): State<AppState>) -> Json<Value> {
    let storage = &state.storage;
    let admission = storage.admission_status();
    Json(json!({
        "health": health(&state, admission.circuit_state, admission.load, admission.low_until),
        // Readings acknowledged and waiting for persistence, plus writes waiting for the WAL.
        "queueDepth": storage.buffered_rows() + storage.wal_queue_depth(),
        "workers": state.rules.engine.workers(),
        "circuitState": admission.circuit_state,
        "rejectedCount": admission.rejected_since_reset,
        "load": admission.load,
    }))
}

pub(super) async fn reset(State(state): State<AppState>) -> Json<Value> {
    state.storage.reset_admission();
    let admission = state.storage.admission_status();
    Json(json!({
        "circuitState": admission.circuit_state,
        "rejectedCount": admission.rejected_since_reset,
    }))
}
