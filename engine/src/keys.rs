//! 64-bit keys for what the dataflow joins on, so that no string crosses into the workers.
//!
//! - `key_of(sensor, variable)`: a reading's key, and the key of its latest value;
//! - `sensor_key(sensor)`: every reading of a sensor, for `no_data`;
//! - `value_key(input)`: the value a slot reads (a latest value, or one window aggregate).
//!
//! Each is the low half of a 128-bit identity (`Id`): SipHash-1-3 with 128-bit output, keyed
//! with 128 bits drawn once per process from the operating system's randomness (through std's
//! `RandomState`); the high half is a check that travels with the key. Names come from clients,
//! so keys must not be computable from names outside the process: the unkeyed hash before
//! (FNV-1a) let anyone compute two sensor names whose readings shared a key and fed each other's
//! chains (`tests/it/keys.rs` holds such a pair, found in 19 s). Keys never leave the process:
//! the firing log, storage and the API carry names, and after a restart every key is computed
//! again under a new seed. (The API's datastream throttle uses `key_of` as a hash in memory.)
//!
//! Chance collisions are handled rather than assumed away, as 64-bit keys collide among about
//! 2^32 names. A key belongs for the life of the process to the first identity worker 0 sees
//! under it: the first reading of it, or the first chain that reads it (`history::Latest`). A
//! reading under a key another identity holds is left out of latest values and windows; a chain
//! reading such a key is installed without its rows (quarantined: it never fires, and its status
//! says why). Both count in `EngineMetrics::key_collisions`. Two names are confused only if all
//! 128 bits collide.
//!
//! What is hashed is each part followed by a 0xff byte. Names and tags never contain one (UTF-8),
//! only the fixed-width window length, always last, may: so the bytes parse one way only and no
//! two different things hash the same bytes (a name has one 0xff, a `(sensor, variable)` pair
//! two, a `no_data` count and a window at least three and five, after `\0recent` and
//! `\0window`). A sensor's bytes are a prefix of its pairs', so a reading's two identities come
//! from one pass (`reading_ids`).
//!
//! Cost, on the ingestion side only (the workers never hash names): `Reading::new` 27 ns against
//! 20 ns for the two FNV keys before, `key_of` 21 ns against 14 (`cargo bench -p aemos-engine --bench keys`,
//! release build, 40,000 names). foldhash's seeded quality hasher would be about three times
//! faster, but it claims no resistance to names chosen against it, which is the point here.

use crate::parse::{Agg, Input};
use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;

const SEP: u8 = 0xff;

/// The SipHash key of this process.
static SEED: LazyLock<(u64, u64)> = LazyLock::new(|| {
    // A RandomState's SipHash key comes from the OS; two of its outputs are a fresh key.
    let state = RandomState::new();
    (state.hash_one(0x5eed_u64), state.hash_one(0x5eed_u64 + 1))
});

/// What the engine knows a name by: `key` is joined on, `check` tells apart names whose keys
/// collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Id {
    pub(crate) key: u64,
    pub(crate) check: u64,
}

/// SipHash-1-3 state with 128-bit output, fed parts that are each followed by `SEP`.
#[derive(Clone, Copy)]
struct Sip {
    v: [u64; 4],
    /// Bytes not compressed yet (fewer than 8), little-endian.
    tail: u64,
    ntail: usize,
    len: usize,
}

impl Sip {
    #[inline(always)]
    fn new((k0, k1): (u64, u64)) -> Self {
        Sip {
            v: [
                k0 ^ 0x736f_6d65_7073_6575,
                k1 ^ 0x646f_7261_6e64_6f6d ^ 0xee, // 128-bit output
                k0 ^ 0x6c79_6765_6e65_7261,
                k1 ^ 0x7465_6462_7974_6573,
            ],
            tail: 0,
            ntail: 0,
            len: 0,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        let [mut v0, mut v1, mut v2, mut v3] = self.v;
        v0 = v0.wrapping_add(v1);
        v1 = v1.rotate_left(13) ^ v0;
        v0 = v0.rotate_left(32);
        v2 = v2.wrapping_add(v3);
        v3 = v3.rotate_left(16) ^ v2;
        v0 = v0.wrapping_add(v3);
        v3 = v3.rotate_left(21) ^ v0;
        v2 = v2.wrapping_add(v1);
        v1 = v1.rotate_left(17) ^ v2;
        v2 = v2.rotate_left(32);
        self.v = [v0, v1, v2, v3];
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v[3] ^= m;
        self.round();
        self.v[0] ^= m;
    }

    /// Appends `part` and a separator.
    #[inline(always)]
    fn part(&mut self, mut part: &[u8]) {
        self.len += part.len() + 1;
        if self.ntail != 0 {
            let need = 8 - self.ntail;
            if part.len() < need {
                self.tail |= load_short(part) << (8 * self.ntail);
                self.ntail += part.len();
                return self.separator();
            }
            let (head, rest) = part.split_at(need);
            let word = self.tail | (load_short(head) << (8 * self.ntail));
            self.compress(word);
            part = rest;
        }
        let mut words = part.chunks_exact(8);
        for w in &mut words {
            self.compress(u64::from_le_bytes([
                w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7],
            ]));
        }
        let rest = words.remainder();
        self.tail = load_short(rest);
        self.ntail = rest.len();
        self.separator()
    }

