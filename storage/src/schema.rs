//! The `readings` table: one row per value of one variable of one sensor at one time.
//!
//! Line protocol keeps what it says about a series: its `measurement` and its other tags (a
//! map, sorted by key) are the last two columns, null for readings written in other formats.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    new_null_array, Array, ArrayBuilder, ArrayRef, Float64Builder, MapBuilder, MapFieldNames,
    RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

pub const TIME: &str = "time";
pub const DEVICE: &str = "device";
pub const SENSOR: &str = "sensor";
pub const VARIABLE: &str = "variable";
pub const VALUE: &str = "value";
pub const MEASUREMENT: &str = "measurement";
pub const TAGS: &str = "tags";

/// Column positions in [`readings_schema`].
pub const TIME_IDX: usize = 0;
pub const DEVICE_IDX: usize = 1;
pub const SENSOR_IDX: usize = 2;
pub const VARIABLE_IDX: usize = 3;
pub const VALUE_IDX: usize = 4;
pub const MEASUREMENT_IDX: usize = 5;
pub const TAGS_IDX: usize = 6;

fn tags_builder(rows: usize) -> MapBuilder<StringBuilder, StringBuilder> {
    let names = MapFieldNames {
        entry: "entries".into(),
        key: "key".into(),
        value: "value".into(),
    };
    MapBuilder::with_capacity(
        Some(names),
        StringBuilder::with_capacity(rows, rows * 8),
        StringBuilder::with_capacity(rows, rows * 8),
        rows,
    )
}

/// `Map<Utf8, Utf8>` with the field names DataFusion's `map()` uses.
fn tags_type() -> DataType {
    tags_builder(0).finish().data_type().clone()
}

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
        Field::new(MEASUREMENT, DataType::Utf8, true),
        Field::new(TAGS, tags_type(), true),
    ]))
});

/// `readings(time TIMESTAMP(ms, UTC), device, sensor, variable, value DOUBLE, measurement,
/// tags MAP(TEXT, TEXT))`.
pub fn readings_schema() -> SchemaRef {
    Arc::clone(&READINGS_SCHEMA)
}

/// `batch` in the current readings schema: batches of an older one (WAL records and Parquet
/// files written before `measurement` and `tags` existed) get those columns as nulls.
pub fn conform(batch: RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = readings_schema();
    // The canonical schema exactly: a record's own metadata (its WAL tag) is not the data's.
    if batch.schema().fields() == schema.fields() && batch.schema().metadata().is_empty() {
        return Ok(batch);
    }
    let mut columns = batch.columns().to_vec();
    for field in schema.fields().iter().skip(columns.len()) {
        columns.push(new_null_array(field.data_type(), batch.num_rows()));
    }
    RecordBatch::try_new(schema, columns)
}

/// Rows of the null `measurement` and `tags` columns made once, sliced for small batches (a
/// single reading's request built a null map array of its own, an allocation per buffer).
const NULL_ROWS: usize = 256;

static NULL_COLUMNS: LazyLock<[ArrayRef; 2]> = LazyLock::new(|| {
    let schema = readings_schema();
    [MEASUREMENT_IDX, TAGS_IDX].map(|i| new_null_array(schema.field(i).data_type(), NULL_ROWS))
});

/// A null column `idx` (`measurement` or `tags`) of `rows` rows.
fn null_column(idx: usize, rows: usize) -> ArrayRef {
    let cached = &NULL_COLUMNS[usize::from(idx == TAGS_IDX)];
    if rows <= NULL_ROWS {
        cached.slice(0, rows)
    } else {
        new_null_array(cached.data_type(), rows)
    }
}

/// Builds a readings [`RecordBatch`] row by row (decoders, tests, generators).
#[derive(Debug)]
pub struct ReadingsBuilder {
    time: TimestampMillisecondBuilder,
    device: StringBuilder,
    sensor: StringBuilder,
    variable: StringBuilder,
    value: Float64Builder,
    /// Created at the first tagged row (the rows before it get nulls); absent, both columns
    /// are one null array at the end.
    tagged: Option<(StringBuilder, MapBuilder<StringBuilder, StringBuilder>)>,
}

