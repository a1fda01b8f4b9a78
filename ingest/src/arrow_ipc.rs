//! Arrow IPC streams with columns `sensor`, `variable` (Utf8 or Dictionary), `value` (Float64),
//! optional `time` (Timestamp, UTC) and optional `device`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Schema, TimeUnit};
use arrow::ipc::reader::StreamReader;

use crate::collect::{Collector, Fields, Location};
use crate::{DecodeArgs, Error};

fn schema_error(reason: String) -> Error {
    Error::Body { line: None, reason }
}

fn is_text(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_text(v),
        _ => false,
    }
}

/// Checks the stream's schema once, before any row is read.
fn check_schema(schema: &Schema) -> Result<(), Error> {
    for (name, required) in [("sensor", true), ("variable", true), ("device", false)] {
        match schema.field_with_name(name) {
            Ok(f) if is_text(f.data_type()) => {}
            Ok(f) => {
                return Err(schema_error(format!(
                    "column `{name}` has type {}, expected Utf8 or Dictionary(_, Utf8)",
                    f.data_type()
                )))
            }
            Err(_) if required => return Err(schema_error(format!("missing column `{name}`"))),
            Err(_) => {}
        }
    }
    match schema.field_with_name("value") {
        Ok(f) if f.data_type() == &DataType::Float64 => {}
        Ok(f) => {
            return Err(schema_error(format!(
                "column `value` has type {}, expected Float64",
                f.data_type()
            )))
        }
        Err(_) => return Err(schema_error("missing column `value`".into())),
    }
    if let Ok(f) = schema.field_with_name("time") {
        match f.data_type() {
            DataType::Timestamp(_, None) => {}
            DataType::Timestamp(_, Some(tz)) if matches!(tz.as_ref(), "UTC" | "+00:00" | "Z") => {}
            other => {
                return Err(schema_error(format!(
                    "column `time` has type {other}, expected Timestamp(ms|us|ns) in UTC"
                )))
            }
        }
    }
    Ok(())
}

fn text_column(batch: &RecordBatch, name: &str) -> Result<Option<StringArray>, Error> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let utf8 =
        cast(col, &DataType::Utf8).map_err(|e| schema_error(format!("column `{name}`: {e}")))?;
    Ok(utf8.as_any().downcast_ref::<StringArray>().cloned())
}

fn time_column(batch: &RecordBatch) -> Result<Option<TimestampMillisecondArray>, Error> {
    let Some(col) = batch.column_by_name("time") else {
        return Ok(None);
    };
    let ms: ArrayRef = cast(col, &DataType::Timestamp(TimeUnit::Millisecond, None))
        .map_err(|e| schema_error(format!("column `time`: {e}")))?;
    Ok(ms
        .as_any()
        .downcast_ref::<TimestampMillisecondArray>()
        .cloned())
}

/// Walks the stream's message framing and checks every declared length against the bytes
/// actually present, before arrow's reader allocates buffers of those lengths: a hostile
/// 10-byte body must not make the server allocate gigabytes.
fn check_framing(body: &[u8]) -> Result<(), Error> {
    let mut at = 0usize;
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(body.get(at..at + 4)?.try_into().ok()?))
    };
    loop {
        let Some(first) = word(at) else {
            return if at == body.len() {
                Ok(())
            } else {
                Err(schema_error(format!(
                    "truncated Arrow IPC message at byte {at}"
                )))
            };
        };
        let (meta_len, meta_start) = if first == 0xFFFF_FFFF {
            (
                word(at + 4).ok_or_else(|| {
                    schema_error(format!("truncated Arrow IPC message at byte {at}"))
                })?,
                at + 8,
            )
        } else {
            (first, at + 4)
        };
        if meta_len == 0 {
            return Ok(()); // end-of-stream marker
        }
        let meta_end = meta_start
            .checked_add(meta_len as usize)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| schema_error(format!("Arrow IPC message at byte {at} declares {meta_len} bytes of metadata, more than the body holds")))?;
        let message = arrow::ipc::root_as_message(&body[meta_start..meta_end])
            .map_err(|e| schema_error(format!("malformed Arrow IPC message at byte {at}: {e}")))?;
        let body_len = usize::try_from(message.bodyLength()).map_err(|_| {
            schema_error(format!(
                "Arrow IPC message at byte {at} has a negative body length"
            ))
        })?;
        check_buffers(&message, at, body_len)?;
        check_field_types(&message)?;
        at = meta_end
            .checked_add(body_len)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| schema_error(format!("Arrow IPC message at byte {at} declares {body_len} body bytes, more than the body holds")))?;
    }
}

