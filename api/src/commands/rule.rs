//! Commands of rule chains: a chain's `command` actions, sent through the command path with
//! `source: rule` and the chain's id each time the chain fires active (`activated`, and
//! `repeated` or `scheduled` for `"on": "every"` and schedules); a chain that clears sends
//! nothing.
//!
//! Like notifications, they are derived from the firing log: each durable firing record names
//! the commands it makes ([`CommandTarget`]), and each gets an id made of the chain, the
//! firing's time and the action's place in the chain, so making it twice is making it once.
//! The firing writer hands records to [`Commands::create_from_firing`] once they are durable;
//! at start the firing log's recent records are handed over again ([`Commands::reconcile`]),
//! which makes the commands of firings recorded just before a crash and skips the rest: a
//! firing never gives its command twice, across any restart.

use aemos_engine::{ActionKind, ChainSpec, Node};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

use super::{check_action, Commands, CreateError, NewCommand, Source};
use crate::rules::FiringRecord;

/// One command a firing makes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandTarget {
    pub device: String,
    pub action: String,
    #[serde(default)]
    pub value: Value,
}

/// The commands of a chain's firing: none unless it fires active.
pub fn command_targets(spec: &ChainSpec, active: bool) -> Vec<CommandTarget> {
    if !active {
        return Vec::new();
    }
    spec.nodes
        .iter()
        .filter_map(|node| match node {
            Node::Action {
                action: ActionKind::Command,
                device,
                command: Some(command),
                ..
            } => Some(CommandTarget {
                device: device.as_deref().unwrap_or(spec.device()).to_owned(),
                action: command.get("action")?.as_str()?.to_owned(),
                value: command.get("value").cloned().unwrap_or(Value::Null),
            }),
            _ => None,
        })
        .collect()
}

/// Why a chain's command actions are refused at registration: `nodes[i].command` names an
/// action a device does not understand, or a value outside its range.
pub fn check_chain_commands(spec: &ChainSpec) -> Result<(), String> {
    for (i, node) in spec.nodes.iter().enumerate() {
        if let Node::Action {
            action: ActionKind::Command,
            command: Some(command),
            ..
        } = node
        {
            let action = command
                .get("action")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("nodes[{i}].command: needs an \"action\" string"))?;
            let value = command.get("value").cloned().unwrap_or(Value::Null);
            check_action(action, &value).map_err(|e| format!("nodes[{i}].command: {e}"))?;
        }
    }
    Ok(())
}

impl Commands {
    /// Makes the commands of a durable firing, each once whatever how often it is called.
    pub async fn create_from_firing(&self, record: &FiringRecord) {
        let _one_at_a_time = self.making_rules.lock().await;
        for (i, target) in record.commands.iter().enumerate() {
            let id = format!("rule-{}-{}-{i}", record.chain, record.time);
            let made = self
                .create_with_id(
                    id,
                    record.time,
                    NewCommand {
                        device: &target.device,
                        action: &target.action,
                        value: &target.value,
                        source: Source::Rule,
                        chain: Some(record.chain.clone()),
                    },
                )
                .await;
            if let Err(e @ (CreateError::Invalid(_) | CreateError::Journal(_))) = made {
                warn!(chain = %record.chain, error = %e, "a rule's command was not made");
            }
        }
    }

    /// Hands the firing log's records over again (at start): the commands of firings within
    /// the retention that the journal does not hold are made now.
    pub async fn reconcile(&self, records: &[FiringRecord]) -> usize {
        let since = self.clock.now_ms() - super::RETENTION.as_millis() as i64;
        let before = self.count();
        for r in records
            .iter()
            .filter(|r| !r.commands.is_empty() && r.time >= since)
        {
            self.create_from_firing(r).await;
        }
        self.count() - before
    }
}