impl ReadingsBuilder {
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            time: TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC"),
            device: StringBuilder::with_capacity(rows, rows * 16),
            sensor: StringBuilder::with_capacity(rows, rows * 16),
            variable: StringBuilder::with_capacity(rows, rows * 12),
            value: Float64Builder::with_capacity(rows),
            tagged: None,
        }
    }

    pub fn push(&mut self, time_ms: i64, device: &str, sensor: &str, variable: &str, value: f64) {
        self.push_base(time_ms, device, sensor, variable, value);
        if let Some((measurements, maps)) = &mut self.tagged {
            measurements.append_null();
            maps.append(false)
                .expect("map keys and values are appended together");
        }
    }

    /// A row of line protocol: its measurement and its other tags (sorted by key, without
    /// `sensor` and `device`).
    #[allow(clippy::too_many_arguments)]
    pub fn push_tagged(
        &mut self,
        time_ms: i64,
        device: &str,
        sensor: &str,
        variable: &str,
        value: f64,
        measurement: &str,
        tags: &[(&str, &str)],
    ) {
        let earlier = self.len();
        let capacity = (earlier + 1).max(self.value.capacity());
        self.push_base(time_ms, device, sensor, variable, value);
        let (measurements, maps) = self.tagged.get_or_insert_with(|| {
            let mut measurements = StringBuilder::with_capacity(capacity, capacity * 8);
            let mut maps = tags_builder(capacity);
            for _ in 0..earlier {
                measurements.append_null();
                maps.append(false)
                    .expect("map keys and values are appended together");
            }
            (measurements, maps)
        });
        measurements.append_value(measurement);
        for (k, v) in tags {
            maps.keys().append_value(k);
            maps.values().append_value(v);
        }
        maps.append(true)
            .expect("map keys and values are appended together");
    }

    fn push_base(&mut self, time_ms: i64, device: &str, sensor: &str, variable: &str, value: f64) {
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
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish()),
            Arc::new(self.device.finish()),
            Arc::new(self.sensor.finish()),
            Arc::new(self.variable.finish()),
            Arc::new(self.value.finish()),
        ];
        let rows = columns[0].len();
        match self.tagged.take() {
            Some((mut measurements, mut maps)) => {
                columns.push(Arc::new(measurements.finish()));
                columns.push(Arc::new(maps.finish()));
            }
            None => {
                columns.push(null_column(MEASUREMENT_IDX, rows));
                columns.push(null_column(TAGS_IDX, rows));
            }
        }
        RecordBatch::try_new(readings_schema(), columns).expect("builder columns match the schema")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A batch of the schema before `measurement` and `tags` (five columns).
    pub(crate) fn five_column_batch() -> RecordBatch {
        let full = {
            let mut b = ReadingsBuilder::with_capacity(2);
            b.push(1, "d", "s", "v", 1.0);
            b.push(2, "d", "s", "v", 2.0);
            b.finish()
        };
        full.project(&[TIME_IDX, DEVICE_IDX, SENSOR_IDX, VARIABLE_IDX, VALUE_IDX])
            .unwrap()
    }

    #[test]
    fn older_batches_conform_with_null_measurement_and_tags() {
        let conformed = conform(five_column_batch()).unwrap();
        assert_eq!(conformed.schema(), readings_schema());
        assert_eq!(conformed.column(MEASUREMENT_IDX).null_count(), 2);
        assert_eq!(conformed.column(TAGS_IDX).null_count(), 2);
    }

    #[test]
    fn small_batches_share_their_null_columns_and_survive_ipc_and_concat() {
        let small = |n: usize| {
            let mut b = ReadingsBuilder::with_capacity(n);
            for i in 0..n {
                b.push(i as i64, "d", "s", "v", i as f64);
            }
            b.finish()
        };
        let (three, many) = (small(3), small(NULL_ROWS + 1));
        assert_eq!(three.column(TAGS_IDX).len(), 3);
        assert_eq!(many.column(TAGS_IDX).null_count(), NULL_ROWS + 1);
        let mut tagged = ReadingsBuilder::with_capacity(1);
        tagged.push_tagged(9, "d", "s", "v", 9.0, "m", &[("host", "a")]);
        let tagged = tagged.finish();
        let all =
            arrow::compute::concat_batches(&readings_schema(), [&three, &tagged, &many]).unwrap();
        assert_eq!(all.num_rows(), 3 + 1 + NULL_ROWS + 1);
        assert_eq!(all.column(TAGS_IDX).null_count(), 3 + NULL_ROWS + 1);
        assert!(all.column(TAGS_IDX).is_valid(3));
        for batch in [three, all] {
            let mut bytes = Vec::new();
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut bytes, &batch.schema()).unwrap();
            w.write(&batch).unwrap();
            w.finish().unwrap();
            drop(w);
            let read: Vec<RecordBatch> =
                arrow::ipc::reader::StreamReader::try_new(&bytes[..], None)
                    .unwrap()
                    .map(|b| b.unwrap())
                    .collect();
            assert_eq!(read, [batch]);
        }
    }

    #[test]
    fn untagged_rows_before_and_after_a_tagged_one_are_null() {
        let mut b = ReadingsBuilder::with_capacity(1);
        b.push(1, "d", "s", "v", 1.0);
        b.push_tagged(2, "d", "s", "v", 2.0, "m", &[("host", "a")]);
        b.push(3, "d", "s", "v", 3.0);
        let batch = b.finish();
        let measurements = batch.column(MEASUREMENT_IDX);
        assert!(measurements.is_null(0) && measurements.is_valid(1) && measurements.is_null(2));
        let tags = batch.column(TAGS_IDX);
        assert!(tags.is_null(0) && tags.is_valid(1) && tags.is_null(2));
    }
}
