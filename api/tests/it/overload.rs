//! Overload: three times what the server can persist (at least: HTTP batches offered
//! against those taken), for 30 s, over HTTP, MQTT and CoAP together. Writes are refused (HTTP 503 with Retry-After, CoAP 5.03), the heaviest MQTT
//! publisher is cut off, memory stays bounded, the breaker opens and closes again once the
//! load stops, a device command still gets through, and every acknowledged reading is stored.
//! And a broker backlog that fills: the publisher is held back, nothing it was acknowledged
//! is dropped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet as MqttPacket, QoS};
use serde_json::{json, Value};

use coap_lite::CoapOption;

use crate::crash::coap_post_answer;
use crate::mqtt_device::MqttDevice;
use crate::server::TestServer;

const LOAD: Duration = Duration::from_secs(30);
/// Resident memory the server stays under (README, "Overload"): its bounds are the WAL
/// queue, 50,000 buffered readings here, and the broker's backlog.
const RSS_BOUND_KB: u64 = 1024 * 1024;

#[derive(Default)]
struct Counts {
    http_ok: AtomicU64,
    http_503: AtomicU64,
    http_503_without_retry_after: AtomicU64,
    coap_ok: AtomicU64,
    coap_503: AtomicU64,
    coap_503_without_max_age: AtomicU64,
    mqtt_acked: AtomicU64,
    mqtt_cut_off: AtomicU64,
    /// MQTT 5 DISCONNECTs with reason 0x97 (quota exceeded).
    mqtt_quota_disconnects: AtomicU64,
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Batches of 500 readings, values numbered by writer; acknowledged values kept.
async fn http_writer(
    url: String,
    writer: usize,
    acked: Arc<Mutex<Vec<(usize, u64)>>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let client = reqwest::Client::new();
    let mut next = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let first = next;
        next += 500;
        let readings: Vec<Value> = (first..next)
            .map(|v| json!({"sensor": format!("ov-http-{writer}"), "variable": "seq", "value": v}))
            .collect();
        let r = client
            .post(format!("{url}/api/v1/write"))
            .json(&json!({ "readings": readings }))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                counts.http_ok.fetch_add(1, Ordering::Relaxed);
                acked
                    .lock()
                    .unwrap()
                    .extend((first..next).map(|v| (writer, v)));
            }
            503 => {
                counts.http_503.fetch_add(1, Ordering::Relaxed);
                if r.headers().get("retry-after").is_none() {
                    counts
                        .http_503_without_retry_after
                        .fetch_add(1, Ordering::Relaxed);
                }
                // An impatient client: back again at once, keeping the load up.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => panic!("write answered {other}: {}", r.text().await.unwrap()),
        }
    }
}

