//! The `readings` table: one row per value of one variable of one sensor at one time.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, Float64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const TIME: &str = "time";
pub const DEVICE: &str = "device";
pub const SENSOR: &str = "sensor";
pub const VARIABLE: &str = "variable";
pub const VALUE: &str = "value";

/// Column positions in [`readings_schema`].
pub const TIME_IDX: usize = 0;
pub const DEVICE_IDX: usize = 1;
pub const SENSOR_IDX: usize = 2;
pub const VARIABLE_IDX: usize = 3;
pub const VALUE_IDX: usize = 4;

static READINGS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(
            TIME,
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(DEVICE, DataType::Utf8, false),
        Field::new(SENSOR, DataType::Utf8, false),
        Field::new(VARIABLE, DataType::Utf8, false),
        Field::new(VALUE, DataType::Float64, false),
    ]))
});

/// `readings(time TIMESTAMP(ms, UTC), device, sensor, variable, value DOUBLE)`.
pub fn readings_schema() -> SchemaRef {
    Arc::clone(&READINGS_SCHEMA)
}

/// Builds a readings [`RecordBatch`] row by row (decoders, tests, generators).
#[derive(Debug)]
pub struct ReadingsBuilder {
    time: TimestampMillisecondBuilder,
    device: StringBuilder,
    sensor: StringBuilder,
    variable: StringBuilder,
    value: Float64Builder,
}

impl ReadingsBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            time: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            device: StringBuilder::with_capacity(rows, rows * 16),
            sensor: StringBuilder::with_capacity(rows, rows * 16),
            variable: StringBuilder::with_capacity(rows, rows * 12),
            value: Float64Builder::with_capacity(rows),
        }
    }

    pub fn push(&mut self, time_ms: i64, device: &str, sensor: &str, variable: &str, value: f64) {
        self.time.append_value(time_ms);
        self.device.append_value(device);
        self.sensor.append_value(sensor);
        self.variable.append_value(variable);
        self.value.append_value(value);
    }

    pub fn len(&self) -> usize {
        self.value.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn finish(mut self) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.variable.finish()),
            Arc::new(self.value.finish()),
        ];
        RecordBatch::try_new(readings_schema(), columns).expect("builder columns match the schema")
    }
}
