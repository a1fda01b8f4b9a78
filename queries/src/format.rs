//! Result encoders: JSON (array of row objects), NDJSON, CSV, Arrow IPC stream, Parquet.
//!
//! [`ResultEncoder`] encodes batch by batch so that results stream out; each call returns the
//! bytes ready to send.

use std::sync::Arc;

use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::csv::WriterBuilder as CsvWriterBuilder;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{
    JsonArray, LineDelimited, Writer as JsonWriter, WriterBuilder as JsonWriterBuilder,
};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Ndjson,
    Csv,
    Arrow,
    Parquet,
}

impl OutputFormat {
    /// `?format=` names and their media types.
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "json" | "application/json" => Ok(Self::Json),
            "ndjson" | "jsonl" | "application/x-ndjson" => Ok(Self::Ndjson),
            "csv" | "text/csv" => Ok(Self::Csv),
            "arrow" | "application/vnd.apache.arrow.stream" => Ok(Self::Arrow),
            "parquet" | "application/vnd.apache.parquet" => Ok(Self::Parquet),
            other => Err(Error::Format(other.to_string())),
        }
    }

    /// The first supported media type of an `Accept` header; JSON when none is.
    pub fn from_accept(accept: &str) -> Self {
        accept
            .split(',')
            .filter_map(|part| part.split(';').next())
            .find_map(|media| Self::parse(media).ok())
            .unwrap_or(Self::Json)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv",
            Self::Arrow => "application/vnd.apache.arrow.stream",
            Self::Parquet => "application/vnd.apache.parquet",
        }
    }
}

/// Arrow, Parquet and Flight SQL output carry `Utf8` rather than `Utf8View`, so that readers built on
/// older Arrow versions (view types arrived in 2024) can open them.
pub(crate) fn portable_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            DataType::BinaryView => f.as_ref().clone().with_data_type(DataType::Binary),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

pub(crate) fn portable_batch(batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = portable_schema(&batch.schema());
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

pub enum ResultEncoder {
    Json(JsonWriter<Vec<u8>, JsonArray>, bool),
    Ndjson(JsonWriter<Vec<u8>, LineDelimited>),
    Csv { header_written: bool },
    Arrow(StreamWriter<Vec<u8>>),
    Parquet(ArrowWriter<Vec<u8>>),
}

impl ResultEncoder {
    pub fn new(format: OutputFormat, schema: &SchemaRef) -> Result<Self> {
        let json = JsonWriterBuilder::new().with_explicit_nulls(true);
        Ok(match format {
            OutputFormat::Json => Self::Json(json.build(Vec::new()), false),
            OutputFormat::Ndjson => Self::Ndjson(json.build(Vec::new())),
            OutputFormat::Csv => Self::Csv {
                header_written: false,
            },
            OutputFormat::Arrow => {
                Self::Arrow(StreamWriter::try_new(Vec::new(), &portable_schema(schema))?)
            }
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Self::Parquet(ArrowWriter::try_new(
                    Vec::new(),
                    portable_schema(schema),
                    Some(props),
                )?)
            }
        })
    }

    /// Encodes one batch; returns the bytes ready to send (may be empty).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>> {
        Ok(match self {
            Self::Json(w, wrote) => {
                if batch.num_rows() > 0 {
                    *wrote = true;
                }
                w.write(batch)?;
                std::mem::take(w.get_mut())
            }
            Self::Ndjson(w) => {
                w.write(batch)?;
                std::mem::take(w.get_mut())
            }
            Self::Csv { header_written } => {
                let mut out = Vec::new();
                let mut w = CsvWriterBuilder::new()
                    .with_header(!*header_written)
                    .build(&mut out);
                w.write(batch)?;
                drop(w);
                *header_written = true;
                out
            }
            Self::Arrow(w) => {
                w.write(&portable_batch(batch)?)?;
                std::mem::take(w.get_mut())
            }
            Self::Parquet(w) => {
                w.write(&portable_batch(batch)?)?;
                Vec::new()
            }
        })
    }

    /// Ends the output; returns the last bytes.
    pub fn finish(self, schema: &SchemaRef) -> Result<Vec<u8>> {
        Ok(match self {
            Self::Json(mut w, wrote) => {
                w.finish()?;
                let out = w.into_inner();
                // arrow-json writes nothing at all for zero rows.
                if wrote {
                    out
                } else {
                    b"[]".to_vec()
                }
            }
            Self::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Self::Csv { header_written } => {
                if header_written {
                    Vec::new()
                } else {
                    let mut out = Vec::new();
                    let empty = RecordBatch::new_empty(SchemaRef::clone(schema));
                    CsvWriterBuilder::new()
                        .with_header(true)
                        .build(&mut out)
                        .write(&empty)?;
                    out
                }
            }
            Self::Arrow(mut w) => {
                w.finish()?;
                std::mem::take(w.get_mut())
            }
            Self::Parquet(w) => w.into_inner()?,
        })
    }
}

/// Encodes whole results at once.
pub fn encode(
    format: OutputFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>> {
    let mut encoder = ResultEncoder::new(format, schema)?;
    let mut out = Vec::new();
    for batch in batches {
        out.extend(encoder.batch(batch)?);
    }
    out.extend(encoder.finish(schema)?);
    Ok(out)
}
