//! Validates decoded fields and gathers accepted readings and rejections.

use aemos_storage::schema::ReadingsBuilder;
use serde::Serialize;

use crate::validate::{check_device, check_sensor, check_time_ms, check_value, check_variable};

/// Rejections listed in detail; beyond this only counted.
pub const MAX_LISTED_REJECTIONS: usize = 1000;

/// Where in the payload a reading came from: its index in the batch and, for line-based
/// formats, its 1-based line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Location {
    pub index: usize,
    pub line: Option<usize>,
}

/// Why one reading (or one line) was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub reason: String,
}

/// One reading's fields before validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) device: Option<&'a str>,
    pub sensor: &'a str,
    pub variable: &'a str,
    pub value: f64,
    pub time_ms: Option<i64>,
}

/// The outcome of decoding one payload.
#[derive(Debug)]
pub struct Decoded {
    pub batch: arrow::array::RecordBatch,
    pub rejected: Vec<Rejection>,
    pub rejected_count: usize,
}

impl Decoded {
    pub fn accepted(&self) -> usize {
        self.batch.num_rows()
    }
}

#[derive(Debug)]
pub(crate) struct Collector {
    builder: ReadingsBuilder,
    rejected: Vec<Rejection>,
    rejected_count: usize,
    now_ms: i64,
}

impl Collector {
    pub(crate) fn new(capacity: usize, now_ms: i64) -> Self {
        Self {
            builder: ReadingsBuilder::with_capacity(capacity),
            rejected: Vec::new(),
            rejected_count: 0,
            now_ms,
        }
    }

    pub(crate) fn reject(&mut self, at: Location, reason: impl Into<String>) {
        self.rejected_count += 1;
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(Rejection {
                index: at.index,
                line: at.line,
                reason: reason.into(),
            });
        }
    }

    pub(crate) fn rejected_count(&self) -> usize {
        self.rejected_count
    }

    /// Sets the line of the latest listed rejection (JSON, whose lines are found on demand).
    pub(crate) fn set_line_of_last_rejection(&mut self, line: usize) {
        if self.rejected.len() == self.rejected_count {
            if let Some(last) = self.rejected.last_mut() {
                last.line = Some(line);
            }
        }
    }

    pub(crate) fn push(&mut self, at: Location, fields: Fields<'_>) {
        match validate(&fields) {
            Ok(time_ms) => {
                let time_ms = time_ms.unwrap_or(self.now_ms);
                let device = fields.device.unwrap_or(fields.sensor);
                self.builder.push(
                    time_ms,
                    device,
                    fields.sensor,
                    fields.variable,
                    fields.value,
                );
            }
            Err(reason) => self.reject(at, reason),
        }
    }

    pub(crate) fn finish(self) -> Decoded {
        Decoded {
            batch: self.builder.finish(),
            rejected: self.rejected,
            rejected_count: self.rejected_count,
        }
    }
}

fn validate(fields: &Fields<'_>) -> Result<Option<i64>, String> {
    check_sensor(fields.sensor)?;
    check_variable(fields.variable)?;
    if let Some(device) = fields.device {
        check_device(device)?;
    }
    check_value(fields.value)?;
    fields.time_ms.map(check_time_ms).transpose()
}

/// The lines of a line-based body, numbered from 1, without `\n` or `\r\n`; blank lines are
/// skipped.
pub(crate) fn numbered_lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(n, line)| (n + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// A line as text, or why it is refused: too long, or not UTF-8.
pub(crate) fn line_text(line: &[u8], max_bytes: usize) -> Result<&str, String> {
    if line.len() > max_bytes {
        return Err(format!("line is longer than {max_bytes} bytes"));
    }
    std::str::from_utf8(line)
        .map_err(|e| format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()))
}
