//! Chains driven through the real workers, one behaviour at a time.

use crate::support::{filter, Harness};
use aemos_engine::FiringKind::{Activated, Cleared, Repeated, Scheduled};
use serde_json::json;

fn fired(id: &str, kind: aemos_engine::FiringKind) -> Vec<(String, aemos_engine::FiringKind)> {
    vec![(id.to_owned(), kind)]
}

#[test]
fn and_waits_for_every_variable_then_fires_on_change_only() {
    for workers in [1, 2] {
        let h = Harness::new(workers);
        h.register(filter("hot", "s-1", "temperature > 25 AND humidity > 60"));
        h.feed(&[("s-1", "temperature", 30.0)]);
        assert_eq!(h.take(), vec![], "humidity has no value yet");
        h.feed(&[("s-1", "humidity", 61.0)]);
        assert_eq!(h.take(), fired("hot", Activated));
        h.feed(&[("s-1", "temperature", 31.0)]);
        assert_eq!(h.take(), vec![], "still active: on change fires once");
        h.feed(&[("s-1", "humidity", 50.0)]);
        assert_eq!(h.take(), fired("hot", Cleared));
        // A reading for another sensor with the same variable names changes nothing.
        h.feed(&[("s-2", "humidity", 99.0)]);
        assert_eq!(h.take(), vec![]);
    }
}

/// SQL's three-valued logic, the documented semantics: a variable without a value is NULL,
/// `NULL OR TRUE` is TRUE, and a chain is active when its condition is TRUE. So an OR fires on
/// one side while the other has never been read; `NOT` of a missing value stays NULL (inactive).
#[test]
fn or_fires_while_the_other_variable_has_no_value() {
    for workers in [1, 2] {
        let h = Harness::new(workers);
        h.register(filter(
            "either",
            "s-1",
            "temperature > 100 OR humidity > 95",
        ));
        h.register(filter("not-dry", "s-1", "NOT (humidity < 10)"));
        h.feed(&[("s-1", "temperature", 120.0)]);
        assert_eq!(h.take(), fired("either", Activated), "humidity is NULL");
        h.feed(&[("s-1", "temperature", 20.0)]);
        assert_eq!(h.take(), fired("either", Cleared), "NULL OR FALSE is NULL");
        h.feed(&[("s-1", "humidity", 96.0)]);
        let mut got = h.take();
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("either".to_owned(), Activated),
                ("not-dry".to_owned(), Activated)
            ]
        );
    }
}

#[test]
fn a_chain_on_a_sensor_nobody_read_sees_its_latest_values_at_once() {
    for workers in [1, 2] {
        let h = Harness::new(workers);
        // Readings of keys no chain reads stay out of the dataflow...
        h.feed(&[("s-1", "temperature", 30.0), ("s-1", "humidity", 10.0)]);
        h.feed(&[("s-1", "temperature", 31.0)]);
        // ...until a chain reads them: it is judged on the latest values at registration.
        h.register(filter("hot", "s-1", "temperature > 25 AND humidity < 20"));
        assert_eq!(h.take(), fired("hot", Activated));
        let status = h.engine.status("hot").unwrap();
        let mut values = status.values.clone();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            values,
            vec![
                ("humidity".to_owned(), 10.0),
                ("temperature".to_owned(), 31.0)
            ]
        );
        h.feed(&[("s-1", "temperature", 20.0)]);
        assert_eq!(h.take(), fired("hot", Cleared));
    }
}

#[test]
fn a_clause_that_is_constant_and_true_keeps_the_chain_active_without_readings() {
    let h = Harness::new(2);
    h.register(filter("always", "s-9", "temperature > 100 OR 1 < 2"));
    assert_eq!(h.take(), fired("always", Activated));
    h.feed(&[("s-9", "temperature", 120.0), ("s-9", "temperature", 20.0)]);
    assert_eq!(h.take(), vec![]);
    h.engine.remove("always").unwrap();
    h.register(filter("always", "s-9", "temperature > 100 OR 1 < 2"));
    assert_eq!(
        h.take(),
        fired("always", Activated),
        "a new install fires again"
    );
}

