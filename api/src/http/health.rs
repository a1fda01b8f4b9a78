//! Health, readiness and metrics.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;

/// A maintenance round running this long is reported (persistence degraded).
const SLOW_ROUND: std::time::Duration = std::time::Duration::from_secs(30);

/// What every component reports now: the one place the overall status is decided, for
/// `/api/v1/health` and the queue summary.
pub(super) struct Vitals {
    depth: usize,
    capacity: usize,
    failure: Option<String>,
    maintenance: aemos_storage::MaintenanceStatus,
    /// A round failed, or one has been waiting (on a hung object store) for too long.
    behind: bool,
    /// As many readings wait for persistence as `--max-buffered-rows`: writes are refused.
    buffer_full: bool,
    engine: aemos_engine::EngineHealth,
    store: aemos_storage::ObjectStoreHealth,
    firing_failure: Option<String>,
    broker: Option<Value>,
    coap: Option<Value>,
    notifier: Value,
}

impl Vitals {
    pub(super) fn collect(state: &AppState) -> Self {
        let storage = &state.storage;
        let maintenance = storage.maintenance_status();
        Self {
            depth: storage.wal_queue_depth(),
            capacity: storage.wal_queue_capacity(),
            failure: storage.wal_failure(),
            behind: maintenance.consecutive_failures > 0
                || maintenance.running_for.is_some_and(|t| t >= SLOW_ROUND),
            buffer_full: storage.buffered_rows() >= storage.max_buffered_rows(),
            maintenance,
            engine: state.rules.engine.health(),
            store: storage.object_store_health(),
            firing_failure: state.rules.firings.failure(),
            broker: state.edge.mqtt_mode.as_ref().map(|m| m.health()),
            coap: state.edge.coap.as_ref().map(|c| c.health()),
            notifier: state.notifier.health(),
        }
    }

    /// `failing` (the WAL or the firing log refuses writes, an engine worker ended, or the
    /// embedded broker's listeners or ingest link ended),
    /// `degraded` (a full WAL queue or buffer, persistence behind, the broker, engine or
    /// object store not answering or the broker's backlog overflowing, the CoAP socket
    /// failing, a notification channel not keeping up) or `ok`.
    pub(super) fn status(&self) -> &'static str {
        let not_ok = |v: &Value| v["status"] != "ok";
        let edge_down = self.broker.as_ref().is_some_and(not_ok)
            || self.coap.as_ref().is_some_and(not_ok)
            || not_ok(&self.notifier);
        // A broker whose listeners or ingest link ended takes telemetry to nowhere.
        let broker_failed = self
            .broker
            .as_ref()
            .is_some_and(|b| b["status"] == "failed");
        if self.failure.is_some()
            || self.firing_failure.is_some()
            || self.engine.status == "failed"
            || broker_failed
        {
            "failing"
        } else if self.depth >= self.capacity
            || self.buffer_full
            || self.behind
            || edge_down
            || self.engine.status == "stalled"
            || self.store.status == "failing"
        {
            "degraded"
        } else {
            "ok"
        }
    }
}

pub(super) async fn health(State(state): State<AppState>) -> Json<Value> {
    let storage = &state.storage;
    let catalog = storage.catalog().snapshot();
    let vitals = Vitals::collect(&state);
    let status = vitals.status();
    let Vitals {
        depth,
        capacity,
        failure,
        maintenance,
        behind,
        buffer_full,
        engine,
        store,
        firing_failure,
        broker,
        coap,
        notifier,
    } = vitals;
    let firings = &state.rules.firings;
    let wal_status = if failure.is_some() { "failed" } else { "ok" };
    Json(json!({
        "status": status,
        "circuitState": storage.admission_status().circuit_state,
        "components": {
            "wal": {
                "status": wal_status,
                "error": failure,
                "queueDepth": depth,
                "queueCapacity": capacity,
            },
            // Full: every write is refused until persistence frees it.
            "buffer": {
                "status": if buffer_full { "full" } else { "ok" },
                "rows": storage.buffered_rows(),
                "maxRows": storage.max_buffered_rows(),
            },
            // Persistence, compaction and retention: a round that fails or panics is counted
            // and retried at the next; degraded until one succeeds.
            "persistence": {
                "status": if behind { "degraded" } else { "ok" },
                "rounds": maintenance.rounds,
                "failures": maintenance.failures,
                "panics": maintenance.panics,
                "consecutiveFailures": maintenance.consecutive_failures,
                "orphansCollected": maintenance.orphans_collected,
                "lastError": maintenance.last_error,
                "roundRunningMs": maintenance.running_for.map(|t| t.as_millis() as u64),
            },
            // Refuses appends after a failed fsync (firings are then only logged as lost).
            "firingLog": {
                "status": if firing_failure.is_some() { "failed" } else { "ok" },
                "error": firing_failure,
                "skippedAtOpen": firings.skipped_at_open(),
            },
            // Embedded, or the external broker's two connections (connected, subscribed).
            "mqtt": broker,
            // Degraded while the socket keeps failing.
            "coap": coap,
            // Degraded while a channel's queue is full (the oldest notifications dropped).
            "notifier": notifier,
            // Failed when a worker thread ended, stalled when worker 0 is held.
            "engine": {
                "status": engine.status,
                "workers": engine.workers,
                "workersRunning": engine.workers_running,
                "sinceHeartbeatMs": engine.since_heartbeat.as_millis() as u64,
                "queuedReadings": engine.queued_readings,
                "chains": state.rules.engine.chain_count(),
                "watchedDevices": state.rules.engine.watch_count(),
                "frontier": state.rules.engine.metrics().frontier.load(std::sync::atomic::Ordering::Relaxed),
            },
            // From the probe (`HEAD` of the catalog, with a deadline) every few seconds.
            "objectStore": {
                "status": store.status,
                "probes": store.probes,
                "failures": store.failures,
                "consecutiveFailures": store.consecutive_failures,
                "lastLatencyMs": store.last_latency_ms,
                "lastError": store.last_error,
                "url": storage.object_store().url,
                "catalogVersion": catalog.version,
                "files": catalog.files.len(),
            },
        }
    }))
}

