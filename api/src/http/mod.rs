//! The axum router: `/api/v1/...`.

mod devices;
mod error;
mod health;
mod query;
mod rulechains;
mod write;

use std::sync::Arc;

use aemos_queries::QueryEngine;
use aemos_storage::Storage;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

use crate::rules::Rules;
use axum::Router;

pub use error::ApiError;

use crate::metrics::Metrics;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub queries: QueryEngine,
    pub metrics: Metrics,
    pub rules: Rules,
}

pub struct RouterArgs {
    pub state: AppState,
    pub max_body_bytes: usize,
}

pub fn router(args: RouterArgs) -> Router {
    Router::new()
        .route("/api/v1/write", post(write::write))
        .route(
            "/api/v1/query",
            get(query::query_get).post(query::query_post),
        )
        .route("/api/v1/devices/{id}/statistics", get(devices::statistics))
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
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .with_state(args.state)
}
