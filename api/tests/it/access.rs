//! Identity and access through the router (`oneshot`), in `production` mode: every route
//! against every kind of bad credential, each principal's rights, the device registry and the
//! seed's single reading.

use std::sync::atomic::{AtomicUsize, Ordering};

use aemos_api::auth::Mode;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::router::{app_in, call, App, JWT_SECRET};

pub(crate) fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

pub(crate) fn jwt_with(secret: &str, alg: Algorithm, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

pub(crate) fn user_jwt(secret: &str, role: &str) -> String {
    jwt_with(
        secret,
        Algorithm::HS256,
        json!({"sub": format!("{role}-user"), "role": role, "exp": now() + 3600, "iat": now()}),
    )
}

pub(crate) fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

pub(crate) async fn send(
    app: &App,
    method: &str,
    uri: &str,
    credential: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = credential {
        req = req.header("authorization", c);
    }
    let req = match body {
        // A string body is sent as it is (line protocol), anything else as JSON.
        Some(Value::String(text)) => req
            .header("content-type", "text/plain")
            .body(Body::from(text)),
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    let (status, body) = call(app, req).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

pub(crate) struct World {
    pub(crate) app: App,
    pub(crate) admin: String,
    pub(crate) operator: String,
    pub(crate) viewer: String,
    pub(crate) dev_a: String,
    pub(crate) dev_b: String,
    /// dev-a's first token, rotated away.
    pub(crate) revoked: String,
}

pub(crate) async fn world() -> World {
    let app = app_in(Mode::Production, 1 << 20, usize::MAX).await;
    let admin = format!("Bearer {}", user_jwt(JWT_SECRET, "admin"));
    let create = |id: &str, sensors: Value| json!({"id": id, "sensors": sensors});
    let (s, a) = send(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&admin),
        Some(create("dev-a", json!(["a-s1"]))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    let revoked = a["token"].as_str().unwrap().to_owned();
    let (s, a2) = send(
        &app,
        "POST",
        "/api/v1/devices/dev-a/token",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a2}");
    let (_, b) = send(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&admin),
        Some(create("dev-b", json!(["b-s1"]))),
    )
    .await;
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/devices",
        Some(&admin),
        Some(create("dev-c", json!([]))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let chain =
        json!({"id": "r-1", "nodes": [{"type": "filter", "sensor": "a-s1", "condition": "t > 1"}]});
    let (s, c) = send(
        &app,
        "POST",
        "/api/v1/rulechains",
        Some(&admin),
        Some(chain),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    World {
        operator: format!("Bearer {}", user_jwt(JWT_SECRET, "operator")),
        viewer: format!("Bearer {}", user_jwt(JWT_SECRET, "viewer")),
        dev_a: format!("Bearer {}", a2["token"].as_str().unwrap()),
        dev_b: format!("Bearer {}", b["token"].as_str().unwrap()),
        revoked: format!("Bearer {revoked}"),
        admin,
        app,
    }
}

/// Who may use a route: the success status of each principal, or `None` (403).
struct Route {
    method: &'static str,
    path: &'static str,
    body: fn(usize) -> Option<Value>,
    admin: Option<u16>,
    operator: Option<u16>,
    viewer: Option<u16>,
    dev_a: Option<u16>,
    dev_b: Option<u16>,
}

fn none(_: usize) -> Option<Value> {
    None
}

fn routes() -> Vec<Route> {
    let r = |method, path, body: fn(usize) -> Option<Value>, a, o, v, da, db| Route {
        method,
        path,
        body,
        admin: a,
        operator: o,
        viewer: v,
        dev_a: da,
        dev_b: db,
    };
    let users = |code| (Some(code), Some(code), Some(code));
    let (ok, created, gone) = (200, 201, 404);
    // The InfluxDB write routes: one line of a device's own sensor, 204 for what may write.
    let influx = [
        "/write?db=telegraf",
        "/api/v2/write?org=o&bucket=b",
        "/api/v3/write_lp?db=d",
    ]
    .map(|path| {
        let line: fn(usize) -> Option<Value> = |_| Some(json!("m,sensor=a-s1 t=2"));
        let written = Some(204);
        r("POST", path, line, written, written, None, written, None)
    });
    let mut routes = vec![
        r(
            "POST",
            "/api/v1/write",
            |_| Some(json!({"readings": [{"sensor": "a-s1", "variable": "t", "value": 2}]})),
            Some(ok),
            Some(ok),
            None,
            Some(ok),
            None,
        ),
        r(
            "GET",
            "/query?q=CREATE%20DATABASE%20telegraf",
            none,
            Some(ok),
            Some(ok),
            None,
            Some(ok),
            Some(ok),
        ),
        r(
            "POST",
            "/api/v1/datastreams/token",
            |_| Some(json!({"sensor": "a-s1", "variableName": "t", "value": "3.5"})),
            Some(created),
            Some(created),
            None,
            Some(created),
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/query?sql=SELECT%201",
                none,
                a,
                o,
                v,
                None,
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r(
                "POST",
                "/api/v1/query",
                |_| Some(json!({"sql": "SELECT 1"})),
                a,
                o,
                v,
                None,
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/devices", none, a, o, v, None, None)
        },
        r(
            "POST",
            "/api/v1/devices",
            |n| Some(json!({"id": format!("new-{n}")})),
            Some(created),
            None,
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        r(
            "PUT",
            "/api/v1/devices/dev-a",
            |_| Some(json!({"sensors": ["a-s1"]})),
            Some(ok),
            None,
            None,
            None,
            None,
        ),
        r(
            "DELETE",
            "/api/v1/devices/no-such",
            none,
            Some(gone),
            None,
            None,
            None,
            None,
        ),
        r(
            "POST",
            "/api/v1/devices/dev-c/token",
            none,
            Some(ok),
            None,
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/statistics",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/latest",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/data",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/notifications",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        r(
            "POST",
            "/api/v1/devices/dev-a/commands",
            |_| Some(json!({"action": "setFanSpeed", "value": 2})),
            Some(202),
            Some(202),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/commands",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        {
            let (a, o, v) = users(gone);
            r(
                "GET",
                "/api/v1/devices/dev-a/commands/cmd-none",
                none,
                a,
                o,
                v,
                Some(gone),
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/devices/dev-a/state",
                none,
                a,
                o,
                v,
                Some(ok),
                None,
            )
        },
        {
            // Authorized, and then nothing to show.
            let (a, o, v) = users(gone);
            r(
                "GET",
                "/api/v1/devices/dev-a/preclean",
                none,
                a,
                o,
                v,
                Some(gone),
                None,
            )
        },
        // Authorized, and then refused: dev-a's fan speed is not known, and nothing runs.
        r(
            "POST",
            "/api/v1/devices/dev-a/preclean",
            |_| Some(json!({"fanMode": 5, "duration": "1m"})),
            Some(409),
            Some(409),
            None,
            None,
            None,
        ),
        r(
            "POST",
            "/api/v1/devices/dev-a/preclean/cancel",
            none,
            Some(409),
            Some(409),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/schedules", none, a, o, v, None, None)
        },
        r(
            "POST",
            "/api/v1/schedules",
            |n| {
                let days = [
                    "monday",
                    "tuesday",
                    "wednesday",
                    "thursday",
                    "friday",
                    "saturday",
                    "sunday",
                ];
                Some(
                    json!({"id": format!("s-{n}"), "device": "dev-a", "day": days[n % 7],
                    "startTime": format!("{:02}:00", (n / 7) % 24),
                    "endTime": format!("{:02}:30", (n / 7) % 24), "fanSpeed": 2}),
                )
            },
            Some(created),
            Some(created),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(gone);
            r(
                "GET",
                "/api/v1/schedules/no-such",
                none,
                a,
                o,
                v,
                None,
                None,
            )
        },
        r(
            "PUT",
            "/api/v1/schedules/no-such",
            |_| {
                Some(
                    json!({"device": "dev-a", "day": "monday", "startTime": "23:00",
                    "endTime": "23:10", "fanSpeed": 2}),
                )
            },
            Some(gone),
            Some(gone),
            None,
            None,
            None,
        ),
        r(
            "DELETE",
            "/api/v1/schedules/no-such",
            none,
            Some(gone),
            Some(gone),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/rulechains", none, a, o, v, None, None)
        },
        r(
            "POST",
            "/api/v1/rulechains",
            |n| {
                Some(
                    json!({"id": format!("c-{n}"), "nodes": [{"type": "filter", "sensor": "a-s1", "condition": "t > 1"}]}),
                )
            },
            Some(created),
            Some(created),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/rulechains/r-1", none, a, o, v, None, None)
        },
        r(
            "PUT",
            "/api/v1/rulechains/r-1",
            |_| {
                Some(
                    json!({"id": "r-1", "nodes": [{"type": "filter", "sensor": "a-s1", "condition": "t > 2"}]}),
                )
            },
            Some(ok),
            Some(ok),
            None,
            None,
            None,
        ),
        r(
            "DELETE",
            "/api/v1/rulechains/no-such",
            none,
            Some(gone),
            Some(gone),
            None,
            None,
            None,
        ),
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/health", none, a, o, v, None, None)
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/metrics/prometheus",
                none,
                a,
                o,
                v,
                None,
                None,
            )
        },
        {
            let (a, o, v) = users(ok);
            r("GET", "/api/v1/metrics/queue", none, a, o, v, None, None)
        },
        {
            let (a, o, v) = users(ok);
            r(
                "GET",
                "/api/v1/metrics/queue/summary",
                none,
                a,
                o,
                v,
                None,
                None,
            )
        },
        r(
            "POST",
            "/api/v1/metrics/backpressure/reset",
            none,
            Some(ok),
            None,
            None,
            None,
            None,
        ),
    ];
    routes.splice(1..1, influx);
    routes
}

/// Credentials that no route accepts, each with what the refusal must say.
fn bad_credentials(w: &World) -> Vec<(&'static str, Option<String>, &'static str)> {
    let exp = now() + 3600;
    let claims = |role: &str| json!({"sub": "mallory", "role": role, "exp": exp});
    vec![
        ("none", None, "credential is required"),
        (
            "not bearer",
            Some("Digest YWRtaW46YWRtaW4=".into()),
            "scheme",
        ),
        (
            "basic with a wrong password",
            Some("Basic YWRtaW46YWRtaW4=".into()),
            "neither a device token",
        ),
        ("basic not base64", Some("Basic !!!".into()), "base64"),
        ("empty bearer", Some("Bearer ".into()), "no token"),
        (
            "garbage",
            Some("Bearer not-a-token".into()),
            "neither a device token",
        ),
        (
            "malformed device token",
            Some("Bearer adt_1234".into()),
            "neither a device token",
        ),
        (
            "unknown device token",
            Some(format!("Bearer adt_{}", "0".repeat(64))),
            "device token is not valid",
        ),
        (
            "revoked device token",
            Some(w.revoked.clone()),
            "device token is not valid",
        ),
        (
            "forged jwt",
            Some(format!(
                "Bearer {}",
                user_jwt("another-secret-of-at-least-32-bytes!", "admin")
            )),
            "signature",
        ),
        (
            "expired jwt",
            Some(format!(
                "Bearer {}",
                jwt_with(
                    JWT_SECRET,
                    Algorithm::HS256,
                    json!({"sub": "a", "role": "admin", "exp": now() - 3600})
                )
            )),
            "expired",
        ),
        (
            "wrong algorithm",
            Some(format!(
                "Bearer {}",
                jwt_with(JWT_SECRET, Algorithm::HS384, claims("admin"))
            )),
            "algorithm",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims("admin"))
            )),
            "`none`",
        ),
        (
            "no role",
            Some(format!(
                "Bearer {}",
                jwt_with(
                    JWT_SECRET,
                    Algorithm::HS256,
                    json!({"sub": "a", "exp": exp})
                )
            )),
            "role",
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                jwt_with(
                    JWT_SECRET,
                    Algorithm::HS256,
                    json!({"sub": "a", "role": "admin"})
                )
            )),
            "exp",
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                jwt_with(JWT_SECRET, Algorithm::HS256, claims("root"))
            )),
            "not admin, operator or viewer",
        ),
        (
            "future iat",
            Some(format!(
                "Bearer {}",
                jwt_with(
                    JWT_SECRET,
                    Algorithm::HS256,
                    json!({"sub": "a", "role": "admin", "exp": exp + 86400, "iat": now() + 86400})
                )
            )),
            "iat",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_every_bad_credential_and_admits_the_rights_ones() {
    let w = world().await;
    let n = AtomicUsize::new(0);
    let next = || n.fetch_add(1, Ordering::Relaxed);
    for route in routes() {
        for (name, credential, says) in bad_credentials(&w) {
            let (status, body) = send(
                &w.app,
                route.method,
                route.path,
                credential.as_deref(),
                (route.body)(next()),
            )
            .await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{} {} with {name}: {body}",
                route.method,
                route.path
            );
            // InfluxDB 2.x's shape on its route: `{"code", "message"}`.
            let error = body["error"]
                .as_str()
                .or(body["message"].as_str())
                .unwrap_or_default();
            assert!(
                error.contains(says),
                "{} {} with {name}: {error:?} should say {says:?}",
                route.method,
                route.path
            );
            if let Some(c) = &credential {
                let secret = c.trim_start_matches("Bearer ").trim_start_matches("Basic ");
                assert!(
                    secret.len() < 8 || !error.contains(secret),
                    "the refusal echoes the credential"
                );
            }
        }
        let principals = [
            ("admin", &w.admin, route.admin),
            ("operator", &w.operator, route.operator),
            ("viewer", &w.viewer, route.viewer),
            ("dev-a", &w.dev_a, route.dev_a),
            ("dev-b", &w.dev_b, route.dev_b),
        ];
        for (name, credential, expected) in principals {
            let (status, body) = send(
                &w.app,
                route.method,
                route.path,
                Some(credential),
                (route.body)(next()),
            )
            .await;
            let expected = expected.unwrap_or(403);
            assert_eq!(
                status.as_u16(),
                expected,
                "{} {} as {name}: {body}",
                route.method,
                route.path
            );
        }
    }
    // Liveness, readiness and InfluxDB's ping stay open.
    for path in ["/api/v1/health/liveness", "/api/v1/health/readiness"] {
        assert_eq!(
            send(&w.app, "GET", path, None, None).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        send(&w.app, "GET", "/ping", None, None).await.0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_writes_only_its_own_sensors_and_production_refuses_unregistered_ones() {
    let w = world().await;
    let reading =
        |sensor: &str| json!({"readings": [{"sensor": sensor, "variable": "t", "value": 1}]});
    let naming =
        json!({"readings": [{"sensor": "a-s1", "device": "dev-b", "variable": "t", "value": 1}]});
    let cases = [
        (&w.dev_a, reading("b-s1"), 403, "is not a sensor of device"),
        // Its own name is its implicit sensor.
        (&w.dev_a, reading("dev-a"), 200, "accepted"),
        (&w.operator, reading("unregistered"), 400, "not registered"),
        (&w.operator, naming, 400, "the device sensor"),
        (&w.operator, reading("a-s1"), 200, "accepted"),
    ];
    for (credential, body, status, says) in cases {
        let (s, answer) = send(
            &w.app,
            "POST",
            "/api/v1/write",
            Some(credential),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s.as_u16(), status, "{body}: {answer}");
        assert!(answer.to_string().contains(says), "{body}: {answer}");
    }
    // The device column is the owner's id.
    let sql = json!({"sql": "SELECT device, sensor FROM readings ORDER BY sensor"});
    let (_, rows) = send(&w.app, "POST", "/api/v1/query", Some(&w.viewer), Some(sql)).await;
    assert_eq!(
        rows,
        json!([{"device": "dev-a", "sensor": "a-s1"}, {"device": "dev-a", "sensor": "dev-a"}])
    );
}
