//! Nothing acknowledged is lost: SIGKILL in the middle of a stream of acknowledged writes,
//! restart, and every acknowledged reading is there exactly once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::server::{aemos_sql, TestServer};

const T0: i64 = 1_768_905_000_000;
const PER_REQUEST: i64 = 50;

fn body(writer: usize, request: i64) -> serde_json::Value {
    let readings: Vec<_> = (0..PER_REQUEST)
        .map(|i| {
            serde_json::json!({
                "sensor": format!("w-{writer}"),
                "variable": "seq",
                "value": (request * PER_REQUEST + i) as f64,
                "time": T0 + request * PER_REQUEST + i,
            })
        })
        .collect();
    serde_json::json!({ "readings": readings })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    // A short persist interval, so that at the kill some rows are in Parquet and some only in
    // the WAL: both sides of the boundary must come back exactly once.
    let mut server = TestServer::start(
        dir.path(),
        &["--persist-interval", "150ms", "--retention", "3650d"],
        &[],
    );
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<Vec<(usize, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (client, url, acked, stop) = (
            client.clone(),
            server.url.clone(),
            Arc::clone(&acked),
            Arc::clone(&stop),
        );
        writers.push(tokio::spawn(async move {
            let mut request = 0;
            while !stop.load(Ordering::Relaxed) {
                let sent = client
                    .post(format!("{url}/api/v1/write"))
                    .json(&body(w, request))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().push((w, request)),
                    Ok(r) => panic!("write refused: {}", r.status()),
                    Err(_) => break, // the server is gone
                }
                request += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 20,
        "too few writes acknowledged to mean anything: {}",
        acked.len()
    );

    let server = TestServer::start(dir.path(), &["--retention", "3650d"], &[]);
    let rows = server
        .sql(&client, "SELECT sensor, CAST(value AS BIGINT) AS v, count(*) AS n FROM readings GROUP BY sensor, value")
        .await;
    let mut seen: HashMap<(String, i64), i64> = HashMap::new();
    for row in rows.as_array().unwrap() {
        let key = (
            row["sensor"].as_str().unwrap().to_string(),
            row["v"].as_i64().unwrap(),
        );
        let n = row["n"].as_i64().unwrap();
        assert_eq!(n, 1, "reading {key:?} stored {n} times");
        seen.insert(key, n);
    }
    for (w, request) in &acked {
        for i in 0..PER_REQUEST {
            let key = (format!("w-{w}"), request * PER_REQUEST + i);
            assert!(seen.contains_key(&key), "acknowledged reading {key:?} lost");
        }
    }
    // Some of the data reached Parquet before the kill.
    let files = std::fs::read_dir(dir.path().join("objects/readings"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(files > 0, "nothing was persisted before the kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_persists_and_sql_reads_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    // The readings are stamped 2026-01-20: kept for ten years, not refused as beyond retention.
    let mut server = TestServer::start(dir.path(), &["--retention", "3650d"], &[]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/api/v1/write?precision=ms", server.url))
        .header("content-type", "text/plain")
        .body("air,sensor=s-1 temperature=21.5,humidity=40 1768905000000\nair,sensor=s-2 temperature=30 1768905001000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"accepted": 3})
    );
    // While the server runs, `aemos sql` reads its WAL without touching it.
    let dir_arg = dir.path().to_str().unwrap();
    let out = aemos_sql(
        &[
            "--data-dir",
            dir_arg,
            "--format",
            "csv",
            "SELECT sensor, variable, value FROM readings ORDER BY sensor, variable",
        ],
        &[],
    );
    assert_eq!(
        out,
        "sensor,variable,value\ns-1,humidity,40.0\ns-1,temperature,21.5\ns-2,temperature,30.0\n"
    );
    server.terminate();
    // After a graceful stop everything is in Parquet and the WAL holds no records.
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len().saturating_sub(8))
        .sum();
    assert_eq!(wal_bytes, 0);
    let out = aemos_sql(
        &["--data-dir", dir_arg, "SELECT count(*) AS n FROM readings"],
        &[],
    );
    assert!(out.contains("| 3 |"), "{out}");

    // Without a query, the shell: statements over lines, `\d`, `\d readings`, an error that
    // ends the statement and not the shell, `\q`. Scripted through stdin (not a terminal).
    let mut shell = std::process::Command::new(env!("CARGO_BIN_EXE_aemos"))
        .args(["sql", "--data-dir", dir_arg])
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    shell
        .stdin
        .take()
        .unwrap()
        .write_all(b"\\d\nSELECT sensor, count(*) AS n\n  FROM readings GROUP BY sensor ORDER BY sensor;\n\\d readings\nSELECT nope FROM readings;\n\\timing\nSELECT 1 AS one;\n\\q\n")
        .unwrap();
    let out = shell.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for expected in [
        "| readings ",
        "| s-1    | 2 |",
        "| s-2    | 1 |",
        "(2 rows)",
        "| tags ",
        "ERROR: ",
        "Timing is off.",
        "| 1   |",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    assert_eq!(
        text.matches("Time: ").count(),
        4,
        "timing off for the last: {text}"
    );
}

/// While the WAL is replayed and the engine rebuilt, the listener is already open: liveness
/// answers 200, readiness and the API 503 `starting`; then readiness 200 and the readings are
/// all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_opens_first_and_readiness_waits_for_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let flags = [
        "--http-addr",
        addr.as_str(),
        "--persist-interval",
        "1h",
        "--retention",
        "3650d",
    ];
    let mut server = TestServer::start(dir.path(), &flags, &[]);
    let client = reqwest::Client::new();
    let readings: Vec<_> = (0..10_000)
        .map(|i| serde_json::json!({"sensor": format!("r-{}", i % 100), "variable": "v", "value": i, "time": T0 + i}))
        .collect();
    for _ in 0..20 {
        let r = client
            .post(format!("{}/api/v1/write", server.url))
            .json(&serde_json::json!({ "readings": readings }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    server.kill9();

    // Poll from before the restart until ready.
    let seen: Arc<Mutex<Vec<(u16, u16, String)>>> = Arc::default();
    let poll = {
        let (seen, base) = (Arc::clone(&seen), format!("http://{addr}"));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let Ok(ready) = client
                    .get(format!("{base}/api/v1/health/readiness"))
                    .send()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                };
                let ready_status = ready.status().as_u16();
                let body = ready.text().await.unwrap_or_default();
                let live = client
                    .get(format!("{base}/api/v1/health/liveness"))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                seen.lock().unwrap().push((ready_status, live, body));
                if ready_status == 200 {
                    return;
                }
            }
        })
    };
    let dir_path = dir.path().to_path_buf();
    let flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    let server = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        TestServer::start(&dir_path, &flags, &[])
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(60), poll)
        .await
        .unwrap()
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    let starting = seen.iter().find(|(ready, _, _)| *ready == 503);
    let (_, live, body) = starting.unwrap_or_else(|| panic!("never 503 while starting: {seen:?}"));
    assert_eq!(*live, 200, "alive while starting");
    assert!(body.contains("starting"), "{body}");
    assert_eq!(seen.last().unwrap().0, 200);
    let rows = server
        .sql(&client, "SELECT count(*) AS n FROM readings")
        .await;
    assert_eq!(rows[0]["n"], 200_000);
}

/// The data directory on a small tmpfs, filled up: a write gets `503` with `Retry-After` and
/// the reason, nothing of it is stored; once space is back, writes are acknowledged again and
/// every acknowledged reading survives a SIGKILL. Needs root (to mount); skipped otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_directory_answers_503_then_writes_resume_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(dir.path());
    let data = dir.path().join("data");
    let flags = ["--persist-interval", "1h"];
    let mut server = TestServer::start(&data, &flags, &[]);
    let client = reqwest::Client::new();
    let write = |value: i64| {
        let (client, url) = (client.clone(), server.url.clone());
        async move {
            let readings: Vec<_> = (0..1000)
                .map(|i| serde_json::json!({"sensor": "full", "variable": "v", "value": value * 1000 + i}))
                .collect();
            client
                .post(format!("{url}/api/v1/write"))
                .json(&serde_json::json!({ "readings": readings }))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(write(0).await.status(), 200);
    // Everything but a few KiB taken: the next group cannot be written.
    let filler = dir.path().join("filler");
    let free = fs_free(dir.path());
    std::fs::write(&filler, vec![0u8; free.saturating_sub(2048) as usize]).unwrap();
    let refused = write(1).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
        Some("5".into())
    );
    let reason: serde_json::Value = refused.json().await.unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("is full"),
        "{reason}"
    );
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(write(2).await.status(), 200, "space is back");
    server.kill9();
    let server = TestServer::start(&data, &flags, &[]);
    let rows = server
        .sql(
            &client,
            "SELECT count(*) AS n, min(value) AS lo, max(value) AS hi FROM readings WHERE sensor = 'full'",
        )
        .await;
    assert_eq!(
        rows,
        serde_json::json!([{"n": 2000, "lo": 0.0, "hi": 2999.0}]),
        "the acknowledged writes, and nothing of the refused one"
    );
}

/// Bytes free on the file system holding `dir` (`df`, as the test has no statvfs binding).
fn fs_free(dir: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}
