//! Pre-clean (seed 003 FR5): run a device's fan at another speed for a while, then put it
//! back.
//!
//! `POST /api/v1/devices/{id}/preclean` `{"fanMode", "duration"}` saves the device's current
//! fan speed (its last acknowledged `setFanSpeed`, else its latest `fanSpeed` reading), writes
//! the pre-clean to `{data-dir}/commands/precleans/{device}.json` (written whole and fsynced,
//! then renamed), and only then sends `setFanSpeed fanMode` through the command path
//! (`source: preclean`). When the duration ends ([`Precleans::run`]) or on `cancel`, the saved
//! speed is sent back and the file says `completed` or `cancelled`. Both commands have ids made
//! of the device and the start time, so doing a step twice does it once: at start
//! ([`Precleans::open`]) a pre-clean still running sends its start again (a crash may have come
//! between the file and the command) and one past its end is restored at once, even if the
//! server was down when it ended.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::warn;

use super::{Commands, CreateError, NewCommand, Source};

/// The longest pre-clean.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrecleanStatus {
    Running,
    Completed,
    Cancelled,
}

/// One device's pre-clean, as its file keeps it (times in epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preclean {
    pub device: String,
    pub fan_mode: u64,
    pub saved_speed: u64,
    pub started_at: i64,
    pub will_end_at: i64,
    pub status: PrecleanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
}

impl Preclean {
    fn command_id(&self, step: &str) -> String {
        format!("preclean-{}-{}-{step}", self.device, self.started_at)
    }

    /// As the API shows it.
    pub fn to_json(&self, now: i64) -> Value {
        let time = crate::notify::rfc3339_ms;
        let running = self.status == PrecleanStatus::Running;
        json!({
            "device": self.device,
            "status": self.status,
            "running": running,
            "fanMode": self.fan_mode,
            "savedSpeed": self.saved_speed,
            "startedAt": time(self.started_at),
            "willEndAt": time(self.will_end_at),
            "endedAt": self.ended_at.map(time),
            "remainingSeconds": running.then(|| (self.will_end_at - now).max(0) as f64 / 1000.0),
            "startCommandId": self.command_id("start"),
            "restoreCommandId": (!running).then(|| self.command_id("restore")),
        })
    }
}

/// Why a pre-clean request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PrecleanError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Command(#[from] CreateError),
    #[error("writing the pre-clean: {0}")]
    Io(#[from] std::io::Error),
}

/// The pre-cleans of this server's devices.
#[derive(Debug)]
pub struct Precleans {
    dir: PathBuf,
    commands: Arc<Commands>,
    /// Every device's last pre-clean; held across a step so that steps of one device never
    /// interleave.
    states: tokio::sync::Mutex<HashMap<String, Preclean>>,
}

/// `"10m"`, or a number of minutes as seed 003 sends it (`{"duration": 10}`).
pub fn parse_duration(value: &Value) -> Result<Duration, String> {
    let duration = match value {
        Value::String(text) => {
            crate::cli::parse_duration(text).map_err(|e| format!("`duration`: {e}"))?
        }
        Value::Number(n) => match n.as_f64() {
            Some(minutes) if minutes > 0.0 && minutes.is_finite() => {
                Duration::from_secs_f64(minutes * 60.0)
            }
            _ => {
                return Err(format!(
                    "`duration`: {n} is not a positive number of minutes"
                ))
            }
        },
        other => {
            return Err(format!(
                "`duration`: a duration such as \"10m\" or a number of minutes, not {other}"
            ))
        }
    };
    if duration < Duration::from_secs(1) || duration > MAX_DURATION {
        return Err(format!(
            "`duration`: from 1s to 24h, not {}",
            humantime::format_duration(duration)
        ));
    }
    Ok(duration)
}

