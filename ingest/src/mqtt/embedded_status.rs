//! What `GET /api/v1/health` knows of the embedded broker: whether its router thread and the
//! ingest link still run, and when its backlog last overflowed (acknowledged publishes
//! dropped before aemos read them).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

/// How long the broker is reported degraded after its backlog overflowed.
const DROP_REPORTED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct EmbeddedStatus {
    router_stopped: AtomicBool,
    link_stopped: AtomicBool,
    dropped: AtomicU64,
    last_drop: Mutex<Option<Instant>>,
}

impl EmbeddedStatus {
    pub(super) fn router_stopped(&self) {
        self.router_stopped.store(true, Ordering::Relaxed);
    }

    pub(super) fn link_stopped(&self) {
        self.link_stopped.store(true, Ordering::Relaxed);
    }

    /// `n` acknowledged publishes dropped by the router (a gap in its log's offsets).
    pub(super) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        *self.last_drop.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// `failed` when the router thread or the ingest link ended (telemetry goes nowhere),
    /// `degraded` for a minute after the backlog overflowed, else `ok`.
    pub fn health(&self) -> serde_json::Value {
        let router = !self.router_stopped.load(Ordering::Relaxed);
        let link = !self.link_stopped.load(Ordering::Relaxed);
        let since_drop = self
            .last_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed());
        let status = if !router || !link {
            "failed"
        } else if since_drop.is_some_and(|t| t < DROP_REPORTED_FOR) {
            "degraded"
        } else {
            "ok"
        };
        json!({
            "status": status,
            "routerRunning": router,
            "ingestLinkRunning": link,
            "droppedPublishes": self.dropped.load(Ordering::Relaxed),
            "lastDropAgoMs": since_drop.map(|t| t.as_millis() as u64),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_degrades_and_a_stopped_link_fails() {
        let status = EmbeddedStatus::default();
        assert_eq!(status.health()["status"], "ok");
        status.dropped(3);
        let h = status.health();
        assert_eq!(
            (h["status"].as_str(), h["droppedPublishes"].as_u64()),
            (Some("degraded"), Some(3))
        );
        status.link_stopped();
        assert_eq!(status.health()["status"], "failed");
    }
}
