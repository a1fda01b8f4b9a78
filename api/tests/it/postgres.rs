//! The Postgres wire protocol (`--pg-addr`) driven by stock clients against the real binary:
//! psql (the simple query protocol and its catalog queries: `\dt`, `\d`), psycopg 3 (the
//! extended protocol, parameters bound on the server, text and binary results, a transaction
//! around the statements), and the logins of `production` mode over TLS.

use std::process::Command;

use serde_json::{json, Value};

use super::access::user_jwt;
use super::secure_edge::{self, SECRET};
use crate::server::TestServer;

/// `psql` on `conninfo` with `args`: whether it succeeded, its stdout and its stderr.
fn psql(conninfo: &str, password: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new("psql");
    cmd.arg(conninfo)
        .args(["-X", "-A", "-t", "-w", "-F", "|", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("psql (Debian: postgresql-client)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The statements run through psycopg 3 (`tests/clients/pg_client.py`): one result each.
fn psycopg(dsn: &str, statements: Value) -> Vec<Value> {
    let seen = super::python::client("pg_client.py", &[dsn], &statements);
    serde_json::from_value(seen).expect("one result per statement")
}

fn conninfo(server: &TestServer, extra: &str) -> String {
    let (host, port) = server.pg_addr.rsplit_once(':').unwrap();
    format!("host={host} port={port} user=grafana dbname=aemos {extra}")
}

/// A whole second an hour ago, in epoch ms (within retention, not in the future).
pub(crate) fn an_hour_ago() -> i64 {
    (chrono::Utc::now().timestamp() - 3600) * 1000
}

/// `ms` as pgwire writes a `timestamptz` in text (ISO, microseconds always):
/// `2026-01-01 00:00:00.000000` then `suffix` (psql prints the server's `+00`).
fn pg_time(ms: i64, suffix: &str) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    format!("{}{suffix}", t.format("%Y-%m-%d %H:%M:%S%.6f"))
}

/// `ms` as Python's `str(datetime)` writes a whole second in UTC.
fn python_time(ms: i64) -> String {
    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
    t.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
}

/// Readings of two sensors over line protocol, tags and all, at `t0` (epoch ms) and after.
pub(crate) async fn write_readings(server: &TestServer, t0: i64) {
    let lines = format!(
        "env,sensor=s1,host=a temperature=21.5,humidity=40 {t0}\n\
         env,sensor=s1,host=a temperature=22.5 {}\n\
         env,sensor=s2,host=b temperature=30 {t0}\n",
        t0 + 1000
    );
    let r = reqwest::Client::new()
        .post(format!("{}/write?db=home&precision=ms", server.url))
        .body(lines)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

#[tokio::test]
async fn psql_reads_readings_and_the_catalog_as_from_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[], &[]);
    let t0 = an_hour_ago();
    write_readings(&server, t0).await;
    let c = conninfo(&server, "sslmode=disable");

    let (ok, out, err) = psql(
        &c,
        None,
        &[
            "-c",
            "SELECT sensor, value, tags['host'], time FROM readings \
                 WHERE variable = 'temperature' ORDER BY sensor, time",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("s1|21.5|a|{}", pg_time(t0, "+00")),
            format!("s1|22.5|a|{}", pg_time(t0 + 1000, "+00")),
            format!("s2|30.0|b|{}", pg_time(t0, "+00")),
        ],
        "{err}"
    );
    let (ok, out, err) = psql(
        &c,
        None,
        &[
            "-c",
            "SELECT date_bin(INTERVAL '1 minute', time) AS minute, count(*), max(value) \
                 FROM readings WHERE variable = 'temperature' GROUP BY 1 ORDER BY 1",
        ],
    );
    assert!(ok, "{err}");
    let minute = t0 - t0 % 60_000;
    let bins = if (t0 + 1000) % 60_000 == 0 {
        vec![
            format!("{}|2|30.0", pg_time(minute, "+00")),
            format!("{}|1|22.5", pg_time(minute + 60_000, "+00")),
        ]
    } else {
        vec![format!("{}|3|30.0", pg_time(minute, "+00"))]
    };
    assert_eq!(out.lines().collect::<Vec<_>>(), bins, "{err}");

    // psql's own catalog queries.
    let (ok, out, err) = psql(&c, None, &["-c", "\\dt"]);
    assert!(ok, "{err}");
    for table in ["readings", "commands", "rule_firings", "notifications"] {
        assert!(
            out.lines().any(|l| l.contains(&format!("|{table}|"))),
            "{table}: {out}"
        );
    }
    let (ok, out, err) = psql(&c, None, &["-c", "\\d readings"]);
    assert!(ok, "{err}");
    for column in [
        "time|timestamp with time zone",
        "sensor|text",
        "value|double precision",
    ] {
        assert!(out.contains(column), "{column}: {out}");
    }

    // Several statements in one simple query; writes refused, and nothing changed by them.
    let (ok, out, err) = psql(&c, None, &["-c", "SELECT 1; SELECT count(*) FROM readings"]);
    assert!(ok && out.lines().last() == Some("4"), "{out} {err}");
    for write in [
        "INSERT INTO readings (sensor) VALUES ('x')",
        "DROP TABLE readings",
        "CREATE TABLE t (x int)",
        "COPY readings TO '/tmp/aemos-copy.csv'",
    ] {
        let (ok, _, err) = psql(&c, None, &["-c", write]);
        assert!(!ok && err.contains("read-only"), "{write}: {err}");
    }
    let (ok, out, _) = psql(&c, None, &["-c", "SELECT count(*) FROM readings"]);
    assert!(ok && out.trim() == "4", "{out}");

    // A syntax error is the statement's, not the connection's.
    let (ok, _, err) = psql(&c, None, &["-c", "SELEC 1"]);
    assert!(
        !ok && (err.contains("syntax") || err.contains("Expected")),
        "{err}"
    );
}

#[tokio::test]
async fn psycopg_binds_parameters_and_gets_each_type_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[], &[]);
    let t0 = an_hour_ago();
    write_readings(&server, t0).await;
    let dsn = conninfo(&server, "sslmode=disable");
    let select = "SELECT sensor, value, time, tags, measurement FROM readings \
                  WHERE sensor = %s AND variable = 'temperature' AND value > %s ORDER BY time";
    let results = psycopg(
        &dsn,
        json!([
            {"sql": select, "params": ["s1", 22]},
            {"sql": select, "params": ["s1", 0], "binary": true},
            {"sql": "SHOW TimeZone"},
            {"sql": "SET TIME ZONE 'Europe/Paris'"},
            {"sql": "SET statement_timeout = '200ms'"},
            {"sql": "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3"},
            {"sql": "SELECT count(*) AS n FROM readings WHERE sensor = %s", "params": ["s2"]},
            {"sql": "INSERT INTO readings (sensor) VALUES (%s)", "params": ["x"]},
            {"sql": "SELECT * FROM no_such_table"},
        ]),
    );
    // text results: psycopg turns each Postgres type into its Python value.
    assert_eq!(
        results[0]["rows"],
        json!([[
            "s1",
            22.5,
            python_time(t0 + 1000),
            "{\"host\":\"a\"}",
            "env"
        ]]),
        "{results:?}"
    );
    let oids: Vec<i64> = results[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_i64().unwrap())
        .collect();
    assert_eq!(
        oids,
        [25, 701, 1184, 25, 25],
        "text, float8, timestamptz, text, text"
    );
    // binary results decode to the same values.
    assert_eq!(
        results[1]["rows"].as_array().unwrap().len(),
        2,
        "{results:?}"
    );
    assert_eq!(results[1]["rows"][1], results[0]["rows"][0], "{results:?}");
    assert_eq!(results[2]["rows"], json!([["UTC"]]));
    assert_eq!(results[3]["error"]["sqlstate"], "22023", "{results:?}");
    assert_eq!(results[5]["error"]["sqlstate"], "57014", "{results:?}");
    assert!(
        results[5]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("statement_timeout"),
        "{results:?}"
    );
    assert_eq!(results[6]["rows"], json!([[1]]), "{results:?}");
    assert_eq!(results[7]["error"]["sqlstate"], "25006", "{results:?}");
    assert_eq!(results[8]["error"]["sqlstate"], "42P01", "{results:?}");
}

