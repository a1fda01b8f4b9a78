//! Engine time follows the wall clock under load: more than 1,000 feeds a second (each its own
//! feed command, as tiny WAL group commits make them) on the system clock. A firing carries the
//! time of the readings that caused it, and a sliding window spans its length of wall-clock
//! time, not less. (With one tick per feed and a tick a millisecond, the engine's clock ran
//! ahead of real time by the excess: 5,000 feeds in half a second put it 4.5 s in the future.)

use crate::support::spec;
use aemos_engine::{Clock, Engine, EngineArgs, Firing, Reading, SystemClock};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after its newest reading was fed (the call returned) a firing may be stamped: "a
/// few ms". The time between stamping a reading and feeding it is the test thread's own
/// (backpressure, preemption) and is taken off.
const LAG_MS: f64 = 10.0;

#[test]
fn firing_times_and_windows_follow_the_wall_clock_at_thousands_of_feeds_a_second() {
    let clock = Arc::new(SystemClock);
    let firings: Arc<Mutex<Vec<Firing>>> = Arc::default();
    let sink = Arc::clone(&firings);
    let args = EngineArgs {
        workers: 2,
        clock: Arc::clone(&clock) as _,
        command_capacity: 64,
        tick: Duration::from_millis(100),
        ..EngineArgs::new(2)
    };
    let engine = Engine::start(args, move |f| {
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(f)
    })
    .unwrap();
    engine
        .register(spec(json!({
            "id": "every", "on": "every",
            "nodes": [{"type": "filter", "sensor": "s", "condition": "max(t, '300ms') >= min(t, '300ms')"}]
        })))
        .unwrap();
    let start = clock.now_ms();
    let began = Instant::now();
    let mut feeds = 0u64;
    // For each value, how long after it was stamped its last feed returned: the time the
    // test's own thread took (backpressure, preemption on a loaded machine), not the engine's.
    let mut held: std::collections::HashMap<i64, f64> = Default::default();
    // 600 ms of feeds, one reading each, its value the milliseconds since `start`.
    while began.elapsed() < Duration::from_millis(600) {
        let now = clock.now_ms();
        engine
            .feed(vec![Reading::new("s", "t", now, (now - start) as f64)])
            .unwrap();
        held.insert(now - start, (clock.now_ms() - now) as f64);
        feeds += 1;
    }
    engine.sync().unwrap();
    let end = clock.now_ms();
    let rate = feeds as f64 / ((end - start) as f64 / 1000.0);
    assert!(
        rate > 1000.0,
        "only {rate:.0} feeds/s: the test needs more than 1,000"
    );
    let ticks = engine
        .metrics()
        .ticks
        .load(std::sync::atomic::Ordering::Relaxed);
    engine.shutdown();
    let firings = std::mem::take(&mut *firings.lock().unwrap());
    assert!(firings.len() > 100, "{} firings", firings.len());
    let mut worst_lag = f64::MIN;
    for f in firings.iter() {
        let value = |prefix: &str| {
            f.values
                .iter()
                .find(|(name, _)| name.starts_with(prefix))
                .map(|(_, v)| *v)
        };
        assert!(
            f.time_ms <= end + 5,
            "a firing {} ms after the last reading was fed ({feeds} feeds at {rate:.0}/s)",
            f.time_ms - end
        );
        let (max, min) = (value("max").expect("max"), value("min").expect("min"));
        // The newest reading in the window was stamped at most a few ms before the firing,
        // however long it waited in the engine's queue (full: the test feeds as fast as the
        // engine takes them).
        let lag =
            (f.time_ms - start) as f64 - max - held.get(&(max as i64)).copied().unwrap_or(0.0);
        worst_lag = worst_lag.max(lag);
        assert!(
            (-1.0 - held.get(&(max as i64)).copied().unwrap_or(0.0)..=LAG_MS).contains(&lag),
            "a firing {lag} ms after its newest reading was fed"
        );
        // Once 300 ms have been fed, the window spans 300 ms of the readings' wall-clock time
        // (less by the gaps between feeds: loose bounds, for a test machine under load; an
        // engine clock running ahead shows as firings after `end` above and a shrunk span).
        if f.time_ms - start >= 350 {
            assert!(
                (200.0..=300.0).contains(&(max - min)),
                "the 300 ms window spans {} ms at {} ms",
                max - min,
                f.time_ms - start
            );
        }
    }
    eprintln!("{feeds} feeds at {rate:.0}/s in {ticks} ticks, {} firings, the latest {worst_lag} ms after its newest reading", firings.len());
}

/// The same on the manual clock, exactly: readings stamped with the clock's millisecond, 20 per
/// millisecond, fed as fast as the engine takes them (its queue full, so each feed waits
/// there while the clock moves on). Every firing at time `t` has seen every reading stamped up
/// to `t`, and none later: the window's newest is stamped `t` itself. (When worker 0 gave a feed
/// the clock's time as it took it, queued feeds landed milliseconds after their stamps.)
#[test]
fn a_firing_is_at_the_millisecond_its_readings_were_fed_in_however_long_they_queued() {
    let harness = crate::support::Harness::new(2);
    harness.register(json!({
        "id": "every", "on": "every",
        "nodes": [{"type": "filter", "sensor": "s", "condition": "max(t, '300ms') >= min(t, '300ms')"}]
    }));
    let start = harness.clock.now_ms();
    for ms in 0..600 {
        harness.clock.set(start + ms);
        for _ in 0..20 {
            harness
                .engine
                .feed(vec![Reading::new("s", "t", start + ms, ms as f64)])
                .unwrap();
        }
    }
    harness.engine.sync().unwrap();
    let firings = harness.take_firings();
    // A tick per millisecond (the first may share the registration's).
    assert!(firings.len() >= 599, "{} firings", firings.len());
    for f in &firings {
        let value = |prefix: &str| {
            f.values
                .iter()
                .find(|(name, _)| name.starts_with(prefix))
                .map(|(_, v)| *v)
                .expect(prefix)
        };
        // Past the last feed (the sync closes a tick at the clock's next millisecond), the
        // newest reading is the last.
        let at = (f.time_ms - start) as f64;
        assert_eq!(
            value("max"),
            at.min(599.0),
            "the firing at {at} ms saw readings up to {} ms",
            value("max")
        );
        assert_eq!(value("min"), (at - 299.0).max(0.0), "the window at {at} ms");
    }
}
