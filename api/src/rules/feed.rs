//! Every reading made durable reaches the engine: the WAL writer hands each group commit to
//! [`EngineFeed`], which turns it into one engine tick before the writers are answered. Each
//! device's readings also say that it was seen (see [`crate::devices::presence`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aemos_engine::{Engine, Reading};
use aemos_storage::schema::{DEVICE_IDX, SENSOR_IDX, TIME_IDX, VALUE_IDX, VARIABLE_IDX};
use aemos_storage::DurableObserver;
use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use tracing::warn;

use crate::devices::presence;

pub struct EngineFeed {
    engine: Arc<Engine>,
    /// The device-seen marks fed, which the engine counts among its readings.
    presence_marks: Arc<AtomicU64>,
}

impl EngineFeed {
    pub fn new(engine: Arc<Engine>, presence_marks: Arc<AtomicU64>) -> Self {
        Self {
            engine,
            presence_marks,
        }
    }
}

/// The readings of a batch in the storage schema, and for each run of one device's readings
/// one reading that the device was seen, at the run's newest time (what presence reads);
/// returns the number of those.
fn readings_of(batch: &RecordBatch, out: &mut Vec<Reading>) -> u64 {
    let col = |i: usize| batch.column(i).as_any();
    let (Some(time), Some(device), Some(sensor), Some(variable), Some(value)) = (
        col(TIME_IDX).downcast_ref::<TimestampMillisecondArray>(),
        col(DEVICE_IDX).downcast_ref::<StringArray>(),
        col(SENSOR_IDX).downcast_ref::<StringArray>(),
        col(VARIABLE_IDX).downcast_ref::<StringArray>(),
        col(VALUE_IDX).downcast_ref::<Float64Array>(),
    ) else {
        warn!(schema = ?batch.schema(), "engine feed: unexpected batch schema");
        return 0;
    };
    out.reserve(batch.num_rows() + 1);
    let mut seen = String::new();
    let mut run: Option<(usize, i64)> = None; // first row of the run, newest time
    let mut marks = 0;
    let mut end_run = |run: Option<(usize, i64)>, out: &mut Vec<Reading>| {
        if let Some((first, newest)) = run {
            marks += 1;
            seen.clear();
            seen.push_str(presence::SEEN_PREFIX);
            seen.push_str(device.value(first));
            out.push(Reading::new(&seen, presence::SEEN_VARIABLE, newest, 1.0));
        }
    };
    for i in 0..batch.num_rows() {
        match &mut run {
            Some((first, newest)) if device.value(*first) == device.value(i) => {
                *newest = (*newest).max(time.value(i));
            }
            _ => {
                end_run(run, out);
                run = Some((i, time.value(i)));
            }
        }
        if value.is_null(i) {
            continue;
        }
        out.push(Reading::new(
            sensor.value(i),
            variable.value(i),
            time.value(i),
            value.value(i),
        ));
    }
    end_run(run, out);
    marks
}

impl DurableObserver for EngineFeed {
    fn durable(&self, batches: &[RecordBatch]) {
        let mut readings = Vec::new();
        let marks: u64 = batches.iter().map(|b| readings_of(b, &mut readings)).sum();
        self.presence_marks.fetch_add(marks, Ordering::Relaxed);
        if let Err(e) = self.engine.feed(readings) {
            warn!(error = %e, "engine feed");
        }
    }
}
