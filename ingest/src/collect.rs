//! Validates decoded fields and gathers accepted readings and rejections.

use aemos_storage::schema::ReadingsBuilder;
use serde::Serialize;

use crate::scope::{Owner, SensorScope};
use crate::staged::{Row, RowSink};
use crate::{DecodeArgs, TimeBounds};

use crate::validate::{
    check_device, check_sensor, check_time_bounds, check_time_ms, check_value, check_variable,
};

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

/// What kind of refusal a rejection is: the `reason` label of
/// `aemos_readings_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a reading: unparseable, a field missing or of the wrong type.
    Malformed,
    /// A field out of its domain: empty or too long a name, a NaN or infinite value, a time
    /// outside 1970..10000.
    Invalid,
    /// Older than `--retention`: it would be acknowledged, then deleted.
    Retention,
    /// Further ahead of the server's clock than `--max-future`.
    Future,
    /// A sensor the writer may not write.
    Forbidden,
}

impl RejectReason {
    pub const ALL: [Self; 5] = [
        Self::Malformed,
        Self::Invalid,
        Self::Retention,
        Self::Future,
        Self::Forbidden,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Retention => "retention",
            Self::Future => "future",
            Self::Forbidden => "forbidden",
        }
    }
}

/// Rejections counted by [`RejectReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RejectionCounts([u64; 5]);

impl RejectionCounts {
    /// One rejection for `reason` (a body refused whole, a single reading).
    pub fn one(reason: RejectReason) -> Self {
        let mut counts = Self::default();
        counts.add(reason, 1);
        counts
    }

    pub fn add(&mut self, reason: RejectReason, n: u64) {
        self.0[reason as usize] += n;
    }

    pub fn get(&self, reason: RejectReason) -> u64 {
        self.0[reason as usize]
    }

    /// The reasons with at least one rejection, with their counts.
    pub fn iter(&self) -> impl Iterator<Item = (RejectReason, u64)> + '_ {
        RejectReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// One reading's fields before validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields<'a> {
    pub(crate) device: Option<&'a str>,
    pub sensor: &'a str,
    pub variable: &'a str,
    pub value: f64,
    pub time_ms: Option<i64>,
    /// Line protocol's measurement and its tags other than `sensor` and `device`, by key.
    pub series: Option<(&'a str, &'a [(&'a str, &'a str)])>,
}

/// The outcome of decoding one payload: its accepted readings (`batch`: a batch of their own,
/// or, staged with [`crate::stage_device_payload`], their count) and its rejections.
#[derive(Debug)]
pub struct Decoded<Rows = arrow::array::RecordBatch> {
    pub batch: Rows,
    pub rejected: Vec<Rejection>,
    pub rejected_count: usize,
    /// `rejected_count`, by kind.
    pub rejected_by: RejectionCounts,
    /// A device credential named a sensor it does not own (the API answers 403).
    pub forbidden: bool,
}

impl Decoded {
    pub fn accepted(&self) -> usize {
        self.batch.num_rows()
    }
}

impl Decoded<usize> {
    pub fn accepted(&self) -> usize {
        self.batch
    }
}

#[derive(Debug)]
pub(crate) struct Collector<'a, S = ReadingsBuilder> {
    rows: S,
    rejected: Vec<Rejection>,
    rejected_count: usize,
    rejected_by: RejectionCounts,
    /// Readings refused by the scope (a sensor the writer may not write).
    refused_by_scope: usize,
    now_ms: i64,
    time_bounds: Option<TimeBounds>,
    scope: Option<&'a dyn SensorScope>,
    /// The last sensor the scope resolved and its device: runs of one sensor ask once.
    last: Option<(String, Owner<'a>)>,
}

impl<'a> Collector<'a> {
    pub(crate) fn new(capacity: usize, args: &'a DecodeArgs) -> Self {
        Self::into_sink(ReadingsBuilder::with_capacity(capacity), args)
    }
}

