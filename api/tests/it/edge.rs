//! The device edge end to end, with clients nobody here wrote: a rule registered over HTTP,
//! readings sent over MQTT (rumqttc) and CoAP (the `coap` crate), and the notification
//! received over MQTT, CoAP Observe and Socket.IO (npm's socket.io-client 4.x, run by node).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::server::TestServer;

const WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn create_chain(client: &reqwest::Client, server: &TestServer, chain: Value) {
    let (status, body) = server.post(client, "/api/v1/rulechains", &chain).await;
    assert_eq!(status, 201, "{body}");
}

pub(crate) fn hot_chain(device: &str) -> Value {
    json!({"id": format!("hot-{device}"), "nodes": [
        {"type": "filter", "sensor": device, "condition": "temperature > 25"},
        {"type": "action", "action": "notify", "device": device,
         "state": {"name": "alert", "value": "hot", "clear": "normal"}}]})
}

/// An MQTT client on the server's broker, its event loop driven by a task that forwards
/// publishes.
pub(crate) async fn mqtt_client(
    server: &TestServer,
    id: &str,
) -> (
    AsyncClient,
    tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    let (host, port) = server.mqtt_addr.rsplit_once(':').unwrap();
    let mut options = MqttOptions::new(id, host, port.parse().unwrap());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, eventloop) = AsyncClient::new(options, 100);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(drive(eventloop, tx));
    (client, rx)
}

async fn drive(mut eventloop: EventLoop, tx: tokio::sync::mpsc::UnboundedSender<(String, Value)>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                if tx.send((p.topic.clone(), body)).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(crate) async fn next_on(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
    topic: &str,
) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let (t, v) = rx.recv().await.expect("mqtt client running");
            if t == topic {
                return v;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("nothing on {topic} within {WAIT:?}"))
}

/// `node sio-listen.js`: the stock Socket.IO client, its events as JSON lines.
pub(crate) struct SocketIoListener {
    child: Child,
    events: mpsc::Receiver<Value>,
    /// Events received while waiting for another name, kept in order.
    skipped: std::cell::RefCell<std::collections::VecDeque<Value>>,
}

impl SocketIoListener {
    pub(crate) fn start(server: &TestServer, devices: &str) -> Self {
        Self::start_with(&server.url, devices, &[], None)
    }

    /// With more of the script's options (`--token T`) and, for TLS, the CA certificate file.
    pub(crate) fn start_with(url: &str, devices: &str, options: &[&str], ca: Option<&str>) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sio-listen.js");
        let mut command = Command::new("node");
        if let Some(ca) = ca {
            command.env("NODE_EXTRA_CA_CERTS", ca);
        }
        let mut child = command
            .arg(script)
            .arg(url)
            .arg(devices)
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node and api/tests/clients installed (npm ci --prefix api/tests/clients)");
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            child,
            events,
            skipped: Default::default(),
        }
    }

    /// The next event named `name`; events of other names stay for their own `next`.
    pub(crate) fn next(&self, name: &str) -> Value {
        let mut skipped = self.skipped.borrow_mut();
        if let Some(i) = skipped.iter().position(|e| e["event"] == name) {
            return skipped.remove(i).expect("present")["data"].clone();
        }
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let e = self
                .events
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no Socket.IO {name} event within {WAIT:?}"));
            if e["event"] == name {
                return e["data"].clone();
            }
            skipped.push_back(e);
        }
    }
}

impl Drop for SocketIoListener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn coap_url(server: &TestServer, path: &str) -> String {
    format!("coap://{}{path}", server.coap_addr)
}

pub(crate) async fn coap_post(server: &TestServer, path: &str, body: &str) -> (String, Value) {
    let r = coap::UdpCoAPClient::post_with_timeout(
        &coap_url(server, path),
        body.as_bytes().to_vec(),
        Duration::from_secs(5),
    )
    .await
    .expect("coap answer");
    let status = format!("{:?}", r.get_status());
    (
        status,
        serde_json::from_slice(&r.message.payload).unwrap_or(Value::Null),
    )
}

