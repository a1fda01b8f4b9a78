//! Keys are not forgeable: two sensor names whose readings shared a key under the engine's old,
//! unkeyed hash (FNV-1a 64 over the names, each followed by 0xff, then the splitmix64
//! finalizer) stay apart now.

use crate::support::{filter, Harness};
use aemos_engine::keys::key_of;
use aemos_engine::FiringKind::Activated;
use aemos_engine::Reading;
use std::sync::atomic::Ordering;

/// Two sensor names of the same length after which FNV-1a 64 is in the same state, so that
/// `(A, v)` and `(B, v)` had one key for every variable `v`. Found by `find_old_collision`
/// below, a distinguished-point birthday search (1.3e9 steps, 19 s on two cores in a release
/// build; any run finds some pair in about 2^32 steps: another found `s-olhDAHgdi-C` and
/// `s-jQCtwLpri8N` in 30 s).
const A: &str = "s-ZdTb5BxTSWC";
const B: &str = "s-8PgIZ5BB6VG";

const SEP: u8 = 0xff;
const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The engine's key before keys were keyed: anyone could compute it.
fn old_key_of(sensor: &str, variable: &str) -> u64 {
    old_key(&[sensor.as_bytes(), variable.as_bytes()])
}

/// The old `sensor_key`, for the cost comparison.
fn old_sensor_key(sensor: &str) -> u64 {
    old_key(&[b"\0sensor", sensor.as_bytes()])
}

fn old_key(parts: &[&[u8]]) -> u64 {
    let h = parts
        .iter()
        .fold(FNV_BASIS, |h, part| fnv(fnv(h, part), &[SEP]));
    let mut z = h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What ingestion accepts as a sensor name: `[A-Za-z0-9._:-]`, 1 to 128 characters.
fn valid_sensor(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

#[test]
fn the_pair_shared_a_key_under_the_old_hash() {
    assert_ne!(A, B);
    assert!(valid_sensor(A) && valid_sensor(B));
    for variable in ["temperature", "humidity", "pm25", "co2", "t", "a.b-c_d"] {
        assert_eq!(
            old_key_of(A, variable),
            old_key_of(B, variable),
            "{variable}"
        );
    }
}

#[test]
fn names_that_shared_a_key_stay_apart() {
    assert_ne!(key_of(A, "temperature"), key_of(B, "temperature"));
    let h = Harness::new(2);
    h.register(filter("on-a", A, "temperature > 25"));
    h.register(filter("avg-a", A, "avg(temperature, '60s') > 25"));
    // Under the old keys this reading was A's too, and fired both chains.
    h.feed(&[(B, "temperature", 30.0)]);
    assert_eq!(h.take(), vec![]);
    let status = h.engine.status("on-a").unwrap();
    assert!(!status.active && status.values.is_empty());

    // A chain on B reads B's value...
    h.register(filter("on-b", B, "temperature > 25"));
    let f = h.take_firings();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].chain.id(), f[0].kind), ("on-b", Activated));
    assert_eq!(f[0].values, vec![("temperature".to_owned(), 30.0)]);
    // ...and A's readings leave it alone (under the old keys this one cleared `on-b`, and
    // `avg-a` averaged it with B's 30 to 26).
    h.feed(&[(A, "temperature", 22.0)]);
    assert_eq!(h.take(), vec![]);
    h.feed(&[(A, "temperature", 50.0)]);
    let mut f = h.take_firings();
    f.sort_by(|x, y| x.chain.id().cmp(y.chain.id()));
    let got: Vec<_> = f
        .iter()
        .map(|f| (f.chain.id(), f.kind, f.values.clone()))
        .collect();
    // The window holds A's 22 and 50 only (with B's 30 it would average 34).
    assert_eq!(
        got,
        vec![
            (
                "avg-a",
                Activated,
                vec![("avg(temperature, 60s)".to_owned(), 36.0)]
            ),
            ("on-a", Activated, vec![("temperature".to_owned(), 50.0)]),
        ]
    );
    let on_b = h.engine.status("on-b").unwrap();
    assert_eq!(on_b.values, vec![("temperature".to_owned(), 30.0)]);
    let metrics = h.engine.metrics();
    assert_eq!(metrics.key_collisions.load(Ordering::Relaxed), 0);
}

