//! Notifications: firings become notification objects with a per-device `seq`, kept for
//! replay and delivered to every channel (MQTT, CoAP, Socket.IO) at once.
//!
//! Notifications are derived from the firing log, not stored apart: each durable firing record
//! names the device states it changes ([`NotifyTarget`]), and the [`Notifier`] numbers them per
//! device in log order. Reading the log on start numbers them the same way again, so `seq`
//! keeps increasing across restarts and the replay buffer (the last notifications of each
//! device) comes back with it. Delivery never blocks the firing writer: each channel takes a
//! notification into its own bounded queue ([`channels`]), dropping its oldest when full.

pub mod channels;
pub mod datastream;
mod notification;
pub mod socketio;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aemos_queries::SnapshotSource;
use arrow::array::{RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use tracing::warn;

pub use notification::{
    notify_targets, rfc3339_ms, Metadata, Notification, NotifyTarget, DEVICE_STATE_CHANGE,
};

use crate::rules::FiringRecord;

/// Notifications kept per device for replay.
pub const REPLAY_PER_DEVICE: usize = 1000;
/// Notifications kept for replay over all devices together: beyond it the oldest go first,
/// whichever device they belong to, so memory stays bounded however many devices there are.
pub const REPLAY_TOTAL: usize = 1_000_000;

/// A way out to clients. `deliver` must not block: queue and return.
pub trait NotificationChannel: Send + Sync {
    fn deliver(&self, notification: &Arc<Notification>, json: &Bytes);
    /// Its name and its queue, for health.
    fn backlog(&self) -> (&'static str, aemos_ingest::queue::Backlog);
}

#[derive(Debug, Default)]
struct DeviceLog {
    last_seq: u64,
    recent: VecDeque<Arc<Notification>>,
}

#[derive(Debug, Default)]
struct Logs {
    by_device: HashMap<String, DeviceLog>,
    /// Every kept notification, oldest first (some already dropped by their device's own
    /// bound), so the oldest over all devices goes first when `replay_total` is reached.
    order: VecDeque<Arc<Notification>>,
}

pub struct Notifier {
    devices: Mutex<Logs>,
    channels: RwLock<Vec<Arc<dyn NotificationChannel>>>,
    replay_per_device: usize,
    replay_total: usize,
    delivered: AtomicU64,
    latency: std::sync::OnceLock<(prometheus::Histogram, Arc<dyn aemos_clock::Clock>)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

/// What a replay request gets.
#[derive(Debug, Clone)]
pub struct Replay {
    pub notifications: Vec<Arc<Notification>>,
    /// The newest seq of the device (0: none yet).
    pub last_seq: u64,
    /// The oldest seq still kept; a client whose `since_seq` is below `oldest_seq - 1` missed
    /// notifications that are no longer kept.
    pub oldest_seq: Option<u64>,
}

impl Logs {
    /// Drops the oldest kept notification over all devices (unless its device's own bound
    /// dropped it already). A device's `last_seq` stays, so its numbering goes on.
    fn drop_oldest(&mut self) {
        let Some(oldest) = self.order.pop_front() else {
            return;
        };
        if let Some(log) = self.by_device.get_mut(&oldest.device_uuid) {
            if log.recent.front().is_some_and(|n| Arc::ptr_eq(n, &oldest)) {
                log.recent.pop_front();
            }
        }
    }
}

impl Notifier {
    /// Keeps at most `replay_per_device` notifications per device and `replay_total` in all.
    pub fn new(replay_per_device: usize, replay_total: usize) -> Arc<Self> {
        Arc::new(Self {
            devices: Mutex::new(Logs::default()),
            channels: RwLock::new(Vec::new()),
            replay_per_device: replay_per_device.max(1),
            replay_total: replay_total.max(1),
            delivered: AtomicU64::new(0),
            latency: std::sync::OnceLock::new(),
        })
    }

    /// Observes each delivered notification's time from its firing (set once, at start).
    pub fn observe_latency(
        &self,
        histogram: prometheus::Histogram,
        clock: Arc<dyn aemos_clock::Clock>,
    ) {
        let _ = self.latency.set((histogram, clock));
    }

    pub fn add_channel(&self, channel: Arc<dyn NotificationChannel>) {
        self.channels
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(channel);
    }

    /// Numbers and keeps the notifications of durable firing records, in order; delivers
    /// them when `deliver` (the log read on start is only numbered and kept).
    pub fn record(&self, records: &[FiringRecord], deliver: bool) {
        let mut fresh = Vec::new();
        {
            let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            for r in records {
                for target in &r.notify {
                    let log = devices.by_device.entry(target.device.clone()).or_default();
                    log.last_seq += 1;
                    let kind = crate::devices::presence::notification_kind(&r.chain, &target.new)
                        .unwrap_or(DEVICE_STATE_CHANGE);
                    let n = Arc::new(Notification {
                        kind: kind.to_owned(),
                        device_uuid: target.device.clone(),
                        rule_chain_id: r.chain.clone(),
                        metadata: Metadata {
                            state_name: target.state.clone(),
                            new_value: target.new.clone(),
                            old_value: target.old.clone(),
                            values: r.all_values(),
                        },
                        timestamp: rfc3339_ms(r.time),
                        seq: log.last_seq,
                        time_ms: r.time,
                    });
                    log.recent.push_back(Arc::clone(&n));
                    if log.recent.len() > self.replay_per_device {
                        log.recent.pop_front();
                    }
                    devices.order.push_back(Arc::clone(&n));
                    if devices.order.len() > self.replay_total {
                        devices.drop_oldest();
                    }
                    if deliver {
                        fresh.push(n);
                    }
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        for n in fresh {
            let json = match serde_json::to_vec(&*n) {
                Ok(v) => Bytes::from(v),
                Err(e) => {
                    warn!(error = %e, "encoding a notification");
                    continue;
                }
            };
            for c in channels.iter() {
                c.deliver(&n, &json);
            }
            self.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some((histogram, clock)) = self.latency.get() {
                histogram.observe((clock.now_ms() - n.time_ms).max(0) as f64 / 1000.0);
            }
        }
    }

    /// Adds a channel started after the firing log was read, first handing it each device's
    /// newest notification (MQTT retains it, CoAP answers it to a plain GET). Done under the
    /// devices' lock, so a notification numbered meanwhile reaches the channel after the state
    /// it follows, never before it.
    pub fn add_channel_with_latest(&self, channel: Arc<dyn NotificationChannel>) -> usize {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let mut handed = 0;
        for n in devices.by_device.values().filter_map(|d| d.recent.back()) {
            match serde_json::to_vec(&**n) {
                Ok(json) => {
                    channel.deliver(n, &Bytes::from(json));
                    handed += 1;
                }
                Err(e) => warn!(error = %e, "encoding a notification"),
            }
        }
        self.add_channel(channel);
        drop(devices);
        handed
    }

    /// Each device's newest seq: what the firing log keeps beside a sealed segment, so that
    /// numbering goes on after the segment's records are gone from the local disk.
    pub fn seqs(&self) -> HashMap<String, u64> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices
            .by_device
            .iter()
            .map(|(device, log)| (device.clone(), log.last_seq))
            .collect()
    }

    /// Continues each device's numbering after `seqs` (on start, before the log's records are
    /// numbered again); a seq already past it stays.
    pub fn restore_seqs(&self, seqs: &HashMap<String, u64>) {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        for (device, &seq) in seqs {
            let log = devices.by_device.entry(device.clone()).or_default();
            log.last_seq = log.last_seq.max(seq);
        }
    }

    /// Notifications of `device` with `seq > since_seq`, oldest first, at most `limit`.
    pub fn since(&self, device: &str, since_seq: u64, limit: usize) -> Replay {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let Some(log) = devices.by_device.get(device) else {
            return Replay {
                notifications: Vec::new(),
                last_seq: 0,
                oldest_seq: None,
            };
        };
        Replay {
            notifications: log
                .recent
                .iter()
                .filter(|n| n.seq > since_seq)
                .take(limit)
                .cloned()
                .collect(),
            last_seq: log.last_seq,
            oldest_seq: log.recent.front().map(|n| n.seq),
        }
    }

    /// Registers the `notifications` table with the query engine.
    pub fn register_table(
        self: &Arc<Self>,
        queries: &aemos_queries::QueryEngine,
    ) -> anyhow::Result<()> {
        let table = aemos_queries::SnapshotTable::new(Arc::clone(self) as _);
        queries
            .context()
            .register_table("notifications", Arc::new(table))?;
        Ok(())
    }

    /// `degraded` while a channel's queue is full (its sender is not keeping up and the oldest
    /// notifications are dropped), else `ok`; with each channel's queue.
    pub fn health(&self) -> serde_json::Value {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        let backlogs: Vec<_> = channels.iter().map(|c| c.backlog()).collect();
        let full = backlogs.iter().any(|(_, b)| b.full());
        serde_json::json!({
            "status": if full { "degraded" } else { "ok" },
            "delivered": self.delivered(),
            "channels": backlogs
                .into_iter()
                .map(|(name, b)| (name.to_owned(), serde_json::json!(b)))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Notifications handed to the channels since start.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

/// `notifications(time, device, seq, type, payload)`.
pub fn notifications_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("device", DataType::Utf8, false),
        Field::new("seq", DataType::UInt64, false),
        Field::new("type", DataType::Utf8, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

impl SnapshotSource for Notifier {
    fn schema(&self) -> SchemaRef {
        notifications_schema()
    }

    fn batches(&self) -> Vec<RecordBatch> {
        let rows: Vec<Arc<Notification>> = {
            let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
            devices
                .by_device
                .values()
                .flat_map(|d| d.recent.iter().cloned())
                .collect()
        };
        if rows.is_empty() {
            return Vec::new();
        }
        let payloads: Vec<String> = rows
            .iter()
            .map(|n| serde_json::to_string(&**n).unwrap_or_default())
            .collect();
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from_iter_values(rows.iter().map(|n| n.time_ms))
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|n| n.device_uuid.as_str()),
            )),
            Arc::new(UInt64Array::from_iter_values(rows.iter().map(|n| n.seq))),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|n| n.kind.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(payloads)),
        ];
        match RecordBatch::try_new(notifications_schema(), columns) {
            Ok(b) => vec![b],
            Err(e) => {
                warn!(error = %e, "notifications snapshot");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(device: &str, n: usize) -> FiringRecord {
        FiringRecord {
            time: 1_768_900_000_000 + n as i64,
            chain: format!("c-{device}"),
            device: device.to_owned(),
            kind: "activated".into(),
            active: true,
            values: Default::default(),
            fields: Default::default(),
            notify: vec![NotifyTarget {
                device: device.to_owned(),
                state: "alert".into(),
                new: format!("v{n}"),
                old: String::new(),
            }],
            commands: Vec::new(),
        }
    }

    fn kept(n: &Notifier, device: &str) -> Vec<u64> {
        n.since(device, 0, usize::MAX)
            .notifications
            .iter()
            .map(|n| n.seq)
            .collect()
    }

    /// A channel whose sender never drains its queue.
    struct Stalled(Arc<aemos_ingest::queue::DropOldest<Arc<Notification>>>);

    impl NotificationChannel for Stalled {
        fn deliver(&self, n: &Arc<Notification>, _json: &Bytes) {
            self.0.push(Arc::clone(n));
        }

        fn backlog(&self) -> (&'static str, aemos_ingest::queue::Backlog) {
            ("stalled", self.0.backlog())
        }
    }

    #[test]
    fn health_is_degraded_while_a_channel_queue_is_full() {
        let notifier = Notifier::new(10, 10);
        let queue = aemos_ingest::queue::DropOldest::new(2);
        notifier.add_channel(Arc::new(Stalled(Arc::clone(&queue))));
        notifier.record(&[record("a", 0)], true);
        assert_eq!(notifier.health()["status"], "ok");
        notifier.record(&[record("a", 1), record("a", 2)], true);
        let health = notifier.health();
        assert_eq!(health["status"], "degraded", "{health}");
        assert_eq!(
            health["channels"]["stalled"],
            serde_json::json!({"queued": 2, "capacity": 2, "dropped": 1})
        );
        let mut drained = Vec::new();
        let _ = queue.wait_all(&mut drained);
        assert_eq!(notifier.health()["status"], "ok", "the sender caught up");
    }

    #[test]
    fn replay_is_bounded_per_device_and_over_all_devices() {
        let notifier = Notifier::new(3, 5);
        for i in 0..4 {
            notifier.record(&[record("a", i)], false);
        }
        assert_eq!(
            kept(&notifier, "a"),
            vec![2, 3, 4],
            "the device's own bound"
        );
        for i in 0..3 {
            notifier.record(&[record("b", i)], false);
        }
        // Seven recorded, five kept in all (one of a's already gone by its own bound): the
        // oldest over both devices went first.
        assert_eq!(kept(&notifier, "a"), vec![3, 4]);
        assert_eq!(kept(&notifier, "b"), vec![1, 2, 3]);
        for i in 0..5 {
            notifier.record(&[record("c", i)], false);
        }
        assert_eq!(kept(&notifier, "a"), Vec::<u64>::new());
        assert_eq!(notifier.since("a", 0, 10).last_seq, 4, "numbering goes on");
        let total: usize = ["a", "b", "c"]
            .iter()
            .map(|d| kept(&notifier, d).len())
            .sum();
        assert!(total <= 5, "{total}");
        assert_eq!(kept(&notifier, "c"), vec![3, 4, 5]);
    }
}