    #[inline(always)]
    fn separator(&mut self) {
        self.tail |= u64::from(SEP) << (8 * self.ntail);
        self.ntail += 1;
        if self.ntail == 8 {
            let t = self.tail;
            self.compress(t);
            self.tail = 0;
            self.ntail = 0;
        }
    }

    #[inline(always)]
    fn finish(mut self) -> Id {
        self.compress(((self.len as u64) << 56) | self.tail);
        self.v[2] ^= 0xee;
        self.round();
        self.round();
        self.round();
        let key = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        self.v[1] ^= 0xdd;
        self.round();
        self.round();
        self.round();
        let check = self.v[0] ^ self.v[1] ^ self.v[2] ^ self.v[3];
        Id { key, check }
    }
}

/// Up to 7 bytes, little-endian.
#[inline(always)]
fn load_short(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n < 8);
    if n >= 4 {
        let lo = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let hi = u64::from(u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]));
        lo | (hi << (8 * (n - 4)))
    } else if n > 0 {
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (8 * (n / 2)))
            | (u64::from(b[n - 1]) << (8 * (n - 1)))
    } else {
        0
    }
}

fn id(parts: &[&[u8]]) -> Id {
    id_keyed(*SEED, parts)
}

fn id_keyed(seed: (u64, u64), parts: &[&[u8]]) -> Id {
    let mut h = Sip::new(seed);
    for p in parts {
        h.part(p);
    }
    h.finish()
}

/// A reading's identities: its sensor's and its `(sensor, variable)`'s, in one pass.
#[inline]
pub(crate) fn reading_ids(sensor: &str, variable: &str) -> (Id, Id) {
    let mut h = Sip::new(*SEED);
    h.part(sensor.as_bytes());
    let sensor_id = h.finish();
    h.part(variable.as_bytes());
    (sensor_id, h.finish())
}

pub(crate) fn pair_id(sensor: &str, variable: &str) -> Id {
    id(&[sensor.as_bytes(), variable.as_bytes()])
}

pub(crate) fn sensor_id(sensor: &str) -> Id {
    id(&[sensor.as_bytes()])
}

/// The key of a reading of `variable` from `sensor`: a keyed hash, the same within a process
/// only. Two names may share a key (rarely, and not by anyone's choice): outside the engine,
/// use it as a hash, not as the identity of a name.
pub fn key_of(sensor: &str, variable: &str) -> u64 {
    pair_id(sensor, variable).key
}

/// The key under which every reading of `sensor` counts toward `no_data`.
pub fn sensor_key(sensor: &str) -> u64 {
    sensor_id(sensor).key
}

fn agg_tag(agg: Agg) -> &'static [u8] {
    match agg {
        Agg::Avg => b"avg",
        Agg::Min => b"min",
        Agg::Max => b"max",
        Agg::Count => b"count",
    }
}

/// The identity of the value a slot reads.
pub(crate) fn value_id(input: &Input) -> Id {
    match input {
        Input::Latest { sensor, variable } => pair_id(sensor, variable),
        Input::Window {
            sensor,
            variable,
            agg,
            window_ms,
        } => id(&[
            b"\0window",
            sensor.as_bytes(),
            variable.as_bytes(),
            agg_tag(*agg),
            &window_ms.to_le_bytes(),
        ]),
        Input::Recent { sensor, window_ms } => recent_id(sensor, *window_ms),
    }
}

/// The identity of the count of a sensor's readings within `window_ms` (`no_data`).
pub(crate) fn recent_id(sensor: &str, window_ms: i64) -> Id {
    id(&[b"\0recent", sensor.as_bytes(), &window_ms.to_le_bytes()])
}

/// The identity of the readings a windowed slot aggregates.
pub(crate) fn raw_id(input: &Input) -> Option<Id> {
    match input {
        Input::Latest { .. } => None,
        Input::Window {
            sensor, variable, ..
        } => Some(pair_id(sensor, variable)),
        Input::Recent { sensor, .. } => Some(sensor_id(sensor)),
    }
}

