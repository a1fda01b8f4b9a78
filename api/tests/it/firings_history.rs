//! `rule_firings` over all history, end to end: with `--firings-seal-after 1s` the firing log
//! is sealed into segments that go to Parquet and leave the local disk; after a SIGKILL every
//! firing is in the table exactly once, and the notifications' numbering goes on from where
//! the deleted segments left it.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::TestServer;

const FLAGS: &[&str] = &[
    "--persist-interval",
    "200ms",
    "--workers",
    "2",
    "--firings-seal-after",
    "1s",
];

async fn count(client: &reqwest::Client, server: &TestServer, sql: &str) -> u64 {
    let rows = server.sql(client, sql).await;
    rows[0]["n"]
        .as_u64()
        .unwrap_or_else(|| panic!("{sql}: {rows}"))
}

/// Flips the chain `times` times (hot, normal, hot...), each firing recorded before the next
/// reading, so that the engine sees every change.
async fn flip(client: &reqwest::Client, server: &TestServer, times: u64, recorded: &mut u64) {
    for _ in 0..times {
        let value = if *recorded % 2 == 0 { 60 } else { 40 };
        let body =
            json!({"readings": [{"sensor": "s-1", "variable": "temperature", "value": value}]});
        let (status, answer) = server.post(client, "/api/v1/write", &body).await;
        assert_eq!(status, 200, "{answer}");
        *recorded += 1;
        let want = *recorded;
        let mut n = 0;
        for _ in 0..500 {
            n = count(client, server, "SELECT count(*) AS n FROM rule_firings").await;
            if n >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(n, want, "rule_firings after {want} flips");
    }
}

/// The firing log's segment files.
fn segments(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("firings"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".log"))
        .collect();
    names.sort();
    names
}

/// The Parquet files of `rule_firings` on the object store (a directory here).
fn parquet_files(data_dir: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&data_dir.join("objects").join("rule_firings"), &mut n);
    n
}

/// Waits until the log's oldest segments are persisted and gone: at most `left` on disk.
async fn until_sealed(data_dir: &Path, left: usize, files: usize) {
    for _ in 0..200 {
        if segments(data_dir).len() <= left && parquet_files(data_dir) >= files {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "segments {:?}, {} parquet files",
        segments(data_dir),
        parquet_files(data_dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_firings_keep_all_history_across_sealed_segments_and_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut server = TestServer::start(data, FLAGS, &[]);
    let client = reqwest::Client::new();
    let chain = json!({"id": "flip", "nodes": [
        {"type": "filter", "sensor": "s-1", "condition": "temperature > 50"},
        {"type": "action", "action": "notify", "device": "d-1",
         "state": {"name": "alert", "value": "hot", "clear": "normal"}}]});
    let (status, answer) = server.post(&client, "/api/v1/rulechains", &chain).await;
    assert_eq!(status, 201, "{answer}");

    let mut recorded = 0;
    flip(&client, &server, 10, &mut recorded).await;
    // Sealed after a second: segment 1 becomes a file, kept on disk beside the open one.
    until_sealed(data, 2, 1).await;
    flip(&client, &server, 10, &mut recorded).await;
    // Segment 2 sealed and persisted; segment 1 is no longer needed and goes.
    until_sealed(data, 2, 2).await;
    assert!(
        !segments(data).contains(&format!("{:020}.log", 1)),
        "{:?}",
        segments(data)
    );
    flip(&client, &server, 6, &mut recorded).await;
    let all = "SELECT count(*) AS n FROM rule_firings";
    assert_eq!(count(&client, &server, all).await, 26);

    server.kill9();
    let server = TestServer::start(data, FLAGS, &[]);
    // Every firing once: from Parquet (segments 1 and 2) and the local log.
    assert_eq!(count(&client, &server, all).await, 26);
    let by_kind = server
        .sql(
            &client,
            "SELECT kind, count(*) AS n FROM rule_firings WHERE rule_chain = 'flip' \
             AND time > now() - interval '1 hour' GROUP BY kind ORDER BY kind",
        )
        .await;
    assert_eq!(
        by_kind,
        json!([{"kind": "activated", "n": 13}, {"kind": "cleared", "n": 13}])
    );
    // Numbering goes on over the segments no longer on disk.
    let seq = "SELECT max(seq) AS n FROM notifications WHERE device = 'd-1'";
    assert_eq!(count(&client, &server, seq).await, 26);
    flip(&client, &server, 1, &mut recorded).await;
    let replay = server
        .get_json(&client, "/api/v1/devices/d-1/notifications?since_seq=26")
        .await;
    let seqs: Vec<Value> = replay["notifications"]
        .as_array()
        .map(|n| n.iter().map(|n| n["seq"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(seqs, vec![json!(27)], "{replay}");
}
