//! Turning buffered batches into Parquet files: split by hour, sorted by
//! `(sensor, variable, time)`, dictionary-encoded strings, delta-encoded times, byte-stream-split
//! values, zstd, page statistics.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, TimestampMillisecondArray};
use arrow::compute::interleave_record_batch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::Result;
use crate::paths::HourPartition;
use crate::schema::{readings_schema, SENSOR_IDX, TIME, TIME_IDX, VALUE, VARIABLE_IDX};

/// One hour of readings, sorted, ready to be written.
#[derive(Debug)]
pub struct SortedPartition {
    pub partition: HourPartition,
    pub batch: RecordBatch,
    pub min_time: i64,
    pub max_time: i64,
}

fn time_column(batch: &RecordBatch) -> &TimestampMillisecondArray {
    batch
        .column(TIME_IDX)
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .expect("readings time column")
}

/// Splits rows by hour partition and sorts each part by `(sensor, variable, time)`, copying
/// every row once.
///
/// The distinct `(sensor, variable)` keys are few next to the rows, so rows are sorted by
/// integers: each key is ranked once in string order, then row references are sorted by
/// `(hour, key rank, time)` and gathered from the input batches with one interleave; each
/// hour is then a zero-copy slice of the result.
pub fn sort_and_split(batches: &[RecordBatch]) -> Result<Vec<SortedPartition>> {
    let batches: Vec<&RecordBatch> = batches.iter().filter(|b| b.num_rows() > 0).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(vec![]);
    }
    let mut key_ids: HashMap<(&str, &str), u32> = HashMap::new();
    let mut refs: Vec<(i64, u32, i64, u32, u32)> = Vec::with_capacity(rows);
    for (b, batch) in batches.iter().enumerate() {
        let sensors = batch.column(SENSOR_IDX).as_string::<i32>();
        let variables = batch.column(VARIABLE_IDX).as_string::<i32>();
        let times = time_column(batch).values();
        for row in 0..batch.num_rows() {
            let next = key_ids.len() as u32;
            let key = *key_ids
                .entry((sensors.value(row), variables.value(row)))
                .or_insert(next);
            let time = times[row];
            refs.push((HourPartition::of(time).0, key, time, b as u32, row as u32));
        }
    }
    let mut keys: Vec<(&(&str, &str), &u32)> = key_ids.iter().collect();
    keys.sort_unstable();
    let mut rank = vec![0u32; keys.len()];
    for (position, (_, id)) in keys.iter().enumerate() {
        rank[**id as usize] = position as u32;
    }
    for r in &mut refs {
        r.1 = rank[r.1 as usize];
    }
    refs.sort_unstable();
    let indices: Vec<(usize, usize)> = refs.iter().map(|r| (r.3 as usize, r.4 as usize)).collect();
    let sorted = interleave_record_batch(&batches, &indices)?;
    drop(indices);

    let mut parts = Vec::new();
    let mut start = 0;
    while start < refs.len() {
        let hour = refs[start].0;
        let len = refs[start..].partition_point(|r| r.0 == hour);
        let (min_time, max_time) = refs[start..start + len]
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), r| {
                (lo.min(r.2), hi.max(r.2))
            });
        parts.push(SortedPartition {
            partition: HourPartition(hour),
            batch: sorted.slice(start, len),
            min_time,
            max_time,
        });
        start += len;
    }
    Ok(parts)
}

pub fn writer_properties() -> WriterProperties {
    let sorting = [SENSOR_IDX, VARIABLE_IDX, TIME_IDX]
        .iter()
        .map(|i| SortingColumn {
            column_idx: *i as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(3).expect("valid zstd level"),
        ))
        .set_dictionary_enabled(true)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_column_dictionary_enabled(ColumnPath::from(TIME), false)
        .set_column_encoding(ColumnPath::from(TIME), Encoding::DELTA_BINARY_PACKED)
        .set_column_dictionary_enabled(ColumnPath::from(VALUE), false)
        .set_column_encoding(ColumnPath::from(VALUE), Encoding::BYTE_STREAM_SPLIT)
        .set_sorting_columns(Some(sorting))
        .set_max_row_group_row_count(Some(1 << 20))
        .build()
}

/// Encodes one sorted batch as a Parquet file.
pub fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    let mut out = Vec::with_capacity(batch.num_rows() * 4 + 4096);
    let mut writer = ArrowWriter::try_new(&mut out, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(out))
}

/// Decodes a Parquet file written by [`encode_parquet`] (compaction).
pub fn decode_parquet(bytes: Bytes) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?
        .with_batch_size(64 * 1024)
        .build()?;
    let schema = readings_schema();
    reader
        .map(|b| {
            let b = b?;
            // The file schema may differ in metadata only, or lack the columns added since it
            // was written; rebuild with the table schema.
            let fields = schema.fields().get(..b.num_columns()).ok_or_else(|| {
                arrow::error::ArrowError::SchemaError(format!(
                    "a readings file has {} columns, more than the {} of the table",
                    b.num_columns(),
                    schema.fields().len()
                ))
            })?;
            let b = RecordBatch::try_new(
                Arc::new(arrow::datatypes::Schema::new(fields.to_vec())),
                b.columns().to_vec(),
            )?;
            Ok(crate::schema::conform(b)?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ReadingsBuilder;

    #[test]
    fn a_file_of_the_older_schema_is_read_into_the_current_one() {
        let old = crate::schema::tests::five_column_batch();
        let bytes = encode_parquet(&old).unwrap();
        let batches = decode_parquet(bytes).unwrap();
        assert_eq!(batches[0].schema(), readings_schema());
        assert_eq!(batches[0].num_rows(), 2);
    }

    #[test]
    fn splits_by_hour_and_sorts_within() {
        let hour = 3_600_000;
        let mut b = ReadingsBuilder::with_capacity(4);
        b.push(hour + 5, "d", "s2", "t", 1.0);
        b.push(5, "d", "s1", "t", 2.0);
        b.push(hour + 1, "d", "s1", "t", 3.0);
        b.push(hour + 2, "d", "s1", "h", 4.0);
        let parts = sort_and_split(&[b.finish()]).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].partition, HourPartition(0));
        assert_eq!(parts[0].batch.num_rows(), 1);
        let p1 = &parts[1];
        assert_eq!((p1.min_time, p1.max_time), (hour + 1, hour + 5));
        let sensors = p1.batch.column(SENSOR_IDX).as_string::<i32>();
        let vars = p1.batch.column(VARIABLE_IDX).as_string::<i32>();
        let got: Vec<(&str, &str)> = (0..3).map(|i| (sensors.value(i), vars.value(i))).collect();
        assert_eq!(got, vec![("s1", "h"), ("s1", "t"), ("s2", "t")]);
        let bytes = encode_parquet(&p1.batch).unwrap();
        let back = decode_parquet(bytes).unwrap();
        assert_eq!(back, vec![p1.batch.clone()]);
    }
}
