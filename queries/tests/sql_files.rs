//! SQL files with expected output (`tests/sql/*.sql`), run against a data set that is partly
//! persisted to Parquet and partly still in the buffer, so every query reads both; and the
//! bounds on users' queries (time, memory, concurrency).
//!
//! File format: blocks separated by blank lines; a block is `-- comment` lines, the query, a
//! line `----`, then the expected pretty-printed table (or `error: <substring>`). Run with
//! `UPDATE_EXPECTED=1` to rewrite the expectations after a deliberate change.

use std::path::Path;
use std::sync::Arc;

use aemos_queries::{QueryEngine, QueryEngineArgs, QueryLimits, StaticSource};
use aemos_storage::schema::ReadingsBuilder;
use aemos_storage::{ManualClock, ObjectStoreConfig, Storage, StorageArgs};

const T0: i64 = 1_768_905_000_000; // 2026-01-20T10:30:00Z

async fn fixture(dir: &Path) -> (Arc<Storage>, QueryEngine) {
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir)).unwrap();
    let storage = Storage::open(StorageArgs::new(
        dir.to_path_buf(),
        store,
        Arc::new(ManualClock::new(T0)),
    ))
    .await
    .unwrap();
    // Two hours of a small fleet: 3 sensors x 2 variables, one reading a minute.
    let mut b = ReadingsBuilder::with_capacity(720);
    for minute in 0..120i64 {
        for s in 0..3 {
            let sensor = format!("sensor-{s}");
            let device = format!("device-{}", s % 2);
            b.push(
                T0 + minute * 60_000,
                &device,
                &sensor,
                "temperature",
                20.0 + s as f64 + (minute % 10) as f64 / 10.0,
            );
            b.push(
                T0 + minute * 60_000,
                &device,
                &sensor,
                "humidity",
                40.0 + minute as f64 / 2.0,
            );
        }
    }
    // Two Telegraf-like series of one measurement that differ only in their `host` tag.
    for (minute, host) in [(0, "a"), (0, "b"), (1, "a"), (1, "b")] {
        b.push_tagged(
            T0 + minute * 60_000,
            "cpu",
            "cpu",
            "usage",
            if host == "a" { 10.0 } else { 90.0 } + minute as f64,
            "cpu",
            &[("cpu", "cpu-total"), ("host", host)],
        );
    }
    storage.write(b.finish()).await.unwrap();
    storage.persist().await.unwrap();
    // And some recent readings still in the buffer.
    let mut b = ReadingsBuilder::with_capacity(6);
    for s in 0..3 {
        let sensor = format!("sensor-{s}");
        b.push(
            T0 + 120 * 60_000,
            "device-x",
            &sensor,
            "temperature",
            99.0 + s as f64,
        );
    }
    b.push_tagged(
        T0 + 120 * 60_000,
        "cpu",
        "cpu",
        "usage",
        12.0,
        "cpu",
        &[("host", "a")],
    );
    storage.write(b.finish()).await.unwrap();
    let engine = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: Some(2),
        limits: Default::default(),
    })
    .unwrap();
    (storage, engine)
}

