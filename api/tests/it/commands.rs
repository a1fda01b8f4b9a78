//! Device commands end to end: the real binary, a device played by rumqttc. A command is
//! acknowledged; a device that drops commands gets exactly the configured attempts and then
//! `timeout`; a SIGKILL between attempts resumes the retries; bad commands and stray acks
//! change nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::mqtt_device::{MqttDevice, WAIT};
use crate::server::TestServer;
const DEVICE: &str = "purifier-1";

async fn post(
    http: &reqwest::Client,
    server: &TestServer,
    path: &str,
    body: Value,
) -> (u16, Value) {
    server.post(http, path, &body).await
}

async fn command(
    http: &reqwest::Client,
    server: &TestServer,
    action: &str,
    value: Value,
) -> String {
    let path = format!("/api/v1/devices/{DEVICE}/commands");
    let (status, body) = post(
        http,
        server,
        &path,
        json!({"action": action, "value": value}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["commandId"].as_str().unwrap().to_owned()
}

/// Polls the command until its status is `want`.
async fn wait_status(http: &reqwest::Client, server: &TestServer, id: &str, want: &str) -> Value {
    let path = format!("/api/v1/devices/{DEVICE}/commands/{id}");
    server.get_until(http, &path, |c| c["status"] == want).await
}

fn start(dir: &std::path::Path, ack_timeout: &str) -> TestServer {
    TestServer::start(
        dir,
        &[
            "--command-ack-timeout",
            ack_timeout,
            "--command-max-attempts",
            "3",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_retried_timed_out_and_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "700ms");
    let http = reqwest::Client::new();
    let (status, _) = post(&http, &server, "/api/v1/devices", json!({"id": DEVICE})).await;
    assert_eq!(status, 201);
    let mut inbox = MqttDevice::connect(&server, DEVICE, &["commands"]).await;

    // Acknowledged at the first attempt.
    let id = command(&http, &server, "setFanSpeed", json!(3)).await;
    let got = inbox.next_on("commands").await;
    assert_eq!(
        got,
        json!({"commandId": id, "action": "setFanSpeed", "value": 3})
    );
    inbox.ack(&id, "ok").await;
    let done = wait_status(&http, &server, &id, "acknowledged").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["source"], "api");
    assert_eq!(done["response"]["status"], "ok");
    assert!(
        done["sentAt"].is_string() && done["acknowledgedAt"].is_string(),
        "{done}"
    );

    // A device that drops the command gets it exactly three times, then it times out.
    let dropped = command(&http, &server, "turnOff", Value::Null).await;
    for _ in 0..3 {
        assert_eq!(inbox.next_on("commands").await["commandId"], dropped);
    }
    let timed_out = wait_status(&http, &server, &dropped, "timeout").await;
    assert_eq!(timed_out["attempts"], 3);
    assert!(
        inbox.within(Duration::from_millis(1500)).await.is_none(),
        "a fourth attempt was sent"
    );

    // Stray acks: late, unknown, malformed. Counted and ignored; the next command still goes.
    inbox.ack(&dropped, "ok").await;
    inbox.ack("cmd-unknown", "ok").await;
    inbox.send_ack("not json".into()).await;
    let failed = command(&http, &server, "setPower", json!("on")).await;
    assert_eq!(inbox.next_on("commands").await["value"], true);
    inbox.ack(&failed, "error").await;
    wait_status(&http, &server, &failed, "failed").await;
    assert_eq!(
        wait_status(&http, &server, &dropped, "timeout").await["attempts"],
        3
    );
    let metrics = server.metrics(&http).await;
    for reason in ["duplicate", "unknown", "malformed"] {
        let line = format!("aemos_command_acks_ignored_total{{reason=\"{reason}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // Refused before anything is stored.
    let path = format!("/api/v1/devices/{DEVICE}/commands");
    for (body, want) in [
        (json!({"action": "setFanSpeed", "value": 6}), "`value`"),
        (json!({"action": "selfDestruct"}), "`action`"),
        (json!({"value": 1}), "action"),
    ] {
        let (status, answer) = post(&http, &server, &path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer["error"].as_str().unwrap().contains(want), "{answer}");
    }
    let (status, _) = post(
        &http,
        &server,
        "/api/v1/devices/nobody/commands",
        json!({"action": "turnOn"}),
    )
    .await;
    assert_eq!(status, 404);

    // The audit log, newest first, and the same in SQL.
    let log = server.get_json(&http, &format!("{path}?limit=2")).await;
    assert_eq!(log["total"], 3);
    let ids: Vec<&str> = log["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["commandId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [failed.as_str(), dropped.as_str()]);
    let rows = server
        .sql(
            &http,
            "SELECT status, attempts FROM commands ORDER BY time, command_id",
        )
        .await;
    assert_eq!(
        rows,
        json!([
            {"status": "acknowledged", "attempts": 1},
            {"status": "timeout", "attempts": 3},
            {"status": "failed", "attempts": 1}
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_between_attempts_resumes_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "3s");
    let http = reqwest::Client::new();
    post(&http, &server, "/api/v1/devices", json!({"id": DEVICE})).await;
    let mut inbox = MqttDevice::connect(&server, DEVICE, &["commands"]).await;
    let id = command(&http, &server, "setFanSpeed", json!(5)).await;
    assert_eq!(
        inbox.next_on("commands").await["commandId"],
        id,
        "attempt 1"
    );
    server.kill9();
    drop(inbox);

    let server = start(dir.path(), "3s");
    let mut inbox = MqttDevice::connect(&server, DEVICE, &["commands"]).await;
    let again = inbox.next_on("commands").await;
    assert_eq!(again["commandId"], id, "attempt 2, after the restart");
    let c = wait_status(&http, &server, &id, "sent").await;
    assert_eq!(c["attempts"], 2, "{c}");
    inbox.ack(&id, "ok").await;
    let done = wait_status(&http, &server, &id, "acknowledged").await;
    assert_eq!(done["attempts"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_sends_its_command_once_per_activation_and_never_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), "30s");
    let http = reqwest::Client::new();
    server
        .post(&http, "/api/v1/devices", &json!({"id": DEVICE}))
        .await;
    let chain = |value: Value| {
        json!({"id": "pm-high", "nodes": [
            {"type": "filter", "sensor": DEVICE, "condition": "pm25 > 100"},
            {"type": "action", "action": "command", "device": DEVICE,
             "command": {"action": "setFanSpeed", "value": value}}]})
    };
    let (status, refused) = server
        .post(&http, "/api/v1/rulechains", &chain(json!(9)))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("nodes[1].command: `value`"),
        "{refused}"
    );
    let (status, body) = server
        .post(&http, "/api/v1/rulechains", &chain(json!(5)))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut inbox = MqttDevice::connect(&server, DEVICE, &["commands"]).await;
    let write =
        |pm25: f64| json!({"readings": [{"sensor": DEVICE, "variable": "pm25", "value": pm25}]});
    let (status, _) = server.post(&http, "/api/v1/write", &write(150.0)).await;
    assert_eq!(status, 200);
    let sent = inbox.next_on("commands").await;
    assert_eq!(
        (sent["action"].as_str(), sent["value"].as_i64()),
        (Some("setFanSpeed"), Some(5))
    );
    let id = sent["commandId"].as_str().unwrap().to_owned();
    inbox.ack(&id, "ok").await;
    let done = wait_status(&http, &server, &id, "acknowledged").await;
    assert_eq!(
        (done["source"].as_str(), done["chain"].as_str()),
        (Some("rule"), Some("pm-high"))
    );

    // Still active: no new activation, no new command.
    server.post(&http, "/api/v1/write", &write(160.0)).await;
    assert!(
        inbox.within(Duration::from_millis(1500)).await.is_none(),
        "a second command for one activation"
    );
    // A restart hands the firing log over again: the firing's command is already made.
    server.kill9();
    let server = start(dir.path(), "30s");
    let log = server
        .get_json(&http, &format!("/api/v1/devices/{DEVICE}/commands"))
        .await;
    assert_eq!(log["total"], 1, "{log}");
    assert_eq!(log["commands"][0]["status"], "acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_publishes_obeys_and_drops_as_told() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), "300ms");
    let http = reqwest::Client::new();
    // Three purifiers, registered by the simulator itself; the last one drops commands.
    let simulator = std::process::Command::new(env!("CARGO_BIN_EXE_aemos"))
        .args([
            "simulate",
            "--devices",
            "3",
            "--interval",
            "200ms",
            "--duration",
            "8s",
        ])
        .args([
            "--drop-commands-share",
            "0.34",
            "--register",
            "--url",
            &server.url,
        ])
        .args(["--mqtt", &server.mqtt_addr])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let count = |sensor: &'static str| {
        let (http, server) = (&http, &server);
        async move {
            let sql = format!("SELECT count(*) AS n FROM readings WHERE sensor = '{sensor}' AND variable = 'pm25'");
            server.sql(http, &sql).await[0]["n"].as_i64().unwrap_or(0)
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while count("purifier-00000").await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no readings from the simulator"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = |d: &str| format!("/api/v1/devices/{d}/commands");
    let body = json!({"action": "setFanSpeed", "value": 4});
    let (status, obeyed) = server.post(&http, &path("purifier-00000"), &body).await;
    assert_eq!(status, 202);
    let (_, dropped) = server.post(&http, &path("purifier-00002"), &body).await;
    let get = |d: &str, c: &Value| format!("{}/{}", path(d), c["commandId"].as_str().unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    let (obeyed, dropped) = loop {
        let a = server
            .get_json(&http, &get("purifier-00000", &obeyed))
            .await;
        let b = server
            .get_json(&http, &get("purifier-00002", &dropped))
            .await;
        if a["status"] == "acknowledged" && b["status"] == "timeout" {
            break (a, b);
        }
        assert!(tokio::time::Instant::now() < deadline, "{a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(obeyed["response"]["fanSpeed"], 4);
    assert_eq!(dropped["attempts"], 3);
    let out = simulator.wait_with_output().unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["devices"], 3);
    assert!(report["acks"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["commands"].as_u64().unwrap() >= 4, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_production_the_simulator_registers_and_logs_in_with_device_tokens() {
    const SECRET: &str = "commands-test-secret-of-at-least-32-bytes";
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--mode", "production", "--jwt-secret", SECRET],
        &[],
    );
    let admin = crate::access::user_jwt(SECRET, "admin");
    let simulator = std::process::Command::new(env!("CARGO_BIN_EXE_aemos"))
        .args([
            "simulate",
            "--devices",
            "2",
            "--interval",
            "200ms",
            "--duration",
            "5s",
        ])
        .args([
            "--register",
            "--url",
            &server.url,
            "--mqtt",
            &server.mqtt_addr,
        ])
        .env("AEMOS_ADMIN_TOKEN", &admin)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let operator = crate::access::user_jwt(SECRET, "operator");
    let path = "/api/v1/devices/purifier-00001/commands";
    // The devices exist once the simulator registered them.
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = loop {
        let r = http
            .post(format!("{}{path}", server.url))
            .bearer_auth(&operator)
            .json(&json!({"action": "turnOff"}))
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            let body: Value = r.json().await.unwrap();
            break body["commandId"].as_str().unwrap().to_owned();
        }
        assert!(tokio::time::Instant::now() < deadline, "{}", r.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c: Value = http
            .get(format!("{}{path}/{id}", server.url))
            .bearer_auth(&operator)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if c["status"] == "acknowledged" {
            assert_eq!(c["response"]["power"], false, "{c}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report: Value =
        serde_json::from_slice(&simulator.wait_with_output().unwrap().stdout).unwrap();
    assert!(report["readings"].as_u64().unwrap() >= 2, "{report}");
    assert_eq!(report["disconnects"], 0, "refused logins: {report}");
}
