//! Device presence: watches without chains, through the real workers on a manual clock.

use crate::support::{filter, Harness, T0};
use aemos_engine::FiringKind::{Activated, Cleared};
use aemos_engine::{FiringKind, PresenceSpec, Subject};

fn spec(device: &str, timeout_ms: i64) -> PresenceSpec {
    PresenceSpec {
        device: device.to_owned(),
        sensor: format!("$device:{device}"),
        timeout_ms,
    }
}

fn watch(h: &Harness, specs: Vec<PresenceSpec>) {
    h.engine.watch(specs).unwrap();
    h.engine.sync().unwrap();
}

fn presence(device: &str, kind: FiringKind) -> (String, FiringKind) {
    (format!("presence:{device}"), kind)
}

fn online(h: &Harness, device: &str) -> bool {
    h.engine.presence(device).unwrap().online()
}

#[test]
fn a_device_is_offline_until_seen_and_again_after_its_timeout() {
    let h = Harness::new(2);
    watch(&h, vec![spec("p-1", 30_000), spec("p-2", 30_000)]);
    let mut got = h.take();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [presence("p-1", Activated), presence("p-2", Activated)]
    );
    assert!(!online(&h, "p-1"));
    assert_eq!(h.engine.chain_count(), 0, "no chain per device");
    assert_eq!(h.engine.watch_count(), 2);

    h.feed(&[("$device:p-1", "seen", 1.0), ("other", "t", 3.0)]);
    assert_eq!(h.take(), [presence("p-1", Cleared)]);
    assert!(online(&h, "p-1") && !online(&h, "p-2"));

    h.advance(20_000);
    h.feed(&[("$device:p-1", "seen", 1.0)]);
    assert_eq!(h.take(), [], "seen within its timeout");
    h.advance(40_000);
    let f = h.take_firings();
    let got: Vec<_> = f
        .iter()
        .map(|f| match &f.subject {
            Subject::Presence(p) => (p.device().to_owned(), f.kind, f.time_ms - T0),
            Subject::Chain(c) => panic!("chain {} fired", c.id()),
        })
        .collect();
    assert_eq!(
        got,
        [("p-1".to_owned(), Activated, 50_000)],
        "30 s after it was last seen, at that time"
    );
    assert!(!online(&h, "p-1"));
}

#[test]
fn a_new_timeout_keeps_the_state_and_unwatching_fires_nothing() {
    let h = Harness::new(2);
    watch(&h, vec![spec("p-1", 30_000)]);
    h.feed(&[("$device:p-1", "seen", 1.0)]);
    assert_eq!(
        h.take(),
        [presence("p-1", Activated), presence("p-1", Cleared)]
    );
    // The same watch again: nothing happens; a longer timeout: still online, no firing.
    watch(&h, vec![spec("p-1", 30_000)]);
    watch(&h, vec![spec("p-1", 60_000)]);
    assert_eq!(h.take(), []);
    assert!(online(&h, "p-1"));
    assert_eq!(h.engine.presence("p-1").unwrap().timeout_ms(), 60_000);
    // The longer timeout counts from the next reading on (the window kept the earlier ones
    // for the shorter one).
    h.advance(1_000);
    h.feed(&[("$device:p-1", "seen", 1.0)]);
    h.advance(45_000);
    assert_eq!(h.take(), [], "the longer timeout is in effect");
    h.advance(20_000);
    let f = h.take_firings();
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].kind, f[0].time_ms - T0), (Activated, 61_000));

    h.engine.unwatch(&["p-1", "never-watched"]).unwrap();
    h.feed(&[("$device:p-1", "seen", 1.0)]);
    assert_eq!(h.take(), [], "not watched any more");
    assert!(h.engine.presence("p-1").is_none());
    assert_eq!(h.engine.watch_count(), 0);
}

#[test]
fn watches_and_chains_on_one_sensor_keep_apart() {
    let h = Harness::new(2);
    h.register(filter("quiet", "$device:p-1", "no_data('30s')"));
    watch(&h, vec![spec("p-1", 30_000)]);
    let mut got = h.take();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        [presence("p-1", Activated), ("quiet".into(), Activated)]
    );
    h.feed(&[("$device:p-1", "seen", 1.0)]);
    let mut got = h.take();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, [presence("p-1", Cleared), ("quiet".into(), Cleared)]);
    h.engine.remove("quiet").unwrap();
    h.advance(31_000);
    assert_eq!(
        h.take(),
        [presence("p-1", Activated)],
        "the chain's removal left the watch"
    );
}

#[test]
fn an_invalid_spec_changes_nothing() {
    let h = Harness::new(1);
    let err = h
        .engine
        .watch(vec![spec("p-1", 30_000), spec("p-2", 0)])
        .unwrap_err();
    assert!(err.to_string().contains("p-2: timeout"), "{err}");
    let err = h.engine.watch(vec![spec("p-3", 8 * 24 * 3600 * 1000)]);
    assert!(err.is_err());
    assert!(h.engine.watch(vec![spec("", 1_000)]).is_err());
    assert_eq!(h.engine.watch_count(), 0);
    // Of two specs for one device, the later is its watch.
    watch(&h, vec![spec("p-1", 30_000), spec("p-1", 10_000)]);
    assert_eq!(h.engine.watch_count(), 1);
    assert_eq!(h.engine.presence("p-1").unwrap().timeout_ms(), 10_000);
    assert_eq!(
        h.take(),
        [presence("p-1", Activated)],
        "one watch, one firing"
    );
}
