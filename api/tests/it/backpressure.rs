//! The circuit breaker and write priorities through the HTTP API (`oneshot`): low-priority
//! writes are shed first, telemetry while the breaker is open, nothing refused is stored, the
//! breaker half-opens and closes as the load falls, and the operations endpoints and the reset
//! say so.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};

use crate::router::{app_with, call, count, write, App};

fn readings(n: usize) -> String {
    let all: Vec<Value> = (0..n)
        .map(|i| json!({"sensor": "s-1", "variable": "t", "value": i}))
        .collect();
    Value::Array(all).to_string()
}

async fn post(app: &App, uri: &str, n: usize) -> (StatusCode, Option<String>, Value) {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(Body::from(readings(n)))
        .unwrap();
    let res = tower::ServiceExt::oneshot(app.router.clone(), req)
        .await
        .unwrap();
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        retry,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn get(app: &App, uri: &str) -> Value {
    let (status, body) = call(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{uri}");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_priority_is_shed_first_then_the_breaker_opens_half_opens_and_closes() {
    // The buffer's bound is 10 readings: the load is buffered / 10.
    let app = app_with(1 << 20, 10).await;
    assert_eq!(post(&app, "/api/v1/write", 8).await.0, StatusCode::OK);
    // Load 0.8: above --breaker-low-until (0.7), below --breaker-open-at (0.9).
    let (status, retry, body) = post(&app, "/api/v1/write?priority=low", 1).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    let error = body["error"].as_str().unwrap();
    assert!(
        error
            .contains("low-priority writes are shed while the circuit breaker is CLOSED (load 80%"),
        "{error}"
    );
    assert_eq!(post(&app, "/api/v1/write", 1).await.0, StatusCode::OK);
    // Load 0.9: the breaker opens and telemetry is shed.
    let (status, retry, body) = post(&app, "/api/v1/write", 1).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("circuit breaker is OPEN"),
        "{body}"
    );
    let summary = get(&app, "/api/v1/metrics/queue/summary").await;
    assert_eq!(summary["health"], "critical", "{summary}");
    assert_eq!(summary["circuitState"], "OPEN", "{summary}");
    assert_eq!(summary["rejectedCount"], 2, "{summary}");
    assert_eq!(summary["queueDepth"], 9, "{summary}");
    assert_eq!(summary["workers"], 2, "{summary}");
    let queue = get(&app, "/api/v1/metrics/queue").await;
    assert_eq!(
        queue["refused"]["shed"],
        json!({"critical": 0, "normal": 1, "low": 1}),
        "{queue}"
    );
    assert_eq!(queue["buffer"], json!({"rows": 9, "limit": 10}), "{queue}");
    assert_eq!(queue["circuit"]["circuitState"], "OPEN", "{queue}");
    assert_eq!(get(&app, "/api/v1/health").await["circuitState"], "OPEN");
    let metrics = String::from_utf8(
        call(
            &app,
            Request::get("/api/v1/metrics/prometheus")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .1,
    )
    .unwrap();
    assert!(metrics.contains("aemos_circuit_state 2"), "{metrics}");
    assert!(
        metrics.contains(r#"aemos_admission_refusals_total{priority="low",reason="shed"} 1"#),
        "{metrics}"
    );
    // Nothing refused was stored; a priority a client may not ask for is a 400.
    assert_eq!(count(&app).await, 9);
    let (status, body) = write(
        &app,
        "/api/v1/write?priority=critical",
        "application/json",
        readings(1),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"].as_str().unwrap().starts_with("priority:"),
        "{body}"
    );

    // Persistence empties the buffer: half-open, telemetry admitted, low still shed.
    app.storage.persist().await.unwrap();
    assert_eq!(post(&app, "/api/v1/write", 1).await.0, StatusCode::OK);
    let summary = get(&app, "/api/v1/metrics/queue/summary").await;
    assert_eq!(
        (summary["circuitState"].as_str(), summary["health"].as_str()),
        (Some("HALF_OPEN"), Some("warning"))
    );
    assert_eq!(
        post(&app, "/api/v1/write?priority=low", 1).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Stable for --breaker-stable (5 s): closed, low admitted again.
    app.clock.advance(5_000);
    assert_eq!(
        post(&app, "/api/v1/write?priority=low", 1).await.0,
        StatusCode::OK
    );
    let summary = get(&app, "/api/v1/metrics/queue/summary").await;
    assert_eq!(
        (summary["circuitState"].as_str(), summary["health"].as_str()),
        (Some("CLOSED"), Some("healthy"))
    );
    assert_eq!(count(&app).await, 11);

    // An operator's reset zeroes the refusals since the last reset.
    let req = Request::post("/api/v1/metrics/backpressure/reset")
        .body(Body::empty())
        .unwrap();
    let (status, body) = call(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body, json!({"circuitState": "CLOSED", "rejectedCount": 0}));
}