/// Checks that every buffer a record or dictionary batch message declares lies within its
/// body: arrow's reader slices them unchecked and panics past the end (found by the fuzzer).
fn check_buffers(
    message: &arrow::ipc::Message<'_>,
    at: usize,
    body_len: usize,
) -> Result<(), Error> {
    let batch = message
        .header_as_record_batch()
        .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
    let Some(buffers) = batch.and_then(|b| b.buffers()) else {
        return Ok(());
    };
    for (i, buffer) in buffers.iter().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let inside = offset >= 0
            && length >= 0
            && offset
                .checked_add(length)
                .is_some_and(|end| end as u64 <= body_len as u64);
        if !inside {
            return Err(schema_error(format!(
                "Arrow IPC message at byte {at}: buffer {i} (offset {offset}, length {length}) lies outside its {body_len}-byte body"
            )));
        }
    }
    Ok(())
}

/// Checks that a schema message declares its columns, only flat ones of the types aemos reads
/// (text, numbers, booleans, timestamps), before arrow converts it: arrow's converter panics
/// on a missing list and on some types it does not implement (`NONE`; both found by the
/// fuzzer), and no other type is of use here.
fn check_field_types(message: &arrow::ipc::Message<'_>) -> Result<(), Error> {
    use arrow::ipc::Type;
    let Some(schema) = message.header_as_schema() else {
        return Ok(());
    };
    // arrow unwraps the list (a schema without one, found by the fuzzer, panicked it).
    let fields = schema
        .fields()
        .ok_or_else(|| schema_error("the Arrow IPC schema declares no columns".into()))?;
    for (i, field) in fields.iter().enumerate() {
        let name = field.name().unwrap_or_default();
        let read = matches!(
            field.type_type(),
            Type::Utf8
                | Type::LargeUtf8
                | Type::Utf8View
                | Type::Int
                | Type::FloatingPoint
                | Type::Bool
                | Type::Timestamp
        );
        if !read || field.children().is_some_and(|c| !c.is_empty()) {
            return Err(schema_error(format!(
                "column {i} (`{name}`) has type {:?}: aemos reads text, number, boolean and timestamp columns",
                field.type_type()
            )));
        }
    }
    Ok(())
}

pub(crate) fn decode_arrow_ipc<'a>(
    body: &[u8],
    args: &'a DecodeArgs,
) -> Result<Collector<'a>, Error> {
    check_framing(body)?;
    // arrow's IPC reader still panics on some inconsistent buffers (offsets past the end):
    // contain that to this request. The scope is only read, so a panic leaves nothing
    // half-changed behind.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| read_stream(body, args)))
        .unwrap_or_else(|_| {
            Err(schema_error(
                "malformed Arrow IPC stream: inconsistent buffers".into(),
            ))
        })
}

fn read_stream<'a>(body: &[u8], args: &'a DecodeArgs) -> Result<Collector<'a>, Error> {
    let reader = StreamReader::try_new(body, None)
        .map_err(|e| schema_error(format!("not an Arrow IPC stream: {e}")))?;
    check_schema(&Arc::clone(&reader.schema()))?;
    let mut out = Collector::new(0, args);
    let mut base = 0;
    for batch in reader {
        let batch = batch.map_err(|e| {
            schema_error(format!("malformed Arrow IPC stream after row {base}: {e}"))
        })?;
        let sensor = text_column(&batch, "sensor")?.expect("checked");
        let variable = text_column(&batch, "variable")?.expect("checked");
        let device = text_column(&batch, "device")?;
        let value = batch
            .column_by_name("value")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
            .expect("checked")
            .clone();
        let time = time_column(&batch)?;
        for row in 0..batch.num_rows() {
            let at = Location {
                index: base + row,
                line: None,
            };
            let null = [
                ("sensor", sensor.is_null(row)),
                ("variable", variable.is_null(row)),
                ("value", value.is_null(row)),
            ]
            .into_iter()
            .find(|(_, null)| *null);
            if let Some((name, _)) = null {
                out.reject(at, format!("{name} is null"));
                continue;
            }
            out.push(
                at,
                Fields {
                    device: device
                        .as_ref()
                        .filter(|d| d.is_valid(row))
                        .map(|d| d.value(row)),
                    sensor: sensor.value(row),
                    variable: variable.value(row),
                    value: value.value(row),
                    time_ms: time
                        .as_ref()
                        .filter(|t| t.is_valid(row))
                        .map(|t| t.value(row)),
                    series: None,
                },
            );
        }
        base += batch.num_rows();
    }
    Ok(out)
}
