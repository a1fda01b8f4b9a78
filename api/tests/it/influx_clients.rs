//! InfluxDB's own clients against a `production` server behind TLS, unmodified: the Python
//! client library (influxdb-client: its batching write API with gzip, and a bad token), and
//! the `influx` 1.x CLI importing a file (`/ping`, `CREATE DATABASE` through `/query`, then
//! `/write` with the password as Basic credentials), each with a wrong credential refused.

use std::process::Command;

use serde_json::{json, Value};

use super::access::user_jwt;
use super::secure_edge::{self, Secure, SECRET};

/// `SELECT count(*)` of `sensor`'s readings, over HTTPS as an admin.
async fn count(s: &Secure, sensor: &str) -> i64 {
    let sql = format!("SELECT count(*) AS n FROM readings WHERE sensor = '{sensor}'");
    rows(s, &sql).await[0]["n"].as_i64().unwrap()
}

async fn rows(s: &Secure, sql: &str) -> Value {
    s.http
        .post(format!("{}/api/v1/query", s.https))
        .bearer_auth(&s.admin)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_python_client_writes_in_batches_and_hears_a_bad_token() {
    let s = secure_edge::start(&[]).await;
    let token = s.device("py", &["py-s1"]).await;
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/.venv/bin/python"
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/influx_client.py"
    );
    let url = s.https.replace("127.0.0.1", "localhost");
    let out = Command::new(python)
        .args([
            script,
            &url,
            &token,
            "1000",
            "adt_not-a-device-token",
            &s.cert_path,
        ])
        .output()
        .expect("the tests' Python venv (bash .ci/install-test-deps makes it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seen: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(seen["errors"], json!([]), "{seen}");
    let batches: Vec<i64> = seen["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_i64().unwrap())
        .collect();
    assert_eq!(batches.iter().sum::<i64>(), 1000, "{seen}");
    assert!(batches.len() >= 4, "batches of 250: {batches:?}");
    assert_eq!(count(&s, "py-s1").await, 1000);
    // Four series that differ only in `host`, each whole.
    let by_host = rows(
        &s,
        "SELECT tags['host'] AS host, count(*) AS n FROM readings \
         WHERE measurement = 'cpu' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        by_host,
        json!([
            {"host": "h0", "n": 250}, {"host": "h1", "n": 250},
            {"host": "h2", "n": 250}, {"host": "h3", "n": 250},
        ])
    );
    // The client raises ApiException with InfluxDB 2's error shape; nothing was written.
    assert_eq!(seen["bad_token"]["status"], 401, "{seen}");
    assert_eq!(seen["bad_token"]["body"]["code"], "unauthorized", "{seen}");
    assert_eq!(count(&s, "py-s1").await, 1000);
}

#[tokio::test]
async fn the_influx_cli_imports_a_file() {
    let s = secure_edge::start(&[]).await;
    s.device("cli", &["cli-s1"]).await;
    let (_, port) = s.https.rsplit_once(':').unwrap();
    let now = chrono::Utc::now().timestamp() - 3600;
    let mut export = String::from(
        "# DDL\nCREATE DATABASE home\n\n# DML\n# CONTEXT-DATABASE: home\n\
         # CONTEXT-RETENTION-POLICY: autogen\n",
    );
    for i in 0..500 {
        export.push_str(&format!(
            "env,sensor=cli-s1,room=r{} temperature={}.5 {}\n",
            i % 2,
            20 + i % 5,
            now + i
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.txt");
    std::fs::write(&file, export).unwrap();
    let import = |password: &str| {
        Command::new("influx")
            .args(["-host", "localhost", "-port", port, "-ssl", "-unsafeSsl"])
            .args(["-username", "importer", "-password", password])
            .args(["-precision", "s", "-import", "-path"])
            .arg(&file)
            .output()
            .expect("the influx 1.x CLI (Debian: influxdb-client)")
    };
    let out = import(&user_jwt(SECRET, "operator"));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("Processed 500 inserts") && log.contains("Failed 0 inserts"),
        "{log}"
    );
    assert_eq!(count(&s, "cli-s1").await, 500);
    let rooms = rows(
        &s,
        "SELECT tags['room'] AS room, count(*) AS n FROM readings \
         WHERE sensor = 'cli-s1' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(
        rooms,
        json!([{"room": "r0", "n": 250}, {"room": "r1", "n": 250}])
    );

    // A wrong password is refused: nothing more is written.
    let out = import("not-a-token");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() || log.contains("Failed 500 inserts"),
        "{log}"
    );
    assert!(!log.contains(SECRET), "{log}");
    assert_eq!(count(&s, "cli-s1").await, 500);
}
