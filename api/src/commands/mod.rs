//! Device commands: made durable, sent over MQTT, acknowledged, retried, audited.
//!
//! `POST /api/v1/devices/{id}/commands` validates the action ([`check_action`]), writes the
//! command to the [`journal`] and only then answers `202 {"commandId"}`: from that moment it
//! survives a crash. The dispatcher ([`Commands::run`]) asks the [`book`] what is due (each
//! device's commands go one at a time, in order; an unacknowledged one is sent again after the
//! ack timeout, at most `max_attempts` times, then `timeout`), journals the attempt, then
//! publishes `{"commandId", "action", "value"}` on `aemos/devices/{id}/commands` (QoS 1). The
//! device answers on `aemos/devices/{id}/acks` with `{"commandId", "status": "ok"|"error"}`;
//! an ack for an unknown, closed or other device's command is counted and ignored. A command
//! to a device that is offline is accepted and queued: it goes out (and its attempts run) as
//! for any device, so a device that comes back within its attempts gets it, and the audit log
//! says `timeout` otherwise. Restarts resume: the journal's open commands queue again with
//! their attempts and send times.

pub mod book;
pub mod journal;
pub mod preclean;
pub mod rule;
pub mod schedule;
pub mod scheduler;
mod table;

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aemos_clock::Clock;
use aemos_ingest::mqtt::{CommandAck, CommandLink};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

pub use book::{Book, Command, Settings, Source, Status, Timing};
pub use journal::Journal;
pub use table::commands_snapshot;

/// Closed commands are kept this long (seed 003 NFR7: 30 days of command history).
pub const RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The actions a device understands, with their values normalized: `setFanSpeed` (an integer
/// 0 to 5), `setPower` (`true`/`false` or `"on"`/`"off"`, stored as a boolean), `turnOn` and
/// `turnOff` (no value).
pub fn check_action(action: &str, value: &Value) -> Result<Value, String> {
    match action {
        "setFanSpeed" => match value.as_u64() {
            Some(speed @ 0..=5) => Ok(json!(speed)),
            _ => Err(format!(
                "`value`: setFanSpeed takes an integer from 0 to 5, not {value}"
            )),
        },
        "setPower" => match value {
            Value::Bool(on) => Ok(json!(on)),
            Value::String(s) if s == "on" => Ok(json!(true)),
            Value::String(s) if s == "off" => Ok(json!(false)),
            other => Err(format!(
                "`value`: setPower takes true, false, \"on\" or \"off\", not {other}"
            )),
        },
        "turnOn" | "turnOff" => match value {
            Value::Null => Ok(Value::Null),
            other => Err(format!("`value`: {action} takes no value, not {other}")),
        },
        other => Err(format!(
            "`action`: unknown action {other:?} (setFanSpeed, setPower, turnOn, turnOff)"
        )),
    }
}

#[derive(Debug, Clone)]
pub struct CommandMetrics {
    pub created: IntCounterVec,
    pub sent: IntCounter,
    pub closed: IntCounterVec,
    pub ignored_acks: IntCounterVec,
    /// From the API call (or firing) to the device's ack.
    pub ack_seconds: Histogram,
}

impl CommandMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let created = IntCounterVec::new(
            Opts::new("commands_created_total", "Commands accepted, by source"),
            &["source"],
        )?;
        let sent = IntCounter::new(
            "commands_sent_total",
            "Command publishes to devices (attempts)",
        )?;
        let closed = IntCounterVec::new(
            Opts::new("commands_closed_total", "Commands closed, by final status"),
            &["status"],
        )?;
        let ignored_acks = IntCounterVec::new(
            Opts::new(
                "command_acks_ignored_total",
                "Acks that changed nothing, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(created.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(closed.clone()))?;
        let ack_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "command_ack_seconds",
                "Time from a command's creation to its ack",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 5.0, 30.0, 120.0,
            ]),
        )?;
        registry.register(Box::new(ignored_acks.clone()))?;
        registry.register(Box::new(ack_seconds.clone()))?;
        Ok(Self {
            created,
            sent,
            closed,
            ignored_acks,
            ack_seconds,
        })
    }
}

pub struct CommandsArgs<'a> {
    /// `{data-dir}/commands`.
    pub dir: &'a Path,
    pub timing: Timing,
    pub clock: Arc<dyn Clock>,
    pub metrics: CommandMetrics,
}

/// What a new command is made of.
#[derive(Debug, Clone)]
pub struct NewCommand<'a> {
    pub device: &'a str,
    pub action: &'a str,
    pub value: &'a Value,
    pub source: Source,
    /// The chain whose firing makes it.
    pub chain: Option<String>,
}