async fn coap_writer(
    addr: String,
    acked: Arc<Mutex<Vec<u64>>>,
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
) {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let answer = coap_post_answer(
            &udp,
            &addr,
            "/telemetry/ov-coap",
            seq,
            Duration::from_secs(2),
        )
        .await;
        let Some(answer) = answer else { continue };
        match answer.header.code.to_string().as_str() {
            "2.04" => {
                counts.coap_ok.fetch_add(1, Ordering::Relaxed);
                acked.lock().unwrap().push(seq);
            }
            "5.03" => {
                counts.coap_503.fetch_add(1, Ordering::Relaxed);
                if answer.get_option(CoapOption::MaxAge).is_none() {
                    counts
                        .coap_503_without_max_age
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            other => panic!("coap answered {other}"),
        }
    }
}

/// One heavy MQTT 5 publisher: QoS 1 arrays of 100 readings as fast as the broker takes them,
/// reconnecting when cut off (and counting the cut-offs that say why: quota exceeded).
async fn mqtt_publisher(mqtt5_addr: String, counts: Arc<Counts>, stop: Arc<AtomicBool>) {
    use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
    use rumqttc::v5::{ConnectionError, Event, StateError};
    let (host, port) = mqtt5_addr.rsplit_once(':').unwrap();
    let mut options = rumqttc::v5::MqttOptions::new("ov-mqtt", host, port.parse().unwrap());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 200);
    let counts_loop = Arc::clone(&counts);
    let stop_loop = Arc::clone(&stop);
    tokio::spawn(async move {
        while !stop_loop.load(Ordering::Relaxed) {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counts_loop.mqtt_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    if let ConnectionError::MqttState(StateError::ServerDisconnect {
                        reason_code: DisconnectReasonCode::QuotaExceeded,
                        ..
                    }) = e
                    {
                        counts_loop
                            .mqtt_quota_disconnects
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    counts_loop.mqtt_cut_off.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let readings: Vec<Value> = (seq..seq + 100)
            .map(|v| json!({"variable": "seq", "value": v}))
            .collect();
        seq += 100;
        let sent = tokio::time::timeout(
            Duration::from_secs(1),
            client.publish(
                "aemos/devices/ov-mqtt/telemetry",
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                Value::Array(readings).to_string(),
            ),
        )
        .await;
        if sent.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn summary(http: &reqwest::Client, server: &TestServer) -> Value {
    server.get_json(http, "/api/v1/metrics/queue/summary").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_sheds_cuts_off_and_recovers_losing_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    // What the server can persist: 50,000 buffered readings, persisted every 2 s (about 25,000
    // readings/s); the load offers several times that.
    let server = TestServer::start(
        dir.path(),
        &[
            "--max-buffered-rows",
            "50000",
            "--persist-interval",
            "2s",
            "--persist-rows",
            "100000000",
            "--breaker-stable",
            "1s",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let (status, _) = server
        .post(&http, "/api/v1/devices", &json!({"id": "ov-dev"}))
        .await;
    assert_eq!(status, 201);
    let mut device = MqttDevice::connect(&server, "ov-dev", &["commands"]).await;

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let http_acked: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let coap_acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut loads = Vec::new();
    for writer in 0..6 {
        loads.push(tokio::spawn(http_writer(
            server.url.clone(),
            writer,
            Arc::clone(&http_acked),
            Arc::clone(&counts),
            Arc::clone(&stop),
        )));
    }
    loads.push(tokio::spawn(coap_writer(
        server.coap_addr.clone(),
        Arc::clone(&coap_acked),
        Arc::clone(&counts),
        Arc::clone(&stop),
    )));
    loads.push(tokio::spawn(mqtt_publisher(
        server.mqtt5_addr.clone(),
        Arc::clone(&counts),
        Arc::clone(&stop),
    )));

    // During the load: the breaker's state, the memory, and a command halfway.
    let pid = server.child.id();
    let (mut states, mut peak_kb) = (HashSet::new(), 0);
    let started = tokio::time::Instant::now();
    let mut command = None;
    while started.elapsed() < LOAD {
        let s = summary(&http, &server).await;
        states.insert(s["circuitState"].as_str().unwrap_or_default().to_owned());
        peak_kb = peak_kb.max(rss_kb(pid));
        if command.is_none() && started.elapsed() > LOAD / 2 {
            let (status, body) = server
                .post(
                    &http,
                    "/api/v1/devices/ov-dev/commands",
                    &json!({"action": "setFanSpeed", "value": 4}),
                )
                .await;
            assert_eq!(status, 202, "a command refused under overload: {body}");
            let id = body["commandId"].as_str().unwrap().to_owned();
            assert_eq!(device.next_on("commands").await["commandId"], id);
            device.ack(&id, "ok").await;
            command = Some(id);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for load in loads {
        load.await.unwrap();
    }
    let id = command.expect("a command was sent");
    server
        .get_until(
            &http,
            &format!("/api/v1/devices/ov-dev/commands/{id}"),
            |c| c["status"] == "acknowledged",
        )
        .await;

    // Back to CLOSED by itself once the load is gone.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let s = summary(&http, &server).await;
        if s["circuitState"] == "CLOSED" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the breaker stays {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let c = &counts;
    eprintln!(
        "overload: HTTP {} ok / {} 503, CoAP {} ok / {} 5.03, MQTT {} acked / {} cut off ({} quota exceeded), states {states:?}, peak RSS {peak_kb} kB",
        c.http_ok.load(Ordering::Relaxed),
        c.http_503.load(Ordering::Relaxed),
        c.coap_ok.load(Ordering::Relaxed),
        c.coap_503.load(Ordering::Relaxed),
        c.mqtt_acked.load(Ordering::Relaxed),
        c.mqtt_cut_off.load(Ordering::Relaxed),
        c.mqtt_quota_disconnects.load(Ordering::Relaxed),
    );
    assert!(
        states.contains("OPEN"),
        "the breaker never opened: {states:?}"
    );
    assert!(c.http_503.load(Ordering::Relaxed) > 0, "no 503");
    assert_eq!(c.http_503_without_retry_after.load(Ordering::Relaxed), 0);
    assert!(c.http_ok.load(Ordering::Relaxed) > 0 && c.coap_ok.load(Ordering::Relaxed) > 0);
    // Three times the capacity at least: the readings offered over HTTP against those the
    // server took (what it can persist under this load, measured by the run itself).
    let (ok, refused) = (
        c.http_ok.load(Ordering::Relaxed),
        c.http_503.load(Ordering::Relaxed),
    );
    assert!(
        ok + refused >= 3 * ok,
        "offered {} HTTP batches for {ok} taken: less than 3x the capacity",
        ok + refused
    );
    assert!(c.coap_503.load(Ordering::Relaxed) > 0, "no CoAP 5.03");
    assert_eq!(c.coap_503_without_max_age.load(Ordering::Relaxed), 0);
    assert!(
        c.mqtt_quota_disconnects.load(Ordering::Relaxed) > 0,
        "the heavy MQTT 5 publisher was never told why it was cut off"
    );
    assert!(
        peak_kb < RSS_BOUND_KB,
        "resident memory reached {peak_kb} kB"
    );
    let metrics = server.metrics(&http).await;
    let value = |name: &str| counter(&metrics, name);
    assert!(
        value("mqtt_throttled_total") > 0,
        "the heavy publisher was never cut off"
    );
    assert_eq!(
        value("mqtt_dropped_publishes_total"),
        0,
        "acknowledged publishes dropped"
    );
    assert_eq!(value("mqtt_lost_readings_total"), 0);

    // Every acknowledged reading is stored.
    let stored = |sql: String| {
        let (server, http) = (&server, &http);
        async move {
            server
                .sql(http, &sql)
                .await
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["s"].as_str().unwrap_or_default().to_owned(),
                        r["v"].as_u64().unwrap(),
                    )
                })
                .collect::<HashSet<(String, u64)>>()
        }
    };
    let http_stored = stored("SELECT sensor AS s, CAST(value AS BIGINT) AS v FROM readings WHERE sensor LIKE 'ov-http-%'".into()).await;
    let missing = http_acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(w, v)| !http_stored.contains(&(format!("ov-http-{w}"), *v)))
        .count();
    assert_eq!(missing, 0, "acknowledged HTTP readings missing");
    let coap_stored = stored(
        "SELECT sensor AS s, CAST(value AS BIGINT) AS v FROM readings WHERE sensor = 'ov-coap'"
            .into(),
    )
    .await;
    let missing = coap_acked
        .lock()
        .unwrap()
        .iter()
        .filter(|v| !coap_stored.contains(&("ov-coap".to_owned(), **v)))
        .count();
    assert_eq!(missing, 0, "acknowledged CoAP readings missing");
    // The broker acknowledged on receipt; the ingest link may still be writing its backlog.
    let acked_publishes = c.mqtt_acked.load(Ordering::Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mqtt_distinct = loop {
        let n = server
            .sql(
                &http,
                "SELECT count(DISTINCT value) AS n FROM readings WHERE sensor = 'ov-mqtt'",
            )
            .await[0]["n"]
            .as_u64()
            .unwrap();
        if n >= 100 * acked_publishes || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        mqtt_distinct >= 100 * acked_publishes,
        "{acked_publishes} MQTT publishes acknowledged, {mqtt_distinct} readings stored"
    );
}

/// Counters of the Prometheus text by name (`aemos_` left off), 0 when absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("aemos_{name} ")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// A backlog that fills: while storage refuses writes (its buffer full until the next
/// persist), the ingest link's writes wait and the router's log of telemetry grows; at an
/// eighth of `--mqtt-backlog-bytes` the broker stops reading from the publisher, so its QoS 1
/// publishes wait for their PUBACKs instead of being acknowledged and then dropped. Once
/// persistence frees the buffer, every publish is acknowledged and stored, none dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_mqtt_backlog_holds_publishers_back_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &[
            "--max-buffered-rows",
            "1500",
            "--persist-interval",
            "3s",
            "--persist-rows",
            "100000000",
            "--mqtt-max-payload-bytes",
            "2048",
            "--mqtt-backlog-bytes",
            "8192",
            "--breaker-open-at",
            "1",
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let (host, port) = server.mqtt_addr.rsplit_once(':').unwrap();
    let mut options = MqttOptions::new("bl-mqtt", host, port.parse().unwrap());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_inflight(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let counting = Arc::clone(&acked);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(MqttPacket::PubAck(_)) = event {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let write = |n: u64| {
        let readings: Vec<Value> = (0..n)
            .map(|v| json!({"sensor": "bl-http", "variable": "seq", "value": v}))
            .collect();
        let request = http
            .post(format!("{}/api/v1/write", server.url))
            .json(&json!({ "readings": readings }));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Fill the buffer (health says `full`), then 2,000 publishes (about 100 KB against a
    // backlog of 8 KiB): the broker holds them back until persistence frees the buffer (1,500
    // readings a round, every 3 s).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        while write(1).await != 503 {
            write(100).await;
            assert!(
                tokio::time::Instant::now() < deadline,
                "the buffer never filled"
            );
        }
        let health = server.get_json(&http, "/api/v1/health").await;
        if health["components"]["buffer"]["status"] == "full" {
            assert_eq!(health["status"], "degraded", "{health}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{health}");
    }
    let published = 2000;
    for seq in 0..published {
        client
            .publish(
                "aemos/devices/bl-mqtt/telemetry",
                QoS::AtLeastOnce,
                false,
                json!({ "seq": seq }).to_string(),
            )
            .await
            .unwrap();
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.load(Ordering::Relaxed) < published {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {published} publishes acknowledged",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let stored = server
            .sql(
                &http,
                "SELECT count(DISTINCT value) AS n FROM readings WHERE sensor = 'bl-mqtt' AND variable = 'seq'",
            )
            .await[0]["n"]
            .as_u64()
            .unwrap();
        if stored == published {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{published} acknowledged, {stored} stored"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = server.metrics(&http).await;
    assert_eq!(counter(&metrics, "mqtt_dropped_publishes_total"), 0);
    assert_eq!(counter(&metrics, "mqtt_lost_readings_total"), 0);
    let mqtt = &server.get_json(&http, "/api/v1/health").await["components"]["mqtt"];
    assert_eq!(mqtt["droppedPublishes"], 0, "{mqtt}");
}
