//! Telemetry that a device publishes about itself (MQTT `aemos/devices/{device}/telemetry`,
//! CoAP `POST /telemetry`): a reading object, an array of them, or the shorthand
//! `{"temperature": 25.5, "humidity": 40}` (sensor = the device, time = arrival).
//!
//! The device comes from the topic or the token, never from the payload: a reading naming
//! another device is refused, and a reading without a sensor belongs to the device's own
//! sensor of the same name.

use serde_json::value::RawValue;
use serde_json::Value;

use aemos_storage::schema::ReadingsBuilder;

use crate::collect::{Collector, Fields, Location};
use crate::json::{WireReading, WireValue};
use crate::staged::{RowSink, StagedReadings};
use crate::{DecodeArgs, Decoded, Error};

/// Decodes one device payload into a batch of its own; `device` is already validated by the
/// caller.
pub fn decode_device_payload(
    device: &str,
    body: &[u8],
    args: &DecodeArgs,
) -> Result<Decoded, Error> {
    decode_into(device, body, args, ReadingsBuilder::with_capacity)
}

/// Decodes one device payload into `staged` (cleared first): its accepted readings stay there
/// for the caller to append to a shared builder if the payload is taken.
pub fn stage_device_payload(
    device: &str,
    body: &[u8],
    args: &DecodeArgs,
    staged: &mut StagedReadings,
) -> Result<Decoded<usize>, Error> {
    staged.clear();
    decode_into(device, body, args, |_| staged)
}

/// The decoder over any sink; `sink` makes it for the number of readings the payload holds.
fn decode_into<S: RowSink>(
    device: &str,
    body: &[u8],
    args: &DecodeArgs,
    sink: impl FnOnce(usize) -> S,
) -> Result<Decoded<S::Rows>, Error> {
    let text = std::str::from_utf8(body).map_err(|e| Error::Body {
        line: None,
        reason: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
    })?;
    let malformed = |e: serde_json::Error| Error::Body {
        line: Some(e.line()),
        reason: format!("malformed JSON: {e}"),
    };
    let mut out;
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
            out = Collector::into_sink(sink(raws.len()), args);
            for (index, raw) in raws.into_iter().enumerate() {
                reading(device, raw.get(), Location { index, line: None }, &mut out);
            }
        }
        Some(b'{') => {
            let object: serde_json::Map<String, Value> =
                serde_json::from_str(text).map_err(malformed)?;
            if object.contains_key("variable") || object.contains_key("value") {
                out = Collector::into_sink(sink(1), args);
                reading(device, text, Location::default(), &mut out);
            } else {
                out = Collector::into_sink(sink(object.len()), args);
                shorthand(device, &object, &mut out);
            }
        }
        _ => {
            return Err(Error::Body {
                line: Some(1),
                reason:
                    "expected a reading object, an array of them, or {\"variable\": value, ...}"
                        .into(),
            })
        }
    }
    Ok(out.finish())
}

fn reading<S: RowSink>(device: &str, text: &str, at: Location, out: &mut Collector<'_, S>) {
    let mut wire = match serde_json::from_str::<WireReading<'_>>(text) {
        Ok(w) => w,
        Err(e) => return out.reject(at, e.to_string()),
    };
    if let Some(named) = wire.device.as_deref() {
        if named != device {
            return out.reject_as(
                crate::RejectReason::Forbidden,
                at,
                format!("`device` {named:?} is not the publishing device {device:?}"),
            );
        }
    }
    wire.device = Some(device.into());
    if wire.sensor.is_none() {
        wire.sensor = Some(device.into());
    }
    wire.collect(at, out);
}

/// `{"temperature": 25.5, "on": true}`: one reading per field, indexed in name order.
fn shorthand<S: RowSink>(
    device: &str,
    object: &serde_json::Map<String, Value>,
    out: &mut Collector<'_, S>,
) {
    for (index, (variable, value)) in object.iter().enumerate() {
        let at = Location { index, line: None };
        let value = match serde_json::from_value::<WireValue>(value.clone()) {
            Ok(WireValue(v)) => v,
            Err(_) => {
                out.reject(
                    at,
                    format!("`{variable}`: expected a number or a boolean, got {value}"),
                );
                continue;
            }
        };
        out.push(
            at,
            Fields {
                device: Some(device),
                sensor: device,
                variable,
                value,
                time_ms: None,
                series: None,
            },
        );
    }
}
