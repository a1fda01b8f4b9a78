//! The object store's health: a probe (a `HEAD` of the current catalog version) every few
//! seconds, each with a deadline, so health tells a store that answers from one that fails or
//! hangs, also while persistence is waiting on it. An answer of "not found" is an answer: the
//! store is up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;

use crate::object_store_config::ObjectStoreConfig;
use crate::paths::catalog_path;

/// What the last probes found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectStoreHealth {
    /// `unknown` (no probe yet), `ok` or `failing` (the last probe failed or timed out).
    pub status: &'static str,
    pub probes: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
    /// How long the last answer took.
    pub last_latency_ms: Option<u64>,
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ProbeRecord(Mutex<ObjectStoreHealth>);

impl Default for ProbeRecord {
    fn default() -> Self {
        Self(Mutex::new(ObjectStoreHealth {
            status: "unknown",
            ..ObjectStoreHealth::default()
        }))
    }
}

impl ProbeRecord {
    pub(crate) fn health(&self) -> ObjectStoreHealth {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One probe of `store` at catalog `version`, recorded.
    pub(crate) async fn probe(&self, store: &ObjectStoreConfig, version: u64, timeout: Duration) {
        let path = catalog_path(&store.prefix, version);
        let started = Instant::now();
        let answer = tokio::time::timeout(timeout, store.store.head(&path)).await;
        let failure = match answer {
            Ok(Ok(_)) | Ok(Err(object_store::Error::NotFound { .. })) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} ms", timeout.as_millis())),
        };
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        h.probes += 1;
        match failure {
            None => {
                h.status = "ok";
                h.consecutive_failures = 0;
                h.last_latency_ms = Some(started.elapsed().as_millis() as u64);
            }
            Some(error) => {
                h.status = "failing";
                h.failures += 1;
                h.consecutive_failures += 1;
                h.last_error = Some(error);
            }
        }
    }
}
