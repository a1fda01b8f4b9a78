//! Each subcommand of `aemos-loadgen`, a second or two against a real server: what it counted
//! as acknowledged is what the server stored, its latencies are one per acknowledgement, and
//! the JSON report and the printed table agree.

use serde_json::Value;

use crate::server::{loadgen, Server};

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no figure {name} in {report}"))
}

fn latencies(report: &Value, name: &str) -> u64 {
    report["latency_ms"][name]["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("no latency {name} in {report}"))
}

/// Every HTTP format and the single-reading route: each acknowledged reading is stored, once.
/// CoAP: each `2.04` is its message's readings, stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_coap_loads_report_what_the_server_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
    server.ready(&http).await;
    let pid = server.pid().to_string();
    let mut acknowledged = 0.0;
    for format in ["json", "ndjson", "lp", "arrow"] {
        // Distinct seeds: distinct readings in each run.
        let seed = acknowledged.to_string();
        let r = loadgen(&[
            "--seed",
            &seed,
            "http",
            "--url",
            &server.url,
            "--format",
            format,
            "--connections",
            "2",
            "--batch",
            "50",
            "--sensors",
            "20",
            "--variables",
            "2",
            "--bodies",
            "8",
            "--seconds",
            "1",
            "--server-pid",
            &pid,
        ])
        .await;
        assert_eq!(r["params"]["format"], format);
        assert_eq!(figure(&r, "errors"), 0.0, "{r}");
        let readings = figure(&r, "readings");
        assert!(readings >= 50.0, "{r}");
        assert_eq!(readings, 50.0 * figure(&r, "requests"), "{r}");
        assert_eq!(latencies(&r, "request") as f64, figure(&r, "requests"));
        assert!(figure(&r, "server_cpu_us_per_reading") > 0.0, "{r}");
        acknowledged += readings;
        assert_eq!(
            server.count(&http, "sensor LIKE 'sensor-%'").await as f64,
            acknowledged,
            "after {format}"
        );
    }

    let r = loadgen(&[
        "http",
        "--url",
        &server.url,
        "--endpoint",
        "datastream",
        "--register-device",
        "lg-device",
        "--sensors",
        "3",
        "--connections",
        "2",
        "--seconds",
        "1",
    ])
    .await;
    assert_eq!(figure(&r, "errors"), 0.0, "{r}");
    assert!(figure(&r, "readings") > 0.0, "{r}");
    assert_eq!(
        server.count(&http, "device = 'lg-device'").await as f64,
        figure(&r, "readings")
    );

    let r = loadgen(&[
        "coap",
        "--coap",
        &server.coap,
        "--devices",
        "3",
        "--batch",
        "4",
        "--seconds",
        "1",
    ])
    .await;
    assert_eq!(figure(&r, "errors"), 0.0, "{r}");
    assert!(figure(&r, "readings") >= 4.0, "{r}");
    assert_eq!(latencies(&r, "request") as f64, figure(&r, "requests"));
    assert_eq!(
        server.count(&http, "device LIKE 'mq-%'").await as f64,
        figure(&r, "readings")
    );

    // A combination the endpoint cannot take is refused before any load, with the reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aemos-loadgen"))
        .args([
            "http",
            "--url",
            &server.url,
            "--endpoint",
            "datastream",
            "--format",
            "lp",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--endpoint datastream takes --format json"),
        "{stderr}"
    );
}

/// MQTT publishes (random and purifiers, QoS 1), idle devices held, and notification latency
/// over MQTT, CoAP Observe and Socket.IO.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_hold_and_notify_loads_report_what_the_server_did() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
    server.ready(&http).await;
    let pid = server.pid().to_string();

    let r = loadgen(&[
        "mqtt",
        "--mqtt",
        &server.mqtt,
        "--url",
        &server.url,
        "--devices",
        "3",
        "--batch",
        "5",
        "--inflight",
        "4",
        "--seconds",
        "1",
    ])
    .await;
    assert!(figure(&r, "durable_readings") > 0.0, "{r}");
    assert!(latencies(&r, "publish_to_puback") > 0, "{r}");
    assert_eq!(figure(&r, "server_dropped"), 0.0, "{r}");

    // Four purifiers every 200 ms for 2 s: seven values in each message, about ten messages
    // each, every one acknowledged and stored.
    let r = loadgen(&[
        "mqtt",
        "--mqtt",
        &server.mqtt,
        "--url",
        &server.url,
        "--workload",
        "purifiers",
        "--devices",
        "4",
        "--interval",
        "200ms",
        "--seconds",
        "2",
    ])
    .await;
    assert_eq!(r["params"]["readings_per_publish"], 7);
    let publishes = figure(&r, "publishes_per_sec") * figure(&r, "seconds");
    assert!((30.0..=50.0).contains(&publishes), "paced at 20/s: {r}");
    // Stored after the window too: wait for the last acknowledged publishes.
    let mut stored = 0;
    for _ in 0..50 {
        stored = server.count(&http, "device LIKE 'purifier-%'").await;
        if stored > 0 && stored % 7 == 0 && stored >= publishes as u64 * 7 - 7 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(stored % 7, 0, "whole messages: {stored}");
    assert!(stored >= 28, "every purifier sent: {stored}");
    let variables = server
        .count(&http, "device = 'purifier-00000' AND variable = 'pm25'")
        .await;
    assert!(variables >= 1, "pm25 among the purifier's variables");

    let r = loadgen(&[
        "hold",
        "--mqtt",
        &server.mqtt,
        "--connections",
        "20",
        "--concurrency",
        "10",
        "--keep-alive",
        "5",
        "--seconds",
        "1",
        "--subscribe",
        "--rounds",
        "2",
        "--server-pid",
        &pid,
    ])
    .await;
    assert_eq!(figure(&r, "connected"), 20.0, "{r}");
    assert_eq!(figure(&r, "alive_at_end"), 20.0, "{r}");
    assert_eq!(
        figure(&r, "round2_connected"),
        20.0,
        "a reconnect loop: {r}"
    );
    assert_eq!(figure(&r, "round2_alive_at_end"), 20.0, "{r}");
    assert!(figure(&r, "server_bytes_per_connection").is_finite(), "{r}");

    let r = loadgen(&[
        "notify",
        "--url",
        &server.url,
        "--mqtt",
        &server.mqtt,
        "--coap",
        &server.coap,
        "--devices",
        "3",
        "--rate",
        "300",
        "--flips",
        "10",
        "--seconds",
        "2",
        "--coap-observers",
        "3",
        "--server-pid",
        &pid,
    ])
    .await;
    let flips = figure(&r, "flips") as u64;
    assert!(flips >= 10, "{r}");
    // Every flip notified, over MQTT and Socket.IO; CoAP Observe may skip a state that a newer
    // one replaced before it was sent (RFC 7641 §4.5.2).
    assert_eq!(latencies(&r, "mqtt"), flips, "{r}");
    assert_eq!(latencies(&r, "socketio"), flips, "{r}");
    let coap = latencies(&r, "coap");
    assert!((1..=flips).contains(&coap), "{r}");
}

/// Commands posted, obeyed and acknowledged by the load's own MQTT devices: every one it counts
/// is acknowledged in the server's audit log, each with one latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_load_reports_what_the_server_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let http = reqwest::Client::new();
    server.ready(&http).await;
    let r = loadgen(&[
        "commands",
        "--url",
        &server.url,
        "--mqtt",
        &server.mqtt,
        "--devices",
        "4",
        "--concurrency",
        "2",
        "--seconds",
        "1",
        "--telemetry-interval",
        "200ms",
    ])
    .await;
    assert_eq!(figure(&r, "errors"), 0.0, "{r}");
    let acked = figure(&r, "acked_commands");
    assert!(acked >= 4.0, "{r}");
    assert_eq!(latencies(&r, "api_call_to_device_ack") as f64, acked, "{r}");
    assert!(latencies(&r, "api_202") as f64 >= acked, "{r}");
    // The server closes each acknowledged command once it journaled the ack.
    let mut closed = 0;
    for _ in 0..50 {
        closed = server
            .count_in(&http, "commands", "status = 'acknowledged'")
            .await;
        if closed as f64 >= acked {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        closed as f64 >= acked,
        "{closed} acknowledged in the audit log: {r}"
    );
    assert!(figure(&r, "server_ack_p99_le_ms") > 0.0, "{r}");
    assert!(
        server.count(&http, "device LIKE 'cmd-%'").await > 0,
        "telemetry stored"
    );
}
