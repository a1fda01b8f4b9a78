//! S3: the catalog and whole servers against a real S3-compatible server (s3s-fs) started on
//! loopback. `.ci/install-test-deps` installs it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aemos_storage::{Catalog, FileId, ObjectStoreConfig, ParquetFile};

use crate::server::{aemos_sql, TestServer};

const KEY: &str = "aemos-test-key";
const SECRET: &str = "aemos-test-secret";
const BUCKET: &str = "aemos";

struct S3Server {
    child: Child,
    endpoint: String,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn s3s_fs_binary() -> PathBuf {
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .find(|p| p.exists())
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/s3s-fs"));
    in_path
        .or(home.filter(|p| p.exists()))
        .expect("s3s-fs is not installed: run .ci/install-test-deps")
}

async fn start_s3() -> S3Server {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join(BUCKET)).unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(s3s_fs_binary())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            KEY,
            "--secret-key",
            SECRET,
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "s3s-fs did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    S3Server {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
        _root: root,
    }
}

fn env(s3: &S3Server) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT", s3.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

fn store(s3: &S3Server, prefix: &str) -> ObjectStoreConfig {
    let options = [
        ("aws_access_key_id", KEY),
        ("aws_secret_access_key", SECRET),
        ("aws_region", "us-east-1"),
        ("aws_endpoint", s3.endpoint.as_str()),
        ("aws_allow_http", "true"),
    ];
    ObjectStoreConfig::from_url_with_options(&format!("s3://{BUCKET}/{prefix}"), &options).unwrap()
}

