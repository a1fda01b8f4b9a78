//! What `GET /api/v1/health` knows of the embedded broker: whether its listeners (the thread
//! `Broker::start` runs them on, which returns once they have all ended) and the ingest link
//! still run, and when its backlog last overflowed (acknowledged publishes dropped before
//! aemos read them). A router that dies shows as the ingest link ending. And how far the
//! ingest link is behind the router's log of telemetry (its backlog), which the throttle reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttd::AppendMeter;
use serde_json::json;

/// How long a listener holds a connection's reads while the backlog is an eighth full.
const READ_PAUSE: Duration = Duration::from_millis(5);

/// How long the broker is reported degraded after its backlog overflowed.
const DROP_REPORTED_FOR: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct EmbeddedStatus {
    listeners_stopped: AtomicBool,
    link_stopped: AtomicBool,
    dropped: AtomicU64,
    last_drop: Mutex<Option<Instant>>,
    /// What the router appended to the telemetry filter's log.
    appended: Arc<AppendMeter>,
    /// The offset in that log of the next publish the ingest link is to read.
    read: AtomicU64,
    /// Telemetry publishes the listeners let through to the router: ahead of `appended` by
    /// those the router has not appended yet (its thread may lag the listeners').
    admitted: AtomicU64,
    /// The bytes that log holds before it drops its oldest segment.
    capacity: u64,
}

impl EmbeddedStatus {
    /// The status of a broker whose telemetry log, of `capacity` bytes, counts its appends in
    /// `appended`.
    pub(super) fn new(appended: Arc<AppendMeter>, capacity: u64) -> Self {
        Self {
            listeners_stopped: AtomicBool::new(false),
            link_stopped: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            last_drop: Mutex::new(None),
            appended,
            read: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            capacity,
        }
    }

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

    /// The ingest link has read the publish at `offset` of the telemetry log.
    pub(super) fn read_through(&self, offset: u64) {
        self.read.fetch_max(offset + 1, Ordering::Relaxed);
    }

    /// A listener let a telemetry publish through to the router.
    pub(super) fn admitted(&self) {
        self.admitted.fetch_add(1, Ordering::Relaxed);
    }

    /// About how many bytes of telemetry the router holds, or is about to, that the ingest
    /// link has not read: the publishes behind it (those appended, exact, and those let
    /// through but not appended yet) at the log's mean publish size.
    pub(super) fn backlog_bytes(&self) -> u64 {
        let publishes = self.appended.publishes.load(Ordering::Relaxed);
        let bytes = self.appended.bytes.load(Ordering::Relaxed);
        let ahead = publishes.max(self.admitted.load(Ordering::Relaxed));
        let behind = ahead.saturating_sub(self.read.load(Ordering::Relaxed));
        (u128::from(behind) * u128::from(bytes) / u128::from(publishes.max(1))) as u64
    }

    /// Over a quarter of the backlog is taken: the log can drop unread publishes once the
    /// ingest link is more than half of it (one segment of two) behind.
    pub(super) fn backlog_filling(&self) -> bool {
        self.backlog_bytes().saturating_mul(4) >= self.capacity
    }

    /// An eighth of the backlog is taken: the listeners stop reading from devices for a
    /// moment (`ConnectionSettings::read_pause`), so the broker takes telemetry no faster than
    /// the ingest link writes it.
    pub(super) fn read_pause(&self) -> Option<Duration> {
        (self.backlog_bytes().saturating_mul(8) >= self.capacity).then_some(READ_PAUSE)
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
            "backlogBytes": self.backlog_bytes(),
            "backlogCapacityBytes": self.capacity,
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
        let status = Arc::new(EmbeddedStatus::new(Arc::default(), 1024));
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

    #[test]
    fn the_backlog_is_the_publishes_behind_at_their_mean_size() {
        let appended = Arc::new(AppendMeter::default());
        let status = EmbeddedStatus::new(Arc::clone(&appended), 4000);
        assert_eq!(status.backlog_bytes(), 0);
        appended.publishes.store(10, Ordering::Relaxed);
        appended.bytes.store(1000, Ordering::Relaxed);
        assert_eq!(status.backlog_bytes(), 1000);
        assert!(status.backlog_filling());
        status.read_through(4);
        assert_eq!(status.backlog_bytes(), 500);
        assert!(!status.backlog_filling());
        assert_eq!(
            status.read_pause(),
            Some(READ_PAUSE),
            "500 of 4000: an eighth"
        );
        status.read_through(6);
        assert_eq!(status.backlog_bytes(), 300);
        assert_eq!(status.read_pause(), None);
        // Let through but not appended yet: behind too.
        status.admitted.store(12, Ordering::Relaxed);
        assert_eq!(status.backlog_bytes(), 500);
        status.admitted.store(0, Ordering::Relaxed);
        // Offsets seen out of order never move the reader back.
        status.read_through(2);
        assert_eq!(status.backlog_bytes(), 300);
        status.read_through(9);
        assert_eq!(status.health()["backlogBytes"], 0);
    }
}
