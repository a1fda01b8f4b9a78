//! InfluxDB line protocol, as Telegraf writes it, parsed with `influxdb-line-protocol`.
//!
//! `measurement,sensor=S[,tags] field=value[,field=value] [timestamp]` gives one reading per
//! numeric or boolean field (string fields are skipped): the `sensor` tag, else the `device`
//! tag, else the measurement is the sensor; a `device` tag is the device; the field key is the
//! variable.

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

    fn to_millis(self, t: i64) -> Option<i64> {
        match self {
            Self::Nanoseconds => Some(t.div_euclid(1_000_000)),
            Self::Microseconds => Some(t.div_euclid(1_000)),
            Self::Milliseconds => Some(t),
            Self::Seconds => t.checked_mul(1_000),
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
                    out.reject(
                        at,
                        format!("timestamp {t} overflows at precision {precision:?}"),
                    );
                    continue;
                }
            },
        };
        let mut numeric = 0;
        for (key, value) in &parsed.field_set {
            let value = match value {
                FieldValue::F64(v) => *v,
                FieldValue::I64(v) => *v as f64,
                FieldValue::U64(v) => *v as f64,
                FieldValue::Boolean(v) => f64::from(u8::from(*v)),
                FieldValue::String(_) => continue,
            };
            numeric += 1;
            let at = Location {
                index,
                line: Some(line_no),
            };
            index += 1;
            out.push(
                at,
                Fields {
                    device,
                    sensor,
                    variable: key.as_str(),
                    value,
                    time_ms,
                },
            );
        }
        if numeric == 0 {
            index += 1;
            out.reject(at, "line has no numeric or boolean field");
        }
    }
    Ok(out)
}
