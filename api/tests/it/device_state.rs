//! Device state end to end: a registered device is offline until it sends, online once it
//! does, offline again after its `inactivityTimeout` of silence, with `device-online` and
//! `device-offline` notifications on MQTT and in the replay; its fan speed comes from its
//! acknowledged commands; and the state comes back after a SIGKILL.

use serde_json::{json, Value};

use crate::mqtt_device::MqttDevice;
use crate::server::TestServer;
const DEVICE: &str = "purifier-7";

async fn state_until(
    http: &reqwest::Client,
    server: &TestServer,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/api/v1/devices/{DEVICE}/state");
    server.get_until(http, &path, done).await
}

async fn write(http: &reqwest::Client, server: &TestServer, value: f64) {
    let r = http
        .post(format!("{}/api/v1/write", server.url))
        .json(&json!({"readings": [
            {"sensor": "air-7", "variable": "pm25", "value": value},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_offline_settings_and_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), &["--engine-tick", "100ms"], &[]);
    let http = reqwest::Client::new();
    let (status, body) = server
        .post(
            &http,
            "/api/v1/devices",
            &json!({"id": DEVICE, "sensors": ["air-7"], "inactivityTimeout": "2s"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    // A second device, a gateway of 300 sensors (more than one chain may read), with an
    // aggregate window chain beside it, seen once through one of its sensors and then long
    // within its timeout: it must come back online from a restart (rebuilt from its newest
    // reading, not from the window's).
    let (status, _) = server
        .post(
            &http,
            "/api/v1/devices",
            &json!({"id": "steady", "inactivityTimeout": "10m",
                    "sensors": (0..300).map(|i| format!("gw-{i}")).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .post(
            &http,
            "/api/v1/rulechains",
            &json!({"id": "warm", "nodes": [
                {"type": "filter", "sensor": "gw-250", "condition": "avg(t, '1s') > 100"}]}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, _) = server
        .post(
            &http,
            "/api/v1/write",
            &json!({"readings": [{"sensor": "gw-250", "variable": "t", "value": 1}]}),
        )
        .await;
    assert_eq!(status, 200);
    let mut device = MqttDevice::connect(&server, DEVICE, &["notifications", "commands"]).await;

    // Never seen: offline from its registration (silently), nothing known.
    let never = state_until(&http, &server, |s| s["online"] == false).await;
    assert_eq!(never["lastSeen"], Value::Null, "{never}");
    assert_eq!(never["inactivityTimeout"], "2s");
    assert_eq!(never["fanSpeed"], Value::Null);

    // A reading: online, with its value and time.
    write(&http, &server, 42.0).await;
    let online = device.next_on("notifications").await;
    assert_eq!(online["type"], "device-online", "{online}");
    assert_eq!(online["metadata"]["stateName"], "connectivity");
    let seen = state_until(&http, &server, |s| s["online"] == true).await;
    assert!(seen["lastSeen"].is_string(), "{seen}");
    assert_eq!(seen["latest"][0]["variable"], "pm25", "{seen}");
    assert_eq!(seen["latest"][0]["value"], 42.0);

    // A command acknowledged sets the fan speed the state shows.
    let (status, body) = server
        .post(
            &http,
            &format!("/api/v1/devices/{DEVICE}/commands"),
            &json!({"action": "setFanSpeed", "value": 4}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let command = device.next_on("commands").await;
    device
        .ack(command["commandId"].as_str().unwrap(), "ok")
        .await;
    state_until(&http, &server, |s| s["fanSpeed"] == 4).await;

    // Silent for longer than its timeout: offline, and said so.
    let offline = device.next_on("notifications").await;
    assert_eq!(offline["type"], "device-offline", "{offline}");
    assert_eq!(offline["metadata"]["newValue"], "offline");
    let silent = state_until(&http, &server, |s| s["online"] == false).await;
    assert_eq!(silent["lastSeen"], seen["lastSeen"]);
    let replay = server
        .get_json(
            &http,
            &format!("/api/v1/devices/{DEVICE}/notifications?since_seq=0"),
        )
        .await;
    let kinds: Vec<&str> = replay["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    assert_eq!(kinds, ["device-online", "device-offline"], "{replay}");
    // Presence is aemos's own: no chain listed, and `$` ids are not the user's to make.
    let chains = server.get_json(&http, "/api/v1/rulechains").await;
    assert_eq!(chains.as_array().unwrap().len(), 1, "only `warm`: {chains}");
    let (status, _) = server
        .post(
            &http,
            "/api/v1/rulechains",
            &json!({"id": "$presence:x", "nodes": [
                {"type": "filter", "sensor": "s", "condition": "t > 1"}]}),
        )
        .await;
    assert_eq!(status, 400);

    // After a SIGKILL: offline, its fan speed kept, nothing notified twice; a reading brings
    // it back online.
    server.kill9();
    let server = TestServer::start(dir.path(), &["--engine-tick", "100ms"], &[]);
    let again = state_until(&http, &server, |s| s["online"] == false).await;
    assert_eq!(again["fanSpeed"], 4, "{again}");
    let steady = server.get_json(&http, "/api/v1/devices/steady/state").await;
    assert_eq!(steady["online"], true, "{steady}");
    write(&http, &server, 12.0).await;
    state_until(&http, &server, |s| s["online"] == true).await;
    // The state is the engine's; its notification follows once the firing log has synced.
    let path = format!("/api/v1/devices/{DEVICE}/notifications?since_seq=0");
    let replay = server
        .get_until(&http, &path, |r| r["lastSeq"].as_u64() >= Some(3))
        .await;
    assert_eq!(replay["lastSeq"], 3, "{replay}");
}
