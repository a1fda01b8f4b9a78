//! Per-file summaries: for every `(device, sensor, variable)` of a Parquet file, its row count
//! and the min, max and sum of its values.
//!
//! A summary is written beside its file whenever a file is written (persistence and
//! compaction) and removed with it, so it always describes exactly its file's rows. Aggregates
//! that only need these four numbers per key over whole files (the top sensors by max over all
//! time, counts per sensor, all-time statistics of a device) read a few rows per key instead of
//! every reading; the query layer decides when that is exact.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Result;
use crate::schema::{DEVICE, DEVICE_IDX, SENSOR, SENSOR_IDX, VALUE_IDX, VARIABLE, VARIABLE_IDX};

pub const ROWS: &str = "rows";
pub const MIN_VALUE: &str = "min_value";
pub const MAX_VALUE: &str = "max_value";
pub const SUM_VALUE: &str = "sum_value";

static SUMMARY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(DEVICE, DataType::Utf8, false),
        Field::new(SENSOR, DataType::Utf8, false),
        Field::new(VARIABLE, DataType::Utf8, false),
        Field::new(ROWS, DataType::Int64, false),
        Field::new(MIN_VALUE, DataType::Float64, false),
        Field::new(MAX_VALUE, DataType::Float64, false),
        Field::new(SUM_VALUE, DataType::Float64, false),
    ]))
});

/// `(device, sensor, variable, rows, min_value, max_value, sum_value)`.
pub fn summary_schema() -> SchemaRef {
    Arc::clone(&SUMMARY_SCHEMA)
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    rows: i64,
    min: f64,
    max: f64,
    sum: f64,
}

impl Totals {
    fn new(value: f64) -> Self {
        Self {
            rows: 1,
            min: value,
            max: value,
            sum: value,
        }
    }

    fn add(&mut self, value: f64) {
        self.rows += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
    }
}

/// Summarizes a readings batch sorted by `(sensor, variable, time)`, as persistence writes
/// them: one row per `(device, sensor, variable)`, in the batch's key order. Within one
/// `(sensor, variable)` run the devices are told apart by a map, so readings of many devices
/// sharing a sensor name cost one lookup each, not a scan.
pub fn summarize(batch: &RecordBatch) -> Result<RecordBatch> {
    let devices = batch.column(DEVICE_IDX).as_string::<i32>();
    let sensors = batch.column(SENSOR_IDX).as_string::<i32>();
    let variables = batch.column(VARIABLE_IDX).as_string::<i32>();
    let values = batch
        .column(VALUE_IDX)
        .as_primitive::<Float64Type>()
        .values();
    let n = batch.num_rows();

    let mut out = SummaryBuilder::default();
    let mut run: Vec<(&str, Totals)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut start = 0;
    while start < n {
        let (sensor, variable) = (sensors.value(start), variables.value(start));
        let mut end = start + 1;
        while end < n && sensors.value(end) == sensor && variables.value(end) == variable {
            end += 1;
        }
        run.clear();
        index.clear();
        let mut last = usize::MAX;
        for row in start..end {
            let (device, value) = (devices.value(row), values[row]);
            if last != usize::MAX && run[last].0 == device {
                run[last].1.add(value);
                continue;
            }
            match index.entry(device) {
                Entry::Occupied(e) => {
                    last = *e.get();
                    run[last].1.add(value);
                }
                Entry::Vacant(e) => {
                    last = run.len();
                    run.push((device, Totals::new(value)));
                    e.insert(last);
                }
            }
        }
        for (device, totals) in &run {
            out.push(device, sensor, variable, *totals);
        }
        start = end;
    }
    out.finish()
}

#[derive(Default)]
struct SummaryBuilder {
    device: StringBuilder,
    sensor: StringBuilder,
    variable: StringBuilder,
    rows: Int64Builder,
    min: Float64Builder,
    max: Float64Builder,
    sum: Float64Builder,
}

impl SummaryBuilder {
    fn push(&mut self, device: &str, sensor: &str, variable: &str, totals: Totals) {
        self.device.append_value(device);
        self.sensor.append_value(sensor);
        self.variable.append_value(variable);
        self.rows.append_value(totals.rows);
        self.min.append_value(totals.min);
        self.max.append_value(totals.max);
        self.sum.append_value(totals.sum);
    }

    fn finish(mut self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.device.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.variable.finish()),
            Arc::new(self.rows.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.sum.finish()),
        ];
        Ok(RecordBatch::try_new(summary_schema(), columns)?)
    }
}

/// Encodes a summary as a small Parquet file (dictionary-encoded strings, zstd).
pub fn encode_summary(summary: &RecordBatch) -> Result<Bytes> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .build();
    let mut out = Vec::with_capacity(summary.num_rows() * 8 + 1024);
    let mut writer = ArrowWriter::try_new(&mut out, summary.schema(), Some(properties))?;
    writer.write(summary)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::sort_and_split;
    use crate::schema::ReadingsBuilder;
    use arrow::array::{Float64Array, Int64Array, StringArray};

    #[test]
    fn one_row_per_device_sensor_and_variable() {
        let mut b = ReadingsBuilder::with_capacity(8);
        // Two devices share the sensor name `s1` and interleave in time.
        b.push(1, "d1", "s1", "t", 1.0);
        b.push(2, "d2", "s1", "t", 10.0);
        b.push(3, "d1", "s1", "t", 3.0);
        b.push(4, "d2", "s1", "t", -2.0);
        b.push(5, "d1", "s1", "h", 7.0);
        b.push(6, "d1", "s2", "t", 0.5);
        let parts = sort_and_split(&[b.finish()]).unwrap();
        let summary = summarize(&parts[0].batch).unwrap();
        let col = |i: usize| {
            summary
                .column(i)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
        };
        let rows = summary
            .column(3)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let f = |i: usize| {
            summary
                .column(i)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
        };
        let got: Vec<(&str, &str, &str, i64, f64, f64, f64)> = (0..summary.num_rows())
            .map(|r| {
                (
                    col(0).value(r),
                    col(1).value(r),
                    col(2).value(r),
                    rows.value(r),
                    f(4).value(r),
                    f(5).value(r),
                    f(6).value(r),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("d1", "s1", "h", 1, 7.0, 7.0, 7.0),
                ("d1", "s1", "t", 2, 1.0, 3.0, 4.0),
                ("d2", "s1", "t", 2, -2.0, 10.0, 8.0),
                ("d1", "s2", "t", 1, 0.5, 0.5, 0.5),
            ]
        );
        assert!(!encode_summary(&summary).unwrap().is_empty());
    }
}
