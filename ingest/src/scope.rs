//! Which sensors a write may name, and the device each one belongs to.
//!
//! The API layer builds a scope per request from its device registry and the caller's
//! credential (a device token: that device's sensors; a user in `production` mode: every
//! registered sensor; `dev` mode: registered sensors map to their device, the rest to a device
//! of the same name). The decoders ask it once per reading, so a batch naming one sensor after
//! another asks once per run of the same sensor ([`Collector`](crate::collect)).

use std::fmt::Debug;
use std::sync::Arc;

/// The device a sensor belongs to, borrowed from the scope when it can be (a device token's
/// scope is one device: its readings cost no reference count, which two ingestion threads
/// writing for one device would contend on).
#[derive(Debug, Clone)]
pub enum Owner<'s> {
    /// No registered device (`dev` mode: the reading's own `device`, else the sensor's name).
    Unowned,
    Device(&'s str),
    Shared(Arc<str>),
}

impl Owner<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Owner::Unowned => None,
            Owner::Device(d) => Some(d),
            Owner::Shared(d) => Some(d),
        }
    }
}

/// The device of each sensor a writer names, or why the writer may not write it.
pub trait SensorScope: Send + Sync + Debug {
    /// The device `sensor` belongs to; `Owner::Unowned` when it belongs to none (`dev` mode: the
    /// reading's own `device`, else a device of the sensor's name); `Err` is the rejection's
    /// reason (for example "sensor \"s-9\" is not registered").
    fn device_of(&self, sensor: &str) -> Result<Owner<'_>, String>;

    /// Whether the refusals of this scope are authorization refusals (403) rather than
    /// validation errors: a device token naming a sensor it does not own.
    fn is_device(&self) -> bool {
        false
    }
}
