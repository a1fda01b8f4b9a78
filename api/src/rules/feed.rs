//! Every reading made durable reaches the engine: the WAL writer hands each group commit to
//! [`EngineFeed`], which turns it into one engine tick before the writers are answered.

use std::sync::Arc;

use aemos_engine::{Engine, Reading};
use aemos_storage::schema::{SENSOR_IDX, TIME_IDX, VALUE_IDX, VARIABLE_IDX};
use aemos_storage::DurableObserver;
use arrow::array::{Array, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use tracing::warn;

pub struct EngineFeed {
    engine: Arc<Engine>,
}

impl EngineFeed {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }
}

/// The readings of a batch in the storage schema.
fn readings_of(batch: &RecordBatch, out: &mut Vec<Reading>) {
    let col = |i: usize| batch.column(i).as_any();
    let (Some(time), Some(sensor), Some(variable), Some(value)) = (
        col(TIME_IDX).downcast_ref::<TimestampMillisecondArray>(),
        col(SENSOR_IDX).downcast_ref::<StringArray>(),
        col(VARIABLE_IDX).downcast_ref::<StringArray>(),
        col(VALUE_IDX).downcast_ref::<Float64Array>(),
    ) else {
        warn!(schema = ?batch.schema(), "engine feed: unexpected batch schema");
        return;
    };
    out.reserve(batch.num_rows());
    for i in 0..batch.num_rows() {
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
}

impl DurableObserver for EngineFeed {
    fn durable(&self, batches: &[RecordBatch]) {
        let mut readings = Vec::new();
        for b in batches {
            readings_of(b, &mut readings);
        }
        if let Err(e) = self.engine.feed(readings) {
            warn!(error = %e, "engine feed");
        }
    }
}
