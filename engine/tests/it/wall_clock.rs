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
    // 600 ms of feeds, one reading each, its value the milliseconds since `start`.
    while began.elapsed() < Duration::from_millis(600) {
        let now = clock.now_ms();
        engine
            .feed(vec![Reading::new("s", "t", now, (now - start) as f64)])
            .unwrap();
        feeds += 1;
    }
    engine.sync().unwrap();
    let end = clock.now_ms();
    let rate = feeds as f64 / ((end - start) as f64 / 1000.0);
    assert!(
        rate > 1000.0,
        "only {rate:.0} feeds/s: the test needs more than 1,000"
    );
    engine.shutdown();
    let firings = std::mem::take(&mut *firings.lock().unwrap());
    assert!(firings.len() > 100, "{} firings", firings.len());
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
        // The newest reading in the window was stamped at most a few ms before the firing.
        let lag = (f.time_ms - start) as f64 - max;
        assert!(
            (-5.0..=100.0).contains(&lag),
            "a firing {lag} ms after its newest reading"
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
}
