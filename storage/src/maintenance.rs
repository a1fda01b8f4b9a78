//! What the background maintenance (persist, catalog refresh, compaction, retention, garbage
//! collection) has done: each round that fails or panics is counted and its reason kept, and
//! the loop goes on with the next round, so a bug in one round never stops persistence silently.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The maintenance loop's record, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaintenanceStatus {
    pub rounds: u64,
    pub failures: u64,
    pub panics: u64,
    /// Rounds failed (or panicked) since the last one that succeeded.
    pub consecutive_failures: u64,
    pub last_error: Option<String>,
    /// Files of failed catalog commits deleted (uploaded, recorded nowhere).
    pub orphans_collected: u64,
    /// How long the round under way has been running (`None` between rounds): a round that
    /// waits on a hung object store shows here before it fails.
    pub running_for: Option<Duration>,
}

#[derive(Debug, Default)]
pub(crate) struct MaintenanceRecord(Mutex<(MaintenanceStatus, Option<Instant>)>);

impl MaintenanceRecord {
    fn update(&self, f: impl FnOnce(&mut MaintenanceStatus)) {
        let mut record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        record.1 = None;
        f(&mut record.0);
    }

    pub(crate) fn started(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1 = Some(Instant::now());
    }

    pub(crate) fn succeeded(&self) {
        self.update(|s| {
            s.rounds += 1;
            s.consecutive_failures = 0;
        });
    }

    pub(crate) fn failed(&self, reason: String, panicked: bool) {
        self.update(|s| {
            s.rounds += 1;
            s.failures += 1;
            s.panics += u64::from(panicked);
            s.consecutive_failures += 1;
            s.last_error = Some(reason);
        });
    }

    pub(crate) fn collected(&self, files: u64) {
        let mut record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        record.0.orphans_collected += files;
    }

    pub(crate) fn status(&self) -> MaintenanceStatus {
        let record = self.0.lock().unwrap_or_else(|e| e.into_inner());
        MaintenanceStatus {
            running_for: record.1.map(|started| started.elapsed()),
            ..record.0.clone()
        }
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
