//! The device registry and the seed's single reading through the router (`oneshot`):
//! refusals that name the field and change nothing, rotation, reload from the object store,
//! and `dev` mode's openness.

use aemos_api::auth::Mode;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use super::access::{send, user_jwt, world, World};
use super::router::{app_in, call};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_refuses_bad_devices_precisely_and_changes_nothing() {
    let w = world().await;
    let cases = [
        (json!({"id": "dev-a"}), 409, "already exists"),
        (json!({"id": "bad id"}), 400, "`id`"),
        (json!({"sensors": ["x"]}), 400, "missing field `id`"),
        (
            json!({"id": "d-9", "sensors": ["s", "s"]}),
            400,
            "listed twice",
        ),
        (
            json!({"id": "d-9", "sensors": ["ok", "bad/sensor"]}),
            400,
            "`sensors[1]`",
        ),
        (
            json!({"id": "d-9", "sensors": ["a-s1"]}),
            409,
            "belongs to device \"dev-a\"",
        ),
        (json!({"id": "a-s1"}), 409, "is a sensor of device"),
        (
            json!({"id": "d-9", "inactivityTimeout": "soon"}),
            400,
            "`inactivityTimeout`",
        ),
        (
            json!({"id": "d-9", "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
    ];
    for (body, status, says) in cases {
        let (s, answer) = send(
            &w.app,
            "POST",
            "/api/v1/devices",
            Some(&w.admin),
            Some(body.clone()),
        )
        .await;
        assert_eq!(s.as_u16(), status, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let (_, list) = send(&w.app, "GET", "/api/v1/devices", Some(&w.viewer), None).await;
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["dev-a", "dev-b", "dev-c"]);
    let text = list.to_string();
    assert!(
        !text.contains("token\"") && !text.contains("sha256"),
        "no token nor hash shown: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_revokes_at_once_and_the_registry_survives_a_reload() {
    let w = world().await;
    let (s, _) = send(&w.app, "GET", "/api/v1/devices/dev-b", Some(&w.dev_b), None).await;
    assert_eq!(s, StatusCode::OK);
    let (_, rotated) = send(
        &w.app,
        "POST",
        "/api/v1/devices/dev-b/token",
        Some(&w.admin),
        None,
    )
    .await;
    let (s, _) = send(&w.app, "GET", "/api/v1/devices/dev-b", Some(&w.dev_b), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let fresh = format!("Bearer {}", rotated["token"].as_str().unwrap());
    assert_eq!(
        send(&w.app, "GET", "/api/v1/devices/dev-b", Some(&fresh), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(rotated["tokenGeneration"], 2);
    // Another registry over the same object store sees the same devices and tokens.
    let again = aemos_api::devices::DeviceRegistry::load(std::sync::Arc::clone(&w.app.storage))
        .await
        .unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(
        &*again
            .by_token(fresh.trim_start_matches("Bearer "))
            .unwrap()
            .id,
        "dev-b"
    );
    assert!(again
        .by_token(w.dev_b.trim_start_matches("Bearer "))
        .is_none());
    // Removal: the token stops working, the id is free again.
    assert_eq!(
        send(
            &w.app,
            "DELETE",
            "/api/v1/devices/dev-b",
            Some(&w.admin),
            None
        )
        .await
        .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&w.app, "GET", "/api/v1/devices/dev-b", Some(&fresh), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert!(w.app.auth.registry.get("dev-b").is_none());
}

async fn single(w: &World, body: Value) -> (StatusCode, Value) {
    send(
        &w.app,
        "POST",
        "/api/v1/datastreams/token",
        Some(&w.dev_a),
        Some(body),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_single_reading_takes_strings_both_spellings_and_an_implied_sensor() {
    let w = world().await;
    let (s, body) = single(&w, json!({"value": "25.5", "variableName": "temperature", "recievedAt": "2026-01-20T10:30:00Z"})).await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["data"]["sensor"], "a-s1");
    assert_eq!(body["data"]["value"], 25.5);
    assert_eq!(body["data"]["time"], "2026-01-20T10:30:00.000Z");
    let (s, body) = single(
        &w,
        json!({"value": 26, "variableName": "temperature", "receivedAt": 1768905060000i64}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    // X-Device-Token works too.
    let req = Request::post("/api/v1/datastreams/token")
        .header("x-device-token", w.dev_a.trim_start_matches("Bearer "))
        .body(Body::from(
            json!({"value": 1, "variableName": "humidity"}).to_string(),
        ))
        .unwrap();
    assert_eq!(call(&w.app, req).await.0, StatusCode::CREATED);
    let bad = [
        (json!({"variableName": "t"}), "`value`"),
        (
            json!({"value": "warm", "variableName": "t"}),
            "\"warm\" is not a number",
        ),
        (json!({"value": 1}), "`variableName`"),
        (
            json!({"value": 1, "variableName": "t", "recievedAt": "yesterday"}),
            "`recievedAt`",
        ),
        (
            json!({"value": 1, "variableName": "bad name"}),
            "`variableName`",
        ),
    ];
    for (body, says) in bad {
        let (s, answer) = single(&w, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let (s, _) = single(
        &w,
        json!({"value": 1, "variableName": "t", "sensor": "b-s1"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, rows) = send(
        &w.app,
        "POST",
        "/api/v1/query",
        Some(&w.viewer),
        Some(json!({"sql": "SELECT count(*) AS n FROM readings WHERE device = 'dev-a'"})),
    )
    .await;
    assert_eq!(rows[0]["n"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_mode_is_open_but_checks_a_credential_that_is_presented() {
    let app = app_in(Mode::Dev, 1 << 20, usize::MAX).await;
    let reading = json!({"readings": [{"sensor": "s", "variable": "t", "value": 1}]});
    assert_eq!(
        send(&app, "POST", "/api/v1/write", None, Some(reading.clone()))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/api/v1/devices", None, None).await.0,
        StatusCode::OK
    );
    let forged = format!(
        "Bearer {}",
        user_jwt("another-secret-of-at-least-32-bytes!", "admin")
    );
    assert_eq!(
        send(&app, "POST", "/api/v1/write", Some(&forged), Some(reading))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_and_data_of_a_device() {
    let app = app_in(Mode::Dev, 1 << 20, usize::MAX).await;
    app.clock.set(5_000); // the readings below are stamped in the first seconds of 1970
    let (s, _) = send(
        &app,
        "POST",
        "/api/v1/devices",
        None,
        Some(json!({"id": "p-1", "sensors": ["p-1-air"]})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let readings = json!({"readings": [
        {"sensor": "p-1-air", "variable": "pm25", "value": 10, "time": 1_000},
        {"sensor": "p-1-air", "variable": "pm25", "value": 30, "time": 3_000},
        {"sensor": "p-1-air", "variable": "pm25", "value": 20, "time": 2_000},
        {"sensor": "p-1", "variable": "fanSpeed", "value": 2, "time": 1_500},
        {"sensor": "other", "variable": "pm25", "value": 99, "time": 4_000}]});
    let (s, answer) = send(&app, "POST", "/api/v1/write", None, Some(readings)).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    let (s, latest) = send(&app, "GET", "/api/v1/devices/p-1/latest", None, None).await;
    assert_eq!(s, StatusCode::OK, "{latest}");
    let values: Vec<(String, f64)> = latest["latest"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                format!(
                    "{}.{}",
                    r["sensor"].as_str().unwrap(),
                    r["variable"].as_str().unwrap()
                ),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [
            ("p-1.fanSpeed".to_owned(), 2.0),
            ("p-1-air.pm25".to_owned(), 30.0)
        ]
    );
    let (s, data) = send(
        &app,
        "GET",
        "/api/v1/devices/p-1/data?from=1500&limit=2",
        None,
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{data}");
    let values: Vec<f64> = data["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [30.0, 20.0], "newest first, from 1500, two: {data}");
    for (uri, status) in [
        ("/api/v1/devices/nobody/latest", StatusCode::NOT_FOUND),
        ("/api/v1/devices/p-1/data?limit=0", StatusCode::BAD_REQUEST),
        (
            "/api/v1/devices/p-1/data?from=yesterday",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, answer) = send(&app, "GET", uri, None, None).await;
        assert_eq!(s, status, "{uri}: {answer}");
    }
}
