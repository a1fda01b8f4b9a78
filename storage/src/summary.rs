//! Per-file summaries: for every `(device, sensor, variable)` of a Parquet file, its row count,
//! the min, max and sum of its values, and its newest reading (time and value).
//!
//! A summary is written beside its file whenever a file is written (persistence and
//! compaction) and removed with it, so it always describes exactly its file's rows. Aggregates
//! that only need these four numbers per key over whole files (the top sensors by max over all
//! time, counts per sensor, all-time statistics of a device) read a few rows per key instead of
//! every reading; the query layer decides when that is exact. The newest reading per key is what
//! the rule engine's state is rebuilt from at start ([`fold_newest`]), so a start reads the
//! summaries, not the history. Summaries written before `last_time`/`last_value` existed read
//! those columns as null.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, ArrayRef, AsArray, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
};
use arrow::datatypes::{
    DataType, Field, Float64Type, Int64Type, Schema, SchemaRef, TimestampMillisecondType,
};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::Result;
use crate::schema::{
    DEVICE, DEVICE_IDX, SENSOR, SENSOR_IDX, TIME_IDX, VALUE_IDX, VARIABLE, VARIABLE_IDX,
};

pub const ROWS: &str = "rows";
pub const MIN_VALUE: &str = "min_value";
pub const MAX_VALUE: &str = "max_value";
pub const SUM_VALUE: &str = "sum_value";
/// The newest reading's time (epoch ms) and value; null in summaries written before them.
pub const LAST_TIME: &str = "last_time";
pub const LAST_VALUE: &str = "last_value";

static SUMMARY_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(DEVICE, DataType::Utf8, false),
        Field::new(SENSOR, DataType::Utf8, false),
        Field::new(VARIABLE, DataType::Utf8, false),
        Field::new(ROWS, DataType::Int64, false),
        Field::new(MIN_VALUE, DataType::Float64, false),
        Field::new(MAX_VALUE, DataType::Float64, false),
        Field::new(SUM_VALUE, DataType::Float64, false),
        Field::new(LAST_TIME, DataType::Int64, true),
        Field::new(LAST_VALUE, DataType::Float64, true),
    ]))
});

/// `(device, sensor, variable, rows, min_value, max_value, sum_value, last_time, last_value)`.
pub fn summary_schema() -> SchemaRef {
    Arc::clone(&SUMMARY_SCHEMA)
}

#[derive(Debug, Clone, Copy)]
struct Totals {
    rows: i64,
    min: f64,
    max: f64,
    sum: f64,
    last_time: i64,
    last_value: f64,
}

impl Totals {
    fn new(time: i64, value: f64) -> Self {
        Self {
            rows: 1,
            min: value,
            max: value,
            sum: value,
            last_time: time,
            last_value: value,
        }
    }

    fn add(&mut self, time: i64, value: f64) {
        self.rows += 1;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sum += value;
        // Rows come in time order: of equal times the later row wins, as in the buffer.
        if time >= self.last_time {
            self.last_time = time;
            self.last_value = value;
        }
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
    let times = batch
        .column(TIME_IDX)
        .as_primitive::<TimestampMillisecondType>()
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
            let (device, time, value) = (devices.value(row), times[row], values[row]);
            if last != usize::MAX && run[last].0 == device {
                run[last].1.add(time, value);
                continue;
            }
            match index.entry(device) {
                Entry::Occupied(e) => {
                    last = *e.get();
                    run[last].1.add(time, value);
                }
                Entry::Vacant(e) => {
                    last = run.len();
                    run.push((device, Totals::new(time, value)));
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
    last_time: Int64Builder,
    last_value: Float64Builder,
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
        self.last_time.append_value(totals.last_time);
        self.last_value.append_value(totals.last_value);
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
            Arc::new(self.last_time.finish()),
            Arc::new(self.last_value.finish()),
        ];
        Ok(RecordBatch::try_new(summary_schema(), columns)?)
    }
}

/// The newest reading of each `(device, sensor, variable)`: `(time ms, value)`.
pub type NewestByKey = HashMap<(String, String, String), (i64, f64)>;

/// Folds the newest reading of each key of a decoded summary batch into `newest`; `false`
/// when the batch does not have them (a summary written before `last_time` existed).
pub fn fold_newest(summary: &RecordBatch, newest: &mut NewestByKey) -> bool {
    let schema = summary.schema();
    let column = |name: &str| schema.index_of(name).ok().map(|i| summary.column(i));
    let (Some(d), Some(s), Some(v), Some(t), Some(x)) = (
        column(DEVICE),
        column(SENSOR),
        column(VARIABLE),
        column(LAST_TIME),
        column(LAST_VALUE),
    ) else {
        return false;
    };
    let (Some(t), Some(x)) = (
        t.as_primitive_opt::<Int64Type>(),
        x.as_primitive_opt::<Float64Type>(),
    ) else {
        return false;
    };
    if t.null_count() > 0 || x.null_count() > 0 {
        return false;
    }
    let strings = |a: &ArrayRef| -> Vec<String> {
        match arrow::compute::cast(a, &DataType::Utf8) {
            Ok(a) => a
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap_or_default().to_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    };
    let (d, s, v) = (strings(d), strings(s), strings(v));
    if d.len() != summary.num_rows() || s.len() != d.len() || v.len() != d.len() {
        return false;
    }
    for (row, key) in d
        .into_iter()
        .zip(s)
        .zip(v)
        .map(|((d, s), v)| (d, s, v))
        .enumerate()
    {
        fold_one(newest, key, t.value(row), x.value(row));
    }
    true
}

/// Folds the newest reading of each key of a readings batch (the buffer's rows) into `newest`.
pub fn fold_readings(batch: &RecordBatch, newest: &mut NewestByKey) {
    let string = |i: usize| batch.column(i).as_string::<i32>();
    let (d, s, v) = (string(DEVICE_IDX), string(SENSOR_IDX), string(VARIABLE_IDX));
    let t = batch
        .column(TIME_IDX)
        .as_primitive::<TimestampMillisecondType>()
        .values();
    let x = batch
        .column(VALUE_IDX)
        .as_primitive::<Float64Type>()
        .values();
    for row in 0..batch.num_rows() {
        let key = (
            d.value(row).to_owned(),
            s.value(row).to_owned(),
            v.value(row).to_owned(),
        );
        fold_one(newest, key, t[row], x[row]);
    }
}

/// Keeps `(time, value)` for `key` if it is the newest seen (a later one wins a tie).
pub fn fold_one(newest: &mut NewestByKey, key: (String, String, String), time: i64, value: f64) {
    match newest.entry(key) {
        Entry::Occupied(mut e) => {
            if time >= e.get().0 {
                *e.get_mut() = (time, value);
            }
        }
        Entry::Vacant(e) => {
            e.insert((time, value));
        }
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
        let mut newest = NewestByKey::new();
        assert!(fold_newest(&summary, &mut newest));
        let key = |d: &str, s: &str, v: &str| (d.to_owned(), s.to_owned(), v.to_owned());
        assert_eq!(newest[&key("d1", "s1", "t")], (3, 3.0));
        assert_eq!(newest[&key("d2", "s1", "t")], (4, -2.0));
        assert_eq!(newest[&key("d1", "s2", "t")], (6, 0.5));
        assert_eq!(newest.len(), 4);
        // A summary of the old format (no newest reading) says so.
        let old = summary.project(&[0, 1, 2, 3, 4, 5, 6]).unwrap();
        assert!(!fold_newest(&old, &mut NewestByKey::new()));
    }
}