fn assert_notification(n: &Value, device: &str, new: &str, seq: u64) {
    assert_eq!(n["type"], "device-state-change", "{n}");
    assert_eq!(n["deviceUuid"], device, "{n}");
    assert_eq!(n["ruleChainId"], format!("hot-{device}"), "{n}");
    assert_eq!(n["metadata"]["stateName"], "alert", "{n}");
    assert_eq!(n["metadata"]["newValue"], new, "{n}");
    assert_eq!(n["seq"], seq, "{n}");
    assert!(n["timestamp"].as_str().unwrap().ends_with('Z'), "{n}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_reaches_mqtt_coap_and_socketio() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--workers", "2"], &[]);
    let http = reqwest::Client::new();
    create_chain(&http, &server, hot_chain("d-1")).await;

    let sio = SocketIoListener::start(&server, "d-1");
    assert_eq!(sio.next("subscribed")["rooms"], json!(["device-uuid-d-1"]));
    assert!(sio.next("refused")["error"]
        .as_str()
        .unwrap()
        .contains("not a device room"));

    let (mqtt, mut inbox) = mqtt_client(&server, "watcher").await;
    mqtt.subscribe("aemos/devices/d-1/notifications", QoS::AtLeastOnce)
        .await
        .unwrap();
    mqtt.subscribe("aemos/devices/d-1/errors", QoS::AtLeastOnce)
        .await
        .unwrap();

    let (coap_tx, mut coap_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let observer = coap::UdpCoAPClient::new_udp(server.coap_addr.as_str())
        .await
        .unwrap();
    let _observation = observer
        .observe("/devices/d-1/notifications", move |packet| {
            if let Ok(v) = serde_json::from_slice::<Value>(&packet.payload) {
                if v.get("seq").is_some() {
                    let _ = coap_tx.send(v);
                }
            }
        })
        .await
        .unwrap();

    // A device publishes over MQTT: the chain becomes active.
    let (device, _device_inbox) = mqtt_client(&server, "d-1").await;
    device
        .publish(
            "aemos/devices/d-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 30, "humidity": 40}"#,
        )
        .await
        .unwrap();
    let over_mqtt = next_on(&mut inbox, "aemos/devices/d-1/notifications").await;
    assert_notification(&over_mqtt, "d-1", "hot", 1);
    assert_eq!(over_mqtt["metadata"]["oldValue"], "normal");
    assert_eq!(over_mqtt["metadata"]["values"]["temperature"], 30.0);
    assert_notification(&sio.next("device-state-change"), "d-1", "hot", 1);
    let over_coap = tokio::time::timeout(WAIT, coap_rx.recv())
        .await
        .expect("coap notification")
        .unwrap();
    assert_notification(&over_coap, "d-1", "hot", 1);
    let ds = sio.next("datastream");
    assert_eq!(
        (ds["sensor"].as_str(), ds["device"].as_str()),
        (Some("d-1"), Some("d-1"))
    );

    // The same device over CoAP: the chain clears.
    let (status, body) = coap_post(&server, "/telemetry/d-1", r#"{"temperature": 20}"#).await;
    assert_eq!(status, "Changed", "{body}");
    assert_eq!(body["accepted"], 1);
    assert_notification(
        &next_on(&mut inbox, "aemos/devices/d-1/notifications").await,
        "d-1",
        "normal",
        2,
    );
    assert_notification(&sio.next("device-state-change"), "d-1", "normal", 2);
    let over_coap = tokio::time::timeout(WAIT, coap_rx.recv())
        .await
        .expect("coap notification")
        .unwrap();
    assert_notification(&over_coap, "d-1", "normal", 2);

    // A bad publish is refused on the errors topic and stores nothing.
    device
        .publish(
            "aemos/devices/d-1/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": "hot"}"#,
        )
        .await
        .unwrap();
    let error = next_on(&mut inbox, "aemos/devices/d-1/errors").await;
    assert!(
        error["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("temperature"),
        "{error}"
    );
    // A bad CoAP body gets 4.00 with the reason.
    let (status, body) = coap_post(&server, "/telemetry/d-1", "{not json").await;
    assert_eq!(status, "BadRequest", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    // Replay and SQL.
    let replay: Value = http
        .get(format!(
            "{}/api/v1/devices/d-1/notifications?since_seq=1",
            server.url
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replay["lastSeq"], 2, "{replay}");
    assert_eq!(
        replay["notifications"].as_array().unwrap().len(),
        1,
        "{replay}"
    );
    assert_notification(&replay["notifications"][0], "d-1", "normal", 2);
    let rows = server
        .sql(
            &http,
            "SELECT seq, type FROM notifications WHERE device = 'd-1' ORDER BY seq",
        )
        .await;
    assert_eq!(
        rows,
        json!([{"seq": 1, "type": "device-state-change"}, {"seq": 2, "type": "device-state-change"}])
    );
    let rows = server
        .sql(&http, "SELECT value FROM readings WHERE device = 'd-1' AND variable = 'temperature' ORDER BY time")
        .await;
    assert_eq!(rows, json!([{"value": 30.0}, {"value": 20.0}]));

    // The retained state greets a late MQTT subscriber.
    let (late, mut late_inbox) = mqtt_client(&server, "late").await;
    late.subscribe("aemos/devices/d-1/notifications", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_notification(
        &next_on(&mut late_inbox, "aemos/devices/d-1/notifications").await,
        "d-1",
        "normal",
        2,
    );

    // The latency histograms saw the syncs, the queries and the notifications.
    let metrics = server.metrics(&http).await;
    let total = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("aemos_{name} ")))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("aemos_{name} in {metrics}"))
    };
    let count = |name: &str| total(&format!("{name}_count"));
    assert!(count("wal_sync_seconds") >= 2);
    assert!(count("query_seconds") >= 2);
    assert_eq!(count("notification_seconds"), 2);
    assert!(count("engine_feed_seconds") >= 2);
    // Ingestion by protocol: the MQTT publish (two readings) and the CoAP POST (one).
    let ingested = |protocol: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("aemos_ingested_readings_total{"))
            .find(|l| l.contains(&format!("protocol=\"{protocol}\"")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("ingested_readings_total for {protocol} in {metrics}"))
    };
    assert_eq!(ingested("mqtt"), 2);
    assert_eq!(ingested("coap"), 1);
    // The engine took in each of them once, beside one device-seen mark per device and commit.
    let all_ingested: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("aemos_ingested_readings_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    let marks = total("engine_presence_marks_total");
    assert!(marks >= 1, "{metrics}");
    assert_eq!(
        total("engine_readings_total") - marks,
        all_ingested,
        "{metrics}"
    );

    // Health sees CoAP and the notifier: each channel's queue drained, the two delivered.
    let health = server.get_json(&http, "/api/v1/health").await;
    let components = &health["components"];
    assert_eq!(components["coap"]["status"], "ok", "{health}");
    assert!(
        components["coap"]["requests"].as_u64().unwrap() >= 2,
        "{health}"
    );
    assert_eq!(components["notifier"]["status"], "ok", "{health}");
    assert_eq!(components["notifier"]["delivered"], 2, "{health}");
    for channel in ["socketio", "mqtt", "coap"] {
        assert_eq!(
            components["notifier"]["channels"][channel]["dropped"], 0,
            "{channel}: {health}"
        );
    }
}

