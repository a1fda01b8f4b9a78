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