#[tokio::test]
async fn production_postgres_logins_take_a_user_jwt_as_the_password() {
    let s = secure_edge::start(&[]).await;
    let device = s.device("pg-dev", &["pg-s1"]).await;
    let tls = format!("sslmode=verify-full sslrootcert={}", s.cert_path);
    let c = conninfo(&s.server, &tls).replace("host=127.0.0.1", "host=localhost");
    let query = ["-c", "SELECT count(*) FROM readings"];

    for role in ["viewer", "operator", "admin"] {
        let (ok, out, err) = psql(&c, Some(&user_jwt(SECRET, role)), &query);
        assert!(ok && out.trim() == "0", "{role}: {out} {err}");
    }
    let expired = super::access::jwt_with(
        SECRET,
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "u", "role": "viewer", "exp": super::access::now() - 3600}),
    );
    let forged = user_jwt("another-secret-of-at-least-32-bytes!!", "admin");
    for (case, password, reason) in [
        ("no password", None, "no password supplied"),
        (
            "wrong",
            Some("not-a-token"),
            "password authentication failed",
        ),
        (
            "forged",
            Some(forged.as_str()),
            "password authentication failed",
        ),
        (
            "expired",
            Some(expired.as_str()),
            "password authentication failed",
        ),
        ("device token", Some(device.as_str()), "may not run SQL"),
    ] {
        let (ok, out, err) = psql(&c, password, &query);
        assert!(!ok && err.contains(reason), "{case}: {out} {err}");
        assert!(!err.contains(SECRET), "{case}: {err}");
    }
    // In clear on loopback, a user's token still logs in (TLS is required beyond loopback).
    let plain = conninfo(&s.server, "sslmode=disable");
    let (ok, _, err) = psql(&plain, Some(&user_jwt(SECRET, "viewer")), &query);
    assert!(ok, "{err}");
}
