//! InfluxDB line protocol, as Telegraf writes it, parsed with `influxdb-line-protocol`.
//!
//! `measurement,sensor=S[,tags] field=value[,field=value] [timestamp]` gives one reading per
//! numeric or boolean field: the `sensor` tag, else the `device` tag, else the measurement is
//! the sensor; a `device` tag is the device; the field key is the variable. The measurement
//! and the other tags are kept in the `measurement` and `tags` columns. What InfluxDB refuses
//! is refused: a line beginning with a tab, a tag key given twice; and a string field, which
//! aemos does not store, is refused with its key (the line's other fields are kept).

use influxdb_line_protocol::{parse_lines, FieldValue};

use crate::collect::{line_text, numbered_lines, Collector, Fields, Location};
use crate::{DecodeArgs, Error};

/// Unit of line-protocol timestamps (`?precision=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    #[default]
    Nanoseconds,
    Microseconds,
    Milliseconds,
    Seconds,
    /// Each timestamp's unit guessed from its magnitude, as InfluxDB 3's `precision=auto`:
    /// below 5e9 seconds, below 5e12 milliseconds, below 5e15 microseconds, else nanoseconds.
    Auto,
}

impl Precision {
    pub fn parse(text: &str) -> Result<Self, Error> {
        match text {
            "ns" | "n" => Ok(Self::Nanoseconds),
            "us" | "u" | "µs" => Ok(Self::Microseconds),
            "ms" => Ok(Self::Milliseconds),
            "s" => Ok(Self::Seconds),
            other => Err(Error::Parameter(format!(
                "precision {other:?} is not one of ns, us, ms, s"
            ))),
        }
    }

    /// InfluxDB 3's names (`auto`, `nanosecond`, `microsecond`, `millisecond`, `second`) and
    /// the short ones.
    pub fn parse_v3(text: &str) -> Result<Self, Error> {
        match text {
            "auto" => Ok(Self::Auto),
            "nanosecond" => Ok(Self::Nanoseconds),
            "microsecond" => Ok(Self::Microseconds),
            "millisecond" => Ok(Self::Milliseconds),
            "second" => Ok(Self::Seconds),
            short => Self::parse(short).map_err(|_| {
                Error::Parameter(format!(
                    "precision {short:?} is not one of auto, nanosecond, microsecond, millisecond, second"
                ))
            }),
        }
    }

    fn to_millis(self, t: i64) -> Option<i64> {
        match self {
            Self::Nanoseconds => Some(t.div_euclid(1_000_000)),
            Self::Microseconds => Some(t.div_euclid(1_000)),
            Self::Milliseconds => Some(t),
            Self::Seconds => t.checked_mul(1_000),
            Self::Auto => {
                let unit = match t.unsigned_abs() {
                    m if m < 5_000_000_000 => Self::Seconds,
                    m if m < 5_000_000_000_000 => Self::Milliseconds,
                    m if m < 5_000_000_000_000_000 => Self::Microseconds,
                    _ => Self::Nanoseconds,
                };
                unit.to_millis(t)
            }
        }
    }
}

pub(crate) fn decode_line_protocol<'a>(
    body: &[u8],
    precision: Precision,
    args: &'a DecodeArgs,
) -> Result<Collector<'a>, Error> {
    let mut out = Collector::new(body.len() / 48, args);
    let mut index = 0;
    for (line_no, line) in numbered_lines(body) {
        if line.trim_ascii_start().starts_with(b"#") {
            continue;
        }
        let at = Location {
            index,
            line: Some(line_no),
        };
        let text = match line_text(line, args.max_line_bytes) {
            Ok(text) => text,
            Err(reason) => {
                index += 1;
                out.reject(at, reason);
                continue;
            }
        };
        let parsed = match parse_lines(text).next() {
            Some(Ok(parsed)) => parsed,
            Some(Err(e)) => {
                index += 1;
                out.reject(at, format!("invalid line protocol: {e}"));
                continue;
            }
            None => continue,
        };
        if line.first() == Some(&b'\t') {
            index += 1;
            out.reject(
                at,
                "line begins with a tab; a line begins with its measurement",
            );
            continue;
        }
        let mut tags: Vec<(&str, &str)> = parsed
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags.sort_unstable_by_key(|(k, _)| *k);
        if let Some(pair) = tags.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            index += 1;
            out.reject(at, format!("tag key {:?} is given twice", pair[0].0));
            continue;
        }
        tags.retain(|(k, _)| *k != "sensor" && *k != "device");
        let series = Some((parsed.series.measurement.as_str(), tags.as_slice()));
        let device = parsed.tag_value("device").map(|d| d.as_str());
        let sensor = parsed
            .tag_value("sensor")
            .map(|s| s.as_str())
            .or(device)
            .unwrap_or(parsed.series.measurement.as_str());
        let time_ms = match parsed.timestamp {
            None => None,
            Some(t) => match precision.to_millis(t) {
                Some(ms) => Some(ms),
                None => {
                    index += 1;
                    out.reject_as(
                        crate::RejectReason::Invalid,
                        at,
                        format!("timestamp {t} overflows at precision {precision:?}"),
                    );
                    continue;
                }
            },
        };
        for (key, value) in &parsed.field_set {
            let value = match value {
                FieldValue::F64(v) => Some(*v),
                FieldValue::I64(v) => Some(*v as f64),
                FieldValue::U64(v) => Some(*v as f64),
                FieldValue::Boolean(v) => Some(f64::from(u8::from(*v))),
                FieldValue::String(_) => None,
            };
            let at = Location {
                index,
                line: Some(line_no),
            };
            index += 1;
            let Some(value) = value else {
                out.reject(
                    at,
                    format!(
                        "field {:?} is a string; aemos stores numbers and booleans",
                        key.as_str()
                    ),
                );
                continue;
            };
            out.push(
                at,
                Fields {
                    device,
                    sensor,
                    variable: key.as_str(),
                    value,
                    time_ms,
                    series,
                },
            );
        }
        if parsed.field_set.is_empty() {
            index += 1;
            out.reject(at, "line has no field");
        }
    }
    Ok(out)
}
