//! Pre-clean end to end: the real binary, a device played by rumqttc. The fan runs at the
//! pre-clean's speed, and the saved speed comes back when its time is up, even when the server
//! was SIGKILLed in the middle and down when it ended; a cancel restores at once; bad requests
//! change nothing.

use std::time::Duration;

use serde_json::json;

use crate::mqtt_device::MqttDevice;
use crate::server::TestServer;

const DEVICE: &str = "purifier-9";

fn start(dir: &std::path::Path) -> TestServer {
    TestServer::start(dir, &["--command-ack-timeout", "2s"], &[])
}

/// The device gets `setFanSpeed` and acknowledges it; its command id.
async fn obey(device: &mut MqttDevice, speed: u64) -> String {
    let c = device.next_on("commands").await;
    assert_eq!(
        (c["action"].as_str(), c["value"].as_u64()),
        (Some("setFanSpeed"), Some(speed)),
        "{c}"
    );
    let id = c["commandId"].as_str().unwrap().to_owned();
    device.ack(&id, "ok").await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_after_a_sigkill_cancelled_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path());
    let http = reqwest::Client::new();
    let path = format!("/api/v1/devices/{DEVICE}/preclean");
    let (status, _) = server
        .post(&http, "/api/v1/devices", &json!({"id": DEVICE}))
        .await;
    assert_eq!(status, 201);
    let mut device = MqttDevice::connect(&server, DEVICE, &["commands"]).await;

    // Nothing to restore yet: refused.
    let (status, body) = server
        .post(&http, &path, &json!({"fanMode": 5, "duration": "3s"}))
        .await;
    assert_eq!(status, 409, "{body}");

    let (status, _) = server
        .post(
            &http,
            &format!("/api/v1/devices/{DEVICE}/commands"),
            &json!({"action": "setFanSpeed", "value": 2}),
        )
        .await;
    assert_eq!(status, 202);
    obey(&mut device, 2).await;
    let state_path = format!("/api/v1/devices/{DEVICE}/state");
    server
        .get_until(&http, &state_path, |s| s["fanSpeed"] == 2)
        .await;

    // Bad requests change nothing.
    for (body, want, field) in [
        (json!({"fanMode": 7, "duration": "3s"}), 400, "`fanMode`"),
        (
            json!({"fanMode": 5, "duration": "forever"}),
            400,
            "`duration`",
        ),
        (json!({"fanMode": 5}), 400, "duration"),
    ] {
        let (status, answer) = server.post(&http, &path, &body).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(field),
            "{body}: {answer}"
        );
    }
    let (status, _) = server
        .post(
            &http,
            "/api/v1/devices/nobody/preclean",
            &json!({"fanMode": 5, "duration": "3s"}),
        )
        .await;
    assert_eq!(status, 404);
    let none = http
        .get(format!("{}{path}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404, "no pre-clean yet");

    // Pre-clean at 5 for 3 s; a second one is refused while it runs.
    let (status, started) = server
        .post(&http, &path, &json!({"fanMode": 5, "duration": "3s"}))
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["savedSpeed"], 2);
    assert!(started["willEndAt"].is_string(), "{started}");
    let start_id = obey(&mut device, 5).await;
    let command_path = format!("/api/v1/devices/{DEVICE}/commands/{start_id}");
    server
        .get_until(&http, &command_path, |c| c["status"] == "acknowledged")
        .await;
    let (status, _) = server
        .post(&http, &path, &json!({"fanMode": 4, "duration": "3s"}))
        .await;
    assert_eq!(status, 409);
    let state = server.get_json(&http, &state_path).await;
    assert_eq!(state["precleanActive"], true, "{state}");
    assert_eq!(state["preclean"]["willEndAt"], started["willEndAt"]);

    // SIGKILL in the middle, down when it ends: restored at the next start.
    server.kill9();
    drop(device);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let server = start(dir.path());
    let mut device = MqttDevice::connect(&server, DEVICE, &["commands"]).await;
    let restore = obey(&mut device, 2).await;
    let done = server
        .get_until(&http, &path, |p| p["status"] == "completed")
        .await;
    assert_eq!(done["restoreCommandId"], restore.as_str());
    let audit = server
        .get_json(
            &http,
            &format!("/api/v1/devices/{DEVICE}/commands/{restore}"),
        )
        .await;
    assert_eq!(audit["source"], "preclean", "{audit}");
    assert!(
        device.within(Duration::from_millis(1500)).await.is_none(),
        "restored twice"
    );

    // Cancelled: the saved speed at once.
    let (status, _) = server
        .post(&http, &path, &json!({"fanMode": 4, "duration": 10}))
        .await;
    assert_eq!(status, 202);
    obey(&mut device, 4).await;
    let (status, cancelled) = server
        .post(&http, &format!("{path}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    obey(&mut device, 2).await;
    let (status, _) = server
        .post(&http, &format!("{path}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 409, "nothing to cancel");
}
