//! The rule engine alone, through its real workers: readings per second with `--chains`
//! threshold chains (two or three ANDed thresholds on random sensors) plus `--idle-chains`
//! chains on sensors that receive nothing; memory per registered chain (resident set before
//! and after registering); and registration latency (from `register` until the chain's first
//! tick is complete, so it can fire on the next reading), measured while readings flow.
//!
//! ```text
//! cargo run --release -p aemos-benches --bin aemos-enginebench -- --chains 10000 --idle-chains 100000
//! ```
//! Readings are uniform in 15..30, so about half of them flip the threshold they meet: a
//! harsher load than random walks.

use aemos_engine::workload::{readings, sensor, threshold_chain, Rng};
use aemos_engine::{Engine, EngineArgs, Reading};
use clap::Parser;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value_t = 10_000)]
    sensors: usize,
    #[arg(long, default_value_t = 10_000)]
    chains: usize,
    #[arg(long, default_value_t = 0)]
    idle_chains: usize,
    /// Readings per feed (one WAL group commit's worth).
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Registrations timed while readings flow.
    #[arg(long, default_value_t = 50)]
    registrations: usize,
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let firings = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&firings);
    let engine = Arc::new(Engine::start(EngineArgs::new(args.workers), move |_| {
        counter.fetch_add(1, Ordering::Relaxed);
    })?);
    let sensors: Vec<String> = (0..args.sensors).map(sensor).collect();
    let mut rng = Rng::new(7);
    let now = || chrono::Utc::now().timestamp_millis();

    // Every key gets a value first, so chains start from a full `latest`.
    for chunk in (0..args.sensors).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<Reading> = chunk
            .iter()
            .flat_map(|s| {
                aemos_engine::workload::VARIABLES
                    .map(|v| Reading::new(&sensors[*s], v, now(), 20.0))
            })
            .collect();
        engine.feed(batch)?;
    }
    engine.sync()?;

    let before = resident_bytes();
    let started = Instant::now();
    for i in 0..args.chains {
        let s = &sensors[rng.below(sensors.len())];
        engine.register(threshold_chain(&format!("chain-{i}"), s, &mut rng))?;
    }
    for i in 0..args.idle_chains {
        engine.register(threshold_chain(
            &format!("idle-{i}"),
            &format!("idle-{i:06}"),
            &mut rng,
        ))?;
    }
    engine.sync()?;
    let registered = args.chains + args.idle_chains;
    let after = resident_bytes();
    println!(
        "registered {registered} chains in {:.2?}; resident {} MiB -> {} MiB: {:.0} bytes per chain",
        started.elapsed(),
        before >> 20,
        after >> 20,
        after.saturating_sub(before) as f64 / registered.max(1) as f64
    );

    // Pre-generated batches, fed round-robin.
    let batches: Vec<Vec<Reading>> = (0..64)
        .map(|_| readings(&mut rng, &sensors, args.batch, now()))
        .collect();
    let feeder = {
        let engine = Arc::clone(&engine);
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        std::thread::Builder::new().name("feeder".into()).spawn(
            move || -> anyhow::Result<(u64, Duration)> {
                let start = Instant::now();
                let mut fed = 0u64;
                let mut i = 0;
                while Instant::now() < deadline {
                    let mut batch = batches[i % batches.len()].clone();
                    let t = chrono::Utc::now().timestamp_millis();
                    batch.iter_mut().for_each(|r| r.time_ms = t);
                    engine.feed(batch)?;
                    fed += args.batch as u64;
                    i += 1;
                }
                engine.sync()?;
                Ok((fed, start.elapsed()))
            },
        )?
    };
    // Registration latency under load.
    let mut latencies = Vec::new();
    let wait = Duration::from_secs(args.seconds) / (args.registrations as u32 + 1);
    for i in 0..args.registrations {
        std::thread::park_timeout(wait);
        let chain = threshold_chain(
            &format!("late-{i}"),
            &sensors[rng.below(sensors.len())],
            &mut rng,
        );
        let t = Instant::now();
        // `register` returns once the chain's tick is complete: the next reading is judged by it.
        engine.register(chain)?;
        latencies.push(t.elapsed());
    }
    let (fed, elapsed) = feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feeder panicked"))??;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
    };
    println!(
        "workers {} chains {} idle {} batch {}: {fed} readings in {:.1?}: {:.0} readings/s, {} firings",
        args.workers,
        args.chains,
        args.idle_chains,
        args.batch,
        elapsed,
        fed as f64 / elapsed.as_secs_f64(),
        firings.load(Ordering::Relaxed)
    );
    println!(
        "registration to effect under load ({} chains): p50 {:?} p90 {:?} max {:?}",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        latencies.last()
    );
    engine.shutdown();
    Ok(())
}
