//! aemos as a client of a real Mosquitto (Debian `mosquitto`, started here): every publish a
//! device made is stored (at least once) across SIGKILLs of aemos; commands and acks go through
//! the same broker; health follows the broker going away and coming back.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use crate::mqtt_device::{MqttDevice, WAIT};
use crate::server::TestServer;

pub(crate) struct Mosquitto {
    child: Child,
    pub(crate) port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Mosquitto on `port` (0: a free one), anonymous, with room for aemos's window and for
    /// what it queues while aemos is down.
    pub(crate) fn start(port: u16) -> Self {
        let port = if port == 0 {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        } else {
            port
        };
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        let mut f = std::fs::File::create(&conf).unwrap();
        writeln!(
            f,
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 1000\nmax_queued_messages 1000000\nlog_dest stderr\nlog_type error"
        )
        .unwrap();
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let program = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(program)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package mosquitto, installed by .ci/install-test-deps)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto did not listen"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn aemos(dir: &std::path::Path, broker_port: u16, extra: &[&str]) -> TestServer {
    let url = format!("mqtt://127.0.0.1:{broker_port}");
    let mut args = vec!["--mqtt-broker", &url, "--mqtt-client-id", "aemos-test"];
    args.extend_from_slice(extra);
    TestServer::start(dir, &args, &[])
}

/// Waits until health says both connections to the broker are up and subscribed.
async fn wait_connected(server: &TestServer, http: &reqwest::Client) -> Value {
    server
        .get_until(http, "/api/v1/health", |h| {
            h["components"]["mqtt"]["status"] == "ok"
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_publish_is_stored_across_sigkills() {
    let broker = Mosquitto::start(0);
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let mut server = aemos(dir.path(), broker.port, &[]);
    let health = wait_connected(&server, &http).await;
    assert_eq!(health["components"]["mqtt"]["mode"], "external");
    assert_eq!(
        health["components"]["mqtt"]["ingest"]["filter"],
        "$share/aemos/aemos/devices/+/telemetry"
    );

    // A device publishes one reading per message at QoS 1; Mosquitto acknowledges each.
    const PUBLISHES: u64 = 6000;
    let mut options = MqttOptions::new("dev-1", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (device, mut eventloop) = AsyncClient::new(options, 1000);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&acked);
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::PubAck(_)) = event {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let publisher = tokio::spawn(async move {
        for seq in 0..PUBLISHES {
            device
                .publish(
                    "aemos/devices/dev-1/telemetry",
                    QoS::AtLeastOnce,
                    false,
                    json!({ "seq": seq }).to_string(),
                )
                .await
                .unwrap();
            if seq % 100 == 99 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        device
    });

    // Killed twice mid-stream; the publishes go on meanwhile and wait in the broker.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        server = aemos(dir.path(), broker.port, &[]);
    }
    let _device = publisher.await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while acked.load(Ordering::Relaxed) < PUBLISHES {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mosquitto acknowledged {} of {PUBLISHES}",
            acked.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Every publish is stored, none twice.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (rows, distinct) = loop {
        let answer = server
            .sql(
                &http,
                "SELECT count(*) AS n, count(DISTINCT value) AS d FROM readings WHERE sensor = 'dev-1' AND variable = 'seq'",
            )
            .await;
        let (n, d) = (
            answer[0]["n"].as_u64().unwrap(),
            answer[0]["d"].as_u64().unwrap(),
        );
        if n >= PUBLISHES || tokio::time::Instant::now() > deadline {
            break (n, d);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(distinct, PUBLISHES, "publishes lost ({rows} rows stored)");
    // Exactly once: the packet ids of each write are in its WAL record (README, "An external
    // broker"), so a redelivery after a kill is recognised and acknowledged, not stored.
    assert_eq!(
        rows,
        PUBLISHES,
        "{} publishes stored twice",
        rows - PUBLISHES
    );
    let metrics = server.metrics(&http).await;
    let redeliveries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aemos_mqtt_redeliveries_skipped_total "))
        .unwrap_or("0");
    eprintln!("redeliveries recognised after the last restart: {redeliveries}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_go_through_the_broker_and_health_follows_it() {
    // aemos starts before the broker: it listens all the same, and says the broker is away.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    let server = aemos(dir.path(), port, &["--command-ack-timeout", "2s"]);
    let away = server.get_json(&http, "/api/v1/health").await;
    assert_eq!(away["components"]["mqtt"]["status"], "degraded", "{away}");
    assert_eq!(away["components"]["mqtt"]["ingest"]["connected"], false);
    assert_ne!(away["status"], "ok");

    let broker = Mosquitto::start(port);
    wait_connected(&server, &http).await;
    let (status, _) = server
        .post(&http, "/api/v1/devices", &json!({"id": "purifier-x"}))
        .await;
    assert_eq!(status, 201);
    let mut device = MqttDevice::connect_to(&broker.addr(), "purifier-x", &["commands"]).await;
    let (status, body) = server
        .post(
            &http,
            "/api/v1/devices/purifier-x/commands",
            &json!({"action": "setFanSpeed", "value": 2}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let id = body["commandId"].as_str().unwrap().to_owned();
    let got = device.next_on("commands").await;
    assert_eq!(
        got,
        json!({"commandId": id, "action": "setFanSpeed", "value": 2})
    );
    device.ack(&id, "ok").await;
    let done = server
        .get_until(
            &http,
            &format!("/api/v1/devices/purifier-x/commands/{id}"),
            |c| c["status"] == "acknowledged",
        )
        .await;
    assert_eq!(done["attempts"], 1);

    // The device's telemetry reaches storage through the broker.
    device
        .client
        .publish(
            "aemos/devices/purifier-x/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"pm25": 12}"#,
        )
        .await
        .unwrap();
    let latest = server
        .get_until(&http, "/api/v1/devices/purifier-x/latest", |l| {
            l.to_string().contains("pm25")
        })
        .await;
    assert!(latest.to_string().contains("12"), "{latest}");

    // The broker goes away: health says so; it comes back: aemos reconnects by itself.
    drop(broker);
    server
        .get_until(&http, "/api/v1/health", |h| {
            h["components"]["mqtt"]["ingest"]["connected"] == false
        })
        .await;
    let _broker = Mosquitto::start(port);
    let back = wait_connected(&server, &http).await;
    assert!(
        back["components"]["mqtt"]["ingest"]["connects"]
            .as_u64()
            .unwrap()
            >= 2,
        "{back}"
    );
}