/// The command service: the book behind a lock, the journal, and the way out.
pub struct Commands {
    book: Mutex<Book>,
    journal: Journal,
    clock: Arc<dyn Clock>,
    metrics: CommandMetrics,
    wake: Notify,
    /// Lines appended since the last compaction.
    appended: AtomicUsize,
    next_id: AtomicU64,
    /// Held while a firing's commands are made: the start's reconciliation and the live
    /// hand-over may carry the same firing, and each id must be made once.
    making_rules: tokio::sync::Mutex<()>,
    /// Held for reading from a new command's journal line until it is in the book, and for
    /// writing while a compaction takes its snapshot.
    compaction: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

fn lock(book: &Mutex<Book>) -> std::sync::MutexGuard<'_, Book> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

impl Commands {
    pub fn open(args: CommandsArgs<'_>) -> std::io::Result<Arc<Self>> {
        let now = args.clock.now_ms();
        let (journal, commands) = Journal::open(args.dir, now - RETENTION.as_millis() as i64)?;
        let open = commands.iter().filter(|c| c.status.is_open()).count();
        if !commands.is_empty() {
            info!(commands = commands.len(), open, "command journal replayed");
        }
        let mut book = Book::new(args.timing);
        book.restore(commands);
        Ok(Arc::new(Self {
            book: Mutex::new(book),
            journal,
            clock: args.clock,
            metrics: args.metrics,
            wake: Notify::new(),
            appended: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            making_rules: tokio::sync::Mutex::new(()),
            compaction: tokio::sync::RwLock::new(()),
        }))
    }

    /// A new id: time-ordered and unique within this process and across restarts.
    fn new_id(&self, now: i64) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let salt: u32 = rand::random();
        format!("cmd-{now:013x}-{n:06x}-{salt:08x}")
    }

    /// Makes a command durable and queues it; returns it once it survives a crash.
    pub async fn create(&self, new: NewCommand<'_>) -> Result<Command, CreateError> {
        let now = self.clock.now_ms();
        let id = self.new_id(now);
        self.create_with_id(id, now, new).await
    }

    /// [`create`](Self::create) with a given id and time; an id already known is the command
    /// already made, returned as it is.
    pub(crate) async fn create_with_id(
        &self,
        id: String,
        now: i64,
        new: NewCommand<'_>,
    ) -> Result<Command, CreateError> {
        let NewCommand {
            device,
            action,
            value,
            source,
            chain,
        } = new;
        let value = check_action(action, value).map_err(CreateError::Invalid)?;
        if let Some(known) = self.get(&id) {
            return Ok(known);
        }
        let command = Command {
            command_id: id,
            device: device.to_owned(),
            action: action.to_owned(),
            value,
            source,
            chain,
            status: Status::Pending,
            attempts: 0,
            created_at: now,
            sent_at: None,
            acknowledged_at: None,
            response: None,
        };
        let superseded = {
            // Journaled and in the book before a compaction can take its snapshot.
            let _gate = self.compaction.read().await;
            self.journal
                .append(std::slice::from_ref(&command))
                .await
                .map_err(CreateError::Journal)?;
            lock(&self.book).add(command.clone())
        };
        self.metrics
            .created
            .with_label_values(&[source_label(source)])
            .inc();
        self.record(&superseded).await;
        self.wake.notify_one();
        Ok(command)
    }

    /// The clock's time (the one clock of the server).
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn get(&self, id: &str) -> Option<Command> {
        lock(&self.book).get(id).cloned()
    }

    /// A device's audit log, newest first, with the total.
    pub fn history(&self, device: &str, offset: usize, limit: usize) -> (usize, Vec<Command>) {
        lock(&self.book).history(device, offset, limit)
    }

    /// The fan speed and power the device's acknowledged commands set last.
    pub fn settings(&self, device: &str) -> Settings {
        lock(&self.book).settings(device)
    }

    pub fn count(&self) -> usize {
        lock(&self.book).len()
    }

    pub fn all(&self) -> Vec<Command> {
        lock(&self.book).all().cloned().collect()
    }

    /// Journals changed records; closed ones are counted. A journal failure is logged: the
    /// state stays in memory and the next change of the command writes it again.
    async fn record(&self, changed: &[Command]) {
        if changed.is_empty() {
            return;
        }
        if let Err(e) = self.journal.append(changed).await {
            warn!(error = %e, "command journal append failed");
        }
        for c in changed.iter().filter(|c| !c.status.is_open()) {
            self.metrics
                .closed
                .with_label_values(&[c.status.as_str()])
                .inc();
        }
        let appended = self.appended.fetch_add(changed.len(), Ordering::Relaxed) + changed.len();
        let live = lock(&self.book).len();
        if appended > 4 * live + 100_000 {
            self.appended.store(0, Ordering::Relaxed);
            let before = self.clock.now_ms() - RETENTION.as_millis() as i64;
            // No new command between its journal line and the book (the gate), and the job
            // queued under the book's lock: every change the snapshot lacks is appended after
            // the compaction, to the new file.
            let _gate = self.compaction.write().await;
            let mut book = lock(&self.book);
            book.expire(before);
            if !self.journal.try_compact(book.all().cloned().collect()) {
                warn!("command journal busy: compaction put off");
            }
        }
    }

