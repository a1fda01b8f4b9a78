//! The HTTP listener opens before the server is ready: until WAL replay, the engine's rebuild
//! and the device edge are done, liveness answers `200` and everything else (readiness
//! included) `503 {"status": "starting", "phase"}` with `Retry-After`; then every request goes
//! to the full router. An orchestrator sees the process alive and not yet ready, instead of a
//! refused connection.

use std::sync::{Arc, OnceLock, RwLock};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower::ServiceExt;

/// Where the start is, and the router once it is done.
#[derive(Debug, Clone, Default)]
pub struct StartGate {
    ready: Arc<OnceLock<Router>>,
    phase: Arc<RwLock<&'static str>>,
}

impl StartGate {
    /// Says what the start is doing (readiness shows it).
    pub fn phase(&self, phase: &'static str) {
        *self.phase.write().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// Hands every request from now on to `router`.
    pub fn open(&self, router: Router) {
        let _ = self.ready.set(router);
    }

    /// What the listener serves from the start.
    pub fn router(&self) -> Router {
        let gate = self.clone();
        Router::new()
            .route(
                "/api/v1/health/liveness",
                get(|| async { Json(json!({ "status": "alive" })) }),
            )
            .fallback(move |request: Request| {
                let gate = gate.clone();
                async move { gate.handle(request).await }
            })
    }

    async fn handle(&self, request: Request) -> Response {
        match self.ready.get() {
            Some(router) => match router.clone().oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            },
            None => {
                let phase = *self.phase.read().unwrap_or_else(|e| e.into_inner());
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    Json(json!({ "status": "starting", "phase": phase })),
                )
                    .into_response()
            }
        }
    }
}
