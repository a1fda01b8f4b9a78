//! Turning buffered batches into Parquet files: split by hour, sorted by
//! `(sensor, variable, time)`, dictionary-encoded strings, delta-encoded times, byte-stream-split
//! values, zstd, page statistics.

use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMillisecondArray};
use arrow::compute::{
    concat_batches, filter_record_batch, lexsort_to_indices, take_record_batch, SortColumn,
};
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

/// Concatenates, splits by hour partition and sorts each part by `(sensor, variable, time)`.
pub fn sort_and_split(batches: &[RecordBatch]) -> Result<Vec<SortedPartition>> {
    let all = concat_batches(&readings_schema(), batches)?;
    if all.num_rows() == 0 {
        return Ok(vec![]);
    }
    let times = time_column(&all);
    let mut hours: Vec<HourPartition> = times
        .values()
        .iter()
        .map(|t| HourPartition::of(*t))
        .collect();
    let first = hours[0];
    let single = hours.iter().all(|h| *h == first);
    let parts: Vec<(HourPartition, RecordBatch)> = if single {
        vec![(first, all)]
    } else {
        let row_hours = hours.clone();
        hours.sort_unstable();
        hours.dedup();
        hours
            .into_iter()
            .map(|hour| {
                let mask: BooleanArray = row_hours.iter().map(|h| Some(*h == hour)).collect();
                Ok((hour, filter_record_batch(&all, &mask)?))
            })
            .collect::<Result<_>>()?
    };
    parts
        .into_iter()
        .map(|(partition, batch)| {
            let batch = sort_batch(&batch)?;
            let times = time_column(&batch);
            let (min_time, max_time) = times
                .values()
                .iter()
                .fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
            Ok(SortedPartition {
                partition,
                batch,
                min_time,
                max_time,
            })
        })
        .collect()
}

/// Sorts by `(sensor, variable, time)`.
pub(crate) fn sort_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let keys: Vec<SortColumn> = [SENSOR_IDX, VARIABLE_IDX, TIME_IDX]
        .iter()
        .map(|i| SortColumn {
            values: Arc::clone(batch.column(*i)) as ArrayRef,
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(batch, &indices)?)
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
            // The file schema may differ in metadata only; rebuild with the table schema.
            Ok(RecordBatch::try_new(
                Arc::clone(&schema),
                b.columns().to_vec(),
            )?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::ReadingsBuilder;

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
        let sensors = p1
            .batch
            .column(SENSOR_IDX)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let vars = p1
            .batch
            .column(VARIABLE_IDX)
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        let got: Vec<(&str, &str)> = (0..3).map(|i| (sensors.value(i), vars.value(i))).collect();
        assert_eq!(got, vec![("s1", "h"), ("s1", "t"), ("s2", "t")]);
        let bytes = encode_parquet(&p1.batch).unwrap();
        let back = decode_parquet(bytes).unwrap();
        assert_eq!(back, vec![p1.batch.clone()]);
    }
}
