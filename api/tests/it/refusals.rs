//! Refused readings are counted by protocol and reason (`aemos_readings_rejected_total`), over
//! HTTP (batches and the single reading), MQTT and CoAP.

use std::collections::BTreeMap;

use rumqttc::QoS;
use serde_json::json;

use crate::edge::{coap_post, mqtt_client, next_on};
use crate::server::TestServer;

/// The non-zero `aemos_readings_rejected_total` series: `(protocol, reason)` to count.
fn rejected(metrics: &str) -> BTreeMap<(String, String), u64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("aemos_readings_rejected_total{"))
        .filter_map(|l| {
            let (labels, value) = l.split_once("} ")?;
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
            };
            let n: u64 = value.trim().parse().ok()?;
            (n > 0).then_some(((label("protocol")?, label("reason")?), n))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_readings_are_counted_by_protocol_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &[], &[]);
    let http = reqwest::Client::new();
    let now = chrono::Utc::now().timestamp_millis();
    let (day, hour) = (86_400_000i64, 3_600_000i64);
    // HTTP: a reading without a value, one beyond the retention (90 days), one more than
    // `--max-future` (1 h) ahead; and a single reading with an empty sensor name.
    let (status, body) = server
        .post(
            &http,
            "/api/v1/write",
            &json!([
                {"sensor": "r-http", "variable": "v"},
                {"sensor": "r-http", "variable": "v", "value": 1, "time": now - 91 * day},
                {"sensor": "r-http", "variable": "v", "value": 1, "time": now + 2 * hour},
                {"sensor": "r-http", "variable": "v", "value": 1},
            ]),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .post(
            &http,
            "/api/v1/datastreams/token",
            &json!({"sensor": "", "variableName": "v", "value": 1}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // MQTT: a value that is not a number; the refusal comes back on the errors topic.
    let (client, mut inbox) = mqtt_client(&server, "r-mqtt-watch").await;
    client
        .subscribe("aemos/devices/r-mqtt/errors", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Subscribed once a message of our own comes back on the topic.
    client
        .publish(
            "aemos/devices/r-mqtt/errors",
            QoS::AtLeastOnce,
            false,
            r#"{"probe": true}"#,
        )
        .await
        .unwrap();
    assert_eq!(
        next_on(&mut inbox, "aemos/devices/r-mqtt/errors").await["probe"],
        true
    );
    client
        .publish(
            "aemos/devices/r-mqtt/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"t": "warm"}"#,
        )
        .await
        .unwrap();
    let refusal = next_on(&mut inbox, "aemos/devices/r-mqtt/errors").await;
    assert!(refusal["error"].is_string(), "{refusal}");
    // CoAP: a reading two hours ahead.
    let (status, body) = coap_post(
        &server,
        "/telemetry/r-coap",
        &json!([{"variable": "v", "value": 1, "time": now + 2 * hour}]).to_string(),
    )
    .await;
    assert_eq!(status, "BadRequest", "{body}");

    let got = rejected(&server.metrics(&http).await);
    let want: BTreeMap<(String, String), u64> = [
        ("http", "malformed"),
        ("http", "retention"),
        ("http", "future"),
        ("http", "invalid"),
        ("mqtt", "malformed"),
        ("coap", "future"),
    ]
    .into_iter()
    .map(|(p, r)| ((p.to_owned(), r.to_owned()), 1))
    .collect();
    assert_eq!(got, want);
}