#[test]
fn a_flip_inside_one_tick_fires_nothing() {
    let h = Harness::new(2);
    h.register(filter("hot", "s-1", "temperature > 25"));
    let now = aemos_engine::Clock::now_ms(&*h.clock);
    let batch = vec![
        aemos_engine::Reading::new("s-1", "temperature", now, 30.0),
        aemos_engine::Reading::new("s-1", "temperature", now + 1, 20.0),
    ];
    h.engine.feed(batch).unwrap();
    h.engine.sync().unwrap();
    assert_eq!(h.take(), vec![]);
    // An older reading arriving late is history: it does not replace the latest value.
    let late = vec![aemos_engine::Reading::new(
        "s-1",
        "temperature",
        now - 10,
        40.0,
    )];
    h.engine.feed(late).unwrap();
    h.engine.sync().unwrap();
    assert_eq!(h.take(), vec![]);
}

#[test]
fn or_several_sensors_and_values_in_firings() {
    let h = Harness::new(2);
    h.register(json!({
        "id": "gap", "on": "every",
        "nodes": [
            {"type": "filter", "sensor": "a", "condition": "t > \"b\".t + 5 OR t > 100"},
            {"type": "transform", "set": {"t_f": "t * 9 / 5 + 32"}},
            {"type": "action", "action": "notify", "device": "dev-1",
             "state": {"name": "gapAlert", "value": "warning", "clear": "normal"}}
        ]
    }));
    h.feed(&[("a", "t", 20.0)]);
    assert_eq!(h.take(), vec![], "b.t missing and t <= 100");
    h.feed(&[("b", "t", 10.0)]);
    let f = h.take_firings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].kind, Activated);
    let mut values = f[0].values.clone();
    values.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        values,
        vec![("b.t".to_owned(), 10.0), ("t".to_owned(), 20.0)]
    );
    assert_eq!(f[0].fields, vec![("t_f".to_owned(), 68.0)]);
    assert_eq!(f[0].chain().unwrap().spec.device(), "dev-1");
    h.feed(&[("a", "t", 21.0)]);
    assert_eq!(
        h.take(),
        fired("gap", Repeated),
        "on every: a new value while active"
    );
    h.feed(&[("b", "t", 30.0)]);
    assert_eq!(h.take(), fired("gap", Cleared));
    h.feed(&[("a", "t", 101.0)]);
    assert_eq!(h.take(), fired("gap", Activated), "the other OR clause");
}

#[test]
fn sliding_windows_and_no_data_move_with_time() {
    let h = Harness::new(2);
    h.register(filter("warm-avg", "s-1", "avg(t, '10s') > 20"));
    h.register(filter("silent", "s-1", "no_data('30s')"));
    assert_eq!(h.take(), fired("silent", Activated), "nothing ever arrived");
    h.feed(&[("s-1", "t", 30.0)]);
    let mut got = h.take();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("silent".to_owned(), Cleared),
            ("warm-avg".to_owned(), Activated)
        ]
    );
    h.advance(5_000);
    h.feed(&[("s-1", "t", 5.0)]);
    assert_eq!(h.take(), fired("warm-avg", Cleared), "avg(30, 5) = 17.5");
    h.advance(5_000); // the 30 leaves the window: avg 5
    h.feed(&[("s-1", "t", 50.0)]);
    assert_eq!(h.take(), fired("warm-avg", Activated), "avg(5, 50) = 27.5");
    h.advance(40_000);
    let f = h.take_firings();
    let got: Vec<_> = f
        .iter()
        .map(|f| {
            (
                f.chain().unwrap().id(),
                f.kind,
                f.time_ms - crate::support::T0,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("warm-avg", Cleared, 20_000), ("silent", Activated, 40_000)],
        "at the exact expiry times"
    );
}