impl Precleans {
    /// Reads the pre-cleans in `dir`; finishes those past their end and sends again the start
    /// of those still running.
    pub async fn open(dir: &Path, commands: Arc<Commands>) -> Result<Arc<Self>, PrecleanError> {
        std::fs::create_dir_all(dir)?;
        let mut states = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice::<Preclean>(&b).map_err(|e| e.to_string()))
            {
                Ok(p) => {
                    states.insert(p.device.clone(), p);
                }
                Err(e) => warn!(path = %path.display(), error = %e, "unreadable pre-clean skipped"),
            }
        }
        let precleans = Arc::new(Self {
            dir: dir.to_owned(),
            commands,
            states: tokio::sync::Mutex::new(states),
        });
        let running: Vec<Preclean> = {
            let states = precleans.states.lock().await;
            states
                .values()
                .filter(|p| p.status == PrecleanStatus::Running)
                .cloned()
                .collect()
        };
        for p in running {
            precleans.send(&p, "start", p.fan_mode).await?;
        }
        precleans.finish_due().await;
        Ok(precleans)
    }

    fn now(&self) -> i64 {
        self.commands.now_ms()
    }

    /// The device's last pre-clean, running or not.
    pub async fn get(&self, device: &str) -> Option<Preclean> {
        self.states.lock().await.get(device).cloned()
    }

    /// The device's running pre-clean.
    pub async fn running(&self, device: &str) -> Option<Preclean> {
        self.get(device)
            .await
            .filter(|p| p.status == PrecleanStatus::Running)
    }

    /// Starts a pre-clean: durable, then its command sent; `current` is the speed to restore.
    pub async fn start(
        &self,
        device: &str,
        fan_mode: &Value,
        duration: &Value,
        current: Option<u64>,
    ) -> Result<Preclean, PrecleanError> {
        let fan_mode = match fan_mode.as_u64() {
            Some(speed @ 0..=5) => speed,
            _ => {
                return Err(PrecleanError::Invalid(format!(
                    "`fanMode`: an integer from 0 to 5, not {fan_mode}"
                )))
            }
        };
        let duration = parse_duration(duration).map_err(PrecleanError::Invalid)?;
        let mut states = self.states.lock().await;
        if let Some(p) = states
            .get(device)
            .filter(|p| p.status == PrecleanStatus::Running)
        {
            return Err(PrecleanError::Conflict(format!(
                "device {device:?} is in a pre-clean until {}; cancel it first",
                crate::notify::rfc3339_ms(p.will_end_at)
            )));
        }
        let saved_speed = current.ok_or_else(|| {
            PrecleanError::Conflict(format!(
                "the fan speed of device {device:?} is not known (no acknowledged setFanSpeed, \
                 no fanSpeed reading): there would be nothing to restore"
            ))
        })?;
        let now = self.now();
        let p = Preclean {
            device: device.to_owned(),
            fan_mode,
            saved_speed,
            started_at: now,
            will_end_at: now + duration.as_millis() as i64,
            status: PrecleanStatus::Running,
            ended_at: None,
        };
        self.write(&p).await?;
        states.insert(device.to_owned(), p.clone());
        self.send(&p, "start", fan_mode).await?;
        Ok(p)
    }

    /// Ends a running pre-clean at once, restoring the saved speed.
    pub async fn cancel(&self, device: &str) -> Result<Preclean, PrecleanError> {
        let mut states = self.states.lock().await;
        let p = states
            .get(device)
            .filter(|p| p.status == PrecleanStatus::Running)
            .cloned()
            .ok_or_else(|| {
                PrecleanError::Conflict(format!("device {device:?} is not in a pre-clean"))
            })?;
        let done = self.finish(p, PrecleanStatus::Cancelled).await?;
        states.insert(device.to_owned(), done.clone());
        Ok(done)
    }

    /// Restores the saved speed, then records the end.
    async fn finish(
        &self,
        mut p: Preclean,
        status: PrecleanStatus,
    ) -> Result<Preclean, PrecleanError> {
        self.send(&p, "restore", p.saved_speed).await?;
        p.status = status;
        p.ended_at = Some(self.now());
        self.write(&p).await?;
        Ok(p)
    }

    async fn send(&self, p: &Preclean, step: &str, speed: u64) -> Result<(), CreateError> {
        let at = if step == "start" {
            p.started_at
        } else {
            self.now()
        };
        let new = NewCommand {
            device: &p.device,
            action: "setFanSpeed",
            value: &json!(speed),
            source: Source::Preclean,
            chain: None,
        };
        self.commands
            .create_with_id(p.command_id(step), at, new)
            .await
            .map(|_| ())
    }

    /// Completes the pre-cleans whose time is up; the next end, if any is running.
    pub async fn finish_due(&self) -> Option<i64> {
        let now = self.now();
        let mut states = self.states.lock().await;
        let due: Vec<Preclean> = states
            .values()
            .filter(|p| p.status == PrecleanStatus::Running && p.will_end_at <= now)
            .cloned()
            .collect();
        for p in due {
            let device = p.device.clone();
            match self.finish(p, PrecleanStatus::Completed).await {
                Ok(done) => {
                    states.insert(device, done);
                }
                // Still running in memory and on disk: tried again at the next turn.
                Err(e) => warn!(%device, error = %e, "pre-clean restore failed"),
            }
        }
        states
            .values()
            .filter(|p| p.status == PrecleanStatus::Running)
            .map(|p| p.will_end_at)
            .min()
    }

    /// Ends pre-cleans as their time comes, reading the clock at least every second.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = self.finish_due().await;
            let wait = next.map_or(1000, |at| (at - self.now()).clamp(10, 1000));
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Writes the pre-clean's file whole: a temporary file fsynced, renamed over the old one,
    /// and the directory fsynced; on a blocking thread (the fsyncs), while the caller keeps
    /// the states' lock, so one device's files are written in order.
    async fn write(&self, p: &Preclean) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let device = p.device.clone();
        let bytes = serde_json::to_vec(p).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            let path = dir.join(format!("{device}.json"));
            let temp = dir.join(format!("{device}.json.tmp"));
            let mut file = std::fs::File::create(&temp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, &path)?;
            std::fs::File::open(&dir)?.sync_all()
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::{CommandMetrics, CommandsArgs, Status, Timing};
    use aemos_clock::ManualClock;

    const T0: i64 = 1_790_000_000_000;

    fn commands(dir: &Path, clock: &Arc<ManualClock>) -> Arc<Commands> {
        Commands::open(CommandsArgs {
            dir: &dir.join("commands"),
            timing: Timing {
                ack_timeout_ms: 30_000,
                max_attempts: 3,
            },
            clock: Arc::clone(clock) as _,
            metrics: CommandMetrics::register(&prometheus::Registry::new()).unwrap(),
        })
        .unwrap()
    }

    fn speeds(commands: &Commands) -> Vec<(String, Value, Status)> {
        let (_, history) = commands.history("p", 0, 10);
        let mut all: Vec<_> = history
            .into_iter()
            .map(|c| (c.command_id, c.value, c.status))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// A data directory, the manual clock at `T0`, the pre-clean folder, and the service on them.
    async fn fresh() -> (tempfile::TempDir, Arc<ManualClock>, PathBuf, Arc<Precleans>) {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(T0));
        let pre = dir.path().join("precleans");
        let precleans = Precleans::open(&pre, commands(dir.path(), &clock))
            .await
            .unwrap();
        (dir, clock, pre, precleans)
    }

    #[tokio::test]
    async fn restored_when_the_time_is_up_even_after_a_restart() {
        let (dir, clock, pre, precleans) = fresh().await;
        let p = precleans
            .start("p", &json!(5), &json!("10m"), Some(2))
            .await
            .unwrap();
        assert_eq!(p.will_end_at, T0 + 600_000);
        let again = precleans.start("p", &json!(4), &json!("1m"), Some(2)).await;
        assert!(
            matches!(again, Err(PrecleanError::Conflict(_))),
            "{again:?}"
        );
        clock.advance(599_999);
        assert_eq!(precleans.finish_due().await, Some(T0 + 600_000));
        drop(precleans);

        // Down when it ended: restored at the next start, once.
        clock.advance(3_600_000);
        let commands = commands(dir.path(), &clock);
        let precleans = Precleans::open(&pre, Arc::clone(&commands)).await.unwrap();
        let done = precleans.get("p").await.unwrap();
        assert_eq!(done.status, PrecleanStatus::Completed);
        assert_eq!(done.ended_at, Some(T0 + 600_000 + 3_599_999));
        let start = format!("preclean-p-{T0}-start");
        let restore = format!("preclean-p-{T0}-restore");
        // The restore supersedes the start, which was never sent.
        assert_eq!(
            speeds(&commands),
            [
                (restore, json!(2), Status::Pending),
                (start, json!(5), Status::Superseded)
            ]
        );
        drop(precleans);
        let precleans = Precleans::open(&pre, Arc::clone(&commands)).await.unwrap();
        assert_eq!(precleans.get("p").await, Some(done));
        assert_eq!(speeds(&commands).len(), 2, "nothing made twice");
    }

    #[tokio::test]
    async fn cancelled_and_refused() {
        let (_dir, clock, _, precleans) = fresh().await;
        for (mode, duration, current, field) in [
            (json!(6), json!("10m"), Some(1), "`fanMode`"),
            (json!("5"), json!("10m"), Some(1), "`fanMode`"),
            (json!(5), json!("soon"), Some(1), "`duration`"),
            (json!(5), json!("25h"), Some(1), "`duration`"),
            (json!(5), json!(-3), Some(1), "`duration`"),
        ] {
            let refused = precleans.start("p", &mode, &duration, current).await;
            match refused {
                Err(PrecleanError::Invalid(e)) => assert!(e.starts_with(field), "{e}"),
                other => panic!("{mode} {duration}: {other:?}"),
            }
        }
        let unknown = precleans.start("p", &json!(5), &json!(10), None).await;
        assert!(matches!(unknown, Err(PrecleanError::Conflict(_))));
        assert!(precleans.get("p").await.is_none(), "nothing changed");
        assert!(matches!(
            precleans.cancel("p").await,
            Err(PrecleanError::Conflict(_))
        ));

        precleans
            .start("p", &json!(5), &json!(10), Some(3))
            .await
            .unwrap();
        clock.advance(1000);
        let cancelled = precleans.cancel("p").await.unwrap();
        assert_eq!(cancelled.status, PrecleanStatus::Cancelled);
        assert_eq!(cancelled.ended_at, Some(T0 + 1000));
        assert!(precleans.running("p").await.is_none());
    }
}
