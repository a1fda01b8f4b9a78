//! Where a decoder puts the readings it accepts ([`RowSink`]): an Arrow builder of its own
//! (one batch per payload), or [`StagedReadings`], which hold one payload's readings until
//! the payload is accepted whole and then append them to a builder that many payloads share.
//!
//! The MQTT links take thousands of one-reading publishes per write: a builder and a batch of
//! their own per publish, then concatenated, was about a dozen allocations and two copies per
//! reading. Staged, a publish costs a copy into buffers reused from one publish to the next.

use std::ops::Range;

use aemos_storage::schema::ReadingsBuilder;
use arrow::array::RecordBatch;

/// One accepted reading's fields, as the collector hands them on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub time_ms: i64,
    pub device: &'a str,
    pub sensor: &'a str,
    pub variable: &'a str,
    pub value: f64,
    /// Line protocol's measurement and its other tags.
    pub series: Option<(&'a str, &'a [(&'a str, &'a str)])>,
}

/// What accepted readings go into.
pub(crate) trait RowSink {
    /// What the decoder returns of them: a batch, or how many were staged.
    type Rows;
    fn push(&mut self, row: Row<'_>);
    fn finish(self) -> Self::Rows;
}

impl RowSink for ReadingsBuilder {
    type Rows = RecordBatch;

    fn push(&mut self, row: Row<'_>) {
        match row.series {
            None => ReadingsBuilder::push(
                self,
                row.time_ms,
                row.device,
                row.sensor,
                row.variable,
                row.value,
            ),
            Some((measurement, tags)) => self.push_tagged(
                row.time_ms,
                row.device,
                row.sensor,
                row.variable,
                row.value,
                measurement,
                tags,
            ),
        }
    }

    fn finish(self) -> RecordBatch {
        ReadingsBuilder::finish(self)
    }
}

/// One payload's accepted readings, their strings in one buffer; cleared and reused from one
/// payload to the next.
#[derive(Debug, Default)]
pub struct StagedReadings {
    text: String,
    rows: Vec<StagedRow>,
    /// Tag keys and values of the tagged rows, by row.
    tags: Vec<(Span, Span)>,
}

/// A string of [`StagedReadings::text`].
type Span = Range<u32>;

#[derive(Debug)]
struct StagedRow {
    time_ms: i64,
    value: f64,
    device: Span,
    sensor: Span,
    variable: Span,
    /// The measurement and the row's range of `tags`.
    series: Option<(Span, Range<usize>)>,
}

impl StagedReadings {
    pub fn clear(&mut self) {
        self.text.clear();
        self.rows.clear();
        self.tags.clear();
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Appends the staged readings to `builder` (they stay staged until the next `clear`).
    pub fn append_to(&self, builder: &mut ReadingsBuilder) {
        let mut tags: Vec<(&str, &str)> = Vec::new();
        for row in &self.rows {
            let series = match &row.series {
                None => None,
                Some((measurement, range)) => {
                    tags.clear();
                    tags.extend(
                        self.tags[range.clone()]
                            .iter()
                            .map(|(k, v)| (self.str(k), self.str(v))),
                    );
                    Some((self.str(measurement), tags.as_slice()))
                }
            };
            RowSink::push(
                builder,
                Row {
                    time_ms: row.time_ms,
                    device: self.str(&row.device),
                    sensor: self.str(&row.sensor),
                    variable: self.str(&row.variable),
                    value: row.value,
                    series,
                },
            );
        }
    }

    fn str(&self, span: &Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    fn span(&mut self, s: &str) -> Span {
        let start = self.text.len();
        self.text.push_str(s);
        // Payloads are bounded far below 4 GiB (the MQTT and HTTP body limits).
        start as u32..self.text.len() as u32
    }
}

impl RowSink for &mut StagedReadings {
    type Rows = usize;

    fn push(&mut self, row: Row<'_>) {
        let device = self.span(row.device);
        let sensor = self.span(row.sensor);
        let variable = self.span(row.variable);
        let series = row.series.map(|(measurement, tags)| {
            let measurement = self.span(measurement);
            let first = self.tags.len();
            for (k, v) in tags {
                let kv = (self.span(k), self.span(v));
                self.tags.push(kv);
            }
            (measurement, first..self.tags.len())
        });
        self.rows.push(StagedRow {
            time_ms: row.time_ms,
            value: row.value,
            device,
            sensor,
            variable,
            series,
        });
    }

    fn finish(self) -> usize {
        self.rows.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_rows_append_as_the_builder_would_have_built_them() {
        let tags = [("host", "a"), ("path", "/")];
        let rows = [
            Row {
                time_ms: 1,
                device: "d-1",
                sensor: "s-1",
                variable: "temperature",
                value: 20.5,
                series: None,
            },
            Row {
                time_ms: 2,
                device: "d-2",
                sensor: "s-2",
                variable: "used",
                value: 3.0,
                series: Some(("disk", &tags)),
            },
        ];
        let mut direct = ReadingsBuilder::with_capacity(2);
        let mut staged = StagedReadings::default();
        for row in rows {
            RowSink::push(&mut direct, row);
            RowSink::push(&mut &mut staged, row);
        }
        let mut shared = ReadingsBuilder::with_capacity(0);
        staged.append_to(&mut shared);
        assert_eq!(staged.len(), 2);
        assert_eq!(RowSink::finish(shared), RowSink::finish(direct));
        staged.clear();
        assert!(staged.is_empty());
    }
}