async fn render(engine: &QueryEngine, sql: &str) -> String {
    match engine.sql(sql).await {
        Ok((_, batches)) => arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string(),
        Err(e) => format!("error: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_files() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = fixture(dir.path()).await;
    assert!(
        !storage.read_snapshot().files.is_empty() && !storage.read_snapshot().batches.is_empty()
    );
    let update = std::env::var_os("UPDATE_EXPECTED").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql");
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut rewritten = Vec::new();
        for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
            let (query_part, expected) = block
                .split_once("\n----")
                .map(|(q, e)| (q, e.strip_prefix('\n').unwrap_or(e)))
                .unwrap_or((block, ""));
            let sql: String = query_part
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            let got = render(&engine, &sql).await;
            let expected = expected.trim_end();
            let ok = if let Some(substring) = expected.strip_prefix("error: ") {
                got.starts_with("error: ") && got.contains(substring)
            } else {
                got.trim_end() == expected
            };
            if !ok {
                failures.push(format!(
                    "{}:\n{sql}\nexpected:\n{expected}\ngot:\n{got}",
                    file.display()
                ));
            }
            let kept = if ok && expected.starts_with("error: ") {
                expected.to_string()
            } else {
                got.trim_end().to_string()
            };
            rewritten.push(format!("{}\n----\n{}", query_part.trim_end(), kept));
        }
        if update {
            std::fs::write(&file, rewritten.join("\n\n") + "\n").unwrap();
        }
    }
    assert!(
        update || failures.is_empty(),
        "{} failing queries:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_statistics_cover_buffer_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, engine) = fixture(dir.path()).await;
    let stats = engine
        .device_statistics("device-0", None, None, None)
        .await
        .unwrap();
    let vars: Vec<_> = stats
        .iter()
        .map(|s| (s.variable.as_str(), s.count))
        .collect();
    // device-0 has sensor-0 and sensor-2: 2 x 120 of each variable.
    assert_eq!(vars, vec![("humidity", 240), ("temperature", 240)]);
    let t = stats.iter().find(|s| s.variable == "temperature").unwrap();
    assert_eq!((t.min, t.max), (20.0, 22.9));
    let windowed = engine
        .device_statistics(
            "device-1",
            Some(T0),
            Some(T0 + 10 * 60_000),
            Some("humidity"),
        )
        .await
        .unwrap();
    assert_eq!(windowed.len(), 1);
    assert_eq!(windowed[0].count, 10);
    assert_eq!((windowed[0].min, windowed[0].max), (40.0, 44.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_refused_by_the_sql_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_storage, engine) = fixture(dir.path()).await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO readings VALUES (now(), 'a', 'b', 'c', 1.0)",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = engine.sql(sql).await.unwrap_err();
        assert!(e.is_user_error(), "{sql}: {e}");
    }
}

/// Aggregations that the files' summaries answer give the same results as reading every row:
/// with every file summarized, and with one file written before summaries existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summaries_answer_aggregates_like_the_rows_do() {
    let dir = tempfile::tempdir().unwrap();
    let (storage, engine) = fixture(dir.path()).await;
    let mut legacy = storage.read_snapshot();
    assert!(legacy.files.len() >= 2);
    assert!(legacy.files.iter().all(|f| f.summary.is_some()));
    legacy.files[0].summary = None;
    let legacy = QueryEngine::new(QueryEngineArgs {
        source: Arc::new(StaticSource(legacy)),
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: Some(2),
        limits: Default::default(),
    })
    .unwrap();
    // `{c}` is `true` (summaries can answer) or a time bound (rows must be read).
    let queries = [
        "SELECT sensor, max(value) AS m FROM readings WHERE {c} GROUP BY sensor ORDER BY m DESC LIMIT 2",
        "SELECT device, sensor, variable, count(*) AS n, count(value) AS nv, min(value) AS lo, \
         max(value) AS hi, round(sum(value), 6) AS s, round(avg(value), 6) AS a \
         FROM readings WHERE {c} GROUP BY device, sensor, variable ORDER BY 1, 2, 3",
        "SELECT variable, count(*) AS n, min(value) AS lo FROM readings \
         WHERE device = 'device-0' AND {c} GROUP BY variable ORDER BY 1",
        "SELECT count(*) AS n, max(value) AS hi, round(avg(value), 6) AS a FROM readings WHERE {c}",
        "SELECT count(*) AS n, max(value) AS hi FROM readings WHERE sensor = 'nope' AND {c}",
        "SELECT variable, max(value) AS hi FROM readings \
         WHERE sensor IN ('sensor-1', 'sensor-2') AND {c} GROUP BY variable ORDER BY 1",
    ];
    let all_time = "time > '1970-01-01T00:00:00Z'";
    for engine in [&engine, &legacy] {
        for template in queries {
            let summarized = template.replace("{c}", "true");
            let rows = template.replace("{c}", all_time);
            let expected = render(engine, &rows).await;
            assert!(!expected.starts_with("error"), "{rows}: {expected}");
            assert_eq!(render(engine, &summarized).await, expected, "{summarized}");
            let plan = render(engine, &format!("EXPLAIN {summarized}")).await;
            assert!(plan.contains("readings_summary"), "{summarized}:\n{plan}");
            let plan = render(engine, &format!("EXPLAIN {rows}")).await;
            assert!(!plan.contains("readings_summary"), "{rows}:\n{plan}");
        }
    }
    // Shapes the summaries cannot answer keep reading rows.
    for sql in [
        "SELECT sensor, count(DISTINCT value) FROM readings GROUP BY sensor",
        "SELECT sensor, max(value) FROM readings WHERE value > 30 GROUP BY sensor",
        "SELECT date_bin(INTERVAL '1 hour', time), max(value) FROM readings GROUP BY 1",
        "SELECT sensor, median(value) FROM readings GROUP BY sensor",
        "SELECT sensor, max(value * 2) FROM readings GROUP BY sensor",
        "SELECT count(*) FROM readings WHERE random() < 0.5",
        "SELECT sensor, count(*) FROM readings WHERE sensor = 'sensor-1' AND random() < 0.5 GROUP BY sensor",
    ] {
        let plan = render(&engine, &format!("EXPLAIN {sql}")).await;
        assert!(!plan.contains("readings_summary"), "{sql}:\n{plan}");
    }
}

