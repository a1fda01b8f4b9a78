//! Decoding and validation of one 1,000-reading request body, per format, open (`dev` mode
//! without devices) and scoped to one device owning all 10,000 sensors (a device token in
//! `production` mode: a set lookup per change of sensor, as `aemos_api`'s `DeviceScope`);
//! bodies of 1,000 to 100,000 refused readings (the cost per reading stays flat); and Parquet
//! encoding of a sorted hour of readings (bytes per reading printed once).
//!
//! `cargo bench -p aemos-benches --bench decode`

use aemos_benches::Workload;
use std::collections::HashSet;
use std::sync::Arc;

use aemos_ingest::{decode, DecodeArgs, Format, Owner, Precision, SensorScope};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// One device's sensors, looked up as `DeviceScope` does.
#[derive(Debug)]
struct OneDevice {
    id: String,
    sensors: HashSet<String, foldhash::fast::RandomState>,
}

impl SensorScope for OneDevice {
    fn device_of(&self, sensor: &str) -> Result<Owner<'_>, String> {
        if sensor == self.id || self.sensors.contains(sensor) {
            Ok(Owner::Device(&self.id))
        } else {
            Err(format!(
                "sensor {sensor:?} is not a sensor of device {:?}",
                self.id
            ))
        }
    }

    fn is_device(&self) -> bool {
        true
    }
}

fn decoders(c: &mut Criterion) {
    let mut w = Workload::new(10_000, 4, 1_767_225_600_000, 1);
    let json = w.json_body(1000);
    let lp = w.line_protocol_body(1000);
    let open = DecodeArgs::new(1_767_225_600_000);
    let device = OneDevice {
        id: "gateway".into(),
        sensors: (0..10_000).map(|i| w.sensor_name(i).to_owned()).collect(),
    };
    let scoped = DecodeArgs::new(1_767_225_600_000).with_scope(Some(Arc::new(device)));
    let mut group = c.benchmark_group("decode_1000");
    group.throughput(Throughput::Elements(1000));
    for (name, args) in [("open", &open), ("device_scope", &scoped)] {
        group.bench_function(format!("json/{name}"), |b| {
            b.iter(|| {
                let decoded = decode(Format::Json, json.as_bytes(), args).unwrap();
                assert_eq!(decoded.accepted(), 1000);
                decoded
            })
        });
        group.bench_function(format!("line_protocol/{name}"), |b| {
            b.iter(|| {
                let format = Format::LineProtocol(Precision::Milliseconds);
                let decoded = decode(format, lp.as_bytes(), args).unwrap();
                assert_eq!(decoded.accepted(), 1000);
                decoded
            })
        });
    }
    group.finish();
}

/// A JSON body of `n` readings on one line each, every one refused (a value that is not a
/// number): the cost per reading must not grow with the body (each listed rejection finds its
/// line from where the previous one was, not from the start).
fn rejections(c: &mut Criterion) {
    let args = DecodeArgs::new(1_767_225_600_000);
    let mut group = c.benchmark_group("rejected_json");
    for n in [1_000usize, 10_000, 100_000] {
        let mut body = String::from("{\"readings\": [\n");
        for i in 0..n {
            let sep = if i + 1 < n { "," } else { "" };
            body.push_str(&format!(
                "  {{\"sensor\": \"s-{i}\", \"variable\": \"t\", \"value\": \"hot\"}}{sep}\n"
            ));
        }
        body.push_str("]}\n");
        group.throughput(Throughput::Elements(n as u64));
        group.sample_size(if n >= 100_000 { 10 } else { 50 });
        group.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                let decoded = decode(Format::Json, body.as_bytes(), &args).unwrap();
                assert_eq!(decoded.rejected_count, n);
                decoded
            })
        });
    }
    group.finish();
}

fn parquet(c: &mut Criterion) {
    let mut w = Workload::new(10_000, 4, 1_767_225_600_000, 2);
    let batch = w.batch(400_000);
    let parts = aemos_storage::sort_and_split(&[batch]).unwrap();
    let sorted = &parts[0].batch;
    let bytes = aemos_storage::encode_parquet(sorted).unwrap();
    eprintln!(
        "parquet: {} rows, {} bytes, {:.3} bytes/reading",
        sorted.num_rows(),
        bytes.len(),
        bytes.len() as f64 / sorted.num_rows() as f64
    );
    let mut group = c.benchmark_group("persist_400k");
    group.throughput(Throughput::Elements(sorted.num_rows() as u64));
    group.sample_size(10);
    group.bench_function("sort_and_split", |b| {
        let batch = w.batch(400_000);
        b.iter(|| aemos_storage::sort_and_split(std::slice::from_ref(&batch)).unwrap())
    });
    group.bench_function("encode_parquet", |b| {
        b.iter(|| aemos_storage::encode_parquet(sorted).unwrap())
    });
    group.finish();
}

criterion_group!(benches, decoders, rejections, parquet);
criterion_main!(benches);
