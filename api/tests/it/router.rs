//! The router called in-process with `oneshot`, over real storage in a temporary directory.

use aemos_api::commands::preclean::Precleans;
use aemos_api::commands::scheduler::Schedules;
use aemos_api::commands::{commands_snapshot, CommandMetrics, Commands, CommandsArgs, Timing};
use std::sync::Arc;

use aemos_api::auth::limits::Rate;
use aemos_api::auth::{Auth, JwtVerifier, Mode, RateLimits};
use aemos_api::devices::DeviceRegistry;
use aemos_api::http::{router, AppState, AppStateParts, Edge, RouterArgs};
use aemos_api::metrics::Metrics;
use aemos_api::notify::{Notifier, REPLAY_PER_DEVICE, REPLAY_TOTAL};
use aemos_api::rules::{FiringLogArgs, Rules, RulesArgs};
use aemos_queries::{QueryEngine, QueryEngineArgs};
use aemos_storage::{ManualClock, ObjectStoreConfig, Storage, StorageArgs};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt;

const T0: i64 = 1_768_905_000_000;

pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) storage: Arc<Storage>,
    pub(crate) rules: Rules,
    pub(crate) auth: Arc<Auth>,
    /// The one clock of storage, the engine and device control.
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) schedules: Arc<Schedules>,
    _dir: tempfile::TempDir,
}

/// The HS256 secret of the router tests' production mode.
pub(crate) const JWT_SECRET: &str = "router-tests-secret-of-at-least-32-bytes";

async fn app(max_body_bytes: usize) -> App {
    app_with(max_body_bytes, usize::MAX).await
}

pub(crate) async fn app_with(max_body_bytes: usize, max_buffered_rows: usize) -> App {
    app_in(Mode::Dev, max_body_bytes, max_buffered_rows).await
}

/// The router over real storage, in `mode` (production: HS256 user tokens with
/// [`JWT_SECRET`]).
pub(crate) async fn app_in(mode: Mode, max_body_bytes: usize, max_buffered_rows: usize) -> App {
    app_faulty(mode, max_body_bytes, max_buffered_rows, None).await
}

/// [`app_in`] with faults injected into the WAL writer.
pub(crate) async fn app_faulty(
    mode: Mode,
    max_body_bytes: usize,
    max_buffered_rows: usize,
    faults: Option<Arc<dyn aemos_storage::Faults>>,
) -> App {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir.path())).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let mut storage_args =
        StorageArgs::new(dir.path().to_path_buf(), store, Arc::clone(&clock) as _);
    storage_args.max_buffered_rows = max_buffered_rows;
    storage_args.faults = faults;
    let notifier = Notifier::new(REPLAY_PER_DEVICE, REPLAY_TOTAL);
    let rules = Rules::start(RulesArgs {
        firings: FiringLogArgs::new(dir.path().join("firings"), Arc::clone(&notifier)),
        engine: aemos_engine::EngineArgs {
            clock: Arc::clone(&clock) as _,
            ..aemos_engine::EngineArgs::new(2)
        },
    })
    .unwrap();
    storage_args.observer = Some(rules.observer());
    let storage = Storage::open(storage_args).await.unwrap();
    let queries = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: Some(2),
        limits: Default::default(),
    })
    .unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    rules.register_tables(&queries, &storage, stopped).unwrap();
    notifier.register_table(&queries).unwrap();
    rules.restore(&storage, &queries, Vec::new()).await.unwrap();
    let metrics = Metrics::new();
    let commands = Commands::open(CommandsArgs {
        dir: &dir.path().join("commands"),
        timing: Timing {
            ack_timeout_ms: 30_000,
            max_attempts: 3,
        },
        clock: Arc::clone(&clock) as _,
        metrics: CommandMetrics::register(&metrics.registry).unwrap(),
    })
    .unwrap();
    commands_snapshot(&commands, &queries).unwrap();
    let off = Rate {
        per_second: 0,
        burst: 0,
    };
    let auth = Arc::new(Auth {
        mode,
        jwt: Some(JwtVerifier::hs256(JWT_SECRET).unwrap()),
        registry: DeviceRegistry::load(Arc::clone(&storage)).await.unwrap(),
        limits: RateLimits::new(off, off, metrics.rate_limited.clone()),
    });
    let schedules = Schedules::load(Arc::clone(&storage), Arc::clone(&commands))
        .await
        .unwrap();
    let state = AppState::new(AppStateParts {
        auth: Arc::clone(&auth),
        storage: Arc::clone(&storage),
        queries,
        metrics,
        rules: rules.clone(),
        notifier,
        schedules: Arc::clone(&schedules),
        precleans: Precleans::open(&dir.path().join("precleans"), Arc::clone(&commands))
            .await
            .unwrap(),
        commands,
        edge: Edge::default(),
    });
    App {
        router: router(RouterArgs {
            state,
            max_body_bytes,
            socket_io: None,
        }),
        storage,
        rules,
        auth,
        clock,
        schedules,
        _dir: dir,
    }
}

