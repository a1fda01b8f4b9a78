//! SQL over many readings: generates `--readings` readings of the standard workload into a data
//! directory through the storage layer (WAL, buffer, Parquet, catalog, compaction), then times
//! the four reference queries and reports Parquet bytes per reading.
//!
//! ```text
//! cargo run --release -p aemos-benches --bin aemos-sqlbench -- --data-dir /tmp/aemos-sqlbench --readings 100000000
//! ```
//! An existing data directory with at least `--readings` rows is reused (no generation).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use aemos_benches::Workload;
use aemos_queries::{QueryEngine, QueryEngineArgs};
use aemos_storage::{ObjectStoreConfig, Storage, StorageArgs, SystemClock};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "/tmp/aemos-sqlbench")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 100_000_000)]
    readings: u64,
    #[arg(long, default_value_t = 10_000)]
    sensors: usize,
    #[arg(long, default_value_t = 4)]
    variables: usize,
    /// Times each query is run (the best and the median are reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)?;
    let dir = std::fs::canonicalize(&args.data_dir)?;
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(&dir))?;
    let mut storage_args = StorageArgs::new(dir.clone(), store, Arc::new(SystemClock));
    storage_args.persist_interval = std::time::Duration::from_secs(3600);
    storage_args.persist_rows = usize::MAX;
    storage_args.retention = std::time::Duration::from_secs(100 * 365 * 24 * 3600);
    let storage = Storage::open(storage_args).await?;
    let queries = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: None,
        limits: Default::default(),
    })?;

    let existing: u64 = storage.read_snapshot().files.iter().map(|f| f.rows).sum();
    if existing < args.readings {
        let t = Instant::now();
        let mut workload = Workload::new(args.sensors, args.variables, START_MS, 7);
        let mut written = 0u64;
        let per_batch = 100_000;
        while written < args.readings {
            let n = per_batch.min((args.readings - written) as usize);
            storage.write(workload.batch(n)).await?;
            written += n as u64;
            if written.is_multiple_of(10_000_000) || written == args.readings {
                storage.persist().await?;
                while storage.compact().await? > 0 {}
                eprintln!(
                    "generated {written} readings in {:.1}s",
                    t.elapsed().as_secs_f64()
                );
            }
        }
    }
    let snapshot = storage.read_snapshot();
    let rows: u64 = snapshot.files.iter().map(|f| f.rows).sum();
    let bytes: u64 = snapshot.files.iter().map(|f| f.size_bytes).sum();
    let summary_bytes: u64 = snapshot
        .files
        .iter()
        .filter_map(|f| f.summary.as_ref().map(|s| s.size_bytes))
        .sum();
    println!(
        "files={} rows={} parquet_bytes={} summary_bytes={} bytes_per_reading={:.3}",
        snapshot.files.len(),
        rows,
        bytes,
        summary_bytes,
        (bytes + summary_bytes) as f64 / rows as f64
    );

    let day_end = START_MS + 86_400_000;
    let ts = |ms: i64| format!("to_timestamp_millis({ms})");
    let sensor = "sensor-00042";
    let cases = [
        ("count", "SELECT count(*) FROM readings".to_string()),
        (
            "one_sensor_day_minmaxavg",
            format!(
                "SELECT variable, min(value), max(value), avg(value) FROM readings \
                 WHERE sensor = '{sensor}' AND time >= {} AND time < {} GROUP BY variable",
                ts(START_MS),
                ts(day_end)
            ),
        ),
        (
            "one_sensor_day_1min_avg",
            format!(
                "SELECT date_bin(INTERVAL '1 minute', time) AS minute, variable, avg(value) \
                 FROM readings WHERE sensor = '{sensor}' AND time >= {} AND time < {} \
                 GROUP BY 1, 2 ORDER BY 1, 2",
                ts(START_MS),
                ts(day_end)
            ),
        ),
        (
            "top10_sensors_by_max",
            "SELECT sensor, max(value) AS m FROM readings GROUP BY sensor ORDER BY m DESC, sensor LIMIT 10"
                .to_string(),
        ),
        // The same, with a time bound that keeps the files' summaries out: every row is read.
        (
            "top10_sensors_by_max_rows",
            format!(
                "SELECT sensor, max(value) AS m FROM readings WHERE time >= {} \
                 GROUP BY sensor ORDER BY m DESC, sensor LIMIT 10",
                ts(0)
            ),
        ),
    ];
    let mut answers = Vec::new();
    for (name, sql) in cases {
        let mut times = Vec::new();
        let mut result_rows = 0;
        let mut answer = String::new();
        for _ in 0..args.runs.max(1) {
            let t = Instant::now();
            let (_, batches) = queries.sql(&sql).await?;
            times.push(t.elapsed().as_secs_f64());
            result_rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
            answer = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
        }
        answers.push((name, answer));
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "query={name} best_s={:.3} median_s={:.3} result_rows={result_rows}",
            times[0],
            times[times.len() / 2]
        );
    }
    let answer = |name: &str| answers.iter().find(|(n, _)| *n == name).map(|(_, a)| a);
    if answer("top10_sensors_by_max") != answer("top10_sensors_by_max_rows") {
        return Err(anyhow::anyhow!(
            "the summaries' top 10 differs from the rows' top 10:\n{}\n{}",
            answer("top10_sensors_by_max").cloned().unwrap_or_default(),
            answer("top10_sensors_by_max_rows")
                .cloned()
                .unwrap_or_default()
        ));
    }
    Ok(())
}
