//! What a key costs, old and new, over the engine bench's 40,000 names (10,000 sensors, four
//! variables): the old unkeyed FNV-1a key, the keyed SipHash-1-3-128 `key_of`, and
//! `Reading::new`, which computes a reading's sensor and pair identities.
//!
//! `cargo bench -p aemos-engine --bench keys`

#[path = "old_key.rs"]
mod old_key;

use aemos_engine::keys::key_of;
use aemos_engine::workload::{sensor, VARIABLES};
use aemos_engine::Reading;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use old_key::{old_key_of, old_sensor_key};
use std::hint::black_box;

fn keys(c: &mut Criterion) {
    let sensors: Vec<String> = (0..10_000).map(sensor).collect();
    let names: Vec<(&str, &str)> = sensors
        .iter()
        .flat_map(|s| VARIABLES.map(|v| (s.as_str(), v)))
        .collect();
    let mut group = c.benchmark_group("keys_40k");
    group.throughput(Throughput::Elements(names.len() as u64));
    let mut run = |what: &str, f: &dyn Fn(&str, &str) -> u64| {
        group.bench_function(what, |b| {
            b.iter(|| {
                names.iter().fold(0u64, |sum, (s, v)| {
                    sum.wrapping_add(f(black_box(s), black_box(v)))
                })
            })
        });
    };
    run("old_key_of_fnv", &|s, v| old_key_of(s, v));
    run("old_reading_keys", &|s, v| {
        old_key_of(s, v) ^ old_sensor_key(s)
    });
    run("key_of_siphash13", &|s, v| key_of(s, v));
    run("reading_new", &|s, v| {
        let r = Reading::new(s, v, 0, 0.0);
        r.key ^ r.sensor
    });
    group.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