pub(super) async fn liveness() -> Json<Value> {
    Json(json!({ "status": "alive" }))
}

/// The router is only served after WAL replay, so a served request means ready, unless the
/// WAL has failed (it stores nothing until a restart): then `503`.
pub(super) async fn readiness(State(state): State<AppState>) -> impl IntoResponse {
    let rows = state.storage.replay_report().rows;
    match state.storage.wal_failure() {
        None => (
            axum::http::StatusCode::OK,
            Json(json!({ "status": "ready", "replayedRows": rows })),
        ),
        Some(reason) => (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "failing", "error": reason })),
        ),
    }
}

/// Serializes scrapes (see `MetricSet::count_up_to`).
static SCRAPES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub(super) async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    m.wal_queue_depth
        .set(state.storage.wal_queue_depth() as i64);
    m.buffered_rows.set(state.storage.buffered_rows() as i64);
    m.parquet_files
        .set(state.storage.catalog().snapshot().files.len() as i64);
    let engine = &state.rules.engine;
    let em = engine.metrics();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let up = crate::metrics::MetricSet::count_up_to;
    m.rule_chains.set(engine.chain_count() as i64);
    m.watched_devices.set(engine.watch_count() as i64);
    // The counters below follow monotonic atomics kept elsewhere: one scrape at a time.
    let _one_at_a_time = SCRAPES.lock().await;
    up(&m.engine_readings, load(&em.readings));
    up(&m.engine_presence_marks, load(&state.rules.presence_marks));
    up(&m.engine_ticks, load(&em.ticks));
    up(&m.engine_firings, load(&em.firings));
    up(&m.engine_eval_errors, load(&em.eval_errors));
    up(&m.engine_key_collisions, load(&em.key_collisions));
    up(&m.notifications, state.notifier.delivered());
    m.circuit_state
        .set(state.storage.admission_status().circuit_state.code());
    for p in aemos_storage::Priority::ALL {
        for (reason, full) in [("shed", false), ("full", true)] {
            up(
                &m.admission_refusals.with_label_values(&[p.name(), reason]),
                state.storage.admission_refused(p, full),
            );
        }
    }
    let edge = &state.edge;
    let dropped =
        |channel: &str, n: u64| up(&m.notifications_dropped.with_label_values(&[channel]), n);
    if let Some(mqtt) = &edge.mqtt {
        dropped("mqtt", mqtt.dropped());
    }
    if let Some(coap) = &edge.coap {
        dropped("coap", coap.dropped());
        m.coap_observers.set(coap.observers() as i64);
        up(&m.coap_readings, load(&coap.stats.readings));
        up(m.ingested("coap", "json"), load(&coap.stats.readings));
        up(&m.coap_malformed, load(&coap.stats.malformed));
        for reason in aemos_ingest::RejectReason::ALL {
            up(
                &m.readings_rejected
                    .with_label_values(&["coap", reason.name()]),
                coap.stats.rejected(reason),
            );
        }
        up(&m.coap_requests, load(&coap.stats.requests));
        up(&m.coap_refused, load(&coap.stats.refused));
        up(&m.coap_socket_errors, load(&coap.stats.socket_errors));
        up(&m.coap_notifications, load(&coap.stats.notifications));
        up(&m.coap_retransmissions, load(&coap.stats.retransmissions));
        up(
            &m.coap_observers_timed_out,
            load(&coap.stats.observers_timed_out),
        );
        up(
            &m.coap_amplification_refused,
            load(&coap.stats.amplification_refused),
        );
    }
    if let Some(sio) = &edge.socketio {
        dropped("socketio", sio.dropped());
        up(&m.socketio_missed, load(&sio.missed));
    }
    if let Some(readings) = &edge.mqtt_readings {
        up(m.ingested("mqtt", "json"), readings.get());
    }
    if let Some(subs) = &edge.subscriptions {
        m.socketio_subscriptions.set(subs.total() as i64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
}