/// The key of the value a slot reads.
pub(crate) fn value_key(input: &Input) -> u64 {
    value_id(input).key
}

/// The key of the readings a windowed slot aggregates.
pub(crate) fn raw_key(input: &Input) -> Option<u64> {
    raw_id(input).map(|id| id.key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key of the published SipHash test vectors: bytes 0 to 15.
    const KEY: (u64, u64) = (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);

    #[test]
    fn siphash_1_3_128_matches_known_answers() {
        // The empty message: the vector in the `siphasher` crate's tests (1.0.4, tests128.rs).
        let empty = Sip::new(KEY).finish();
        let bytes = [
            231, 126, 188, 178, 39, 136, 165, 190, 253, 98, 219, 106, 221, 48, 48, 1,
        ];
        let want = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap());
        assert_eq!(empty.key, want(&bytes[..8]));
        assert_eq!(empty.check, want(&bytes[8..]));
        // Bytes 0..k then 0xff, as computed by `siphasher` 1.0.4 (`SipHasher13::finish128`).
        let vectors = [
            (0, 0x635c_ece5_6fb4_599a, 0x8980_8848_6d92_9805),
            (1, 0xd4b7_3a1d_59ed_3a67, 0x6070_12a7_ad43_a7a4),
            (3, 0x8294_3fe8_4ce3_55bd, 0x126f_aff2_5f1c_5a32),
            (4, 0x9ccf_69e1_576a_15ae, 0x5702_2405_de07_409b),
            (6, 0x2a23_130d_8a79_957c, 0x16d6_2d83_f2bd_c067),
            (7, 0xe759_d457_d274_bf5d, 0xc88f_0b40_6636_1ffe),
            (8, 0x9382_6664_bd93_5d69, 0xbf45_d810_321a_3448),
            (12, 0xebcc_6175_5141_1494, 0xf0cc_a385_2381_849e),
            (15, 0xeaf4_79e9_2222_9caf, 0xa766_d9af_2364_79da),
            (16, 0x2c6d_713f_92b9_b7bd, 0x4a69_e773_5afd_59f5),
        ];
        for (k, key, check) in vectors {
            let bytes: Vec<u8> = (0..k).collect();
            assert_eq!(id_keyed(KEY, &[&bytes]), Id { key, check }, "{k} bytes");
        }
        let pair = id_keyed(KEY, &[b"sensor-00042", b"temperature"]);
        assert_eq!(
            (pair.key, pair.check),
            (0xd46b_0f6a_aa8c_37ed, 0xecf4_6aee_1bdc_f2cb)
        );
        let sensor = id_keyed(KEY, &[b"sensor-00042"]);
        assert_eq!(
            (sensor.key, sensor.check),
            (0xffca_2a07_60fd_1b16, 0x4b18_cd66_11c0_e4e9)
        );
    }

    #[test]
    fn parts_are_streamed_across_word_boundaries() {
        // Every split of one message into two parts hashes like the message fed at once.
        let text: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len in 0..text.len() {
            for cut in 0..=len {
                let whole = [&text[..cut], &[SEP][..], &text[cut..len]].concat();
                assert_eq!(
                    id_keyed(KEY, &[&text[..cut], &text[cut..len]]),
                    id_keyed(KEY, &[&whole]),
                    "len {len} cut {cut}"
                );
            }
        }
    }

    #[test]
    fn a_reading_has_the_ids_of_its_names() {
        for (s, v) in [
            ("s", "t"),
            ("sensor-00042", "temperature"),
            ("a.b:c-d_e", "x"),
        ] {
            let (sensor, pair) = reading_ids(s, v);
            assert_eq!(sensor, sensor_id(s));
            assert_eq!(pair, pair_id(s, v));
            assert_eq!(key_of(s, v), pair.key);
            assert_eq!(sensor_key(s), sensor.key);
            assert_ne!(sensor.key, pair.key);
        }
        // Moving bytes between the parts changes the identity.
        assert_ne!(pair_id("ab", "c"), pair_id("a", "bc"));
        assert_ne!(pair_id("ab", ""), sensor_id("ab"));
    }
}

/// Chance collisions, made by hand: a reading whose key is another name's but whose check is
/// not (what two names with equal 64-bit keys look like to the engine).
#[cfg(test)]
mod collisions {
    use crate::runtime::{Engine, EngineArgs, ManualClock, Reading};
    use crate::{ChainSpec, FiringKind};
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use FiringKind::{Activated, Cleared};

    const T0: i64 = 1_768_900_000_000;

    struct Harness {
        engine: Engine,
        firings: Arc<Mutex<Vec<(String, FiringKind)>>>,
    }