/// A confirmable POST sent twice with one message id (a retransmission) is answered twice
/// and stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_coap_post_is_stored_once() {
    use coap_lite::{CoapRequest, MessageType, RequestType};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--workers", "2"], &[]);
    let http = reqwest::Client::new();
    let mut request: CoapRequest<std::net::SocketAddr> = CoapRequest::new();
    request.set_method(RequestType::Post);
    request.set_path("/telemetry/d-5");
    request.message.header.set_type(MessageType::Confirmable);
    request.message.header.message_id = 777;
    request.message.set_token(vec![1, 2, 3, 4]);
    request.message.payload = br#"{"temperature": 21.5}"#.to_vec();
    let bytes = request.message.to_bytes().unwrap();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..2 {
        udp.send_to(&bytes, &server.coap_addr).await.unwrap();
        let answer = receive_coap(&udp, &mut [0u8; 1500]).await;
        assert_eq!(answer.header.get_type(), MessageType::Acknowledgement);
        assert_eq!(answer.header.message_id, 777);
        answers.push((answer.header.code.to_string(), answer.payload));
    }
    assert_eq!(answers[0], answers[1], "the same answer twice");
    assert_eq!(answers[0].0, "2.04");
    let rows = server
        .sql(
            &http,
            "SELECT count(*) AS n FROM readings WHERE device = 'd-5'",
        )
        .await;
    assert_eq!(rows, json!([{"n": 1}]));
    // The same message id with another reading (a client whose ids came round) is a new
    // request: stored, not answered 2.04 from the cache.
    request.message.payload = br#"{"temperature": 22.5}"#.to_vec();
    udp.send_to(&request.message.to_bytes().unwrap(), &server.coap_addr)
        .await
        .unwrap();
    let answer = receive_coap(&udp, &mut [0u8; 1500]).await;
    assert_eq!(answer.header.code.to_string(), "2.04");
    let rows = server
        .sql(
            &http,
            "SELECT count(*) AS n FROM readings WHERE device = 'd-5'",
        )
        .await;
    assert_eq!(rows, json!([{"n": 2}]));
}

