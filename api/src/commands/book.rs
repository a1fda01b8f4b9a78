//! The commands' state machine, without I/O: every method takes the time it runs at, so tests
//! drive retries and timeouts without waiting.
//!
//! Each device has a queue of open commands (`pending` or `sent`), sent one at a time in the
//! order they were made: the head is sent, and the next waits for its ack, its failure or its
//! timeout. A sent command unacknowledged for the ack timeout is sent again, at most
//! `max_attempts` times in all, then `timeout`. A new command for the same action supersedes
//! an older one of the device that is still `pending` (never sent): that one ends as
//! `superseded`, because the device would be told to set a value only to be told another at
//! once. A command already sent is not superseded: it was delivered and is being answered.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Api,
    Rule,
    Schedule,
    Preclean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Sent,
    Acknowledged,
    Failed,
    Timeout,
    Superseded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Sent => "sent",
            Status::Acknowledged => "acknowledged",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
            Status::Superseded => "superseded",
        }
    }

    pub fn is_open(self) -> bool {
        matches!(self, Status::Pending | Status::Sent)
    }
}

/// One command as the journal keeps it (each change writes the whole record; the last one
/// of an id wins on replay). Times are epoch milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Command {
    pub command_id: String,
    pub device: String,
    pub action: String,
    pub value: Value,
    pub source: Source,
    /// The chain whose firing made it (`source: rule`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<String>,
    pub status: Status,
    pub attempts: u32,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<i64>,
    /// The device's ack, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<Value>,
}

/// A device's settings as its acknowledged commands left them (`None`: never set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    pub fan_speed: Option<u64>,
    pub power: Option<bool>,
}

/// Why an ack changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckRefusal {
    #[error("unknown commandId {0:?}")]
    Unknown(String),
    #[error("command {id:?} is device {owner:?}'s, not {device:?}'s")]
    OtherDevice {
        id: String,
        owner: String,
        device: String,
    },
    #[error("command {id:?} is already {status}")]
    Closed { id: String, status: &'static str },
    #[error("command {0:?} was not sent yet")]
    NotSent(String),
}

#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub ack_timeout_ms: i64,
    pub max_attempts: u32,
}

/// Every command known, and each device's open ones in order.
#[derive(Debug)]
pub struct Book {
    timing: Timing,
    commands: HashMap<String, Command>,
    /// Every command of a device, oldest first (the audit log).
    history: HashMap<String, Vec<String>>,
    open: HashMap<String, VecDeque<String>>,
    /// Devices whose queue's head may be pending (new commands, after an ack or a timeout).
    ready: HashSet<String>,
    /// When each sent command's ack is due, by command id: only what is due is looked at, so
    /// a dispatch costs what changes, not the number of devices waiting for an ack.
    deadlines: BTreeSet<(i64, String)>,
}

impl Book {
    pub fn new(timing: Timing) -> Self {
        Self {
            timing,
            commands: HashMap::new(),
            history: HashMap::new(),
            open: HashMap::new(),
            ready: HashSet::new(),
            deadlines: BTreeSet::new(),
        }
    }

    /// Loads replayed commands, oldest first; open ones queue again in that order and resume
    /// their retries where they were.
    pub fn restore(&mut self, commands: Vec<Command>) {
        for c in commands {
            self.insert(c);
        }
    }

    fn insert(&mut self, c: Command) {
        self.history
            .entry(c.device.clone())
            .or_default()
            .push(c.command_id.clone());
        if c.status.is_open() {
            self.open
                .entry(c.device.clone())
                .or_default()
                .push_back(c.command_id.clone());
            self.ready.insert(c.device.clone());
            if let (Status::Sent, Some(t)) = (c.status, c.sent_at) {
                self.deadlines
                    .insert((t + self.timing.ack_timeout_ms, c.command_id.clone()));
            }
        }
        self.commands.insert(c.command_id.clone(), c);
    }

    pub fn get(&self, id: &str) -> Option<&Command> {
        self.commands.get(id)
    }

