//! Keys are not forgeable: two sensor names whose readings shared a key under the engine's old,
//! unkeyed hash (FNV-1a 64 over the names, each followed by 0xff, then the splitmix64
//! finalizer) stay apart now.

use crate::support::{filter, Harness};
use aemos_engine::keys::key_of;
use aemos_engine::FiringKind::Activated;
use std::sync::atomic::Ordering;

/// Two sensor names of the same length after which FNV-1a 64 is in the same state, so that
/// `(A, v)` and `(B, v)` had one key for every variable `v`. Found by
/// `cargo run -p aemos-engine --release --example find_fnv_collision`, a distinguished-point birthday search (1.3e9 steps, 19 s on two cores in a release
/// build; any run finds some pair in about 2^32 steps: another found `s-olhDAHgdi-C` and
/// `s-jQCtwLpri8N` in 30 s).
const A: &str = "s-ZdTb5BxTSWC";
const B: &str = "s-8PgIZ5BB6VG";

#[path = "../../benches/old_key.rs"]
mod old_key;
use old_key::old_key_of;

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
    assert_eq!((f[0].chain().unwrap().id(), f[0].kind), ("on-b", Activated));
    assert_eq!(f[0].values, vec![("temperature".to_owned(), 30.0)]);
    // ...and A's readings leave it alone (under the old keys this one cleared `on-b`, and
    // `avg-a` averaged it with B's 30 to 26).
    h.feed(&[(A, "temperature", 22.0)]);
    assert_eq!(h.take(), vec![]);
    h.feed(&[(A, "temperature", 50.0)]);
    let mut f = h.take_firings();
    f.sort_by(|x, y| x.chain().unwrap().id().cmp(y.chain().unwrap().id()));
    let got: Vec<_> = f
        .iter()
        .map(|f| (f.chain().unwrap().id(), f.kind, f.values.clone()))
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