#[test]
fn removal_and_replacement_take_effect_at_the_next_tick() {
    let h = Harness::new(2);
    h.register(filter("c", "s-1", "t > 5"));
    h.feed(&[("s-1", "t", 6.0)]);
    assert_eq!(h.take(), fired("c", Activated));
    // Replaced by a chain that does not hold: its state starts afresh, no clear.
    h.engine
        .replace(crate::support::spec(filter("c", "s-1", "t > 50")))
        .unwrap();
    h.engine.sync().unwrap();
    assert_eq!(h.take(), vec![]);
    h.feed(&[("s-1", "t", 60.0)]);
    assert_eq!(
        h.take(),
        fired("c", Activated),
        "the replacement reads the new threshold"
    );
    h.engine.remove("c").unwrap();
    h.feed(&[("s-1", "t", 1.0)]);
    assert_eq!(h.take(), vec![], "a removed chain fires nothing");
    assert!(h.engine.status("c").is_none());
    // A chain registered later sees the latest values at once.
    h.register(filter("d", "s-1", "t < 2"));
    assert_eq!(h.take(), fired("d", Activated));
}

#[test]
fn runtime_errors_are_counted_not_fatal() {
    let h = Harness::new(2);
    h.register(filter("ratio", "s-1", "a / b > 1"));
    h.register(filter("root", "s-1", "sqrt(a) > 1"));
    h.feed(&[("s-1", "a", 4.0), ("s-1", "b", 0.0)]);
    assert_eq!(h.take(), fired("root", Activated));
    let status = h.engine.status("ratio").unwrap();
    assert_eq!(status.errors, 1);
    assert!(status.last_error.unwrap().contains("division by zero"));
    h.feed(&[("s-1", "a", -4.0)]);
    assert_eq!(h.take(), fired("root", Cleared));
    assert_eq!(
        h.engine.status("root").unwrap().errors,
        1,
        "sqrt(-4) is NaN"
    );
    h.feed(&[("s-1", "b", 2.0), ("s-1", "a", 4.0)]);
    let mut got = h.take();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("ratio".to_owned(), Activated),
            ("root".to_owned(), Activated)
        ]
    );
}

#[test]
fn scheduled_chains_fire_on_their_ticks_while_active() {
    let h = Harness::new(1);
    let mut chain = filter("every-minute", "s-1", "t > 5");
    chain["schedule"] = json!({"cron": "0 * * * * *", "timezone": "Europe/Paris"});
    h.register(chain);
    h.feed(&[("s-1", "t", 6.0)]);
    assert_eq!(
        h.take(),
        vec![],
        "readings alone do not fire a scheduled chain"
    );
    h.advance(61_000);
    assert_eq!(h.take(), fired("every-minute", Scheduled));
    h.feed(&[("s-1", "t", 1.0)]);
    h.advance(60_000);
    assert_eq!(h.take(), vec![], "not active at the tick");
}

#[test]
fn a_clear_carries_the_values_that_ended_it() {
    let h = Harness::new(2);
    h.register(json!({
        "id": "hot", "on": "change",
        "nodes": [{"type": "filter", "sensor": "s", "condition": "t > 25 AND h < 90"}]
    }));
    h.feed(&[("s", "t", 26.0), ("s", "h", 50.0)]);
    let f = h.take_firings();
    assert_eq!((f.len(), f[0].kind), (1, Activated));
    h.feed(&[("s", "t", 27.0)]);
    h.feed(&[("s", "t", 20.0)]);
    let f = h.take_firings();
    assert_eq!((f.len(), f[0].kind), (1, Cleared));
    let mut values = f[0].values.clone();
    values.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        values,
        vec![("h".to_owned(), 50.0), ("t".to_owned(), 20.0)],
        "the reading that cleared it, not the last one while active"
    );
    // One atom, as most chains.
    h.register(json!({
        "id": "warm", "on": "change",
        "nodes": [
            {"type": "filter", "sensor": "w", "condition": "t > 25"},
            {"type": "transform", "set": {"t_f": "t * 9 / 5 + 32"}},
            {"type": "action", "action": "notify", "device": "w",
             "state": {"name": "alert", "value": "warning", "clear": "normal"}}
        ]
    }));
    h.feed(&[("w", "t", 26.0)]);
    h.feed(&[("w", "t", 27.0)]);
    h.feed(&[("w", "t", 20.0)]);
    let f = h.take_firings();
    assert_eq!(
        f.iter().map(|f| f.kind).collect::<Vec<_>>(),
        [Activated, Cleared]
    );
    assert_eq!(f[1].values, vec![("t".to_owned(), 20.0)]);
    assert_eq!(f[1].fields, vec![("t_f".to_owned(), 68.0)]);
}
