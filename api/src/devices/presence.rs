//! Whether a device is online, computed by the rule engine.
//!
//! Every reading made durable also tells the engine that its device was seen: the feed adds one
//! reading of the pseudo-sensor `$device:{id}` (variable `seen`) per run of the device's
//! readings in each group commit ([`seen_sensor`]; no user sensor can be named so, `$` is
//! outside the sensor charset). Each registered device has a system chain, `$presence:{id}`,
//! with one filter, `no_data('{inactivityTimeout}')` on that pseudo-sensor: it is active, and
//! the device offline, while the device has sent nothing for that long, whichever of its
//! sensors (a gateway may have thousands). The engine keeps one window count per device and
//! moves every window at its tick, so an idle device costs no timer and no work per reading of
//! the others; its firings go through the firing log like any chain's (recorded, reconciled at
//! restart) and become `device-offline` and `device-online` notifications on every channel. A
//! device that has never sent anything is offline from its registration, silently
//! ([`presumed_active`]): its first notification is `device-online`.
//!
//! Chain ids starting with `$` are reserved for these chains: the API refuses them from users
//! and does not list them.

use aemos_engine::{ActionKind, ChainSpec, Node, StateSpec, Trigger};

use super::Device;

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

/// Whether a chain id is a system chain's (not the user's to make, list or remove).
pub fn is_system(chain: &str) -> bool {
    chain.starts_with(SYSTEM_PREFIX)
}

/// The device whose presence a chain computes, if it is a presence chain.
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

/// The presence chain of a device.
pub fn presence_chain(device: &Device) -> ChainSpec {
    let mut nodes = vec![Node::Filter {
        sensor: seen_sensor(&device.id),
        condition: format!("no_data('{}ms')", device.inactivity_timeout.as_millis()),
    }];
    nodes.push(Node::Action {
        action: ActionKind::Notify,
        device: Some(device.id.to_string()),
        state: Some(Box::new(StateSpec {
            name: CONNECTIVITY.to_owned(),
            value: "offline".to_owned(),
            clear: Some("online".to_owned()),
        })),
        command: None,
    });
    ChainSpec {
        id: chain_id(&device.id),
        name: format!("presence of {}", device.id),
        nodes,
        on: Trigger::Change,
        schedule: None,
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
    }
}
