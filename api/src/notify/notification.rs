//! Notification objects (API.md, Notifications) and what a firing notifies.

use aemos_engine::{ChainSpec, Node};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One device-state change a firing announces: a `notify` action of its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyTarget {
    pub device: String,
    pub state: String,
    pub new: String,
    pub old: String,
}

/// The notifications of a firing of `spec`: one per `notify` action.
///
/// A state with a value is set while the chain is active; its `clear` (if any) is notified
/// when the chain stops holding, and a state without `clear` is then silent. A `notify`
/// action without a state announces the chain itself (`active` / `inactive`). A firing that
/// repeats an active state (`"on": "every"`, schedules) has the same old and new value.
pub fn notify_targets(spec: &ChainSpec, active: bool, repeated: bool) -> Vec<NotifyTarget> {
    let chain_device = spec.device();
    spec.nodes
        .iter()
        .filter_map(|node| {
            let Node::Action {
                action: aemos_engine::ActionKind::Notify,
                device,
                state,
                ..
            } = node
            else {
                return None;
            };
            let device = device.as_deref().unwrap_or(chain_device).to_owned();
            let (name, on, off) = match state {
                Some(s) => (s.name.clone(), s.value.clone(), s.clear.clone()),
                None => (
                    spec.id.clone(),
                    "active".to_owned(),
                    Some("inactive".to_owned()),
                ),
            };
            let (new, old) = match (active, repeated) {
                (true, true) => (on.clone(), on),
                (true, false) => (on, off.unwrap_or_default()),
                (false, _) => (off?, on),
            };
            Some(NotifyTarget {
                device,
                state: name,
                new,
                old,
            })
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    pub state_name: String,
    pub new_value: String,
    pub old_value: String,
    pub values: Map<String, Value>,
}

/// What every channel delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    #[serde(rename = "type")]
    pub kind: String,
    pub device_uuid: String,
    pub rule_chain_id: String,
    pub metadata: Metadata,
    /// RFC 3339 with milliseconds, UTC.
    pub timestamp: String,
    pub seq: u64,
    /// Milliseconds since the epoch, for the `notifications` table.
    #[serde(skip)]
    pub time_ms: i64,
}

pub const DEVICE_STATE_CHANGE: &str = "device-state-change";

pub fn rfc3339_ms(time_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(time_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(state: &str) -> ChainSpec {
        serde_json::from_str(&format!(
            r#"{{"id": "c", "nodes": [
                {{"type": "filter", "sensor": "s", "condition": "t > 1"}},
                {{"type": "action", "action": "notify", "device": "d"{state}}},
                {{"type": "action", "action": "command", "device": "p", "command": {{"action": "x"}}}}
            ]}}"#
        ))
        .expect("valid chain")
    }

    #[test]
    fn states_with_and_without_clear() {
        let with = spec(r#", "state": {"name": "alert", "value": "warning", "clear": "normal"}"#);
        let on = notify_targets(&with, true, false);
        assert_eq!(on.len(), 1, "command actions notify nothing");
        assert_eq!(
            (on[0].new.as_str(), on[0].old.as_str()),
            ("warning", "normal")
        );
        let off = notify_targets(&with, false, false);
        assert_eq!(
            (off[0].new.as_str(), off[0].old.as_str()),
            ("normal", "warning")
        );
        let again = notify_targets(&with, true, true);
        assert_eq!(
            (again[0].new.as_str(), again[0].old.as_str()),
            ("warning", "warning")
        );

        let without = spec(r#", "state": {"name": "alert", "value": "warning"}"#);
        assert!(notify_targets(&without, false, false).is_empty());

        let bare = spec("");
        let on = notify_targets(&bare, true, false);
        assert_eq!(
            (
                on[0].state.as_str(),
                on[0].new.as_str(),
                on[0].device.as_str()
            ),
            ("c", "active", "d")
        );
    }
}
