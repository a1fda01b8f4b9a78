//! The rule-chain document of API.md, as users write it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A rule chain: filters ANDed together, transforms, actions, and an optional schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainSpec {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub nodes: Vec<Node>,
    /// When the actions run: as the chain becomes active (`change`, the default), or on every
    /// tick in which a value it read changed while it stays active (`every`).
    #[serde(default)]
    pub on: Trigger,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Box<Schedule>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    #[default]
    Change,
    Every,
}

/// A scheduled chain evaluates its condition at each tick of `cron` (with seconds) in
/// `timezone`, and fires if it holds; readings alone do not fire it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub cron: String,
    #[serde(default = "utc")]
    pub timezone: String,
}

fn utc() -> String {
    "UTC".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Node {
    /// `condition` is a SQL expression; bare variables belong to `sensor`.
    Filter { sensor: String, condition: String },
    /// Each entry computes a field from the chain's values when it fires.
    Transform { set: BTreeMap<String, String> },
    Action {
        action: ActionKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        // The optional parts are boxed so that every node (filters too) stays small: a chain
        // lives in memory as long as it is registered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<Box<StateSpec>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        command: Option<Box<serde_json::Value>>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    Notify,
    Command,
}

/// The device state a `notify` action sets while the chain is active, and `clear` after.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpec {
    pub name: String,
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear: Option<String>,
}

impl ChainSpec {
    /// The device a firing of this chain is about: the first action's device, else the first
    /// filter's sensor.
    pub fn device(&self) -> &str {
        let action_device = self.nodes.iter().find_map(|n| match n {
            Node::Action {
                device: Some(d), ..
            } => Some(d.as_str()),
            _ => None,
        });
        let sensor = || {
            self.nodes.iter().find_map(|n| match n {
                Node::Filter { sensor, .. } => Some(sensor.as_str()),
                _ => None,
            })
        };
        action_device.or_else(sensor).unwrap_or_default()
    }
}
