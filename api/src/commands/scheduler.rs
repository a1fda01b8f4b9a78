//! The schedules of every device, stored beside the chains and devices on the object store
//! (`{prefix}/documents/schedules/{id}.json`) and run through the command path.
//!
//! [`Schedules::run`] reads the clock at least every second. For each enabled schedule it
//! looks at the current run ([`Schedule::current`]): while the run goes on, the device is
//! turned on at the schedule's speed (`turnOn`, then `setFanSpeed`); once it has ended, turned
//! off (`turnOff`), if this server turned it on. Each command's id is made of the schedule,
//! its version and the run's start, so a step made twice is made once, and a server that was
//! down at a start catches up when it comes back within the run. A schedule replaced or
//! removed during its run turns the device off at once; the new version then starts its own
//! run if it is going. The commands are the schedule's execution history.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aemos_storage::Storage;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::warn;

use super::schedule::{Occurrence, Schedule, ScheduleSpec};
use super::{to_json, Command, Commands, CreateError, NewCommand, Source};
use crate::notify::rfc3339_ms;

/// The document namespace of schedules.
pub const SCHEDULES: &str = "schedules";

/// The stored document: the spec and when this version was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleRecord {
    schedule: ScheduleSpec,
    created_at: i64,
    updated_at: i64,
}

#[derive(Debug)]
struct Entry {
    schedule: Schedule,
    created_at: i64,
    updated_at: i64,
}

impl Entry {
    /// The id of a step of a run of this version.
    fn step_id(&self, run: &Occurrence, step: &str) -> String {
        format!(
            "{}{}-{}-{step}",
            history_prefix(self.schedule.id()),
            self.updated_at,
            run.start
        )
    }
}

fn history_prefix(id: &str) -> String {
    format!("schedule-{id}-")
}

/// Why a schedule request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("storing the schedule: {0}")]
    Storage(#[from] aemos_storage::Error),
}

#[derive(Debug)]
pub struct Schedules {
    storage: Arc<Storage>,
    commands: Arc<Commands>,
    all: RwLock<BTreeMap<String, Arc<Entry>>>,
    /// Serializes changes: the overlap check and the store see the same schedules.
    writes: tokio::sync::Mutex<()>,
}

