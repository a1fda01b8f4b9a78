//! Whether a device is online, computed by the rule engine.
//!
//! Every reading made durable also tells the engine that its device was seen: the feed adds one
//! reading of the pseudo-sensor `$device:{id}` (variable `seen`) per run of the device's
//! readings in each group commit ([`seen_sensor`]; no user sensor can be named so, `$` is
//! outside the sensor charset). Each registered device is watched by the engine
//! ([`aemos_engine::Engine::watch`], [`watch_spec`]): offline while that pseudo-sensor has sent
//! nothing for the device's `inactivityTimeout`, whichever of its sensors (a gateway may have
//! thousands). The engine keeps one row and one window count per device, with no chain, and
//! moves every window at its tick, so an idle device costs no timer and no work per reading of
//! the others. Its changes go through the firing log as records of the system chain id
//! `$presence:{id}` ([`record`]: recorded, reconciled at restart) and become `device-offline`
//! and `device-online` notifications on every channel. A device that has never sent anything
//! is offline from its registration, silently ([`presumed_active`]): its first notification is
//! `device-online`.
//!
//! Chain ids starting with `$` are reserved for these records: the API refuses them from users.

use aemos_engine::PresenceSpec;
use serde_json::Map;

use super::Device;
use crate::notify::NotifyTarget;
use crate::rules::FiringRecord;

/// What starts the id of every system chain.
pub const SYSTEM_PREFIX: char = '$';
const PRESENCE: &str = "$presence:";
/// The state name of presence notifications.
pub const CONNECTIVITY: &str = "connectivity";
pub const DEVICE_ONLINE: &str = "device-online";
pub const DEVICE_OFFLINE: &str = "device-offline";

/// The pseudo-sensor whose readings say that a device was seen.
pub const SEEN_PREFIX: &str = "$device:";
/// The variable of those readings.
pub const SEEN_VARIABLE: &str = "seen";

pub fn seen_sensor(device: &str) -> String {
    format!("{SEEN_PREFIX}{device}")
}

pub fn chain_id(device: &str) -> String {
    format!("{PRESENCE}{device}")
}

/// Whether a chain id is a system chain's (not the user's to make).
pub fn is_system(chain: &str) -> bool {
    chain.starts_with(SYSTEM_PREFIX)
}

/// The device whose presence a chain id records, if it is a presence chain's.
pub fn device_of(chain: &str) -> Option<&str> {
    chain.strip_prefix(PRESENCE)
}

/// A chain's state before its first recorded firing: inactive, except a presence chain's, as a
/// device never seen is offline. A first firing that says what was presumed is not recorded,
/// so a registered device that never sends costs no firing, notification or retained message.
pub fn presumed_active(chain: &str) -> bool {
    device_of(chain).is_some()
}

/// The notification type of a change of state announced by a chain's firing: `device-online`
/// or `device-offline` for presence chains, `None` (a device-state change) for the others.
pub fn notification_kind(chain: &str, new_value: &str) -> Option<&'static str> {
    device_of(chain)?;
    Some(if new_value == "online" {
        DEVICE_ONLINE
    } else {
        DEVICE_OFFLINE
    })
}

/// What the engine watches for a device.
pub fn watch_spec(device: &Device) -> PresenceSpec {
    PresenceSpec {
        device: device.id.to_string(),
        sensor: seen_sensor(&device.id),
        timeout_ms: device.inactivity_timeout.as_millis().min(i64::MAX as u128) as i64,
    }
}

/// The record of a device's change of presence: `offline` is the presence chain's active
/// state; `kind` is `activated`, `cleared` or their `restored-` variants.
pub fn record(device: &str, kind: &str, offline: bool, time: i64) -> FiringRecord {
    let (new, old) = if offline {
        ("offline", "online")
    } else {
        ("online", "offline")
    };
    FiringRecord {
        time,
        chain: chain_id(device),
        device: device.to_owned(),
        kind: kind.to_owned(),
        active: offline,
        values: Map::new(),
        fields: Map::new(),
        notify: vec![NotifyTarget {
            device: device.to_owned(),
            state: CONNECTIVITY.to_owned(),
            new: new.to_owned(),
            old: old.to_owned(),
        }],
        commands: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_chains_and_their_notifications() {
        assert_eq!(device_of(&chain_id("p-1")), Some("p-1"));
        assert!(is_system(&chain_id("p-1")));
        assert_eq!(device_of("p-1"), None);
        assert_eq!(
            notification_kind(&chain_id("p"), "online"),
            Some(DEVICE_ONLINE)
        );
        assert_eq!(
            notification_kind(&chain_id("p"), "offline"),
            Some(DEVICE_OFFLINE)
        );
        assert_eq!(notification_kind("high-temp", "online"), None);
        let offline = record("p", "activated", true, 5);
        assert_eq!(
            (offline.chain.as_str(), offline.active),
            ("$presence:p", true)
        );
        assert_eq!(
            (
                offline.notify[0].new.as_str(),
                offline.notify[0].old.as_str()
            ),
            ("offline", "online")
        );
        let online = record("p", "cleared", false, 6);
        assert_eq!(online.notify[0].state, CONNECTIVITY);
        assert_eq!(online.notify[0].new, "online");
    }
}
