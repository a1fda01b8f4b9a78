//! Arrow Flight SQL (`--flight-addr`) driven by ADBC (`adbc_driver_flightsql`, through
//! `tests/clients/flight_client.py`) against the real binary: results as pyarrow tables with
//! aemos's own Arrow types, parameters bound to prepared statements, the catalog through
//! GetObjects and GetTableSchema, writes refused; and in `production` mode over TLS, a user JWT
//! as the bearer token or as the password, every bad credential refused.

use serde_json::{json, Value};

use super::access::user_jwt;
use super::postgres::{an_hour_ago, write_readings};
use super::secure_edge::{self, SECRET};
use crate::server::TestServer;

/// What `flight_client.py` saw for `request`.
fn adbc(request: Value) -> Value {
    super::python::client("flight_client.py", &[], &request)
}

#[tokio::test]
async fn adbc_reads_arrow_binds_parameters_and_lists_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[], &[]);
    let t0 = an_hour_ago();
    write_readings(&server, t0).await;
    let seen = adbc(json!({
        "uri": format!("grpc://{}", server.flight_addr),
        "statements": [
            {"sql": "SELECT sensor, value, time, tags, measurement FROM readings \
                     WHERE variable = 'temperature' ORDER BY sensor, time"},
            {"sql": "SELECT count(*) AS n FROM readings WHERE sensor = $1 AND value > $2",
             "params": ["s1", 22]},
            {"sql": "SELECT count(*) AS n FROM readings WHERE sensor = $1 AND value > $2",
             "params": ["s2", 0]},
            {"sql": "INSERT INTO readings (sensor) VALUES ('x')"},
            {"sql": "SELECT * FROM no_such_table"},
            {"sql": "SELECT count(*) AS n FROM readings"},
        ],
        "catalog": true,
    }));
    let results = &seen["results"];
    // aemos's Arrow types as they are: no conversion on the way.
    assert_eq!(
        results[0]["schema"],
        json!([
            ["sensor", "string"],
            ["value", "double"],
            ["time", "timestamp[ms, tz=UTC]"],
            ["tags", "map<string, string>"],
            ["measurement", "string"],
        ]),
        "{seen}"
    );
    let rows = results[0]["rows"].as_array().unwrap();
    let summary: Vec<(String, f64)> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_f64().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [
            ("s1".into(), 21.5),
            ("s1".into(), 22.5),
            ("s2".into(), 30.0)
        ],
        "{seen}"
    );
    // pyarrow reads a map as a list of (key, value) pairs.
    assert_eq!(rows[0][3], json!([["host", "a"]]), "{seen}");
    assert_eq!(rows[0][4], "env", "{seen}");
    // Bound parameters: s1 has 22.5 and 40 (humidity) above 22; s2 one reading above 0.
    assert_eq!(results[1]["rows"], json!([[2]]), "{seen}");
    assert_eq!(results[2]["rows"], json!([[1]]), "{seen}");
    let write = results[3]["error"].as_str().unwrap_or_default();
    assert!(
        write.contains("read-only") || write.contains("not supported"),
        "{seen}"
    );
    let missing = results[4]["error"].as_str().unwrap_or_default();
    assert!(missing.contains("no_such_table"), "{seen}");
    // Nothing was written, and the connection went on after both errors.
    assert_eq!(results[5]["rows"], json!([[4]]), "{seen}");

    let tables: Vec<&str> = seen["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for table in ["readings", "commands", "rule_firings", "notifications"] {
        let entry = format!("aemos.public.{table}:TABLE");
        assert!(tables.contains(&entry.as_str()), "{entry}: {tables:?}");
    }
    assert!(
        tables.contains(&"aemos.pg_catalog.pg_class:SYSTEM TABLE"),
        "{tables:?}"
    );
    let columns: Vec<&str> = seen["readings_schema"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "time",
            "device",
            "sensor",
            "variable",
            "value",
            "measurement",
            "tags"
        ],
        "{seen}"
    );
}

#[tokio::test]
async fn production_flight_sql_takes_a_user_jwt_over_tls() {
    let s = secure_edge::start(&[]).await;
    let device = s.device("fl-dev", &["fl-s1"]).await;
    let (_, port) = s.server.flight_addr.rsplit_once(':').unwrap();
    let uri = format!("grpc+tls://localhost:{port}");
    let ca = std::fs::read_to_string(&s.cert_path).unwrap();
    let count = json!([{"sql": "SELECT count(*) AS n FROM readings"}]);
    let with_header = |header: Option<String>| {
        let mut db = json!({"adbc.flight.sql.client_option.tls_root_certs": ca});
        if let Some(h) = header {
            db["adbc.flight.sql.authorization_header"] = json!(h);
        }
        adbc(json!({"uri": uri, "db_kwargs": db, "statements": count}))
    };

    for role in ["viewer", "operator", "admin"] {
        let seen = with_header(Some(format!("Bearer {}", user_jwt(SECRET, role))));
        assert_eq!(seen["results"][0]["rows"], json!([[0]]), "{role}: {seen}");
    }
    // A user name and the JWT as the password: the Handshake hands it back as the bearer token.
    let seen = adbc(json!({
        "uri": uri,
        "db_kwargs": {
            "adbc.flight.sql.client_option.tls_root_certs": ca,
            "username": "analyst",
            "password": user_jwt(SECRET, "viewer"),
        },
        "statements": count,
    }));
    assert_eq!(seen["results"][0]["rows"], json!([[0]]), "{seen}");

    let expired = super::access::jwt_with(
        SECRET,
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "u", "role": "viewer", "exp": super::access::now() - 3600}),
    );
    let forged = user_jwt("another-secret-of-at-least-32-bytes!!", "admin");
    for (case, header) in [
        ("no credential", None),
        (
            "not bearer",
            Some(format!("Token {}", user_jwt(SECRET, "viewer"))),
        ),
        ("wrong", Some("Bearer not-a-token".to_string())),
        ("forged", Some(format!("Bearer {forged}"))),
        ("expired", Some(format!("Bearer {expired}"))),
        ("device token", Some(format!("Bearer {device}"))),
    ] {
        let seen = with_header(header);
        let error = seen["results"][0]["error"]
            .as_str()
            .or(seen["connect_error"].as_str())
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.to_lowercase().contains("unauthenticated"),
            "{case}: {seen}"
        );
        assert!(!error.contains(SECRET), "{case}: {error}");
    }
    let seen = adbc(json!({
        "uri": uri,
        "db_kwargs": {
            "adbc.flight.sql.client_option.tls_root_certs": ca,
            "username": "analyst",
            "password": "not-a-token",
        },
        "statements": count,
    }));
    let error = format!("{seen}").to_lowercase();
    assert!(error.contains("unauthenticated"), "{seen}");
}