/// A CoAP POST refused for overload is `5.03` with Max-Age 1 (when to retry, RFC 7252
/// §5.9.3.4), as HTTP's `503` carries `Retry-After: 1`; the refused reading is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_coap_post_is_5_03_with_max_age() {
    use coap_lite::{CoapOption, CoapRequest, MessageType, RequestType};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--max-buffered-rows", "1", "--persist-interval", "1h"],
        &[],
    );
    let http = reqwest::Client::new();
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut answers = Vec::new();
    for id in [901u16, 902] {
        let mut request: CoapRequest<std::net::SocketAddr> = CoapRequest::new();
        request.set_method(RequestType::Post);
        request.set_path("/telemetry/d-6");
        request.message.header.set_type(MessageType::Confirmable);
        request.message.header.message_id = id;
        request.message.payload = br#"{"temperature": 21.5}"#.to_vec();
        udp.send_to(&request.message.to_bytes().unwrap(), &server.coap_addr)
            .await
            .unwrap();
        answers.push(receive_coap(&udp, &mut [0u8; 1500]).await);
    }
    assert_eq!(answers[0].header.code.to_string(), "2.04");
    assert!(answers[0].get_option(CoapOption::MaxAge).is_none());
    assert_eq!(answers[1].header.code.to_string(), "5.03");
    let max_age = answers[1].get_option(CoapOption::MaxAge).expect("Max-Age");
    assert_eq!(max_age.front(), Some(&vec![1u8]));
    let reason: Value = serde_json::from_slice(&answers[1].payload).unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("persistence"),
        "{reason}"
    );
    let rows = server
        .sql(
            &http,
            "SELECT count(*) AS n FROM readings WHERE device = 'd-6'",
        )
        .await;
    assert_eq!(rows, json!([{"n": 1}]));
}

/// A confirmable notification nobody acknowledges is sent again with backoff (RFC 7252 §4.2:
/// here 100 ms, 200, 400, 800), four times, and then the observer is removed (RFC 7641 §4.5).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_coap_notification_is_retransmitted_then_the_observer_goes() {
    use coap_lite::{CoapRequest, MessageType, ObserveOption, RequestType};

    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(dir.path(), &["--coap-ack-timeout", "100ms"], &[]);
    let http = reqwest::Client::new();
    create_chain(&http, &server, hot_chain("d-7")).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut request: CoapRequest<std::net::SocketAddr> = CoapRequest::new();
    request.set_method(RequestType::Get);
    request.set_path("/devices/d-7/notifications");
    request.set_observe_flag(ObserveOption::Register);
    request.message.header.set_type(MessageType::Confirmable);
    request.message.header.message_id = 4242;
    request.message.set_token(vec![7, 7]);
    udp.send_to(&request.message.to_bytes().unwrap(), &server.coap_addr)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let registered = receive_coap(&udp, &mut buf).await;
    assert_eq!(registered.header.message_id, 4242);
    assert!(registered.get_observe_value().is_some(), "observing");

    let (status, _) = server
        .post(
            &http,
            "/api/v1/write",
            &json!({"readings": [{"sensor": "d-7", "variable": "temperature", "value": 30}]}),
        )
        .await;
    assert_eq!(status, 200);
    // The notification, then the same message four more times, never acknowledged.
    let mut sends = Vec::new();
    for _ in 0..5 {
        let n = receive_coap(&udp, &mut buf).await;
        assert_eq!(n.header.get_type(), MessageType::Confirmable);
        sends.push((std::time::Instant::now(), n.header.message_id, n.payload));
    }
    assert!(sends.iter().all(|s| s.1 == sends[0].1 && s.2 == sends[0].2));
    let gaps: Vec<Duration> = sends.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0], "the timeout doubles: {gaps:?}");
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(3), udp.recv_from(&mut buf))
            .await
            .is_err(),
        "a sixth send"
    );
    let metrics = server.metrics(&http).await;
    for line in [
        "coap_retransmissions_total 4",
        "coap_observers_timed_out_total 1",
        "coap_observers 0",
    ] {
        assert!(
            metrics.lines().any(|l| l.ends_with(line)),
            "{line} in {metrics}"
        );
    }
}

async fn receive_coap(udp: &tokio::net::UdpSocket, buf: &mut [u8; 1500]) -> coap_lite::Packet {
    let (n, _) = tokio::time::timeout(WAIT, udp.recv_from(buf))
        .await
        .expect("a datagram")
        .unwrap();
    coap_lite::Packet::from_bytes(&buf[..n]).unwrap()
}
