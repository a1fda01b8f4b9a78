//! Schedules through the router (`oneshot`) with the one manual clock: a schedule at 09:00 in
//! Berlin turns the device on at 08:00 UTC before the spring-forward change and at 07:00 UTC
//! after it, and off at its end; overlaps across time zones and DST are refused; replacing or
//! removing a schedule during its run turns the device off; bad fields are named.

use aemos_api::auth::Mode;
use axum::http::StatusCode;
use serde_json::{json, Value};

use super::access::send;
use super::router::{app_in, App};

const DEVICE: &str = "purifier-s";

fn ms(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_millis()
}

/// The device's commands, oldest first: (action, value, source).
async fn commands(app: &App) -> Vec<(String, Value, String)> {
    let path = format!("/api/v1/devices/{DEVICE}/commands?limit=1000");
    let (status, body) = send(app, "GET", &path, None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut all: Vec<_> = body["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap().to_owned(),
                c["value"].clone(),
                c["source"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    all.reverse();
    all
}

/// Moves the clock to `at` and runs one pass of the schedules.
async fn at(app: &App, at: &str) {
    app.clock.set(ms(at));
    app.schedules.tick().await;
}

fn actions(all: &[(String, Value, String)]) -> Vec<&str> {
    all.iter().map(|(a, _, _)| a.as_str()).collect()
}

/// The router in dev mode with [`DEVICE`] registered.
async fn app_with_device() -> App {
    let app = app_in(Mode::Dev, 1 << 20, usize::MAX).await;
    let body = Some(json!({"id": DEVICE}));
    let (status, _) = send(&app, "POST", "/api/v1/devices", None, body).await;
    assert_eq!(status, StatusCode::CREATED);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_runs_in_its_time_zone_across_a_dst_change() {
    let app = app_with_device().await;
    app.clock.set(ms("2027-03-22T06:00:00Z"));
    let body = json!({"id": "mornings", "device": DEVICE, "day": "monday",
        "startTime": "09:00", "endTime": "10:00", "fanSpeed": 3, "timezone": "Europe/Berlin"});
    let (status, created) = send(&app, "POST", "/api/v1/schedules", None, Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["nextRun"]["start"], "2027-03-22T08:00:00.000Z");
    assert_eq!(created["running"], false);

    // Winter: 09:00 CET is 08:00 UTC.
    at(&app, "2027-03-22T07:59:59Z").await;
    assert!(commands(&app).await.is_empty());
    at(&app, "2027-03-22T08:00:00Z").await;
    at(&app, "2027-03-22T08:30:00Z").await;
    let on = commands(&app).await;
    assert_eq!(
        on,
        [
            ("turnOn".into(), Value::Null, "schedule".into()),
            ("setFanSpeed".into(), json!(3), "schedule".into())
        ]
    );
    at(&app, "2027-03-22T09:00:00Z").await;
    assert_eq!(
        actions(&commands(&app).await),
        ["turnOn", "setFanSpeed", "turnOff"]
    );

    // Summer (from 2027-03-28): 09:00 CEST is 07:00 UTC.
    at(&app, "2027-03-29T06:59:59Z").await;
    assert_eq!(commands(&app).await.len(), 3);
    at(&app, "2027-03-29T07:00:00Z").await;
    assert_eq!(commands(&app).await.len(), 5);
    let (_, running) = send(&app, "GET", "/api/v1/schedules/mornings", None, None).await;
    assert_eq!(running["running"], true, "{running}");
    assert_eq!(running["currentRun"]["end"], "2027-03-29T08:00:00.000Z");
    assert_eq!(running["history"].as_array().unwrap().len(), 5, "{running}");

    // Overlaps are refused, even when only summer time makes them overlap.
    for (day, start, end, tz) in [
        ("monday", "09:30", "11:00", "Europe/Berlin"),
        ("monday", "07:00", "07:30", "UTC"),
    ] {
        let body = json!({"device": DEVICE, "day": day, "startTime": start, "endTime": end,
            "fanSpeed": 2, "timezone": tz});
        let (status, answer) = send(&app, "POST", "/api/v1/schedules", None, Some(body)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{start} {tz}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("mornings"),
            "{answer}"
        );
    }
    let evening = json!({"device": DEVICE, "day": "monday", "startTime": "18:00",
        "endTime": "19:00", "fanSpeed": 2, "timezone": "UTC"});
    let (status, _) = send(&app, "POST", "/api/v1/schedules", None, Some(evening)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, listed) = send(
        &app,
        "GET",
        &format!("/api/v1/schedules?device={DEVICE}"),
        None,
        None,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // A new speed during the run: off, then on at the new speed; removed: off.
    let faster = json!({"device": DEVICE, "day": "monday", "startTime": "09:00",
        "endTime": "10:00", "fanSpeed": 5, "timezone": "Europe/Berlin"});
    let (status, replaced) = send(
        &app,
        "PUT",
        "/api/v1/schedules/mornings",
        None,
        Some(faster),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let after = commands(&app).await;
    assert_eq!(actions(&after[5..]), ["turnOff", "turnOn", "setFanSpeed"]);
    assert_eq!(after[7].1, json!(5));
    let (status, _) = send(&app, "DELETE", "/api/v1/schedules/mornings", None, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(actions(&commands(&app).await[8..]), ["turnOff"]);
    at(&app, "2027-03-29T07:30:00Z").await;
    assert_eq!(
        commands(&app).await.len(),
        9,
        "a removed schedule makes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedules_are_refused_and_change_nothing() {
    let app = app_with_device().await;
    let good = json!({"device": DEVICE, "day": "friday", "startTime": "09:00",
        "endTime": "10:00", "fanSpeed": 3, "timezone": "UTC"});
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    for (body, want, says) in [
        (with("timezone", json!("Mars/Olympus")), 400, "`timezone`"),
        (with("startTime", json!("9am")), 400, "`startTime`"),
        (with("endTime", json!("24:30")), 400, "`endTime`"),
        (with("day", json!("someday")), 400, "`day`"),
        (with("fanSpeed", json!(9)), 400, "`fanSpeed`"),
        (with("id", json!("bad id")), 400, "`id`"),
        (with("colour", json!("red")), 400, "colour"),
        (with("device", json!("nobody")), 404, "nobody"),
    ] {
        let (status, answer) =
            send(&app, "POST", "/api/v1/schedules", None, Some(body.clone())).await;
        assert_eq!(status.as_u16(), want, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    let (_, listed) = send(&app, "GET", "/api/v1/schedules", None, None).await;
    assert_eq!(listed, json!([]));
    let (status, _) = send(&app, "PUT", "/api/v1/schedules/none", None, Some(good)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = send(&app, "DELETE", "/api/v1/schedules/none", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The real binary runs its schedules on the wall clock: one going on now turns the device on
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_a_schedule_that_is_on_now() {
    use chrono::{Datelike, Timelike};
    let dir = tempfile::tempdir().unwrap();
    let server = crate::server::TestServer::start(dir.path(), &[], &[]);
    let http = reqwest::Client::new();
    let (status, _) = server
        .post(&http, "/api/v1/devices", &json!({"id": DEVICE}))
        .await;
    assert_eq!(status, 201);
    let mut device = crate::mqtt_device::MqttDevice::connect(&server, DEVICE, &["commands"]).await;
    let now = chrono::Utc::now();
    let end = now + chrono::Duration::minutes(2);
    let hhmm = |t: chrono::DateTime<chrono::Utc>| format!("{:02}:{:02}", t.hour(), t.minute());
    let body = json!({"device": DEVICE, "day": now.weekday().to_string(),
        "startTime": hhmm(now), "endTime": hhmm(end), "fanSpeed": 4});
    let (status, created) = server.post(&http, "/api/v1/schedules", &body).await;
    assert_eq!(status, 201, "{created}");
    let on = device.next_on("commands").await;
    assert_eq!(on["action"], "turnOn", "{on}");
    device.ack(on["commandId"].as_str().unwrap(), "ok").await;
    let speed = device.next_on("commands").await;
    assert_eq!(
        (speed["action"].as_str(), speed["value"].as_u64()),
        (Some("setFanSpeed"), Some(4))
    );
}