/// A user's query is bounded: a runtime error of the data is the user's (not an internal
/// error), a query that runs too long is stopped, one that needs more memory than the pool
/// fails, and one beyond the concurrency is refused while the others run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_queries_are_bounded_in_time_memory_and_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir.path())).unwrap();
    let storage = Storage::open(StorageArgs::new(
        dir.path().to_path_buf(),
        store,
        Arc::new(ManualClock::new(T0)),
    ))
    .await
    .unwrap();
    let engine = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: Some(2),
        limits: QueryLimits {
            timeout: std::time::Duration::from_millis(300),
            concurrency: 2,
            memory_bytes: Some(4 << 20),
        },
    })
    .unwrap();
    let refused = |sql: &'static str| {
        let engine = engine.clone();
        async move { engine.sql_limited(sql).await.map(|_| ()).unwrap_err() }
    };

    let e = refused("SELECT 1 / 0 AS x").await;
    assert!(
        e.is_user_error() && e.to_string().contains("Divide by zero"),
        "{e}"
    );
    let e = refused("SELECT CAST('x' AS INT) AS x").await;
    assert!(e.is_user_error(), "{e}");

    let e =
        refused("SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3")
            .await;
    assert!(
        e.is_user_error() && e.to_string().contains("--query-timeout"),
        "{e}"
    );

    let e = refused(
        "SELECT v, count(*) FROM generate_series(1, 5000000) AS t(v) GROUP BY v ORDER BY v",
    )
    .await;
    assert!(
        e.is_user_error() && e.to_string().contains("Resources exhausted"),
        "{e}"
    );

    // Two running (their streams held, unfinished): a third is refused; once one ends, the
    // next is admitted.
    let first = engine.execute_limited("SELECT 1 AS x").await.unwrap();
    let second = engine.execute_limited("SELECT 2 AS x").await.unwrap();
    let e = refused("SELECT 3 AS x").await;
    assert!(
        matches!(e, aemos_queries::Error::Busy { running: 2 }),
        "{e}"
    );
    drop(first);
    engine.sql_limited("SELECT 3 AS x").await.unwrap();
    drop(second);
    // Internal queries (the rebuild at start) are not bounded by the user limits.
    let started = std::time::Instant::now();
    engine
        .sql("SELECT count(*) FROM generate_series(1, 300000000) AS t(v) WHERE v % 7 = 3")
        .await
        .unwrap();
    assert!(
        started.elapsed() > std::time::Duration::from_millis(300),
        "the internal query must outlast the user timeout for this check to mean anything"
    );
    // Nor by their memory: a million groups, far beyond the 4 MiB users get.
    let grouped =
        "SELECT count(*) AS n FROM (SELECT v * 7919 % 1000003 AS k FROM generate_series(1, 1000000) AS t(v) GROUP BY k)";
    let e = refused(grouped).await;
    assert!(e.to_string().contains("Resources exhausted"), "{e}");
    let (_, batches) = engine.sql(grouped).await.unwrap();
    let n = batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 1_000_000);
}
