//! The realistic workload of seed 003: air purifiers, each publishing its seven air-quality
//! values in one message (the shorthand `{"temperature": 21.4, ...}`, sensor = the device)
//! every `interval`, the devices' sends spread evenly over the interval. Values are random
//! walks within each variable's range, seeded, so a run is reproducible.

use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Each variable with its range and the largest step between two messages.
pub const PURIFIER_VARIABLES: [(&str, f64, f64, f64); 7] = [
    ("temperature", 15.0, 35.0, 0.2),
    ("humidity", 20.0, 80.0, 0.5),
    ("pm1", 0.0, 150.0, 2.0),
    ("pm25", 0.0, 250.0, 3.0),
    ("pm10", 0.0, 350.0, 4.0),
    ("sound", 25.0, 70.0, 1.0),
    ("voc", 0.0, 500.0, 5.0),
];

#[derive(Debug)]
pub struct Purifiers {
    names: Vec<String>,
    /// `devices x 7` current values.
    values: Vec<f64>,
    interval: Duration,
    rng: SmallRng,
}

impl Purifiers {
    /// `devices` purifiers named `{prefix}-{i:05}`.
    pub fn new(prefix: &str, devices: usize, interval: Duration, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let values = (0..devices)
            .flat_map(|_| PURIFIER_VARIABLES.map(|(_, lo, hi, _)| lo + (hi - lo) * 0.3))
            .map(|v| v * rng.random_range(0.8..1.2))
            .collect();
        Self {
            names: (0..devices).map(|i| format!("{prefix}-{i:05}")).collect(),
            values,
            interval,
            rng,
        }
    }

    pub fn devices(&self) -> usize {
        self.names.len()
    }

    pub fn name(&self, device: usize) -> &str {
        &self.names[device]
    }

    /// When device `i` first sends, after the start: the devices spread over one interval.
    pub fn offset(&self, device: usize) -> Duration {
        self.interval
            .mul_f64(device as f64 / self.names.len().max(1) as f64)
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Steps device `i`'s walks and returns its next message.
    pub fn message(&mut self, device: usize) -> String {
        let mut out = String::with_capacity(160);
        out.push('{');
        for (k, (name, lo, hi, step)) in PURIFIER_VARIABLES.iter().enumerate() {
            let slot = &mut self.values[device * PURIFIER_VARIABLES.len() + k];
            let next = (*slot + self.rng.random_range(-step..*step)).clamp(*lo, *hi);
            *slot = (next * 10.0).round() / 10.0;
            if k > 0 {
                out.push(',');
            }
            let _ = write!(out, "\"{name}\":{}", *slot);
        }
        out.push('}');
        out
    }

    /// Readings per message.
    pub const fn readings_per_message() -> usize {
        PURIFIER_VARIABLES.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_seeded_spread_and_within_range() {
        let mut a = Purifiers::new("p", 4, Duration::from_secs(120), 7);
        let mut b = Purifiers::new("p", 4, Duration::from_secs(120), 7);
        assert_eq!(
            a.message(2),
            b.message(2),
            "the same seed, the same messages"
        );
        assert_eq!(a.offset(2), Duration::from_secs(60));
        assert_eq!(a.name(3), "p-00003");
        for _ in 0..1000 {
            let m: serde_json::Value = serde_json::from_str(&a.message(1)).unwrap();
            for (name, lo, hi, _) in PURIFIER_VARIABLES {
                let v = m[name].as_f64().unwrap();
                assert!((lo..=hi).contains(&v), "{name} = {v}");
            }
        }
    }
}
