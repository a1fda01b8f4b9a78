//! Results as Postgres rows, and aemos' errors as Postgres errors.
//!
//! Arrow types map to Postgres types through `arrow-pg` (timestamps with a zone to
//! `timestamptz`, `UInt64` to `numeric`, ...). Postgres has no map type: a map column (the
//! `tags` of line-protocol readings) is sent as `text` holding a JSON object.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, MapArray, RecordBatch, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use futures::channel::oneshot;
use futures::{stream, StreamExt};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::data::DataRow;
use pgwire::types::format::FormatOptions;

use crate::error::Error;

/// `schema` as sent: map columns become text.
pub(crate) fn pg_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Map(..) => Field::new(f.name(), DataType::Utf8, true),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The row description of `schema` in `format`.
pub(crate) fn fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    arrow_pg::datatypes::arrow_schema_to_pg_fields(&pg_schema(schema), format, options)
}

/// The rows of `stream`, ending early with `57014` when the client cancels the query.
pub(crate) fn respond(
    stream: SendableRecordBatchStream,
    format: &Format,
    options: Arc<FormatOptions>,
    cancel: Option<oneshot::Receiver<()>>,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(fields(&stream.schema(), format, Some(options))?);
    let described = Arc::clone(&fields);
    let batches = stream::unfold(Some((stream, cancel)), |state| async move {
        let (mut stream, cancel) = state?;
        let Some(mut cancel) = cancel else {
            let item = stream.next().await?;
            return Some((item, Some((stream, None))));
        };
        tokio::select! {
            item = stream.next() => Some((item?, Some((stream, Some(cancel))))),
            fired = &mut cancel => match fired {
                Ok(()) => Some((Err(DataFusionError::External(Box::new(Cancelled))), None)),
                // The sender is gone (the connection's next query): nothing to watch for.
                Err(_) => {
                    let item = stream.next().await?;
                    Some((item, Some((stream, None))))
                }
            },
        }
    });
    let rows = batches.flat_map(move |batch| {
        let rows: Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send + Sync> = match batch
            .map_err(|e| pg_error(Error::from_datafusion(e)))
            .and_then(to_pg)
        {
            Ok(batch) => arrow_pg::datatypes::encode_recordbatch(Arc::clone(&fields), batch),
            Err(e) => Box::new(std::iter::once(Err(e))),
        };
        stream::iter(rows)
    });
    Ok(QueryResponse::new(described, rows))
}

#[derive(Debug, thiserror::Error)]
#[error("canceling statement due to user request")]
struct Cancelled;

/// `batch` as sent ([`pg_schema`]).
fn to_pg(batch: RecordBatch) -> PgWireResult<RecordBatch> {
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Map(..)))
    {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .map(|c| match c.as_any().downcast_ref::<MapArray>() {
            Some(map) => map_as_json(map),
            None => Ok(Arc::clone(c)),
        })
        .collect::<PgWireResult<Vec<_>>>()?;
    RecordBatch::try_new(pg_schema(&batch.schema()), columns)
        .map_err(|e| pg_error(Error::Encode(e)))
}

/// Each map as a JSON object (`{"host":"a"}`), null where the map is.
fn map_as_json(map: &MapArray) -> PgWireResult<ArrayRef> {
    let as_text = |a: &ArrayRef| cast(a, &DataType::Utf8).map_err(|e| pg_error(Error::Encode(e)));
    let keys = as_text(map.keys())?;
    let values = as_text(map.values())?;
    let keys = keys.as_any().downcast_ref::<arrow::array::StringArray>();
    let values = values.as_any().downcast_ref::<arrow::array::StringArray>();
    let (Some(keys), Some(values)) = (keys, values) else {
        return Err(pg_error(Error::Encode(
            arrow::error::ArrowError::CastError("map keys and values must cast to text".into()),
        )));
    };
    let offsets = map.value_offsets();
    let mut out = StringBuilder::with_capacity(map.len(), map.len() * 16);
    for row in 0..map.len() {
        if map.is_null(row) {
            out.append_null();
            continue;
        }
        let mut object = serde_json::Map::new();
        for i in offsets[row] as usize..offsets[row + 1] as usize {
            let value = match values.is_null(i) {
                true => serde_json::Value::Null,
                false => serde_json::Value::String(values.value(i).to_owned()),
            };
            object.insert(keys.value(i).to_owned(), value);
        }
        out.append_value(serde_json::Value::Object(object).to_string());
    }
    Ok(Arc::new(out.finish()))
}

/// An aemos error as a Postgres error, with the SQLSTATE clients act on.
pub(crate) fn pg_error(e: Error) -> PgWireError {
    use datafusion::error::DataFusionError as D;
    let code = match &e {
        Error::Busy { .. } => "53300",
        Error::Query(d) | Error::Execution(d) => match d.find_root() {
            D::SQL(..) => "42601",
            D::Plan(m) if m.contains("not found") => "42P01",
            D::SchemaError(..) => "42703",
            D::NotImplemented(_) => "0A000",
            D::ResourcesExhausted(_) => "53200",
            D::External(inner) if inner.is::<Cancelled>() => "57014",
            D::Execution(m) if m.contains(crate::error::TIMEOUT_MARK) => "57014",
            D::ArrowError(..) => "22000",
            _ if e.is_user_error() => "42000",
            _ => "XX000",
        },
        _ => "XX000",
    };
    sql_error(code, e.to_string())
}

/// A statement's error (severity `ERROR`: the connection goes on) with its SQLSTATE.
pub(crate) fn sql_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// The error of a statement aemos does not run over SQL.
pub(crate) fn read_only(what: &str) -> PgWireError {
    sql_error(
        "25006",
        format!(
            "{what}: aemos is read-only over SQL; readings are written over HTTP, MQTT or CoAP"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{MapBuilder, StringBuilder as Sb};

    #[test]
    fn a_map_column_goes_out_as_a_json_object_per_row() {
        let mut b = MapBuilder::new(None, Sb::new(), Sb::new());
        b.keys().append_value("cpu");
        b.values().append_value("cpu0");
        b.keys().append_value("host");
        b.values().append_value("a\"b");
        b.append(true).unwrap();
        b.append(false).unwrap();
        let map = b.finish();
        let json = map_as_json(&map).unwrap();
        let json = json
            .as_any()
            .downcast_ref::<arrow::array::StringArray>()
            .unwrap();
        assert_eq!(json.value(0), r#"{"cpu":"cpu0","host":"a\"b"}"#);
        assert!(json.is_null(1));
    }
}
