//! 64-bit keys for what the dataflow joins on, so that no string crosses into the workers.
//!
//! - `key_of(sensor, variable)`: a reading's key, and the key of its latest value;
//! - `sensor_key(sensor)`: every reading of a sensor, for `no_data`;
//! - `value_key(input)`: the value a slot reads (a latest value, or one window aggregate).
//!
//! FNV-1a over the bytes with a separator, then a 64-bit finalizer so the low bits (used to
//! pick a worker) are well mixed. Two different names colliding needs about 2^32 names.

use crate::parse::{Agg, Input};

const SEP: u8 = 0xff; // never in UTF-8

fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&SEP)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of a reading of `variable` from `sensor`.
pub fn key_of(sensor: &str, variable: &str) -> u64 {
    fnv(&[sensor.as_bytes(), variable.as_bytes()])
}

/// The key under which every reading of `sensor` counts toward `no_data`.
pub fn sensor_key(sensor: &str) -> u64 {
    fnv(&[b"\0sensor", sensor.as_bytes()])
}

fn agg_tag(agg: Agg) -> &'static [u8] {
    match agg {
        Agg::Avg => b"avg",
        Agg::Min => b"min",
        Agg::Max => b"max",
        Agg::Count => b"count",
    }
}

/// The key of the value a slot reads.
pub(crate) fn value_key(input: &Input) -> u64 {
    match input {
        Input::Latest { sensor, variable } => key_of(sensor, variable),
        Input::Window {
            sensor,
            variable,
            agg,
            window_ms,
        } => fnv(&[
            b"\0window",
            sensor.as_bytes(),
            variable.as_bytes(),
            agg_tag(*agg),
            &window_ms.to_le_bytes(),
        ]),
        Input::Recent { sensor, window_ms } => {
            fnv(&[b"\0recent", sensor.as_bytes(), &window_ms.to_le_bytes()])
        }
    }
}

/// The key of the readings a windowed slot aggregates.
pub(crate) fn raw_key(input: &Input) -> Option<u64> {
    match input {
        Input::Latest { .. } => None,
        Input::Window {
            sensor, variable, ..
        } => Some(key_of(sensor, variable)),
        Input::Recent { sensor, .. } => Some(sensor_key(sensor)),
    }
}
