//! `datastream` events: durable readings of watched devices, at most one per sensor variable
//! per second, emitted to the device's Socket.IO room.
//!
//! The WAL writer calls [`Datastream::durable`] with every group commit; when no socket is
//! subscribed it returns at once, else it keeps the readings of watched devices that pass the
//! throttle and queues them for an emitting task (drop-oldest).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use aemos_ingest::queue::DropOldest;
use aemos_storage::schema::{DEVICE_IDX, SENSOR_IDX, TIME_IDX, VALUE_IDX, VARIABLE_IDX};
use aemos_storage::DurableObserver;
use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use serde_json::{json, Value};
use socketioxide::SocketIo;

use super::channels::device_room;
use super::rfc3339_ms;
use super::socketio::Subscriptions;

/// At most one event per sensor variable per this many milliseconds.
const THROTTLE_MS: u128 = 1000;

pub struct Datastream {
    subscriptions: Arc<Subscriptions>,
    started: Instant,
    /// When each `(sensor, variable)` last went out, by the engine's key of the pair.
    last: Mutex<HashMap<u64, u128>>,
    queue: Arc<DropOldest<(String, Value)>>,
}

impl Datastream {
    /// Starts the emitting task on the current runtime.
    pub fn start(io: SocketIo, subscriptions: Arc<Subscriptions>, capacity: usize) -> Arc<Self> {
        let queue: Arc<DropOldest<(String, Value)>> = DropOldest::new(capacity);
        let q = Arc::clone(&queue);
        tokio::spawn(async move {
            let mut items = Vec::new();
            while q.next_all(&mut items).await {
                for (device, event) in items.drain(..) {
                    let _ = io.to(device_room(&device)).emit("datastream", &event).await;
                }
            }
        });
        Arc::new(Self {
            subscriptions,
            started: Instant::now(),
            last: Mutex::new(HashMap::new()),
            queue,
        })
    }

    fn take(&self, batch: &RecordBatch, now: u128) {
        let col = |i: usize| batch.column(i).as_any();
        let (Some(time), Some(device), Some(sensor), Some(variable), Some(value)) = (
            col(TIME_IDX).downcast_ref::<TimestampMillisecondArray>(),
            col(DEVICE_IDX).downcast_ref::<StringArray>(),
            col(SENSOR_IDX).downcast_ref::<StringArray>(),
            col(VARIABLE_IDX).downcast_ref::<StringArray>(),
            col(VALUE_IDX).downcast_ref::<Float64Array>(),
        ) else {
            return;
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        for i in 0..batch.num_rows() {
            let d = device.value(i);
            if value.is_null(i) || !self.subscriptions.watched(d) {
                continue;
            }
            let key = aemos_engine::keys::key_of(sensor.value(i), variable.value(i));
            match last.get(&key) {
                Some(at) if now.saturating_sub(*at) < THROTTLE_MS => continue,
                _ => {}
            }
            last.insert(key, now);
            let event = json!({
                "device": d,
                "sensor": sensor.value(i),
                "variable": variable.value(i),
                "value": value.value(i),
                "time": rfc3339_ms(time.value(i)),
            });
            self.queue.push((d.to_owned(), event));
        }
        // Keys of sensors that went quiet are forgotten once they could pass again.
        if last.len() > 100_000 {
            last.retain(|_, at| now.saturating_sub(*at) < THROTTLE_MS);
        }
    }
}

impl DurableObserver for Datastream {
    fn durable(&self, batches: &[RecordBatch]) {
        if self.subscriptions.is_empty() {
            return;
        }
        let now = self.started.elapsed().as_millis();
        for b in batches {
            self.take(b, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aemos_storage::schema::ReadingsBuilder;

    #[tokio::test]
    async fn one_event_per_sensor_variable_per_second_for_watched_devices_only() {
        let (_layer, io) = SocketIo::new_layer();
        let subs = Arc::new(Subscriptions::default());
        // A current-thread runtime: the emitting task cannot drain the queue before the
        // test yields, and it never does.
        let ds = Datastream::start(io, Arc::clone(&subs), 100);
        let mut b = ReadingsBuilder::with_capacity(4);
        b.push(1, "d", "s", "t", 1.0);
        b.push(2, "d", "s", "t", 2.0);
        b.push(3, "d", "s", "h", 3.0);
        b.push(4, "other", "o", "t", 4.0);
        let batch = b.finish();
        ds.durable(std::slice::from_ref(&batch));
        assert_eq!(ds.queue.len(), 0, "nobody watches");
        subs.add("d");
        ds.take(&batch, 10_000);
        // `s.t` once, `s.h` once; `other` is not watched.
        assert_eq!(ds.queue.len(), 2);
        ds.take(&batch, 10_500);
        assert_eq!(ds.queue.len(), 2, "throttled within the second");
        ds.take(&batch, 11_000);
        assert_eq!(ds.queue.len(), 4);
        subs.remove("d");
        assert!(subs.is_empty());
    }
}