pub(crate) async fn call(app: &App, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let res = app.router.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, body.to_vec())
}

pub(crate) async fn write(
    app: &App,
    uri: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let req = Request::post(uri)
        .header("content-type", content_type)
        .body(body.into())
        .unwrap();
    let (status, body) = call(app, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn query(app: &App, sql: &str) -> (StatusCode, Value) {
    let req = Request::post("/api/v1/query")
        .header("content-type", "application/json")
        .body(Body::from(json!({ "sql": sql }).to_string()))
        .unwrap();
    let (status, body) = call(app, req).await;
    (status, serde_json::from_slice(&body).unwrap())
}

pub(crate) async fn count(app: &App) -> i64 {
    query(app, "SELECT count(*) AS n FROM readings").await.1[0]["n"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_visible_to_sql_when_acknowledged() {
    let app = app(1 << 20).await;
    let body = json!({"readings": [
        {"sensor": "s-1", "variable": "temperature", "value": 25.5, "time": "2026-01-20T10:30:00Z"},
        {"sensor": "s-1", "variable": "humidity", "value": 61}
    ]});
    let (status, v) = write(&app, "/api/v1/write", "application/json", body.to_string()).await;
    assert_eq!((status, v), (StatusCode::OK, json!({"accepted": 2})));
    let (status, rows) = query(
        &app,
        "SELECT time, device, sensor, variable, value FROM readings ORDER BY variable",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rows,
        json!([
            {"time": "2026-01-20T10:30:00Z", "device": "s-1", "sensor": "s-1", "variable": "humidity", "value": 61.0},
            {"time": "2026-01-20T10:30:00Z", "device": "s-1", "sensor": "s-1", "variable": "temperature", "value": 25.5}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_bad_reading_is_refused_whole_unless_partial() {
    let app = app(1 << 20).await;
    let body = "{\"sensor\":\"a\",\"variable\":\"t\",\"value\":1}\n{\"sensor\":\"a\",\"variable\":\"t\",\"value\":\"hot\"}\n";
    let (status, v) = write(&app, "/api/v1/write", "application/x-ndjson", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(v["rejected"][0]["line"], 2);
    assert!(v["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("`value` as a number or a boolean"));
    assert!(v["error"].as_str().unwrap().contains("nothing was stored"));
    assert_eq!(count(&app).await, 0);

    let (status, v) = write(
        &app,
        "/api/v1/write?partial=true",
        "application/x-ndjson",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["line"], 2);
    assert_eq!(count(&app).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413_and_unreadable_ones_400() {
    let app = app(1024).await;
    let big = format!(
        "[{}]",
        vec![r#"{"sensor":"a","variable":"t","value":1}"#; 100].join(",")
    );
    let (status, _) = write(&app, "/api/v1/write", "application/json", big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, v) = write(&app, "/api/v1/write", "application/json", "[{\"sensor\":").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("malformed JSON"),
        "{v}"
    );
    let (status, v) = write(&app, "/api/v1/write", "image/png", "x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"]
        .as_str()
        .unwrap()
        .contains("unsupported content type"));
    let (status, v) = write(&app, "/api/v1/write?precision=h", "text/plain", "m v=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(v["error"].as_str().unwrap().contains("precision"));
    assert_eq!(count(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_output_formats() {
    let app = app(1 << 20).await;
    let lp = "air,sensor=s-1 temperature=21.5 1768905000000\nair,sensor=s-2 temperature=22.5 1768905000000\n";
    let (status, _) = write(&app, "/api/v1/write?precision=ms", "text/plain", lp).await;
    assert_eq!(status, StatusCode::OK);
    let sql = "SELECT sensor, value FROM readings ORDER BY sensor";
    let get = |accept: &str, extra: &str| {
        let uri = format!("/api/v1/query?sql={}{extra}", urlencode(sql));
        Request::get(uri)
            .header("accept", accept)
            .body(Body::empty())
            .unwrap()
    };
    let (s, csv) = call(&app, get("text/csv", "")).await;
    assert_eq!(
        (s, String::from_utf8(csv).unwrap().as_str()),
        (StatusCode::OK, "sensor,value\ns-1,21.5\ns-2,22.5\n")
    );
    let (_, nd) = call(&app, get("application/x-ndjson", "")).await;
    assert_eq!(
        String::from_utf8(nd).unwrap(),
        "{\"sensor\":\"s-1\",\"value\":21.5}\n{\"sensor\":\"s-2\",\"value\":22.5}\n"
    );
    let (_, ipc) = call(&app, get("*/*", "&format=arrow")).await;
    let reader = arrow::ipc::reader::StreamReader::try_new(ipc.as_slice(), None).unwrap();
    // Plain Utf8 on the wire, readable by Arrow versions without view types.
    assert_eq!(
        reader.schema().field(0).data_type(),
        &arrow::datatypes::DataType::Utf8
    );
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);
    let (_, pq) = call(&app, get("application/vnd.apache.parquet", "")).await;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(pq),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 2);
    let (s, v) = query(&app, "SELECT * FROM readings WHERE false").await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_are_400_with_the_message() {
    let app = app(1 << 20).await;
    let (status, v) = query(&app, "SELECT missing_column FROM readings").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        v["error"].as_str().unwrap().contains("missing_column"),
        "{v}"
    );
    let (status, v) = query(&app, "DROP TABLE readings").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    // Errors of the computation (not of the server) are the user's too, with the message.
    let (status, v) = query(&app, "SELECT 1 / 0 AS x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("Divide by zero"),
        "{v}"
    );
    let req = Request::get("/api/v1/query").body(Body::empty()).unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::BAD_REQUEST);
    let req = Request::get("/api/v1/query?sql=SELECT%201&format=xml")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_statistics_and_operations_endpoints() {
    let app = app(1 << 20).await;
    let body = json!([
        {"sensor": "s-1", "device": "dev-1", "variable": "temperature", "value": 20, "time": T0},
        {"sensor": "s-1", "device": "dev-1", "variable": "temperature", "value": 30, "time": T0 + 1000},
        {"sensor": "s-2", "device": "dev-1", "variable": "humidity", "value": 50, "time": T0 + 2000},
        {"sensor": "s-3", "device": "dev-2", "variable": "humidity", "value": 99, "time": T0}
    ]);
    write(&app, "/api/v1/write", "application/json", body.to_string()).await;
    app.storage.persist().await.unwrap();
    let req =
        Request::get("/api/v1/devices/dev-1/statistics?from=2026-01-20T10:30:00Z&to=1768905001500")
            .body(Body::empty())
            .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["variables"],
        json!({"temperature": {"min": 20.0, "max": 30.0, "avg": 25.0, "count": 2}})
    );
    let req = Request::get("/api/v1/devices/dev-1/statistics?from=yesterday")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app, req).await.0, StatusCode::BAD_REQUEST);

    for path in [
        "/api/v1/health",
        "/api/v1/health/liveness",
        "/api/v1/health/readiness",
    ] {
        let (status, _) = call(&app, Request::get(path).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let (_, text) = call(
        &app,
        Request::get("/api/v1/metrics/prometheus")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("aemos_readings_accepted_total 4"), "{text}");
    assert!(text.contains("aemos_parquet_files 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_get_503_with_retry_after_while_persistence_is_behind() {
    let app = app_with(1 << 20, 2).await;
    let two = json!([
        {"sensor": "a", "variable": "t", "value": 1},
        {"sensor": "a", "variable": "t", "value": 2}
    ]);
    let (status, _) = write(&app, "/api/v1/write", "application/json", two.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let req = Request::post("/api/v1/write")
        .header("content-type", "application/json")
        .body(Body::from(two.to_string()))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(count(&app).await, 2);
    // Once persisted, writes are admitted again.
    app.storage.persist().await.unwrap();
    let (status, _) = write(&app, "/api/v1/write", "application/json", two.to_string()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_total_is_exported_as_a_counter() {
    let app = app(1 << 20).await;
    let req = Request::get("/api/v1/metrics/prometheus")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let types: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    assert!(types.len() > 10, "{text}");
    for (name, kind) in types {
        if name.ends_with("_total") {
            assert_eq!(kind, "counter", "{name}");
        }
    }
}

/// Every sync fails, as a disk returning EIO would.
#[derive(Debug)]
struct FailingSync;

impl aemos_storage::Faults for FailingSync {
    fn before_sync(&self) -> std::io::Result<()> {
        Err(std::io::Error::from_raw_os_error(5))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_fsync_error_writes_get_503_and_health_and_readiness_say_why() {
    let app = app_faulty(Mode::Dev, 1 << 20, usize::MAX, Some(Arc::new(FailingSync))).await;
    let one = json!([{"sensor": "a", "variable": "t", "value": 1}]).to_string();
    for _ in 0..2 {
        let (status, body) = write(&app, "/api/v1/write", "application/json", one.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("fdatasync"),
            "{body}"
        );
    }
    assert_eq!(count(&app).await, 0);
    let (status, health) = send_json(&app, "GET", "/api/v1/health", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "failing", "{health}");
    assert_eq!(health["components"]["wal"]["status"], "failed");
    let (status, ready) = send_json(&app, "GET", "/api/v1/health/readiness", Value::Null).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn send_json(app: &App, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (status, body) = call(app, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn hot_chain(threshold: f64) -> Value {
    json!({
        "id": "high-temp", "name": "High temperature alert",
        "nodes": [
            {"type": "filter", "sensor": "sensor-abc-123", "condition": format!("temperature > {threshold} AND humidity > 60")},
            {"type": "transform", "set": {"temperature_f": "temperature * 9 / 5 + 32"}},
            {"type": "action", "action": "notify", "device": "abc-123",
             "state": {"name": "temperatureAlert", "value": "warning", "clear": "normal"}}
        ]
    })
}

/// Polls `rule_firings` until it has `n` rows (the firing log is written by its own thread).
async fn firings(app: &App, n: usize) -> Value {
    for _ in 0..200 {
        let (_, rows) = query(app, "SELECT rule_chain, device, active, kind, \"values\" FROM rule_firings ORDER BY time, kind").await;
        if rows.as_array().is_some_and(|r| r.len() >= n) {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("rule_firings never reached {n} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_chain_fires_for_the_next_reading_and_is_recorded() {
    let app = app(1 << 20).await;
    let (status, v) = send_json(&app, "POST", "/api/v1/rulechains", hot_chain(25.0)).await;
    assert_eq!(status, StatusCode::CREATED, "{v}");
    assert_eq!(v["status"]["active"], false);
    let body = json!({"readings": [
        {"sensor": "sensor-abc-123", "variable": "temperature", "value": 25.5},
        {"sensor": "sensor-abc-123", "variable": "humidity", "value": 61}
    ]});
    let (status, _) = write(&app, "/api/v1/write", "application/json", body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let rows = firings(&app, 1).await;
    assert_eq!(rows[0]["rule_chain"], "high-temp");
    assert_eq!(rows[0]["device"], "abc-123");
    assert_eq!(rows[0]["active"], true);
    let values: Value = serde_json::from_str(rows[0]["values"].as_str().unwrap()).unwrap();
    assert_eq!(
        values,
        json!({"temperature": 25.5, "humidity": 61.0, "temperature_f": 77.9})
    );
    let (_, v) = send_json(&app, "GET", "/api/v1/rulechains/high-temp", Value::Null).await;
    assert_eq!(v["status"]["active"], true);
    assert_eq!(v["status"]["firings"], 1);
    let (_, metrics) = call(
        &app,
        Request::get("/api/v1/metrics/prometheus")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains("aemos_rule_chains 1"), "{metrics}");
    assert!(
        metrics.contains("aemos_engine_firings_total 1"),
        "{metrics}"
    );

    // Replaced with a threshold the values do not meet: a fresh state, no firing.
    let (status, _) = send_json(&app, "PUT", "/api/v1/rulechains/high-temp", hot_chain(30.0)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = send_json(&app, "GET", "/api/v1/rulechains", Value::Null).await;
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["status"]["active"], false);
    assert!(v[0]["nodes"][0]["condition"]
        .as_str()
        .unwrap()
        .contains("30"));
    // Stored beside the data, so that it survives a restart.
    let stored = app.storage.documents("rulechains").await.unwrap();
    assert_eq!(stored.len(), 1);

    let (status, _) = send_json(&app, "DELETE", "/api/v1/rulechains/high-temp", Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = send_json(&app, "DELETE", "/api/v1/rulechains/high-temp", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        app.storage
            .documents("rulechains")
            .await
            .unwrap()
            .is_empty(),
        "the stored chain is deleted too"
    );
    assert!(app.rules.engine.chains().is_empty());
}

/// Concurrent POSTs of one id: one is created, the others get 409, and the stored document
/// (what a restart loads) is the created one, not one answered 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_posts_of_one_chain_create_it_once_and_store_the_one_created() {
    let app = Arc::new(app(1 << 20).await);
    let posts = (0..8).map(|i| {
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let (status, _) = send_json(
                &app,
                "POST",
                "/api/v1/rulechains",
                hot_chain(20.0 + i as f64),
            )
            .await;
            (status, 20.0 + i as f64)
        })
    });
    let answers: Vec<(StatusCode, f64)> = futures::future::join_all(posts)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let created: Vec<f64> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .map(|(_, t)| *t)
        .collect();
    assert_eq!(created.len(), 1, "{answers:?}");
    assert!(answers
        .iter()
        .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT));
    let stored = app
        .storage
        .document("rulechains", "high-temp")
        .await
        .unwrap()
        .unwrap();
    let condition = stored["nodes"][0]["condition"].as_str().unwrap();
    assert!(
        condition.contains(&format!("temperature > {}", created[0])),
        "{condition}"
    );
    let running = &app.rules.engine.chain("high-temp").unwrap().spec;
    assert_eq!(serde_json::to_value(running).unwrap(), stored);
}

/// PUTs and DELETEs of one chain racing each other: afterwards the stored document and the
/// running chain agree (both the same document, or both gone), whatever order they ran in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_and_deletes_of_one_chain_leave_storage_and_engine_agreeing() {
    let app = Arc::new(app(1 << 20).await);
    for round in 0..5 {
        let (status, _) = send_json(&app, "POST", "/api/v1/rulechains", hot_chain(10.0)).await;
        assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "{status}"
        );
        let changes = (0..8).map(|i| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let (method, body) = if (i + round) % 3 == 0 {
                    ("DELETE", json!(null))
                } else {
                    ("PUT", hot_chain(30.0 + i as f64))
                };
                let (status, _) =
                    send_json(&app, method, "/api/v1/rulechains/high-temp", body).await;
                assert!(
                    status.is_success() || status == StatusCode::NOT_FOUND,
                    "{method} {status}"
                );
            })
        });
        for change in futures::future::join_all(changes).await {
            change.unwrap();
        }
        let stored = app
            .storage
            .document("rulechains", "high-temp")
            .await
            .unwrap();
        let running = app
            .rules
            .engine
            .chain("high-temp")
            .map(|c| serde_json::to_value(&c.spec).unwrap());
        assert_eq!(stored, running, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chain_is_refused_with_the_node_and_position_and_nothing_is_registered() {
    let app = app(1 << 20).await;
    let mut chain = hot_chain(25.0);
    chain["nodes"][0]["condition"] = json!("temperature > 25 AND humidity > 'wet'");
    let (status, v) = send_json(&app, "POST", "/api/v1/rulechains", chain).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(v["node"], 0);
    assert_eq!(v["position"], 33);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("cannot compare a number with a string"),
        "{v}"
    );

    let mut chain = hot_chain(25.0);
    chain["nodes"][1]["set"]["temperature_f"] = json!("temperature / 0");
    let (status, v) = send_json(&app, "POST", "/api/v1/rulechains", chain).await;
    assert_eq!(
        (status, v["node"].clone()),
        (StatusCode::BAD_REQUEST, json!(1))
    );

    let req = Request::post("/api/v1/rulechains")
        .header("content-type", "application/json")
        .body(Body::from(
            "{\"id\": \"x\", \"nodes\": [{\"type\": \"filter\"}]}",
        ))
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("missing field"));

    let (status, _) = send_json(&app, "POST", "/api/v1/rulechains", hot_chain(25.0)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = send_json(&app, "POST", "/api/v1/rulechains", hot_chain(25.0)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = send_json(&app, "PUT", "/api/v1/rulechains/other-id", hot_chain(25.0)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.rules.engine.chains().len(), 1);
    assert_eq!(app.storage.documents("rulechains").await.unwrap().len(), 1);
}