fn file(id: u64) -> ParquetFile {
    ParquetFile {
        id: FileId(id),
        table: "readings".into(),
        path: format!("x/{id}.parquet"),
        partition: 0,
        min_time: 0,
        max_time: 0,
        rows: 1,
        size_bytes: 1,
        summary: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_catalog_writers_on_s3_lose_nothing() {
    let s3 = start_s3().await;
    let config = store(&s3, "race");
    assert!(config.verify_commits.is_some());
    let open = || async {
        Arc::new(
            Catalog::load(Arc::clone(&config.store), config.prefix.clone())
                .await
                .unwrap()
                .with_commit_verification(config.verify_commits),
        )
    };
    let (a, b) = (open().await, open().await);
    let per_writer = 25;
    let run = |catalog: Arc<Catalog>, base: u64| {
        tokio::spawn(async move {
            for i in 0..per_writer {
                catalog
                    .commit(|state| {
                        state.add_file(file(base + i));
                        true
                    })
                    .await
                    .unwrap();
            }
        })
    };
    let (ra, rb) = (run(a, 0), run(b, 1000));
    ra.await.unwrap();
    rb.await.unwrap();
    let state = open().await.snapshot();
    assert_eq!(
        state.files.len() as u64,
        2 * per_writer,
        "a catalog entry was lost"
    );
}

/// Two servers on one bucket prefix, each with its own data directory (fields drop in order:
/// the servers before the store).
struct Pair {
    a: TestServer,
    b: TestServer,
    url: String,
    env: Vec<(&'static str, String)>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _s3: S3Server,
}

async fn two_servers(prefix: &str, flags: &[&str]) -> Pair {
    let s3 = start_s3().await;
    let env = env(&s3);
    let url = format!("s3://{BUCKET}/{prefix}");
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut all = vec!["--object-store", url.as_str()];
    all.extend_from_slice(flags);
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = TestServer::start(dirs.0.path(), &all, &vars);
    let b = TestServer::start(dirs.1.path(), &all, &vars);
    Pair {
        a,
        b,
        url,
        env,
        _dirs: dirs,
        _s3: s3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_bucket_and_sql_reads_it() {
    let Pair {
        mut a,
        mut b,
        url,
        env,
        _dirs,
        _s3,
    } = two_servers(
        "shared",
        &["--persist-interval", "100ms", "--retention", "3650d"],
    )
    .await;
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let client = reqwest::Client::new();
    for round in 0..10 {
        for (server, name) in [(&a, "a"), (&b, "b")] {
            let body = serde_json::json!([{ "sensor": format!("s-{name}"), "variable": "round", "value": round, "time": 1_768_905_000_000i64 + round }]);
            let r = client
                .post(format!("{}/api/v1/write", server.url))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    a.terminate();
    b.terminate();
    let objects = tempfile::tempdir().unwrap();
    let out = aemos_sql(
        &[
            "--data-dir",
            objects.path().to_str().unwrap(),
            "--object-store",
            &url,
            "--format",
            "csv",
            "SELECT sensor, count(*) AS n, sum(value) AS total FROM readings GROUP BY sensor ORDER BY sensor",
        ],
        &env,
    );
    assert_eq!(out, "sensor,n,total\ns-a,10,45.0\ns-b,10,45.0\n");
}

/// The status of a single reading written with a device token.
async fn write(client: &reqwest::Client, server: &TestServer, token: &str) -> u16 {
    client
        .post(format!("{}/api/v1/datastreams/token", server.url))
        .header("X-Device-Token", token)
        .json(&serde_json::json!({"sensor": "pur-7-air", "variableName": "pm25", "value": 12}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Writes until the status is `want` (10 s at most).
async fn until(client: &reqwest::Client, server: &TestServer, token: &str, want: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = write(client, server, token).await;
        if status == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {status}, not {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Devices registered, rotated and removed through one server are seen by another sharing the
/// bucket within `--registry-sync`, without a restart: the new token works there, the rotated
/// and removed ones stop working there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_on_one_server_is_known_to_another_sharing_the_bucket() {
    const SECRET: &str = "registry-sync-test-secret-of-32-bytes-or-more";
    let flags = [
        "--mode",
        "production",
        "--jwt-secret",
        SECRET,
        "--registry-sync",
        "100ms",
    ];
    // Every field bound: one left to `..` would be dropped here (the store stopped).
    let Pair {
        a, b, _dirs, _s3, ..
    } = two_servers("registry", &flags).await;
    let admin = format!("Bearer {}", crate::access::user_jwt(SECRET, "admin"));
    let client = reqwest::Client::new();
    // An admin's request: its status and JSON body (null when it has none).
    let call = |method: reqwest::Method, url: String, body: Option<serde_json::Value>| {
        let mut request = client.request(method, url).header("Authorization", &admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json().await.unwrap_or(serde_json::Value::Null),
            )
        }
    };
    use reqwest::Method;
    let devices = |server: &TestServer| format!("{}/api/v1/devices", server.url);
    let body = serde_json::json!({"id": "pur-7", "sensors": ["pur-7-air"]});
    let (status, created) = call(Method::POST, devices(&a), Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let first = created["token"].as_str().unwrap().to_string();
    assert_eq!(write(&client, &a, &first).await, 201);
    let start = Instant::now();
    until(&client, &b, &first, 201).await;
    let (_, device) = call(Method::GET, format!("{}/pur-7", devices(&b)), None).await;
    assert_eq!(device["sensors"], serde_json::json!(["pur-7-air"]));
    let seen_after = start.elapsed();

    let (_, rotated) = call(Method::POST, format!("{}/pur-7/token", devices(&a)), None).await;
    let second = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(
        write(&client, &a, &first).await,
        401,
        "the old token stops at once where it rotated"
    );
    until(&client, &b, &first, 401).await;
    assert_eq!(write(&client, &b, &second).await, 201);

    let (status, _) = call(Method::DELETE, format!("{}/pur-7", devices(&a)), None).await;
    assert_eq!(status, 204);
    until(&client, &b, &second, 401).await;
    let (status, _) = call(Method::GET, format!("{}/pur-7", devices(&b)), None).await;
    assert_eq!(status, 404);
    eprintln!("registration seen by the other server after {seen_after:?}");
}

/// An object store that hangs (s3s-fs stopped with SIGSTOP: connections are accepted by the
/// kernel and never answered): health says so from the probe within seconds, writes go on into
/// the WAL, and once the store answers again (SIGCONT) persistence resumes and every row is in
/// a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_object_store_is_reported_and_nothing_is_lost_when_it_returns() {
    let s3 = start_s3().await;
    let env = env(&s3);
    let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("s3://{BUCKET}/hung");
    let server = TestServer::start(
        dir.path(),
        &[
            "--object-store",
            &url,
            "--persist-interval",
            "100ms",
            "--retention",
            "3650d",
        ],
        &vars,
    );
    let client = reqwest::Client::new();
    let write = |round: i64| {
        let body = serde_json::json!([{ "sensor": "s-hung", "variable": "round", "value": round, "time": 1_768_905_000_000i64 + round }]);
        let (client, url) = (client.clone(), server.url.clone());
        async move {
            client
                .post(format!("{url}/api/v1/write"))
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    server
        .get_until(&client, "/api/v1/health", |h| {
            h["components"]["objectStore"]["status"] == "ok" && h["status"] == "ok"
        })
        .await;
    for round in 0..10 {
        assert_eq!(write(round).await, 200);
    }
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &s3.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    };
    signal("STOP");
    for round in 10..20 {
        assert_eq!(
            write(round).await,
            200,
            "the WAL takes writes while the store hangs"
        );
    }
    let hung = server
        .get_until(&client, "/api/v1/health", |h| {
            h["components"]["objectStore"]["status"] == "failing"
        })
        .await;
    assert_eq!(hung["status"], "degraded", "{hung}");
    let error = hung["components"]["objectStore"]["lastError"]
        .as_str()
        .unwrap();
    assert!(error.contains("no answer within"), "{error}");
    // The queue summary of seed 004 says the same, whatever the breaker's state.
    let summary = server
        .get_json(&client, "/api/v1/metrics/queue/summary")
        .await;
    assert_eq!(summary["health"], "warning", "{summary}");
    signal("CONT");
    let back = server
        .get_until(&client, "/api/v1/health", |h| {
            h["status"] == "ok" && h["components"]["buffer"]["rows"] == 0
        })
        .await;
    assert_eq!(back["components"]["objectStore"]["consecutiveFailures"], 0);
    let summary = server
        .get_json(&client, "/api/v1/metrics/queue/summary")
        .await;
    assert_eq!(summary["health"], "healthy", "{summary}");
    let rows = server
        .sql(
            &client,
            "SELECT count(*) AS n, sum(value) AS total FROM readings WHERE sensor = 's-hung'",
        )
        .await;
    assert_eq!(rows, serde_json::json!([{"n": 20, "total": 190.0}]));
}
