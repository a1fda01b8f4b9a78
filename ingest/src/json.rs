//! JSON (`{"readings": [...]}` or a bare array) and NDJSON (one reading object per line).

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::collect::{line_text, numbered_lines, Collector, Fields, Location};
use crate::staged::RowSink;
use crate::validate::{check_time_ms, parse_rfc3339_ms};
use crate::{DecodeArgs, Error};

/// One reading object as it appears on the wire.
#[derive(Debug, Deserialize)]
pub(crate) struct WireReading<'a> {
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub(crate) sensor: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub(crate) device: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "borrowed")]
    pub(crate) variable: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(crate) value: Option<WireValue>,
    #[serde(default)]
    pub(crate) time: Option<WireTime>,
}

/// A string borrowed from the body unless it has escapes. serde borrows a `Cow<str>` field
/// but not one inside an `Option`, which it always copies: three allocations per reading.
fn borrowed<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(d)?.map(|b| b.0))
}

impl WireReading<'_> {
    /// Checks presence of the required fields and hands them to the collector.
    pub(crate) fn collect<S: RowSink>(&self, at: Location, out: &mut Collector<'_, S>) {
        let Some(sensor) = self.sensor.as_deref() else {
            return out.reject(at, "missing field `sensor`");
        };
        let Some(variable) = self.variable.as_deref() else {
            return out.reject(at, "missing field `variable`");
        };
        let Some(WireValue(value)) = self.value else {
            return out.reject(at, "missing field `value`");
        };
        let time_ms = match &self.time {
            None => None,
            Some(WireTime::Millis(ms)) => Some(*ms),
            Some(WireTime::Invalid(reason)) => {
                return out.reject_as(crate::RejectReason::Invalid, at, reason.clone())
            }
        };
        out.push(
            at,
            Fields {
                device: self.device.as_deref(),
                sensor,
                variable,
                value,
                time_ms,
                series: None,
            },
        );
    }
}

/// A number, or a boolean stored as 1.0/0.0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WireValue(pub(crate) f64);

impl<'de> Deserialize<'de> for WireValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`value` as a number or a boolean")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireValue, E> {
                Ok(WireValue(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireValue, E> {
                Ok(WireValue(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireValue, E> {
                Ok(WireValue(v as f64))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<WireValue, E> {
                Ok(WireValue(if v { 1.0 } else { 0.0 }))
            }
        }
        d.deserialize_any(V)
    }
}

/// RFC 3339 text or integer epoch milliseconds. An invalid time is kept as its reason so that
/// the reading is rejected on its own, with the rest of the object parsed.
#[derive(Debug, Clone)]
pub(crate) enum WireTime {
    Millis(i64),
    Invalid(String),
}

impl<'de> Deserialize<'de> for WireTime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = WireTime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("`time` as RFC 3339 text or integer epoch milliseconds")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WireTime, E> {
                Ok(check_time_ms(v).map_or_else(WireTime::Invalid, WireTime::Millis))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WireTime, E> {
                let v = i64::try_from(v).unwrap_or(i64::MAX);
                self.visit_i64(v)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<WireTime, E> {
                Ok(WireTime::Invalid(format!(
                    "time {v} is not an integer number of epoch milliseconds"
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WireTime, E> {
                Ok(parse_rfc3339_ms(v).map_or_else(WireTime::Invalid, WireTime::Millis))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    readings: Vec<&'a RawValue>,
}

/// Splits a JSON body into its reading objects, unparsed.
fn elements(text: &str) -> Result<Vec<&RawValue>, Error> {
    let body_error = |e: serde_json::Error| Error::Body {
        line: Some(e.line()),
        reason: format!("malformed JSON: {e}"),
    };
    match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(text).map_err(body_error),
        Some(b'{') => serde_json::from_str::<Envelope<'_>>(text)
            .map(|e| e.readings)
            .map_err(body_error),
        _ => Err(Error::Body {
            line: Some(1),
            reason: "expected a JSON array of readings or {\"readings\": [...]}".into(),
        }),
    }
}

fn utf8(body: &[u8]) -> Result<&str, Error> {
    std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        Error::Body {
            line: Some(line),
            reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        }
    })
}

pub(crate) fn decode_json<'a>(body: &[u8], args: &'a DecodeArgs) -> Result<Collector<'a>, Error> {
    let text = utf8(body)?;
    let raws = elements(text)?;
    let mut out = Collector::new(raws.len(), args);
    // Lines counted so far: up to this offset, which is on this line. Offsets only grow, so
    // finding the lines of all rejections scans the body once.
    let (mut counted_to, mut line) = (0usize, 1usize);
    for (index, raw) in raws.into_iter().enumerate() {
        let at = Location { index, line: None };
        let rejected_before = out.rejected_count();
        match serde_json::from_str::<WireReading<'_>>(raw.get()) {
            Ok(reading) => reading.collect(at, &mut out),
            Err(e) => out.reject(at, strip_position(&e)),
        }
        if out.rejected_count() > rejected_before && out.listed_last_rejection() {
            // Only listed rejections pay for finding their line.
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            line += text.as_bytes()[counted_to..offset]
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            counted_to = offset;
            out.set_line_of_last_rejection(line);
        }
    }
    Ok(out)
}

pub(crate) fn decode_ndjson<'a>(body: &[u8], args: &'a DecodeArgs) -> Result<Collector<'a>, Error> {
    let mut out = Collector::new(body.len() / 64, args);
    for (index, (line_no, line)) in numbered_lines(body).enumerate() {
        let at = Location {
            index,
            line: Some(line_no),
        };
        let text = match line_text(line, args.max_line_bytes) {
            Ok(text) => text,
            Err(reason) => {
                out.reject(at, reason);
                continue;
            }
        };
        match serde_json::from_str::<WireReading<'_>>(text) {
            Ok(reading) => reading.collect(at, &mut out),
            Err(e) => out.reject(at, strip_position(&e)),
        }
    }
    Ok(out)
}

/// serde_json's message without its "at line 1 column N" suffix, with the column kept apart.
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(pos) => format!("{} (column {})", &text[..pos], e.column()),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_borrowed_from_the_body_unless_escaped() {
        let r: WireReading<'_> =
            serde_json::from_str(r#"{"sensor": "s-1", "variable": "t\u0065mp", "value": 1}"#)
                .unwrap();
        assert!(matches!(r.sensor, Some(Cow::Borrowed("s-1"))));
        assert!(matches!(r.variable.as_deref(), Some("temp")));
        assert!(matches!(r.variable, Some(Cow::Owned(_))));
        assert!(r.device.is_none());
        let e = serde_json::from_str::<WireReading<'_>>(r#"{"sensor": 5}"#).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
    }
}
