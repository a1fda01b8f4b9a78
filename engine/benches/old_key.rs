//! The engine's key before keys were keyed (FNV-1a 64 over the names, each followed by 0xff,
//! then the splitmix64 finalizer): anyone could compute it. Shared by the test that shows a
//! colliding pair stays apart (`tests/it/keys.rs`), the search that found the pair
//! (`examples/find_fnv_collision.rs`) and the key-cost bench (`benches/keys.rs`).
#![allow(dead_code)]

pub(crate) const SEP: u8 = 0xff;
pub(crate) const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
pub(crate) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub(crate) fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The engine's key before keys were keyed: anyone could compute it.
pub(crate) fn old_key_of(sensor: &str, variable: &str) -> u64 {
    old_key(&[sensor.as_bytes(), variable.as_bytes()])
}

/// The old `sensor_key`, for the cost comparison.
pub(crate) fn old_sensor_key(sensor: &str) -> u64 {
    old_key(&[b"\0sensor", sensor.as_bytes()])
}

pub(crate) fn old_key(parts: &[&[u8]]) -> u64 {
    let h = parts
        .iter()
        .fold(FNV_BASIS, |h, part| fnv(fnv(h, part), &[SEP]));
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
