//! Workloads for the benchmarks: `sensors x variables` random walks, one reading per key per
//! second of simulated time, encoded as the API's payload formats.
//!
//! Binaries: `aemos-loadgen` (load over HTTP, MQTT and CoAP, idle MQTT devices, and
//! reading-to-notification latency over Socket.IO, MQTT and CoAP: [`loadgen`]),
//! `aemos-sqlbench` (generates readings into a data directory through storage, then times the
//! SQL queries), `aemos-enginebench` (the rule engine alone). Criterion benches in `benches/`.
//! Results go to `BENCHMARKS.md`.

pub mod hold;
pub mod loadgen;
pub mod purifiers;

use std::fmt::Write as _;

use aemos_storage::schema::ReadingsBuilder;
use arrow::array::RecordBatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub const VARIABLES: [&str; 8] = [
    "temperature",
    "humidity",
    "pm25",
    "co2",
    "voc",
    "pressure",
    "noise",
    "light",
];

/// Random walks for `sensors x variables` keys, round-robin, a second of simulated time per
/// round.
#[derive(Debug)]
pub struct Workload {
    sensors: usize,
    variables: usize,
    values: Vec<f64>,
    sensor_names: Vec<String>,
    next_key: usize,
    time_ms: i64,
    rng: SmallRng,
}

/// One generated reading.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub sensor: &'a str,
    pub variable: &'a str,
    pub value: f64,
    pub time_ms: i64,
}

impl Workload {
    pub fn new(sensors: usize, variables: usize, start_ms: i64, seed: u64) -> Self {
        let variables = variables.clamp(1, VARIABLES.len());
        let mut rng = SmallRng::seed_from_u64(seed);
        let values = (0..sensors * variables)
            .map(|_| rng.random_range(15.0..30.0))
            .collect();
        Self {
            sensors,
            variables,
            values,
            sensor_names: (0..sensors).map(|i| format!("sensor-{i:05}")).collect(),
            next_key: 0,
            time_ms: start_ms,
            rng,
        }
    }

    /// The name of sensor `i` of the workload.
    pub fn sensor_name(&self, i: usize) -> &str {
        &self.sensor_names[i]
    }

    pub fn keys(&self) -> usize {
        self.sensors * self.variables
    }

    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    /// Advances the walk of the next key and returns its reading.
    pub fn next_reading(&mut self) -> Reading<'_> {
        let key = self.next_key;
        let step: f64 = self.rng.random_range(-0.25..0.25);
        let v = ((self.values[key] + step) * 100.0).round() / 100.0;
        self.values[key] = v;
        let time_ms = self.time_ms;
        self.next_key += 1;
        if self.next_key == self.keys() {
            self.next_key = 0;
            self.time_ms += 1000;
        }
        Reading {
            sensor: &self.sensor_names[key / self.variables],
            variable: VARIABLES[key % self.variables],
            value: v,
            time_ms,
        }
    }

    pub fn json_body(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 90);
        out.push_str("{\"readings\":[");
        for i in 0..n {
            let r = self.next_reading();
            if i > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                "{{\"sensor\":\"{}\",\"variable\":\"{}\",\"value\":{},\"time\":{}}}",
                r.sensor, r.variable, r.value, r.time_ms
            );
        }
        out.push_str("]}");
        out
    }

    /// Newline-delimited JSON, one reading object per line.
    pub fn ndjson_body(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 90);
        for _ in 0..n {
            let r = self.next_reading();
            let _ = writeln!(
                out,
                "{{\"sensor\":\"{}\",\"variable\":\"{}\",\"value\":{},\"time\":{}}}",
                r.sensor, r.variable, r.value, r.time_ms
            );
        }
        out
    }

    /// An Arrow IPC stream of the API's columns: `sensor`, `variable` (Utf8), `value`
    /// (Float64), `time` (Timestamp ms, UTC).
    pub fn arrow_body(&mut self, n: usize) -> Vec<u8> {
        use arrow::array::{Float64Builder, StringBuilder, TimestampMillisecondBuilder};
        use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
        let (mut sensor, mut variable) = (StringBuilder::new(), StringBuilder::new());
        let (mut value, mut time) = (
            Float64Builder::with_capacity(n),
            TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC"),
        );
        for _ in 0..n {
            let r = self.next_reading();
            sensor.append_value(r.sensor);
            variable.append_value(r.variable);
            value.append_value(r.value);
            time.append_value(r.time_ms);
        }
        let schema = std::sync::Arc::new(Schema::new(vec![
            Field::new("sensor", DataType::Utf8, false),
            Field::new("variable", DataType::Utf8, false),
            Field::new("value", DataType::Float64, false),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
        ]));
        let batch = RecordBatch::try_new(
            std::sync::Arc::clone(&schema),
            vec![
                std::sync::Arc::new(sensor.finish()),
                std::sync::Arc::new(variable.finish()),
                std::sync::Arc::new(value.finish()),
                std::sync::Arc::new(time.finish()),
            ],
        )
        .expect("columns of one length");
        let mut out = Vec::new();
        let mut writer =
            arrow::ipc::writer::StreamWriter::try_new(&mut out, &schema).expect("an IPC writer");
        writer.write(&batch).expect("an IPC batch");
        writer.finish().expect("an IPC stream");
        drop(writer);
        out
    }

    /// Line protocol, one line per sensor and second where possible (fields grouped as
    /// Telegraf writes them), millisecond precision.
    pub fn line_protocol_body(&mut self, n: usize) -> String {
        let mut out = String::with_capacity(n * 40);
        let mut last: Option<(String, i64)> = None;
        for _ in 0..n {
            let r = self.next_reading();
            let same = last
                .as_ref()
                .is_some_and(|(s, t)| s == r.sensor && *t == r.time_ms);
            if same {
                let _ = write!(out, ",{}={}", r.variable, r.value);
            } else {
                if let Some((_, t)) = last.take() {
                    let _ = writeln!(out, " {t}");
                }
                let _ = write!(out, "air,sensor={} {}={}", r.sensor, r.variable, r.value);
                last = Some((r.sensor.to_string(), r.time_ms));
            }
        }
        if let Some((_, t)) = last {
            let _ = writeln!(out, " {t}");
        }
        out
    }

    pub fn batch(&mut self, n: usize) -> RecordBatch {
        let mut b = ReadingsBuilder::with_capacity(n);
        for _ in 0..n {
            let r = self.next_reading();
            b.push(r.time_ms, r.sensor, r.sensor, r.variable, r.value);
        }
        b.finish()
    }
}
