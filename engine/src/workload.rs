//! Synthetic chains and readings for benchmarks and examples: the workload of
//! `sensor-NNNNN` sensors with four variables, and chains of two or three ANDed thresholds.

use crate::model::{ChainSpec, Node, Trigger};
use crate::runtime::Reading;

/// The variables of every synthetic sensor (the first four of the load generator's).
pub const VARIABLES: [&str; 4] = ["temperature", "humidity", "pm25", "co2"];

/// The name of synthetic sensor `i`, as the load generator writes it.
pub fn sensor(i: usize) -> String {
    format!("sensor-{i:05}")
}

/// A small deterministic generator (splitmix64), so benches need no extra dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in `[lo, hi)`, rounded to hundredths.
    pub fn value(&mut self, lo: f64, hi: f64) -> f64 {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo + unit * (hi - lo)) * 100.0).round() / 100.0
    }
}

/// Chain `id`: two or three ANDed thresholds, between 15 and 30, on distinct variables of
/// `sensor`.
pub fn threshold_chain(id: &str, sensor: &str, rng: &mut Rng) -> ChainSpec {
    let terms = 2 + rng.below(2);
    let first = rng.below(VARIABLES.len());
    let condition = (0..terms)
        .map(|k| {
            let var = VARIABLES[(first + k) % VARIABLES.len()];
            let op = if rng.below(2) == 0 { ">" } else { "<" };
            format!("{var} {op} {}", rng.value(15.0, 30.0))
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    ChainSpec {
        id: id.to_owned(),
        name: String::new(),
        nodes: vec![Node::Filter {
            sensor: sensor.to_owned(),
            condition,
        }],
        on: Trigger::Change,
        schedule: None,
    }
}

/// `n` readings of random variables of random sensors among `sensors`, values uniform in
/// 15..30, all at `time_ms`.
pub fn readings(rng: &mut Rng, sensors: &[String], n: usize, time_ms: i64) -> Vec<Reading> {
    (0..n)
        .map(|_| {
            let s = &sensors[rng.below(sensors.len())];
            let v = VARIABLES[rng.below(VARIABLES.len())];
            Reading::new(s, v, time_ms, rng.value(15.0, 30.0))
        })
        .collect()
}