impl Schedules {
    /// Loads every stored schedule; one that no longer checks is logged and skipped.
    pub async fn load(
        storage: Arc<Storage>,
        commands: Arc<Commands>,
    ) -> Result<Arc<Self>, ScheduleError> {
        let mut all = BTreeMap::new();
        for doc in storage.documents(SCHEDULES).await? {
            let entry = serde_json::from_value::<ScheduleRecord>(doc)
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    Ok(Entry {
                        schedule: Schedule::check(r.schedule)?,
                        created_at: r.created_at,
                        updated_at: r.updated_at,
                    })
                });
            match entry {
                Ok(e) => {
                    all.insert(e.schedule.id().to_owned(), Arc::new(e));
                }
                Err(e) => warn!(error = %e, "unreadable schedule skipped"),
            }
        }
        Ok(Arc::new(Self {
            storage,
            commands,
            all: RwLock::new(all),
            writes: tokio::sync::Mutex::new(()),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Entry>>> {
        self.all.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Every schedule, or a device's, by id.
    pub fn list(&self, device: Option<&str>) -> Vec<Value> {
        let now = self.commands.now_ms();
        self.read()
            .values()
            .filter(|e| device.is_none_or(|d| e.schedule.spec.device == d))
            .map(|e| self.entry_json(e, now, false))
            .collect()
    }

    /// One schedule with its execution history.
    pub fn get(&self, id: &str) -> Option<Value> {
        let entry = self.read().get(id).cloned()?;
        Some(self.entry_json(&entry, self.commands.now_ms(), true))
    }

    fn entry_json(&self, e: &Entry, now: i64, with_history: bool) -> Value {
        let s = &e.schedule;
        let mut v = serde_json::to_value(&s.spec).unwrap_or_default();
        let current = s.current(now).filter(|run| run.end > now);
        let next = s.occurrences(now, 2).find(|run| run.start > now);
        v["running"] = json!(s.spec.enabled && current.is_some());
        let run = |o: Occurrence| json!({"start": rfc3339_ms(o.start), "end": rfc3339_ms(o.end)});
        v["currentRun"] = current.map(run).unwrap_or(Value::Null);
        v["nextRun"] = next.map(run).unwrap_or(Value::Null);
        v["createdAt"] = json!(rfc3339_ms(e.created_at));
        v["updatedAt"] = json!(rfc3339_ms(e.updated_at));
        if with_history {
            v["history"] = Value::Array(self.history(e).iter().map(to_json).collect());
        }
        v
    }

    /// The commands this schedule made, newest first.
    fn history(&self, e: &Entry) -> Vec<Command> {
        let prefix = history_prefix(e.schedule.id());
        let (_, commands) = self
            .commands
            .history(&e.schedule.spec.device, 0, usize::MAX);
        commands
            .into_iter()
            .filter(|c| c.command_id.starts_with(&prefix))
            .take(100)
            .collect()
    }

    /// Adds (`replace: false`) or replaces a schedule after checking it against the device's
    /// others; the stored version.
    pub async fn put(
        &self,
        mut spec: ScheduleSpec,
        replace: Option<&str>,
    ) -> Result<Value, ScheduleError> {
        let _writes = self.writes.lock().await;
        let now = self.commands.now_ms();
        let id = match (replace, spec.id.as_deref()) {
            (Some(path), Some(body)) if path != body => {
                return Err(ScheduleError::Invalid(format!(
                    "the body's id {body:?} is not the path's {path:?}"
                )))
            }
            (Some(path), _) => path.to_owned(),
            (None, Some(body)) => body.to_owned(),
            (None, None) => format!("sch-{now:x}-{:08x}", rand::random::<u32>()),
        };
        let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if id.is_empty() || id.len() > 64 || !id.chars().all(fits) {
            return Err(ScheduleError::Invalid(format!(
                "`id`: 1 to 64 characters of [A-Za-z0-9._-], not {id:?}"
            )));
        }
        spec.id = Some(id.clone());
        let schedule = Schedule::check(spec).map_err(ScheduleError::Invalid)?;
        let old = self.read().get(&id).cloned();
        match (&old, replace) {
            (Some(_), None) => {
                return Err(ScheduleError::Conflict(format!(
                    "schedule {id:?} already exists; PUT replaces it"
                )))
            }
            (None, Some(_)) => return Err(ScheduleError::NotFound(format!("no schedule {id:?}"))),
            _ => {}
        }
        if schedule.spec.enabled {
            let clash = self
                .read()
                .values()
                .find(|other| {
                    other.schedule.id() != id
                        && other.schedule.spec.enabled
                        && other.schedule.spec.device == schedule.spec.device
                        && other.schedule.overlaps(&schedule, now)
                })
                .map(|other| other.schedule.id().to_owned());
            if let Some(other) = clash {
                return Err(ScheduleError::Conflict(format!(
                    "overlaps schedule {other:?} of device {:?}",
                    schedule.spec.device
                )));
            }
        }
        let record = ScheduleRecord {
            schedule: schedule.spec.clone(),
            created_at: old.as_ref().map_or(now, |o| o.created_at),
            // Strictly later than the version it replaces: a new version has new step ids.
            updated_at: old.as_ref().map_or(now, |o| now.max(o.updated_at + 1)),
        };
        let doc =
            serde_json::to_value(&record).map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        self.storage.put_document(SCHEDULES, &id, &doc).await?;
        let entry = Arc::new(Entry {
            schedule,
            created_at: record.created_at,
            updated_at: record.updated_at,
        });
        self.all
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::clone(&entry));
        if let Some(old) = old {
            self.end_run(&old, now).await;
        }
        self.step(&entry, now).await;
        Ok(self.entry_json(&entry, now, false))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ScheduleError> {
        let _writes = self.writes.lock().await;
        let old = self
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| ScheduleError::NotFound(format!("no schedule {id:?}")))?;
        self.storage.remove_document(SCHEDULES, id).await?;
        self.all
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        self.end_run(&old, self.commands.now_ms()).await;
        Ok(())
    }

    async fn make(&self, id: String, now: i64, device: &str, action: &str, value: Value) {
        let new = NewCommand {
            device,
            action,
            value: &value,
            source: Source::Schedule,
            chain: None,
        };
        if let Err(e) = self.commands.create_with_id(id, now, new).await {
            match e {
                CreateError::Invalid(reason) => warn!(%device, %reason, "schedule command refused"),
                CreateError::Journal(e) => warn!(%device, error = %e, "schedule command not made"),
            }
        }
    }

    /// Turns the device off if this version's current run was started and not ended.
    async fn end_run(&self, e: &Entry, now: i64) {
        let Some(run) = e.schedule.current(now) else {
            return;
        };
        let started = self.commands.get(&e.step_id(&run, "on")).is_some();
        let off = e.step_id(&run, "off");
        if started && self.commands.get(&off).is_none() {
            let device = &e.schedule.spec.device;
            self.make(off, now, device, "turnOff", Value::Null).await;
        }
    }

    /// What the schedule's current run asks for now: on at its speed during it, off after it.
    async fn step(&self, e: &Entry, now: i64) {
        if !e.schedule.spec.enabled {
            return;
        }
        let Some(run) = e.schedule.current(now) else {
            return;
        };
        let device = &e.schedule.spec.device;
        if now < run.end {
            if run.end <= e.updated_at {
                return;
            }
            let (on, speed) = (e.step_id(&run, "on"), e.step_id(&run, "speed"));
            if self.commands.get(&speed).is_none() {
                // Both again if a crash came between them: the one made is not made twice.
                self.make(on, now, device, "turnOn", Value::Null).await;
                let value = json!(e.schedule.spec.fan_speed);
                self.make(speed, now, device, "setFanSpeed", value).await;
            }
        } else {
            self.end_run(e, now).await;
        }
    }

    /// One pass over every schedule at the clock's time.
    pub async fn tick(&self) {
        let now = self.commands.now_ms();
        let entries: Vec<Arc<Entry>> = self.read().values().cloned().collect();
        for e in entries {
            self.step(&e, now).await;
        }
    }

    /// Runs the schedules, reading the clock every second.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
