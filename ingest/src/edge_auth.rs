//! What the device edge (the MQTT broker and the CoAP server) asks of the identity layer above
//! it. The API crate implements [`EdgeAuthorizer`] over its device registry; the servers here
//! never see the registry itself.
//!
//! Without an authorizer (tests of the edge alone) everything is open, except that nobody but
//! aemos may publish to a `notifications` or `commands` topic.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::SensorScope;

/// Why a request from the edge is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeRefusal {
    /// No credential, or one that is not valid (CoAP 4.01, MQTT bad credentials).
    Unauthorized(String),
    /// A valid credential that may not do this (CoAP 4.03, MQTT not authorized).
    Forbidden(String),
    /// Over its rate limit (CoAP 4.29, MQTT message rate too high).
    RateLimited(Duration),
}

impl std::fmt::Display for EdgeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unauthorized(r) | Self::Forbidden(r) => f.write_str(r),
            Self::RateLimited(wait) => write!(
                f,
                "rate limit exceeded; retry in {} ms",
                wait.as_millis().max(1)
            ),
        }
    }
}

/// The device a write comes from, and the sensors it may write.
#[derive(Debug, Clone)]
pub struct EdgeDevice {
    pub id: String,
    pub scope: Option<Arc<dyn SensorScope>>,
}

/// A topic's device and kind: `aemos/devices/{device}/{kind}`.
pub fn device_topic(topic: &str) -> Option<(&str, &str)> {
    let rest = topic.strip_prefix("aemos/devices/")?;
    let (device, kind) = rest.split_once('/')?;
    (!device.is_empty() && !kind.contains('/')).then_some((device, kind))
}

/// Topics only aemos publishes to.
pub fn is_server_topic(topic: &str) -> bool {
    matches!(device_topic(topic), Some((_, "notifications" | "commands")))
}

pub trait EdgeAuthorizer: Send + Sync + Debug {
    /// Whether an MQTT CONNECT must carry a username and password (`production` mode).
    fn mqtt_requires_login(&self) -> bool;

    /// MQTT CONNECT: whether the client may connect with these credentials.
    fn mqtt_connect(&self, client_id: &str, username: &str, password: &str) -> bool;

    /// Any packet of a connected client: whether its session still stands (its token not
    /// rotated, its device not removed).
    fn mqtt_session(&self, client_id: &str) -> Result<(), EdgeRefusal>;

    /// One PUBLISH of a connected client (`Ok`: route it); also the Will of a CONNECT.
    fn mqtt_publish(&self, client_id: &str, topic: &str) -> Result<(), EdgeRefusal>;

    /// One filter of a SUBSCRIBE of a connected client.
    fn mqtt_subscribe(&self, client_id: &str, filter: &str) -> Result<(), EdgeRefusal>;

    /// The scope of readings published on the telemetry topic of `device` (already allowed
    /// by [`mqtt_publish`](Self::mqtt_publish)).
    fn mqtt_scope(&self, device: &str) -> Option<Arc<dyn SensorScope>>;

    /// A CoAP telemetry POST: with `token`, its device (which must be `device` when the path
    /// names one); without, the path's device where that is allowed.
    fn coap_write(
        &self,
        token: Option<&str>,
        device: Option<&str>,
        source: SocketAddr,
    ) -> Result<EdgeDevice, EdgeRefusal>;

    /// A CoAP observation or read of a device's notifications.
    fn coap_read(
        &self,
        token: Option<&str>,
        device: &str,
        source: SocketAddr,
    ) -> Result<(), EdgeRefusal>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics() {
        assert_eq!(
            device_topic("aemos/devices/d-1/telemetry"),
            Some(("d-1", "telemetry"))
        );
        assert_eq!(device_topic("aemos/devices//telemetry"), None);
        assert_eq!(device_topic("aemos/devices/a/b/c"), None);
        assert!(is_server_topic("aemos/devices/a/notifications"));
        assert!(is_server_topic("aemos/devices/a/commands"));
        assert!(!is_server_topic("aemos/devices/a/telemetry"));
        assert!(!is_server_topic("aemos/devices/a/notifications/x"));
    }
}