impl<'a, S: RowSink> Collector<'a, S> {
    /// A collector whose accepted readings go to `rows`.
    pub(crate) fn into_sink(rows: S, args: &'a DecodeArgs) -> Self {
        Self {
            rows,
            rejected: Vec::new(),
            rejected_count: 0,
            rejected_by: RejectionCounts::default(),
            refused_by_scope: 0,
            now_ms: args.now_ms,
            time_bounds: args.time_bounds,
            scope: args.scope.as_deref(),
            last: None,
        }
    }

    /// A malformed reading refused (see [`Collector::reject_as`]).
    pub(crate) fn reject(&mut self, at: Location, reason: impl Into<String>) {
        self.reject_as(RejectReason::Malformed, at, reason)
    }

    pub(crate) fn reject_as(
        &mut self,
        kind: RejectReason,
        at: Location,
        reason: impl Into<String>,
    ) {
        self.rejected_count += 1;
        self.rejected_by.add(kind, 1);
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

    /// Whether the latest rejection is listed (not only counted).
    pub(crate) fn listed_last_rejection(&self) -> bool {
        self.rejected.len() == self.rejected_count
    }

    /// Sets the line of the latest listed rejection (JSON, whose lines are found on demand).
    pub(crate) fn set_line_of_last_rejection(&mut self, line: usize) {
        if self.listed_last_rejection() {
            if let Some(last) = self.rejected.last_mut() {
                last.line = Some(line);
            }
        }
    }

    pub(crate) fn push(&mut self, at: Location, fields: Fields<'_>) {
        let time_ms = match validate(&fields) {
            Ok(time_ms) => time_ms.unwrap_or(self.now_ms),
            Err(reason) => return self.reject_as(RejectReason::Invalid, at, reason),
        };
        if let Some(bounds) = &self.time_bounds {
            if let Err(reason) = check_time_bounds(time_ms, self.now_ms, bounds) {
                let kind = if time_ms < self.now_ms {
                    RejectReason::Retention
                } else {
                    RejectReason::Future
                };
                return self.reject_as(kind, at, reason);
            }
        }
        let owner = match self.scope {
            None => None,
            Some(scope) => {
                let cached = matches!(&self.last, Some((s, _)) if s == fields.sensor);
                if !cached {
                    match scope.device_of(fields.sensor) {
                        Ok(device) => {
                            // The name's buffer is reused: a run of other sensors allocates once.
                            let mut name = self.last.take().map(|(n, _)| n).unwrap_or_default();
                            name.clear();
                            name.push_str(fields.sensor);
                            self.last = Some((name, device));
                        }
                        Err(reason) => {
                            self.refused_by_scope += 1;
                            return self.reject_as(RejectReason::Forbidden, at, reason);
                        }
                    }
                }
                self.last.as_ref().and_then(|(_, owner)| owner.as_str())
            }
        };
        let device = match owner {
            None => fields.device.unwrap_or(fields.sensor),
            Some(owner) => {
                if let Some(named) = fields.device.filter(|named| *named != owner) {
                    let reason = format!(
                        "`device` {named:?} is not {owner:?}, the device sensor {:?} belongs to",
                        fields.sensor
                    );
                    self.refused_by_scope += 1;
                    return self.reject_as(RejectReason::Forbidden, at, reason);
                }
                owner
            }
        };
        self.rows.push(Row {
            time_ms,
            device,
            sensor: fields.sensor,
            variable: fields.variable,
            value: fields.value,
            series: fields.series,
        });
    }

    pub(crate) fn finish(self) -> Decoded<S::Rows> {
        let forbidden =
            self.refused_by_scope > 0 && self.scope.as_ref().is_some_and(|s| s.is_device());
        Decoded {
            batch: self.rows.finish(),
            rejected: self.rejected,
            rejected_count: self.rejected_count,
            rejected_by: self.rejected_by,
            forbidden,
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
