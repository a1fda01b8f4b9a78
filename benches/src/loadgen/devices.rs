//! What simulated devices send and when, shared by the `mqtt` and `coap` loads: each device is
//! one client (its own connection or socket) sending its own messages in order.
//!
//! Two workloads: `random` sends arrays of `--batch` readings as fast as the server answers
//! (`--rate` paces them); `purifiers` is seed 003's: every device sends its seven values in one
//! message every `--interval`, the devices spread over the interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::purifiers::Purifiers;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceWorkload {
    /// Arrays of `--batch` readings, as fast as answered (or at `--rate`).
    Random,
    /// Seed 003's air purifiers: seven values per message every `--interval`.
    Purifiers,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DeviceLoad {
    /// Devices, each its own client.
    #[arg(long, alias = "publishers", default_value_t = 100)]
    pub devices: usize,
    #[arg(long, value_enum, default_value = "random")]
    pub workload: DeviceWorkload,
    /// Readings per message (`random`).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Readings per second in all (`random`; 0: as fast as the server answers).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Each purifier's period (`purifiers`), e.g. `2m`, `1s`, `250ms`.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

impl DeviceLoad {
    pub fn readings_per_message(&self) -> usize {
        match self.workload {
            DeviceWorkload::Random => self.batch.max(1),
            DeviceWorkload::Purifiers => Purifiers::readings_per_message(),
        }
    }

    /// Each device's name and schedule.
    pub fn schedules(&self, seed: u64) -> Vec<(String, Schedule)> {
        match self.workload {
            DeviceWorkload::Random => {
                let batch = self.batch.max(1);
                // Messages per second of one device, when paced.
                let per_device = self.rate as f64 / self.devices.max(1) as f64 / batch as f64;
                let period = (per_device > 0.0).then(|| Duration::from_secs_f64(1.0 / per_device));
                (0..self.devices)
                    .map(|d| {
                        let bodies = (0..8).map(|r| random_payload(d, batch, r)).collect();
                        (
                            format!("mq-{d:05}"),
                            Schedule {
                                bodies,
                                offset: Duration::ZERO,
                                period,
                            },
                        )
                    })
                    .collect()
            }
            DeviceWorkload::Purifiers => {
                let mut p = Purifiers::new("purifier", self.devices, self.interval, seed);
                // Enough distinct messages per device for the run (at most 64), made up front.
                let rounds =
                    (self.seconds as f64 / self.interval.as_secs_f64()).ceil() as usize + 1;
                (0..self.devices)
                    .map(|d| {
                        let bodies = (0..rounds.min(64)).map(|_| p.message(d).into()).collect();
                        let schedule = Schedule {
                            bodies,
                            offset: p.offset(d),
                            period: Some(p.interval()),
                        };
                        (p.name(d).to_owned(), schedule)
                    })
                    .collect()
            }
        }
    }
}

/// A JSON array of `batch` readings of ten sensors of `device`.
fn random_payload(device: usize, batch: usize, round: usize) -> bytes::Bytes {
    let mut s = String::with_capacity(batch * 64);
    s.push('[');
    for i in 0..batch {
        if i > 0 {
            s.push(',');
        }
        let v = 15.0 + ((device * 7 + round * 13 + i) % 150) as f64 / 10.0;
        s.push_str(&format!(
            r#"{{"sensor":"mq-{device:05}-{}","variable":"temperature","value":{v}}}"#,
            i % 10
        ));
    }
    s.push(']');
    bytes::Bytes::from(s)
}

/// The messages of one device, in a cycle, and when each is due after the start: message `k`
/// at `offset + k * period`, or at once when there is no period.
#[derive(Debug, Clone)]
pub struct Schedule {
    bodies: Vec<bytes::Bytes>,
    offset: Duration,
    period: Option<Duration>,
}

impl Schedule {
    pub fn body(&self, round: usize) -> bytes::Bytes {
        self.bodies[round % self.bodies.len()].clone()
    }

    /// Waits until message `round` is due (in steps of at most 100 ms); `false` when `stop`
    /// was raised meanwhile.
    pub async fn wait(&self, round: usize, begun: Instant, stop: &AtomicBool) -> bool {
        if let Some(period) = self.period {
            let due = self.offset + period.mul_f64(round as f64);
            while let Some(wait) = due.checked_sub(begun.elapsed()) {
                if stop.load(Ordering::Relaxed) {
                    return false;
                }
                tokio::time::sleep(wait.min(Duration::from_millis(100))).await;
            }
        }
        !stop.load(Ordering::Relaxed)
    }
}