    impl Harness {
        fn new() -> Self {
            let firings = Arc::new(Mutex::new(Vec::new()));
            let sink = Arc::clone(&firings);
            let args = EngineArgs {
                workers: 2,
                clock: Arc::new(ManualClock::new(T0)),
                command_capacity: 16,
                tick: Duration::from_secs(3600),
                ..EngineArgs::new(2)
            };
            let engine = Engine::start(args, move |f| {
                sink.lock()
                    .unwrap()
                    .push((f.chain().unwrap().id().to_owned(), f.kind))
            })
            .unwrap();
            Harness { engine, firings }
        }

        fn register(&self, id: &str, sensor: &str, condition: &str) {
            let spec: ChainSpec = serde_json::from_value(serde_json::json!({
                "id": id, "nodes": [{"type": "filter", "sensor": sensor, "condition": condition}]
            }))
            .unwrap();
            self.engine.register(spec).unwrap();
            self.engine.sync().unwrap();
        }

        fn feed(&self, reading: Reading) {
            self.engine.feed(vec![reading]).unwrap();
            self.engine.sync().unwrap();
        }

        fn take(&self) -> Vec<(String, FiringKind)> {
            let mut f = std::mem::take(&mut *self.firings.lock().unwrap());
            f.sort_by(|a, b| a.0.cmp(&b.0));
            f
        }

        fn collisions(&self) -> u64 {
            self.engine.metrics().key_collisions.load(Ordering::Relaxed)
        }
    }

    fn reading(sensor: &str, variable: &str, value: f64) -> Reading {
        Reading::new(sensor, variable, T0, value)
    }

    /// A reading of another `(sensor, variable)` whose key is that of `(sensor, variable)`.
    fn impostor(sensor: &str, variable: &str, value: f64) -> Reading {
        let mut r = reading(sensor, variable, value);
        r.check = !r.check;
        r
    }

    fn fired(ids: &[(&str, FiringKind)]) -> Vec<(String, FiringKind)> {
        ids.iter().map(|(id, k)| ((*id).to_owned(), *k)).collect()
    }

    #[test]
    fn a_reading_under_a_key_another_name_owns_is_left_out() {
        let h = Harness::new();
        h.register("on-a", "s-a", "t > 25");
        h.register("avg-a", "s-a", "avg(t, '60s') > 25");
        h.feed(impostor("s-a", "t", 30.0));
        assert_eq!(h.take(), vec![]);
        assert_eq!(h.collisions(), 1);
        h.feed(reading("s-a", "t", 30.0));
        assert_eq!(
            h.take(),
            fired(&[("avg-a", Activated), ("on-a", Activated)])
        );
        assert_eq!(h.collisions(), 1);
    }

    #[test]
    fn a_chain_reading_a_key_another_name_owns_is_quarantined() {
        let h = Harness::new();
        h.feed(impostor("s-b", "t", 30.0)); // the first identity under the key owns it
        assert_eq!(h.collisions(), 0);
        h.register("on-b", "s-b", "t > 25");
        assert_eq!(h.take(), vec![], "the impostor's 30 is not s-b.t");
        assert_eq!(h.collisions(), 1);
        let status = h.engine.status("on-b").unwrap();
        assert_eq!(status.errors, 1);
        assert!(status.last_error.unwrap().contains("quarantined"));
        h.feed(reading("s-b", "t", 40.0));
        assert_eq!(h.take(), vec![]);
        assert_eq!(h.collisions(), 2);
        // The quarantined chain goes like any other; the rest of the engine is unaffected.
        h.engine.remove("on-b").unwrap();
        h.register("on-c", "s-c", "t > 25 OR \"s-b\".t > 25");
        h.feed(reading("s-c", "t", 30.0));
        assert_eq!(h.take(), vec![], "on-c reads s-b.t too: quarantined");
        assert_eq!(h.collisions(), 3);
        h.register("on-d", "s-c", "t > 25");
        assert_eq!(h.take(), fired(&[("on-d", Activated)]));
    }

    #[test]
    fn no_data_counts_the_readings_of_its_own_sensor_only() {
        let h = Harness::new();
        h.register("silent", "s-d", "no_data('30s')");
        assert_eq!(h.take(), fired(&[("silent", Activated)]));
        // Another sensor's reading whose sensor key is s-d's.
        let mut r = reading("s-x", "t", 1.0);
        r.sensor = super::sensor_key("s-d");
        h.feed(r);
        assert_eq!(h.take(), vec![]);
        assert_eq!(h.collisions(), 1);
        h.feed(reading("s-d", "t", 1.0));
        assert_eq!(h.take(), fired(&[("silent", Cleared)]));
    }
}