    /// Applies a device's ack to the book; the command it closes, to be journaled.
    fn ack(&self, ack: &CommandAck) -> Option<Command> {
        let ignore = |reason: &str, detail: &dyn std::fmt::Display| {
            self.metrics.ignored_acks.with_label_values(&[reason]).inc();
            info!(device = %ack.device, %detail, "command ack ignored");
        };
        let body: Value = match serde_json::from_slice(&ack.payload) {
            Ok(v) => v,
            Err(e) => {
                ignore("malformed", &e);
                return None;
            }
        };
        let Some(id) = body.get("commandId").and_then(Value::as_str) else {
            ignore("malformed", &"no `commandId` string");
            return None;
        };
        let ok = match body.get("status").and_then(Value::as_str) {
            Some("ok") => true,
            Some("error") => false,
            _ => {
                ignore("malformed", &"`status` must be \"ok\" or \"error\"");
                return None;
            }
        };
        let now = self.clock.now_ms();
        let outcome = lock(&self.book).ack(now, &ack.device, id, ok, body.clone());
        match outcome {
            Ok(done) => {
                let waited = (now - done.created_at).max(0) as f64 / 1000.0;
                self.metrics.ack_seconds.observe(waited);
                return Some(done);
            }
            Err(refusal @ book::AckRefusal::Unknown(_)) => ignore("unknown", &refusal),
            Err(refusal @ book::AckRefusal::OtherDevice { .. }) => ignore("other_device", &refusal),
            Err(refusal) => ignore("duplicate", &refusal),
        }
        None
    }

    /// Sends what is due: journaled first (with `acked`, the commands acks closed since the
    /// last dispatch, in the same fsync), then published.
    async fn dispatch(&self, link: &CommandLink, mut changed: Vec<Command>) {
        let now = self.clock.now_ms();
        let acked = changed.len();
        changed.extend(lock(&self.book).due(now));
        self.record(&changed).await;
        for c in changed[acked..].iter().filter(|c| c.status == Status::Sent) {
            let payload = json!({"commandId": c.command_id, "action": c.action, "value": c.value});
            self.metrics.sent.inc();
            // An error (the broker gone, the client's queue full) counts the attempt all the
            // same: the retry after the ack timeout sends it again. A publish the embedded
            // router was too busy to be told of waits in the link for `wake` (the run loop).
            if let Err(e) = link.send(&c.device, payload.to_string()) {
                warn!(command = %c.command_id, error = %e, "command publish failed");
            }
        }
    }

    /// The dispatcher: acks as they come, sends when something is due or new. Each turn is one
    /// journal write: the acks that came in while the last one was on its way to disk, and
    /// the sends they and the new commands made due (an ack frees its device's next command).
    pub async fn run(
        self: Arc<Self>,
        link: CommandLink,
        mut acks: mpsc::Receiver<CommandAck>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut acked = Vec::new();
        loop {
            self.dispatch(&link, std::mem::take(&mut acked)).await;
            let now = self.clock.now_ms();
            let mut wait = match lock(&self.book).next_deadline() {
                Some(at) => Duration::from_millis(at.saturating_sub(now).clamp(0, 1000) as u64),
                None => Duration::from_secs(1),
            };
            // Publishes left in the link's buffer by a full router channel: woken again within
            // a millisecond, not by the next send (there may be none until their retries).
            if link.wake() {
                wait = wait.min(Duration::from_millis(1));
            }
            tokio::select! {
                ack = acks.recv() => match ack {
                    Some(ack) => {
                        // Every ack waiting is applied, then journaled by the next dispatch.
                        acked.extend(self.ack(&ack));
                        while let Ok(more) = acks.try_recv() {
                            acked.extend(self.ack(&more));
                        }
                    }
                    None => return,
                },
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn source_label(source: Source) -> &'static str {
    match source {
        Source::Api => "api",
        Source::Rule => "rule",
        Source::Schedule => "schedule",
        Source::Preclean => "preclean",
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{0}")]
    Invalid(String),
    #[error("the command journal failed: {0}")]
    Journal(std::io::Error),
}

/// A command as the API shows it: times as RFC 3339.
pub fn to_json(c: &Command) -> Value {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    json!({
        "commandId": c.command_id,
        "device": c.device,
        "action": c.action,
        "value": c.value,
        "source": source_label(c.source),
        "chain": c.chain,
        "status": c.status.as_str(),
        "attempts": c.attempts,
        "createdAt": time(Some(c.created_at)),
        "sentAt": time(c.sent_at),
        "acknowledgedAt": time(c.acknowledged_at),
        "response": c.response,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_their_values() {
        assert_eq!(check_action("setFanSpeed", &json!(5)), Ok(json!(5)));
        assert!(check_action("setFanSpeed", &json!(6))
            .unwrap_err()
            .starts_with("`value`"));
        assert!(check_action("setFanSpeed", &json!(2.5)).is_err());
        assert!(check_action("setFanSpeed", &json!("3")).is_err());
        assert_eq!(check_action("setPower", &json!("off")), Ok(json!(false)));
        assert_eq!(check_action("turnOn", &Value::Null), Ok(Value::Null));
        assert!(check_action("turnOn", &json!(1)).is_err());
        assert!(check_action("selfDestruct", &json!(1))
            .unwrap_err()
            .starts_with("`action`"));
    }
}
