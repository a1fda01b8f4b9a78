//! Payload decoders and the reading rules: the device-facing edge of the write path.
//!
//! A body arrives with its format (from the `Content-Type`); [`decode`] turns it into one
//! Arrow batch of valid readings (the `readings` schema of `aemos-storage`) and a list of
//! rejections, each naming the reading's index (and line, for line-based formats) and the
//! reason. Whether a batch with rejections is refused whole or stored in part is the caller's
//! choice. A body that cannot be read at all (not JSON, not an Arrow stream, a mistyped column)
//! is an [`Error`].
//!
//! The device-facing servers live here too: the embedded MQTT broker ([`mqtt`]) and the CoAP
//! server ([`coap`]) take telemetry in through [`decode_device_payload`] and the WAL, and carry
//! notifications out to subscribers and observers through drop-oldest queues ([`queue`]).

mod arrow_ipc;
pub mod coap;
mod collect;
mod device_payload;
pub mod edge_auth;
#[doc(hidden)]
pub mod fuzzing;
mod json;
mod line_protocol;
pub mod mqtt;
pub mod queue;
pub mod scope;
mod staged;
pub mod validate;

pub use device_payload::{decode_device_payload, stage_device_payload};
pub use edge_auth::{EdgeAuthorizer, EdgeDevice, EdgeRefusal};
pub use scope::{Owner, SensorScope};
pub use staged::StagedReadings;

pub use collect::{
    Decoded, Location, RejectReason, Rejection, RejectionCounts, MAX_LISTED_REJECTIONS,
};
pub use line_protocol::Precision;

/// Errors that refuse a whole payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{reason}")]
    Body { line: Option<usize>, reason: String },
    #[error("unsupported content type {0:?}: use application/json, application/x-ndjson, text/plain (line protocol) or application/vnd.apache.arrow.stream")]
    ContentType(String),
    #[error("{0}")]
    Parameter(String),
    /// A protocol server (MQTT broker, CoAP) could not start.
    #[error("{0}")]
    Edge(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Payload formats of `POST /api/v1/write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    LineProtocol(Precision),
    ArrowIpc,
}

impl Format {
    /// Its name in metrics (`ingested_readings_total{format}`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::LineProtocol(_) => "line-protocol",
            Format::ArrowIpc => "arrow-ipc",
        }
    }

    /// The format of a `Content-Type` (parameters such as `charset` are ignored); a missing
    /// content type means JSON.
    pub fn from_content_type(content_type: Option<&str>, precision: Precision) -> Result<Self> {
        let essence = content_type
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" | "" => Ok(Self::Json),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Self::Ndjson),
            "text/plain" | "application/x-influxdb-line-protocol" => {
                Ok(Self::LineProtocol(precision))
            }
            "application/vnd.apache.arrow.stream" => Ok(Self::ArrowIpc),
            _ => Err(Error::ContentType(essence)),
        }
    }
}

/// Settings of a decode.
#[derive(Debug, Clone)]
pub struct DecodeArgs {
    /// Time given to readings that carry none (arrival time).
    pub now_ms: i64,
    /// Longest accepted line of NDJSON or line protocol.
    pub max_line_bytes: usize,
    /// The sensors the writer may name and their devices; `None`: any sensor, its device as
    /// the reading names it or else a device of the sensor's name.
    pub scope: Option<std::sync::Arc<dyn SensorScope>>,
    /// Times outside these bounds are refused (`None`: any time in 1970..10000).
    pub time_bounds: Option<TimeBounds>,
}

/// Which reading times a server accepts, around its clock: nothing it would delete at its next
/// retention pass (acknowledged, then deleted), and nothing so far ahead that it would stay the
/// newest value of its key for good.
#[derive(Debug, Clone, Copy)]
pub struct TimeBounds {
    /// Readings older than this are deleted by retention (`--retention`).
    pub retention: std::time::Duration,
    /// Readings further ahead of the server's clock than this are refused (`--max-future`).
    pub max_future: std::time::Duration,
}

impl TimeBounds {
    /// The bounds of a server's storage: its `--retention` and `--max-future`.
    pub fn of(storage: &aemos_storage::Storage) -> Self {
        Self {
            retention: storage.retention(),
            max_future: storage.max_future(),
        }
    }
}

impl DecodeArgs {
    pub fn new(now_ms: i64) -> Self {
        Self {
            now_ms,
            max_line_bytes: 64 * 1024,
            scope: None,
            time_bounds: None,
        }
    }

    /// What a server's protocols decode with: its clock, its retention and `--max-future`.
    pub fn for_storage(storage: &aemos_storage::Storage) -> Self {
        Self::new(storage.now_ms()).with_time_bounds(TimeBounds::of(storage))
    }

    pub fn with_time_bounds(mut self, bounds: TimeBounds) -> Self {
        self.time_bounds = Some(bounds);
        self
    }

    pub fn with_scope(mut self, scope: Option<std::sync::Arc<dyn SensorScope>>) -> Self {
        self.scope = scope;
        self
    }
}

/// Decodes and validates one payload.
pub fn decode(format: Format, body: &[u8], args: &DecodeArgs) -> Result<Decoded> {
    let collector = match format {
        Format::Json => json::decode_json(body, args)?,
        Format::Ndjson => json::decode_ndjson(body, args)?,
        Format::LineProtocol(precision) => {
            line_protocol::decode_line_protocol(body, precision, args)?
        }
        Format::ArrowIpc => arrow_ipc::decode_arrow_ipc(body, args)?,
    };
    Ok(collector.finish())
}
