//! Rule chains end to end against the real binary: chains applied with `aemos chains apply`,
//! readings over HTTP, firings in `rule_firings`; then SIGKILL and restart: the chains come back
//! from storage, the engine's state (latest values, a window) is rebuilt from storage before
//! the server listens, nothing is recorded twice, and the next reading clears as it should.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::TestServer;

const CHAINS: &str = r#"[
  {"id": "hot", "nodes": [
     {"type": "filter", "sensor": "s-1", "condition": "temperature > 25 AND humidity > 60"},
     {"type": "action", "action": "notify", "device": "d-1",
      "state": {"name": "alert", "value": "hot", "clear": "normal"}}]},
  {"id": "warm-hour", "nodes": [
     {"type": "filter", "sensor": "s-2", "condition": "avg(temperature, '1h') > 20"}]}
]"#;

async fn write(client: &reqwest::Client, server: &TestServer, readings: Value) {
    let r = client
        .post(format!("{}/api/v1/write", server.url))
        .json(&json!({ "readings": readings }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
}

/// `rule_firings` once it has `n` rows (the log is written by its own thread).
async fn firings(client: &reqwest::Client, server: &TestServer, n: usize) -> Vec<Value> {
    let sql = "SELECT rule_chain, active, kind FROM rule_firings ORDER BY time, rule_chain";
    for _ in 0..300 {
        let rows = server.sql(client, sql).await;
        if rows.as_array().is_some_and(|r| r.len() >= n) {
            return rows.as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "rule_firings never reached {n} rows: {}",
        server.sql(client, sql).await
    );
}

async fn chains(client: &reqwest::Client, server: &TestServer) -> Value {
    let r = client
        .get(format!("{}/api/v1/rulechains", server.url))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chains_and_engine_state_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--persist-interval", "200ms", "--workers", "2"];
    let mut server = TestServer::start(dir.path(), &flags, &[]);
    let client = reqwest::Client::new();

    let file = dir.path().join("chains.json");
    std::fs::write(&file, CHAINS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aemos"))
        .args(["chains", "apply"])
        .arg(&file)
        .args(["--url", &server.url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hot: created\nwarm-hour: created\n"
    );

    write(
        &client,
        &server,
        json!([
            {"sensor": "s-1", "variable": "temperature", "value": 30},
            {"sensor": "s-1", "variable": "humidity", "value": 70}
        ]),
    )
    .await;
    write(
        &client,
        &server,
        json!([{"sensor": "s-2", "variable": "temperature", "value": 26}]),
    )
    .await;
    let rows = firings(&client, &server, 2).await;
    assert!(
        rows.iter()
            .all(|r| r["active"] == true && r["kind"] == "activated"),
        "{rows:?}"
    );
    // Part of it persisted to Parquet, part only in the WAL.
    tokio::time::sleep(Duration::from_millis(400)).await;
    write(
        &client,
        &server,
        json!([{"sensor": "s-2", "variable": "temperature", "value": 24}]),
    )
    .await;

    server.kill9();
    let server = TestServer::start(dir.path(), &flags, &[]);
    let listed = chains(&client, &server).await;
    let states: Vec<(String, bool)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["status"]["active"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![("hot".to_owned(), true), ("warm-hour".to_owned(), true)]
    );
    let window_avg = &listed[1]["status"]["values"]["avg(temperature, 3600s)"];
    assert_eq!(
        window_avg,
        &json!(25.0),
        "the window came back from storage: {listed}"
    );
    assert_eq!(
        firings(&client, &server, 2).await.len(),
        2,
        "nothing recorded twice"
    );
    // The notification state came back from the firing log: retained again on MQTT, the last
    // one on CoAP, and numbered on from where it was.
    let (mqtt, mut inbox) = crate::edge::mqtt_client(&server, "after-restart").await;
    mqtt.subscribe("aemos/devices/d-1/notifications", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let retained = crate::edge::next_on(&mut inbox, "aemos/devices/d-1/notifications").await;
    assert_eq!(
        (
            retained["seq"].as_u64(),
            retained["metadata"]["newValue"].as_str()
        ),
        (Some(1), Some("hot")),
        "{retained}"
    );
    let last = coap::UdpCoAPClient::get_with_timeout(
        &format!("coap://{}/devices/d-1/notifications", server.coap_addr),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let last: Value = serde_json::from_slice(&last.message.payload).unwrap();
    assert_eq!(last["seq"], 1, "{last}");

    // The rebuilt latest values are the ones the next reading is judged against.
    write(
        &client,
        &server,
        json!([{"sensor": "s-1", "variable": "humidity", "value": 50}]),
    )
    .await;
    let rows = firings(&client, &server, 3).await;
    assert_eq!(
        rows[2],
        json!({"rule_chain": "hot", "active": false, "kind": "cleared"})
    );
    let cleared = crate::edge::next_on(&mut inbox, "aemos/devices/d-1/notifications").await;
    assert_eq!(
        (
            cleared["seq"].as_u64(),
            cleared["metadata"]["newValue"].as_str()
        ),
        (Some(2), Some("normal")),
        "{cleared}"
    );
}
