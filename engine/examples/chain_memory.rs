//! Memory per registered chain: registers `N` (default 100,000) chains of `FILTERS` (default 1)
//! `no_data` filters each, on 2 workers, and prints the process's RSS before and after; with
//! `PRESENCE=1`, watches `N` devices' presence instead (what the server does per device).
//! Usage: cargo run --release -p aemos-engine --example chain_memory [N]

use aemos_engine::{ChainSpec, Engine, EngineArgs, PresenceSpec};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    // FILTERS=2: a second `no_data` filter on another sensor (a device with a sensor of its own).
    let filters: usize = std::env::var("FILTERS")
        .ok()
        .and_then(|f| f.parse().ok())
        .unwrap_or(1);
    let engine = Engine::start(EngineArgs::new(2), |_| {}).expect("engine");
    engine.sync().expect("sync");
    let before = rss_kb();
    if std::env::var("PRESENCE").is_ok_and(|p| p == "1") {
        let specs = (0..n)
            .map(|i| PresenceSpec {
                device: format!("silent-{i:06}"),
                sensor: format!("$device:silent-{i:06}"),
                timeout_ms: 600_000,
            })
            .collect();
        engine.watch(specs).expect("watched");
        report(&engine, before, n, "watched devices", "device");
        return;
    }
    for i in 0..n {
        let mut doc = serde_json::json!({
            "id": format!("$presence:silent-{i:06}"),
            "name": format!("presence of silent-{i:06}"),
            "nodes": [
                {"type": "filter", "sensor": format!("silent-{i:06}"), "condition": "no_data('600000ms')"},
                {"type": "action", "action": "notify", "device": format!("silent-{i:06}"),
                 "state": {"name": "connectivity", "value": "offline", "clear": "online"}}
            ]
        });
        for f in 1..filters {
            let filter = serde_json::json!({"type": "filter", "sensor": format!("silent-{i:06}-{f}"),
                "condition": "no_data('600000ms')"});
            doc["nodes"]
                .as_array_mut()
                .expect("nodes")
                .insert(f, filter);
        }
        let spec: ChainSpec = serde_json::from_value(doc).expect("chain");
        engine.upsert(spec).expect("registered");
    }
    report(&engine, before, n, "chains", "chain");
}

/// Prints the resident size the `n` things added, once the engine has settled, and stops it.
fn report(engine: &Engine, before: u64, n: usize, what: &str, each: &str) {
    settle(engine);
    let after = rss_kb();
    println!(
        "{n} {what}: RSS {before} kB -> {after} kB, {} bytes per {each}",
        (after.saturating_sub(before)) * 1024 / n as u64
    );
    engine.shutdown();
}

/// Waits for the engine to take everything in, and for its workers to settle.
fn settle(engine: &Engine) {
    engine.sync().expect("sync");
    // A plain thread, no runtime: let the workers settle before reading the resident size.
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(std::time::Duration::from_secs(2));
    engine.sync().expect("sync");
}
