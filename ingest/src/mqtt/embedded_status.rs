//! What `GET /api/v1/health` knows of the embedded broker: whether its listeners (the thread
//! `Broker::start` runs them on, which returns once they have all ended) and the ingest link
//! still run, and when its backlog last overflowed (acknowledged publishes dropped before
//! aemos read them). A router that dies shows as the ingest link ending.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// How long the broker is reported degraded after its backlog overflowed.
const DROP_REPORTED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct EmbeddedStatus {
    listeners_stopped: AtomicBool,
    link_stopped: AtomicBool,
    dropped: AtomicU64,
    last_drop: Mutex<Option<Instant>>,
}

impl EmbeddedStatus {
    /// A guard that marks the listeners stopped when dropped (their thread returned or
    /// panicked).
    pub(super) fn listeners_guard(self: &Arc<Self>) -> StoppedOnDrop {
        StoppedOnDrop(Arc::clone(self), Part::Listeners)
    }

    /// A guard that marks the ingest link stopped when dropped (its task returned or panicked).
    pub(super) fn link_guard(self: &Arc<Self>) -> StoppedOnDrop {
        StoppedOnDrop(Arc::clone(self), Part::Link)
    }

    /// `n` acknowledged publishes dropped by the router (a gap in its log's offsets).
    pub(super) fn dropped(&self, n: u64) {
        self.dropped.fetch_add(n, Ordering::Relaxed);
        *self.last_drop.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    /// `failed` when the listeners or the ingest link ended (telemetry goes nowhere),
    /// `degraded` for a minute after the backlog overflowed, else `ok`.
    pub fn health(&self) -> serde_json::Value {
        let listeners = !self.listeners_stopped.load(Ordering::Relaxed);
        let link = !self.link_stopped.load(Ordering::Relaxed);
        let since_drop = self
            .last_drop
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed());
        let status = if !listeners || !link {
            "failed"
        } else if since_drop.is_some_and(|t| t < DROP_REPORTED_FOR) {
            "degraded"
        } else {
            "ok"
        };
        json!({
            "status": status,
            "listenersRunning": listeners,
            "ingestLinkRunning": link,
            "droppedPublishes": self.dropped.load(Ordering::Relaxed),
            "lastDropAgoMs": since_drop.map(|t| t.as_millis() as u64),
        })
    }
}

enum Part {
    Listeners,
    Link,
}

pub(super) struct StoppedOnDrop(Arc<EmbeddedStatus>, Part);

impl Drop for StoppedOnDrop {
    fn drop(&mut self) {
        let flag = match self.1 {
            Part::Listeners => &self.0.listeners_stopped,
            Part::Link => &self.0.link_stopped,
        };
        flag.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_degrades_and_a_stopped_link_fails() {
        let status = Arc::new(EmbeddedStatus::default());
        let link = status.link_guard();
        assert_eq!(status.health()["status"], "ok");
        status.dropped(3);
        let h = status.health();
        assert_eq!(
            (h["status"].as_str(), h["droppedPublishes"].as_u64()),
            (Some("degraded"), Some(3))
        );
        // A panicking link task drops its guard too.
        let _ = std::thread::spawn(move || {
            let _link = link;
            panic!("the link fails");
        })
        .join();
        assert_eq!(status.health()["status"], "failed");
        assert_eq!(status.health()["ingestLinkRunning"], false);
    }
}
