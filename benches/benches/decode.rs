//! Decoding and validation of one 1,000-reading request body, per format; and Parquet encoding
//! of a sorted hour of readings (bytes per reading printed once).
//!
//! `cargo bench -p aemos-benches --bench decode`

use aemos_benches::Workload;
use aemos_ingest::{decode, DecodeArgs, Format, Precision};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn decoders(c: &mut Criterion) {
    let mut w = Workload::new(10_000, 4, 1_767_225_600_000, 1);
    let json = w.json_body(1000);
    let lp = w.line_protocol_body(1000);
    let args = DecodeArgs::new(1_767_225_600_000);
    let mut group = c.benchmark_group("decode_1000");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("json", |b| {
        b.iter(|| decode(Format::Json, json.as_bytes(), &args).unwrap())
    });
    group.bench_function("line_protocol", |b| {
        b.iter(|| {
            decode(
                Format::LineProtocol(Precision::Milliseconds),
                lp.as_bytes(),
                &args,
            )
            .unwrap()
        })
    });
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

criterion_group!(benches, decoders, parquet);
criterion_main!(benches);
