//! The axum router: `/api/v1/...`.

mod commands;
mod datastream_token;
mod device_data;
mod device_state;
mod devices;
mod error;
mod gate;
mod health;
mod influx;
mod notifications;
mod preclean;
mod query;
mod queue;
mod rulechains;
mod schedules;
mod write;

use std::sync::Arc;

use aemos_queries::QueryEngine;
use aemos_storage::Storage;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use axum::Router;
use socketioxide::layer::SocketIoLayer;

pub use error::ApiError;
pub use gate::StartGate;

use crate::metrics::Metrics;
use crate::notify::channels::SocketIoChannel;
use crate::notify::Notifier;
use crate::rules::Rules;

/// The protocol servers beside HTTP, when running (not in router tests).
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub mqtt: Option<aemos_ingest::mqtt::MqttPublisher>,
    /// Embedded or external broker, for health.
    pub mqtt_mode: Option<aemos_ingest::mqtt::MqttMode>,
    pub coap: Option<aemos_ingest::coap::CoapServer>,
    pub socketio: Option<Arc<SocketIoChannel>>,
    pub subscriptions: Option<Arc<crate::notify::socketio::Subscriptions>>,
    /// Readings from MQTT made durable (the MQTT edge's own counter), for
    /// `ingested_readings_total{protocol="mqtt"}`.
    pub mqtt_readings: Option<prometheus::IntCounter>,
}

/// What every handler can reach; axum clones it into every request, so it is one shared
/// reference.
#[derive(Debug, Clone)]
pub struct AppState(Arc<AppStateParts>);

impl AppState {
    pub fn new(parts: AppStateParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateParts;

    fn deref(&self) -> &AppStateParts {
        &self.0
    }
}

#[derive(Debug)]
pub struct AppStateParts {
    pub auth: Arc<crate::auth::Auth>,
    pub storage: Arc<Storage>,
    pub queries: QueryEngine,
    pub metrics: Metrics,
    pub rules: Rules,
    pub notifier: Arc<Notifier>,
    pub commands: Arc<crate::commands::Commands>,
    pub precleans: Arc<crate::commands::preclean::Precleans>,
    pub schedules: Arc<crate::commands::scheduler::Schedules>,
    pub edge: Edge,
}

pub struct RouterArgs {
    pub state: AppState,
    pub max_body_bytes: usize,
    /// Socket.IO at `/socket.io/`.
    pub socket_io: Option<SocketIoLayer>,
}

/// An InfluxDB write route speaking `dialect`.
fn influx_write(dialect: influx::Dialect) -> axum::routing::MethodRouter<AppState> {
    post(influx::write).layer(axum::Extension(dialect))
}

pub fn router(args: RouterArgs) -> Router {
    let http_auth = crate::auth::http::HttpAuth {
        auth: Arc::clone(&args.state.auth),
        metrics: args.state.metrics.clone(),
    };
    let router = Router::new()
        .route("/api/v1/write", post(write::write))
        .route("/write", influx_write(influx::Dialect::V1))
        .route("/api/v2/write", influx_write(influx::Dialect::V2))
        .route("/api/v3/write_lp", influx_write(influx::Dialect::V3))
        .route("/query", get(influx::query_v1).post(influx::query_v1))
        .route("/ping", get(influx::ping).head(influx::ping))
        .route(
            "/api/v1/datastreams/token",
            post(datastream_token::write_one),
        )
        .route("/api/v1/devices", get(devices::list).post(devices::create))
        .route(
            "/api/v1/devices/{id}",
            get(devices::get_one)
                .put(devices::replace)
                .delete(devices::remove),
        )
        .route("/api/v1/devices/{id}/token", post(devices::rotate_token))
        .route(
            "/api/v1/devices/{id}/commands",
            get(commands::list).post(commands::create),
        )
        .route(
            "/api/v1/devices/{id}/commands/{commandId}",
            get(commands::get_one),
        )
        .route(
            "/api/v1/query",
            get(query::query_get).post(query::query_post),
        )
        .route("/api/v1/devices/{id}/statistics", get(devices::statistics))
        .route("/api/v1/devices/{id}/latest", get(device_data::latest))
        .route("/api/v1/devices/{id}/state", get(device_state::state))
        .route(
            "/api/v1/devices/{id}/preclean",
            get(preclean::get_one).post(preclean::start),
        )
        .route(
            "/api/v1/devices/{id}/preclean/cancel",
            post(preclean::cancel),
        )
        .route("/api/v1/devices/{id}/data", get(device_data::data))
        .route(
            "/api/v1/devices/{id}/notifications",
            get(notifications::replay),
        )
        .route(
            "/api/v1/schedules",
            get(schedules::list).post(schedules::create),
        )
        .route(
            "/api/v1/schedules/{id}",
            get(schedules::get_one)
                .put(schedules::replace)
                .delete(schedules::remove),
        )
        .route(
            "/api/v1/rulechains",
            get(rulechains::list).post(rulechains::create),
        )
        .route(
            "/api/v1/rulechains/{id}",
            get(rulechains::get_one)
                .put(rulechains::replace)
                .delete(rulechains::remove),
        )
        .route("/api/v1/health", get(health::health))
        .route("/api/v1/health/liveness", get(health::liveness))
        .route("/api/v1/health/readiness", get(health::readiness))
        .route("/api/v1/metrics/prometheus", get(health::prometheus))
        .route("/api/v1/metrics/queue", get(queue::queue))
        .route("/api/v1/metrics/queue/summary", get(queue::summary))
        .route("/api/v1/metrics/backpressure/reset", post(queue::reset))
        .route_layer(axum::middleware::from_fn_with_state(
            http_auth,
            crate::auth::http::require,
        ))
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .layer(axum::Extension(influx::BodyLimit(args.max_body_bytes)))
        .layer(axum::middleware::from_fn(influx::v2_error_shape))
        .with_state(args.state);
    match args.socket_io {
        Some(layer) => router.layer(layer),
        None => router,
    }
}
