//! Engine health: `ok` while worker 0 goes round its loop, `stalled` while something holds it
//! (here a sink that blocks, as a full notification path would), `ok` again once released.

use crate::support::spec;
use aemos_engine::{Clock, Engine, EngineArgs, Reading, SystemClock};
use serde_json::json;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[test]
fn a_held_worker_is_reported_stalled_and_ok_again_once_released() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let args = EngineArgs {
        stalled_after: Duration::from_millis(300),
        clock: Arc::new(SystemClock),
        ..EngineArgs::new(2)
    };
    let engine = Engine::start(args, move |_| {
        // Each firing waits to be let through.
        let _ = release_rx.lock().unwrap().recv();
    })
    .unwrap();
    let wait_for = |want: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = engine.health();
            if health.status == want {
                return health;
            }
            assert!(Instant::now() < deadline, "never {want}: {health:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let healthy = wait_for("ok");
    assert_eq!((healthy.workers, healthy.workers_running), (2, 2));
    engine
        .register(spec(json!({
            "id": "hot", "on": "every",
            "nodes": [{"type": "filter", "sensor": "s", "condition": "t > 0"}]
        })))
        .unwrap();
    let now = SystemClock.now_ms();
    engine.feed(vec![Reading::new("s", "t", now, 1.0)]).unwrap();
    let stalled = wait_for("stalled");
    assert!(stalled.since_heartbeat >= Duration::from_millis(300));
    release_tx.send(()).unwrap();
    drop(release_tx);
    wait_for("ok");
}

/// A held worker 0 takes no feeds: they queue up to `max_queued_readings`, then a feed waits
/// (and the WAL writer with it) until worker 0 takes the queued ones.
#[test]
fn feeds_queue_up_to_a_bound_in_readings_then_wait() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let args = EngineArgs {
        clock: Arc::new(SystemClock),
        max_queued_readings: 100,
        ..EngineArgs::new(2)
    };
    let engine = Arc::new(
        Engine::start(args, move |_| {
            let _ = release_rx.lock().unwrap().recv();
        })
        .unwrap(),
    );
    engine
        .register(spec(json!({
            "id": "hot", "on": "every",
            "nodes": [{"type": "filter", "sensor": "s", "condition": "t > 0"}]
        })))
        .unwrap();
    let batch = |n: usize| -> Vec<Reading> {
        let now = SystemClock.now_ms();
        (0..n)
            .map(|i| Reading::new(&format!("q{i}"), "t", now, 1.0))
            .collect()
    };
    // A firing holds worker 0 in the sink.
    engine
        .feed(vec![Reading::new("s", "t", SystemClock.now_ms(), 1.0)])
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // 60 + 40 readings fit the bound of 100; the next feed waits.
    engine.feed(batch(60)).unwrap();
    engine.feed(batch(40)).unwrap();
    let waiting = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || engine.feed(batch(1)))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiting.is_finished(), "a feed past the bound went in");
    assert_eq!(engine.health().queued_readings, 100);
    drop(release_tx); // every firing goes through from now on
    waiting.join().unwrap().unwrap();
    engine.sync().unwrap();
    assert_eq!(
        engine
            .metrics()
            .readings
            .load(std::sync::atomic::Ordering::Relaxed),
        102
    );
}
