//! A prepared statement's handle: the statement's text and, once `DoPut` has bound them, its
//! parameters (one row, as Arrow IPC). The client keeps it and sends it back; the server keeps
//! nothing, so a handle outlives the connection and any server can run it. A handle is the
//! client's input like any other: one that does not decode is refused with the reason.

use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use bytes::Bytes;
use tonic::Status;

/// The first byte of every handle of this layout.
const VERSION: u8 = 1;

/// A statement and the parameters bound to it.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) sql: String,
    pub(super) params: Option<RecordBatch>,
}

impl Prepared {
    pub(super) fn encode(&self) -> Result<Bytes, Status> {
        let mut out = Vec::with_capacity(5 + self.sql.len());
        out.push(VERSION);
        let len = u32::try_from(self.sql.len())
            .map_err(|_| Status::invalid_argument("the statement is longer than 4 GiB"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(self.sql.as_bytes());
        if let Some(batch) = &self.params {
            let ipc = || -> Result<Vec<u8>, arrow::error::ArrowError> {
                let mut writer = StreamWriter::try_new(Vec::new(), &batch.schema())?;
                writer.write(batch)?;
                writer.into_inner()
            };
            out.extend(ipc().map_err(|e| Status::internal(format!("encoding parameters: {e}")))?);
        }
        Ok(out.into())
    }

    pub(super) fn decode(handle: &[u8]) -> Result<Self, Status> {
        let bad = |why: &str| {
            Status::invalid_argument(format!("not a prepared statement of aemos: {why}"))
        };
        let (&version, rest) = handle.split_first().ok_or_else(|| bad("empty handle"))?;
        if version != VERSION {
            return Err(bad("unknown handle version"));
        }
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("truncated handle"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return Err(bad("truncated statement"));
        }
        let (sql, ipc) = rest.split_at(len);
        let sql = std::str::from_utf8(sql)
            .map_err(|_| bad("the statement is not UTF-8"))?
            .to_owned();
        let params = if ipc.is_empty() {
            None
        } else {
            let mut reader =
                StreamReader::try_new(ipc, None).map_err(|e| bad(&format!("parameters: {e}")))?;
            match reader.next() {
                Some(batch) => Some(batch.map_err(|e| bad(&format!("parameters: {e}")))?),
                None => None,
            }
        };
        Ok(Self { sql, params })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Float64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn a_handle_keeps_the_statement_and_its_parameters() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("$1", DataType::Utf8, true),
            Field::new("$2", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["s1"])),
                Arc::new(Float64Array::from(vec![22.0])),
            ],
        )
        .unwrap();
        let sql = "SELECT * FROM readings WHERE sensor = $1 AND value > $2".to_string();
        let handle = Prepared {
            sql: sql.clone(),
            params: Some(batch.clone()),
        }
        .encode()
        .unwrap();
        let back = Prepared::decode(&handle).unwrap();
        assert_eq!(back.sql, sql);
        assert_eq!(back.params, Some(batch));
        let plain = Prepared {
            sql: sql.clone(),
            params: None,
        }
        .encode()
        .unwrap();
        assert!(Prepared::decode(&plain).unwrap().params.is_none());
    }

    #[test]
    fn a_handle_that_does_not_decode_is_refused_with_the_reason() {
        for (bytes, why) in [
            (&b""[..], "empty handle"),
            (&[2u8, 0, 0, 0, 0][..], "unknown handle version"),
            (&[1u8, 9][..], "truncated handle"),
            (&[1u8, 9, 0, 0, 0, b'S'][..], "truncated statement"),
            (&[1u8, 1, 0, 0, 0, 0xff][..], "not UTF-8"),
            (&[1u8, 1, 0, 0, 0, b'S', 1, 2, 3][..], "parameters"),
        ] {
            let e = Prepared::decode(bytes).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(why), "{why}: {}", e.message());
        }
    }
}