/// The search that found `A` and `B`: the function `x -> fnv(name(x))`, `name` spelling the
/// 64 bits of `x` as `s-` and 11 characters of `[A-Za-z0-9_-]`, is iterated from random starts
/// until a state whose low 18 bits are zero (a distinguished point); two walks reaching the same
/// point merged somewhere, and walking them again in step finds two names with one state.
/// About 2^32 steps. Run it with
/// `cargo test -p aemos-engine --release --test it -- --ignored find_old_collision --nocapture`.
#[test]
#[ignore = "a search of a minute or more (release build)"]
fn find_old_collision() {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const DISTINGUISHED: u64 = (1 << 18) - 1;
    let name = |x: u64| -> String {
        let tail = (0..11).map(|i| ALPHABET[((x >> (6 * i)) & 63) as usize] as char);
        "s-".chars().chain(tail).collect()
    };
    let base = fnv(FNV_BASIS, b"s-");
    let step = |x: u64| {
        (0..11).fold(base, |h, i| {
            fnv(h, &[ALPHABET[((x >> (6 * i)) & 63) as usize]])
        })
    };
    let points: Mutex<HashMap<u64, (u64, u64)>> = Mutex::default();
    let found: Mutex<Option<(String, String)>> = Mutex::default();
    let done = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (points, found, done) = (&points, &found, &done);
            scope.spawn(move || {
                let mut start = thread << 48;
                while !done.load(Ordering::Relaxed) {
                    start += 1;
                    let first = step(start.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let (mut x, mut len) = (first, 0u64);
                    while x & DISTINGUISHED != 0 && len < 20 << 18 {
                        x = step(x);
                        len += 1;
                    }
                    if x & DISTINGUISHED != 0 {
                        continue; // a cycle without a distinguished point
                    }
                    let Some((other, other_len)) = points.lock().unwrap().insert(x, (first, len))
                    else {
                        continue;
                    };
                    // Walk the longer one ahead, then both in step until they meet.
                    let (mut a, mut la, mut b, mut lb) = (first, len, other, other_len);
                    if la < lb {
                        (a, la, b, lb) = (b, lb, a, la);
                    }
                    for _ in lb..la {
                        a = step(a);
                    }
                    if a == b {
                        continue; // one walk started on the other
                    }
                    while step(a) != step(b) {
                        (a, b) = (step(a), step(b));
                    }
                    *found.lock().unwrap() = Some((name(a), name(b)));
                    done.store(true, Ordering::Relaxed);
                }
            });
        }
    });
    let (a, b) = found.into_inner().unwrap().unwrap();
    println!("{a} {b}");
    assert_ne!(a, b);
    assert_eq!(old_key_of(&a, "temperature"), old_key_of(&b, "temperature"));
}

/// What a key costs, old and new, over the engine bench's 40,000 names. Run it with
/// `cargo test -p aemos-engine --release --test it -- --ignored key_cost --nocapture`.
#[test]
#[ignore = "a timing, meaningful in a release build only"]
fn key_cost() {
    use aemos_engine::workload::{sensor, VARIABLES};
    use std::hint::black_box;
    let sensors: Vec<String> = (0..10_000).map(sensor).collect();
    let names: Vec<(&str, &str)> = sensors
        .iter()
        .flat_map(|s| VARIABLES.map(|v| (s.as_str(), v)))
        .collect();
    let time = |what: &str, f: &dyn Fn(&str, &str) -> u64| {
        let mut best = f64::MAX;
        for _ in 0..9 {
            let start = std::time::Instant::now();
            let mut sum = 0u64;
            for _ in 0..20 {
                for (s, v) in &names {
                    sum = sum.wrapping_add(f(black_box(s), black_box(v)));
                }
            }
            black_box(sum);
            let ns = start.elapsed().as_nanos() as f64 / (20 * names.len()) as f64;
            best = best.min(ns);
        }
        println!("{best:6.2} ns  {what}");
    };
    time("old key_of (FNV-1a 64, finalizer)", &|s, v| {
        old_key_of(s, v)
    });
    time("old Reading::new's keys (key_of, sensor_key)", &|s, v| {
        old_key_of(s, v) ^ old_sensor_key(s)
    });
    time("key_of (SipHash-1-3-128)", &|s, v| key_of(s, v));
    time("Reading::new (sensor and pair identities)", &|s, v| {
        let r = Reading::new(s, v, 0, 0.0);
        r.key ^ r.sensor
    });
}
