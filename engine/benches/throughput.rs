//! Readings per second through the engine's real workers, with 10,000 threshold chains (two or
//! three ANDed thresholds on random sensors) over 10,000 sensors x 4 variables, fed in batches
//! of 10,000 readings (one WAL group commit's worth), for 1 and 2 workers. Readings are uniform
//! in 15..30 so about half of them flip the threshold they meet. Each iteration feeds one batch;
//! the measurement waits for the engine to take in everything fed (sync) at the end.
//!
//! ```text
//! cargo bench -p aemos-engine --bench throughput
//! ```

use aemos_engine::workload::{readings, sensor, threshold_chain, Rng, VARIABLES};
use aemos_engine::{Engine, EngineArgs, Reading};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const SENSORS: usize = 10_000;
const CHAINS: usize = 10_000;
const BATCH: usize = 10_000;

fn engine(workers: usize) -> (Engine, Vec<Vec<Reading>>) {
    let engine = Engine::start(EngineArgs::new(workers), |_| {}).unwrap();
    let sensors: Vec<String> = (0..SENSORS).map(sensor).collect();
    let mut rng = Rng::new(11);
    let now = chrono::Utc::now().timestamp_millis();
    let all: Vec<Reading> = sensors
        .iter()
        .flat_map(|s| VARIABLES.map(|v| Reading::new(s, v, now, 20.0)))
        .collect();
    for chunk in all.chunks(BATCH) {
        engine.feed(chunk.to_vec()).unwrap();
    }
    for i in 0..CHAINS {
        let s = &sensors[rng.below(SENSORS)];
        engine
            .register(threshold_chain(&format!("chain-{i}"), s, &mut rng))
            .unwrap();
    }
    engine.sync().unwrap();
    let batches = (0..32)
        .map(|_| readings(&mut rng, &sensors, BATCH, now))
        .collect();
    (engine, batches)
}

fn throughput(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    for workers in [1, 2] {
        let (engine, batches) = engine(workers);
        let mut i = 0;
        group.bench_function(format!("feed_10k_chains_{workers}_workers"), |b| {
            b.iter_custom(|iters| {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    engine.feed(batches[i % batches.len()].clone()).unwrap();
                    i += 1;
                }
                engine.sync().unwrap();
                start.elapsed()
            })
        });
        engine.shutdown();
    }
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
