//! Device presence without a chain per device.
//!
//! A device is offline while nothing said it was seen for its timeout: no reading of one
//! sensor (the device's, or a pseudo-sensor its readings mark, as the server's feed does)
//! newer than the timeout. Worker 0 keeps the time of each watched sensor's latest reading and
//! each watch's state (`worker::watches`); the dataflow holds one row per offline watch, which
//! worker 0 inserts and retracts at the millisecond the state changes, and turns its changes
//! into firings: [`FiringKind::Activated`](crate::FiringKind) when the device goes offline,
//! `Cleared` when it is back. A device costs an entry in worker 0's tables and, while
//! online, one pending expiry; a reading of it a hash lookup. No chain document, plan,
//! window, reduce input or status entry, and a batch of watches is installed in one tick
//! ([`Engine::watch`]), not one registration each.

use crate::dataflow::ChainNo;
use crate::error::{Error, Result};
use crate::keys::{self, Id};
use crate::runtime::{Command, Engine};
use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The longest timeout: the longest window a chain may read.
const MAX_TIMEOUT_MS: i64 = 7 * 24 * 3600 * 1000;

/// What to watch: `device` is offline while `sensor` has sent nothing for `timeout_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceSpec {
    pub device: String,
    pub sensor: String,
    pub timeout_ms: i64,
}

/// A watched device, shared by the handle, worker 0 and its firings.
#[derive(Debug)]
pub struct Presence {
    device: Box<str>,
    timeout_ms: i64,
    /// The identity of the readings that count (the sensor's).
    pub(crate) raw: Id,
    /// The identity of a `no_data` window of that timeout: claimed with `raw`, so that a
    /// watch and a chain's window of one name are one identity's.
    pub(crate) value: Id,
    /// As of the last tick worker 0 applied; a device never seen is offline.
    offline: AtomicBool,
}

impl Presence {
    fn new(spec: PresenceSpec) -> Result<Self> {
        if spec.device.is_empty() || spec.sensor.is_empty() {
            return Err(Error::invalid(
                "presence: device and sensor must be named",
                None,
            ));
        }
        if !(1..=MAX_TIMEOUT_MS).contains(&spec.timeout_ms) {
            return Err(Error::invalid(
                format!(
                    "presence of {}: timeout must be 1 ms to 7 days, not {} ms",
                    spec.device, spec.timeout_ms
                ),
                None,
            ));
        }
        Ok(Presence {
            device: spec.device.into_boxed_str(),
            timeout_ms: spec.timeout_ms,
            raw: keys::sensor_id(&spec.sensor),
            value: keys::recent_id(&spec.sensor, spec.timeout_ms),
            offline: AtomicBool::new(true),
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn timeout_ms(&self) -> i64 {
        self.timeout_ms
    }

    /// Whether the device was online as of the last applied tick.
    pub fn online(&self) -> bool {
        !self.offline.load(Ordering::Relaxed)
    }

    pub(crate) fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::Relaxed);
    }

    /// Whether `other` watches the same readings for the same time.
    fn same_watch(&self, other: &Presence) -> bool {
        self.raw == other.raw && self.timeout_ms == other.timeout_ms
    }
}

/// A watch in the handle's set, found by its device's name.
pub(crate) struct Watch {
    pub(crate) no: ChainNo,
    pub(crate) presence: Arc<Presence>,
}

impl Borrow<str> for Watch {
    fn borrow(&self) -> &str {
        &self.presence.device
    }
}

impl Hash for Watch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.presence.device.hash(state)
    }
}

impl PartialEq for Watch {
    fn eq(&self, other: &Self) -> bool {
        self.presence.device == other.presence.device
    }
}

impl Eq for Watch {}

impl Engine {
    /// Watches devices, or changes their watch (a new sensor or timeout), all in one tick;
    /// a device already watched the same way is left as it is, and of two specs of one device
    /// the later is its watch. A new timeout counts from the sensor's latest reading since it
    /// was first watched (a longer one can bring a device back online). Returns once worker 0
    /// has sequenced them. Nothing is changed if one spec is invalid.
    pub fn watch(&self, mut specs: Vec<PresenceSpec>) -> Result<()> {
        // The last spec of a device is its watch.
        let mut devices = std::collections::HashSet::new();
        specs.reverse();
        specs.retain(|s| devices.insert(s.device.clone()));
        let watches = specs
            .into_iter()
            .map(|s| Presence::new(s).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        let (remove, install) = {
            let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
            let (mut remove, mut install) = (Vec::new(), Vec::new());
            for presence in watches {
                let old = registry.presence.get(presence.device());
                if old.is_some_and(|w| w.presence.same_watch(&presence)) {
                    continue;
                }
                let replaced = old.map(|w| w.no);
                remove.extend(replaced);
                let no = registry.next;
                registry.next += 1;
                install.push((no, Arc::clone(&presence), replaced));
                registry.presence.replace(Watch { no, presence });
            }
            (remove, install)
        };
        if install.is_empty() {
            return Ok(());
        }
        let done = self.presence_command(remove, install)?;
        drop(order);
        done.recv().map_err(|_| Error::Stopped)
    }

    /// Stops watching devices (those not watched are left out); their state goes without a
    /// firing. Returns once worker 0 has sequenced it.
    pub fn unwatch(&self, devices: &[&str]) -> Result<()> {
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        let remove: Vec<ChainNo> = {
            let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
            devices
                .iter()
                .filter_map(|d| registry.presence.take(*d).map(|w| w.no))
                .collect()
        };
        if remove.is_empty() {
            return Ok(());
        }
        let done = self.presence_command(remove, Vec::new())?;
        drop(order);
        done.recv().map_err(|_| Error::Stopped)
    }

    fn presence_command(
        &self,
        remove: Vec<ChainNo>,
        install: Vec<(ChainNo, Arc<Presence>, Option<ChainNo>)>,
    ) -> Result<std::sync::mpsc::Receiver<()>> {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.send(Command::Presence {
            remove,
            install,
            done,
        })?;
        Ok(wait)
    }

    /// A watched device's presence.
    pub fn presence(&self, device: &str) -> Option<Arc<Presence>> {
        let registry = self.registry.lock().ok()?;
        registry
            .presence
            .get(device)
            .map(|w| Arc::clone(&w.presence))
    }

    /// Every watched device.
    pub fn watched(&self) -> Vec<Arc<Presence>> {
        let Ok(registry) = self.registry.lock() else {
            return Vec::new();
        };
        registry
            .presence
            .iter()
            .map(|w| Arc::clone(&w.presence))
            .collect()
    }

    /// Watched devices.
    pub fn watch_count(&self) -> usize {
        self.registry.lock().map_or(0, |r| r.presence.len())
    }
}