    pub fn len(&self) -> usize {
        self.commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Every command, in no order (the `commands` table).
    pub fn all(&self) -> impl Iterator<Item = &Command> {
        self.commands.values()
    }

    /// A device's commands, newest first.
    pub fn history(&self, device: &str, offset: usize, limit: usize) -> (usize, Vec<Command>) {
        let Some(ids) = self.history.get(device) else {
            return (0, Vec::new());
        };
        let page = ids
            .iter()
            .rev()
            .skip(offset)
            .take(limit)
            .filter_map(|id| self.commands.get(id).cloned())
            .collect();
        (ids.len(), page)
    }

    /// What the device's acknowledged commands set last: its fan speed and its power.
    pub fn settings(&self, device: &str) -> Settings {
        let mut settings = Settings::default();
        let acked = self
            .history
            .get(device)
            .into_iter()
            .flatten()
            .rev()
            .filter_map(|id| self.commands.get(id))
            .filter(|c| c.status == Status::Acknowledged);
        for c in acked {
            match c.action.as_str() {
                "setFanSpeed" if settings.fan_speed.is_none() => {
                    settings.fan_speed = c.value.as_u64();
                }
                "setPower" if settings.power.is_none() => settings.power = c.value.as_bool(),
                "turnOn" if settings.power.is_none() => settings.power = Some(true),
                "turnOff" if settings.power.is_none() => settings.power = Some(false),
                _ => {}
            }
            if settings.fan_speed.is_some() && settings.power.is_some() {
                break;
            }
        }
        settings
    }

    /// Adds a new command (already durable); returns the records it changed: the older pending
    /// commands of the same action it supersedes.
    pub fn add(&mut self, command: Command) -> Vec<Command> {
        let mut changed = Vec::new();
        if self.commands.contains_key(&command.command_id) {
            return changed;
        }
        if let Some(queue) = self.open.get_mut(&command.device) {
            let commands = &mut self.commands;
            queue.retain(|id| {
                let Some(c) = commands.get_mut(id) else {
                    return false;
                };
                if c.status == Status::Pending && c.action == command.action {
                    c.status = Status::Superseded;
                    changed.push(c.clone());
                    false
                } else {
                    true
                }
            });
        }
        self.insert(command);
        changed
    }

    /// Sends what is due at `now`: the pending head of each ready device, and the commands
    /// whose ack is overdue (sent again, or `timeout` when their attempts are spent, and then
    /// the device's next). Returns the records changed; those `sent` are to be published.
    pub fn due(&mut self, now: i64) -> Vec<Command> {
        let mut changed = Vec::new();
        while let Some((at, _)) = self.deadlines.first() {
            if *at > now {
                break;
            }
            let Some((at, id)) = self.deadlines.pop_first() else {
                break;
            };
            let timeout = self.timing.ack_timeout_ms;
            let Some(c) = self.commands.get_mut(&id) else {
                continue;
            };
            // A deadline left by an earlier attempt, or by a command answered since.
            if c.status != Status::Sent || c.sent_at.map(|t| t + timeout) != Some(at) {
                continue;
            }
            if c.attempts < self.timing.max_attempts {
                c.attempts += 1;
                c.sent_at = Some(now);
                self.deadlines.insert((now + timeout, id));
            } else {
                c.status = Status::Timeout;
                let device = c.device.clone();
                if let Some(queue) = self.open.get_mut(&device) {
                    queue.retain(|q| *q != id);
                }
                self.ready.insert(device);
            }
            changed.push(c.clone());
        }
        for device in std::mem::take(&mut self.ready) {
            let Some(queue) = self.open.get_mut(&device) else {
                continue;
            };
            let Some(c) = queue.front().and_then(|id| self.commands.get_mut(id)) else {
                self.open.remove(&device);
                continue;
            };
            if c.status == Status::Pending {
                c.status = Status::Sent;
                c.attempts += 1;
                c.sent_at = Some(now);
                self.deadlines
                    .insert((now + self.timing.ack_timeout_ms, c.command_id.clone()));
                changed.push(c.clone());
            }
        }
        changed
    }

    /// The earliest time [`due`](Self::due) has something to do, if any.
    pub fn next_deadline(&self) -> Option<i64> {
        if !self.ready.is_empty() {
            return Some(i64::MIN);
        }
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// A device's ack: `ok` acknowledges, anything else fails the command. The command leaves
    /// its device's queue and the next one can go.
    pub fn ack(
        &mut self,
        now: i64,
        device: &str,
        id: &str,
        ok: bool,
        response: Value,
    ) -> Result<Command, AckRefusal> {
        let c = self
            .commands
            .get_mut(id)
            .ok_or_else(|| AckRefusal::Unknown(id.to_owned()))?;
        if c.device != device {
            return Err(AckRefusal::OtherDevice {
                id: id.to_owned(),
                owner: c.device.clone(),
                device: device.to_owned(),
            });
        }
        match c.status {
            Status::Sent => {}
            Status::Pending => return Err(AckRefusal::NotSent(id.to_owned())),
            closed => {
                return Err(AckRefusal::Closed {
                    id: id.to_owned(),
                    status: closed.as_str(),
                })
            }
        }
        c.status = if ok {
            Status::Acknowledged
        } else {
            Status::Failed
        };
        c.acknowledged_at = Some(now);
        c.response = Some(response);
        let done = c.clone();
        if let Some(queue) = self.open.get_mut(device) {
            queue.retain(|q| q != id);
        }
        self.ready.insert(device.to_owned());
        Ok(done)
    }

    /// Forgets closed commands created before `before` (retention); returns how many.
    pub fn expire(&mut self, before: i64) -> usize {
        let gone: HashSet<String> = self
            .commands
            .values()
            .filter(|c| !c.status.is_open() && c.created_at < before)
            .map(|c| c.command_id.clone())
            .collect();
        if gone.is_empty() {
            return 0;
        }
        self.commands.retain(|id, _| !gone.contains(id));
        for ids in self.history.values_mut() {
            ids.retain(|id| !gone.contains(id));
        }
        self.history.retain(|_, ids| !ids.is_empty());
        gone.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TIMING: Timing = Timing {
        ack_timeout_ms: 30_000,
        max_attempts: 3,
    };

    fn command(id: &str, device: &str, action: &str, at: i64) -> Command {
        Command {
            command_id: id.into(),
            device: device.into(),
            action: action.into(),
            value: json!(1),
            source: Source::Api,
            chain: None,
            status: Status::Pending,
            attempts: 0,
            created_at: at,
            sent_at: None,
            acknowledged_at: None,
            response: None,
        }
    }

    fn ids(changed: &[Command]) -> Vec<(&str, Status, u32)> {
        changed
            .iter()
            .map(|c| (c.command_id.as_str(), c.status, c.attempts))
            .collect()
    }

    #[test]
    fn one_at_a_time_per_device_in_order() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setFanSpeed", 0));
        book.add(command("b", "d", "setPower", 0));
        book.add(command("c", "e", "setPower", 0));
        let due = book.due(0);
        let mut sent = ids(&due);
        sent.sort();
        assert_eq!(
            sent,
            [("a", Status::Sent, 1), ("c", Status::Sent, 1)],
            "b waits for a"
        );
        assert!(book.due(1).is_empty());
        book.ack(5, "d", "a", true, json!({"status": "ok"}))
            .unwrap();
        assert_eq!(ids(&book.due(6)), [("b", Status::Sent, 1)]);
        assert_eq!(book.get("a").unwrap().acknowledged_at, Some(5));
    }

    #[test]
    fn settings_come_from_the_newest_acknowledged_commands() {
        let mut book = Book::new(TIMING);
        assert_eq!(book.settings("d"), Settings::default());
        fn speed(book: &mut Book, id: &str, value: u64, at: i64) {
            let mut c = command(id, "d", "setFanSpeed", at);
            c.value = json!(value);
            book.add(c);
            book.due(at);
        }
        speed(&mut book, "a", 2, 0);
        book.ack(1, "d", "a", true, json!({})).unwrap();
        speed(&mut book, "b", 4, 2);
        book.ack(3, "d", "b", false, json!({})).unwrap();
        speed(&mut book, "c", 5, 4);
        // `b` failed and `c` is not acknowledged yet: the speed is still `a`'s.
        assert_eq!(book.settings("d").fan_speed, Some(2));
        book.add(command("off", "d", "turnOff", 5));
        book.ack(6, "d", "c", true, json!({})).unwrap();
        book.due(7);
        book.ack(8, "d", "off", true, json!({})).unwrap();
        assert_eq!(
            book.settings("d"),
            Settings {
                fan_speed: Some(5),
                power: Some(false)
            }
        );
    }

    #[test]
    fn resent_until_the_attempts_run_out_then_timeout() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setFanSpeed", 0));
        book.add(command("b", "d", "setPower", 0));
        assert_eq!(ids(&book.due(0)), [("a", Status::Sent, 1)]);
        assert!(book.due(29_999).is_empty());
        assert_eq!(book.next_deadline(), Some(30_000));
        assert_eq!(ids(&book.due(30_000)), [("a", Status::Sent, 2)]);
        assert_eq!(ids(&book.due(60_000)), [("a", Status::Sent, 3)]);
        assert_eq!(
            ids(&book.due(90_000)),
            [("a", Status::Timeout, 3), ("b", Status::Sent, 1)]
        );
        assert_eq!(
            book.ack(90_001, "d", "a", true, json!({})),
            Err(AckRefusal::Closed {
                id: "a".into(),
                status: "timeout"
            })
        );
    }

    #[test]
    fn restored_commands_resume_where_they_were() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setFanSpeed", 0));
        book.due(0);
        book.due(30_000);
        let saved: Vec<Command> = book.all().cloned().collect();
        let mut again = Book::new(TIMING);
        again.restore(saved);
        assert!(
            again.due(59_999).is_empty(),
            "the second attempt's wait goes on"
        );
        assert_eq!(ids(&again.due(60_000)), [("a", Status::Sent, 3)]);
    }

    #[test]
    fn a_newer_command_supersedes_an_unsent_one_of_the_same_action() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setFanSpeed", 0));
        book.due(0);
        book.add(command("b", "d", "setFanSpeed", 1));
        let superseded = book.add(command("c", "d", "setFanSpeed", 2));
        assert_eq!(ids(&superseded), [("b", Status::Superseded, 0)]);
        book.ack(3, "d", "a", false, json!({"status": "error"}))
            .unwrap();
        assert_eq!(book.get("a").unwrap().status, Status::Failed);
        assert_eq!(ids(&book.due(4)), [("c", Status::Sent, 1)]);
        let (total, page) = book.history("d", 0, 2);
        assert_eq!(total, 3);
        assert_eq!(
            page.iter()
                .map(|c| c.command_id.as_str())
                .collect::<Vec<_>>(),
            ["c", "b"],
            "newest first"
        );
    }

    #[test]
    fn an_answered_command_leaves_no_retry_behind() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setPower", 0));
        book.due(0);
        book.ack(10, "d", "a", true, json!({})).unwrap();
        assert!(book.due(30_000).is_empty());
        assert_eq!(book.next_deadline(), None, "nothing left to wake for");
    }

    #[test]
    fn acks_that_change_nothing() {
        let mut book = Book::new(TIMING);
        book.add(command("a", "d", "setFanSpeed", 0));
        assert_eq!(
            book.ack(0, "d", "a", true, json!({})),
            Err(AckRefusal::NotSent("a".into()))
        );
        book.due(0);
        assert!(matches!(
            book.ack(1, "e", "a", true, json!({})),
            Err(AckRefusal::OtherDevice { .. })
        ));
        assert_eq!(
            book.ack(1, "d", "zz", true, json!({})),
            Err(AckRefusal::Unknown("zz".into()))
        );
        book.ack(2, "d", "a", true, json!({})).unwrap();
        assert!(matches!(
            book.ack(3, "d", "a", true, json!({})),
            Err(AckRefusal::Closed { .. })
        ));
        assert_eq!(book.get("a").unwrap().acknowledged_at, Some(2));
    }

    #[test]
    fn retention_forgets_only_closed_commands() {
        let mut book = Book::new(TIMING);
        book.add(command("old", "d", "setPower", 0));
        book.add(command("open", "e", "setPower", 0));
        book.due(0);
        book.ack(1, "d", "old", true, json!({})).unwrap();
        assert_eq!(book.expire(10), 1);
        assert!(book.get("old").is_none());
        assert!(book.get("open").is_some());
        assert_eq!(book.history("d", 0, 10).0, 0);
    }
}
