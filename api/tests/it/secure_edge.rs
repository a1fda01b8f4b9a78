//! A `production` server started the way a user would (`--mode production --jwt-secret ...
//! --tls-cert ... --tls-key ...`), driven by stock clients: reqwest over HTTPS, rumqttc over
//! MQTT/TLS (3.1.1 and 5) with usernames and passwords, the `coap` crate with `?token=`, and
//! npm's socket.io-client with `auth`. Each topic, resource and room against the credentials
//! that must be refused, and the legitimate one accepted. Also: what production refuses at
//! start.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};

use super::access::user_jwt;
use crate::server::TestServer;

pub(crate) const SECRET: &str = "secure-edge-secret-of-at-least-32-bytes";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A self-signed certificate for 127.0.0.1 and localhost, made with the openssl CLI.
fn certificate(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    (cert.display().to_string(), key.display().to_string())
}

pub(crate) struct Secure {
    pub(crate) server: TestServer,
    pub(crate) https: String,
    pub(crate) http: reqwest::Client,
    ca: Vec<u8>,
    pub(crate) cert_path: String,
    pub(crate) admin: String,
    _dir: tempfile::TempDir,
}

pub(crate) async fn start(extra: &[&str]) -> Secure {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let mut args = vec![
        "--mode",
        "production",
        "--jwt-secret",
        SECRET,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(extra);
    let server = TestServer::start(&dir.path().join("data"), &args, &[]);
    let ca = std::fs::read(&cert).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let https = server.url.replace("http://", "https://");
    Secure {
        https,
        http,
        ca,
        cert_path: cert,
        admin: user_jwt(SECRET, "admin"),
        server,
        _dir: dir,
    }
}

impl Secure {
    /// An admin's POST that answers with a device token: `{"token"}` of `status`.
    async fn token_from(&self, path: &str, body: Option<Value>, status: u16) -> String {
        let mut request = self
            .http
            .post(format!("{}{path}", self.https))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub(crate) async fn device(&self, id: &str, sensors: &[&str]) -> String {
        let body = json!({"id": id, "sensors": sensors});
        self.token_from("/api/v1/devices", Some(body), 201).await
    }

    pub(crate) async fn rotate(&self, id: &str) -> String {
        self.token_from(&format!("/api/v1/devices/{id}/token"), None, 200)
            .await
    }

    /// The Prometheus text, read as `credential`.
    async fn metrics(&self, credential: &str) -> String {
        self.http
            .get(format!("{}/api/v1/metrics/prometheus", self.https))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn count(&self, sensor: &str) -> i64 {
        let r = self
            .http
            .post(format!("{}/api/v1/query", self.https))
            .bearer_auth(user_jwt(SECRET, "viewer"))
            .json(&json!({"sql": format!("SELECT count(*) AS n FROM readings WHERE sensor = '{sensor}'")}))
            .send()
            .await
            .unwrap();
        r.json::<Value>().await.unwrap()[0]["n"].as_i64().unwrap()
    }

    pub(crate) fn mqtt_options(&self, client_id: &str, login: Option<(&str, &str)>) -> MqttOptions {
        let (_, port) = self.server.mqtt_addr.rsplit_once(':').unwrap();
        let mut o = MqttOptions::new(client_id, "127.0.0.1", port.parse().unwrap());
        o.set_keep_alive(Duration::from_secs(30));
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: self.ca.clone(),
            alpn: None,
            client_auth: None,
        }));
        if let Some((u, p)) = login {
            o.set_credentials(u, p);
        }
        o
    }
}

/// Connects; `Ok` once the broker accepted, with the client and its event loop.
pub(crate) async fn connect(
    options: MqttOptions,
) -> Result<(AsyncClient, rumqttc::EventLoop), String> {
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    match tokio::time::timeout(WAIT, eventloop.poll()).await {
        Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
            if ack.code == rumqttc::ConnectReturnCode::Success =>
        {
            Ok((client, eventloop))
        }
        other => Err(format!("{other:?}")),
    }
}

/// Polls until the broker answers `want` (a SubAck, a PubAck) or closes the connection.
pub(crate) async fn outcome(eventloop: &mut rumqttc::EventLoop) -> Result<&'static str, String> {
    tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok("suback"),
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok("puback"),
                Ok(_) => {}
                Err(e @ (ConnectionError::Io(_) | ConnectionError::MqttState(_))) => {
                    return Err(e.to_string())
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no answer".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_tls_admits_a_device_only_to_its_own_topics() {
    let s = start(&[]).await;
    let token_a = s.device("dev-a", &["a-s1"]).await;
    let token_b = s.device("dev-b", &[]).await;
    // CONNECT: none, wrong password, another device's token, username not the client id.
    for (client_id, login) in [
        ("dev-a", None),
        ("dev-a", Some(("dev-a", "adt_wrong"))),
        ("dev-a", Some(("dev-a", token_b.as_str()))),
        ("someone", Some(("dev-a", token_a.as_str()))),
    ] {
        assert!(
            connect(s.mqtt_options(client_id, login)).await.is_err(),
            "{client_id} {login:?} connected"
        );
    }
    // A Will is what the broker publishes for the client when it goes: it must pass the same
    // checks, at CONNECT.
    for (topic, allowed) in [
        ("aemos/devices/dev-b/commands", false),
        ("aemos/devices/dev-a/notifications", false),
        ("aemos/devices/dev-b/telemetry", false),
        ("aemos/devices/dev-a/telemetry", true),
    ] {
        let mut o = s.mqtt_options("dev-a", Some(("dev-a", &token_a)));
        o.set_last_will(rumqttc::LastWill::new(
            topic,
            r#"{"t": 9}"#,
            QoS::AtLeastOnce,
            false,
        ));
        assert_eq!(connect(o).await.is_ok(), allowed, "will on {topic}");
    }
    // Publishes and subscriptions: each refused one closes the connection; the legitimate
    // ones are answered.
    let cases: [(&str, &str, bool); 10] = [
        ("pub", "aemos/devices/dev-a/telemetry", true),
        ("pub", "aemos/devices/dev-a/acks", true),
        ("sub", "aemos/devices/dev-a/notifications", true),
        ("sub", "aemos/devices/dev-a/commands", true),
        ("sub", "aemos/devices/dev-a/errors", true),
        ("pub", "aemos/devices/dev-b/telemetry", false),
        ("pub", "aemos/devices/dev-a/notifications", false),
        ("pub", "aemos/devices/dev-b/commands", false),
        ("sub", "aemos/devices/dev-b/notifications", false),
        ("sub", "aemos/devices/+/notifications", false),
    ];
    for (kind, topic, allowed) in cases {
        let (client, mut eventloop) = connect(s.mqtt_options("dev-a", Some(("dev-a", &token_a))))
            .await
            .expect("dev-a connects");
        if kind == "pub" {
            client
                .publish(
                    topic,
                    QoS::AtLeastOnce,
                    false,
                    r#"{"sensor": "a-s1", "variable": "t", "value": 1}"#,
                )
                .await
                .unwrap();
        } else {
            client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
        }
        let got = outcome(&mut eventloop).await;
        assert_eq!(got.is_ok(), allowed, "{kind} {topic}: {got:?}");
    }
    for filter in ["#", "aemos/#"] {
        let (client, mut eventloop) = connect(s.mqtt_options("dev-a", Some(("dev-a", &token_a))))
            .await
            .unwrap();
        client.subscribe(filter, QoS::AtMostOnce).await.unwrap();
        assert!(
            outcome(&mut eventloop).await.is_err(),
            "subscribed to {filter}"
        );
    }
    // The one telemetry publish that was allowed is stored.
    let deadline = tokio::time::Instant::now() + WAIT;
    while s.count("a-s1").await < 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.count("a-s1").await, 1);
    // A session whose token is rotated is closed at its next packet; the new token connects.
    let (client, mut eventloop) = connect(s.mqtt_options("dev-a", Some(("dev-a", &token_a))))
        .await
        .unwrap();
    let fresh = s.rotate("dev-a").await;
    client
        .publish(
            "aemos/devices/dev-a/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"t": 1}"#,
        )
        .await
        .unwrap();
    assert!(
        outcome(&mut eventloop).await.is_err(),
        "a rotated session kept publishing"
    );
    assert!(connect(s.mqtt_options("dev-a", Some(("dev-a", &token_a))))
        .await
        .is_err());
    assert!(connect(s.mqtt_options("dev-a", Some(("dev-a", &fresh))))
        .await
        .is_ok());
    // Keep-alive 0 (MQTT 3.1.1 §3.1.2.10: no keep-alive) is accepted.
    let mut quiet = s.mqtt_options("dev-a", Some(("dev-a", &fresh)));
    quiet.set_keep_alive(Duration::ZERO);
    let (client, mut eventloop) = connect(quiet).await.expect("keep-alive 0 connects");
    client
        .subscribe("aemos/devices/dev-a/errors", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(outcome(&mut eventloop).await, Ok("suback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_clients_are_told_why_and_rate_limits_hold_on_every_protocol() {
    let s = start(&["--device-rate-limit", "20", "--device-rate-burst", "20"]).await;
    let token = s.device("dev-r", &[]).await;
    let (_, port) = s.server.mqtt5_addr.rsplit_once(':').unwrap();
    let v5 = |id: &str| {
        let mut o = rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port.parse().unwrap());
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca: s.ca.clone(),
            alpn: None,
            client_auth: None,
        }));
        o.set_credentials("dev-r", token.as_str());
        o
    };
    let disconnect_reason = |mut eventloop: rumqttc::v5::EventLoop| async move {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Err(rumqttc::v5::ConnectionError::MqttState(
                    rumqttc::v5::StateError::ServerDisconnect { reason_code, .. },
                )) = eventloop.poll().await
                {
                    return reason_code;
                }
            }
        })
        .await
        .expect("a DISCONNECT")
    };
    let (client, eventloop) = rumqttc::v5::AsyncClient::new(v5("dev-r"), 100);
    client
        .publish(
            "aemos/devices/other/telemetry",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "{}",
        )
        .await
        .unwrap();
    assert_eq!(
        disconnect_reason(eventloop).await,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::NotAuthorized
    );
    let (client, eventloop) = rumqttc::v5::AsyncClient::new(v5("dev-r"), 1000);
    for _ in 0..200 {
        client
            .publish(
                "aemos/devices/dev-r/telemetry",
                rumqttc::v5::mqttbytes::QoS::AtMostOnce,
                false,
                r#"{"t": 1}"#,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        disconnect_reason(eventloop).await,
        rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::MessageRateTooHigh
    );
    // HTTP: 429 with Retry-After once the device's burst is spent (its MQTT share counts).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut statuses = Vec::new();
    // Sent at once, so that the limit is spent whatever the machine's speed.
    let answers = futures::future::join_all((0..60).map(|_| {
        s.http
            .post(format!("{}/api/v1/datastreams/token", s.https))
            .bearer_auth(&token)
            .json(&json!({"value": 1, "variableName": "t"}))
            .send()
    }))
    .await;
    for r in answers {
        let r = r.unwrap();
        if r.status() == 429 {
            assert!(r.headers().get("retry-after").is_some());
        }
        statuses.push(r.status().as_u16());
    }
    assert!(
        statuses.contains(&201) && statuses.contains(&429),
        "{statuses:?}"
    );
    // CoAP: 4.29.
    let url = format!("coap://{}/telemetry?token={token}", s.server.coap_addr);
    let coap: Vec<String> = futures::future::join_all((0..60).map(|_| {
        coap::UdpCoAPClient::post_with_timeout(
            &url,
            br#"{"t": 1}"#.to_vec(),
            Duration::from_secs(5),
        )
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap().message.header.get_code())
    .collect();
    assert!(coap.iter().any(|c| c == "4.29"), "{coap:?}");
    let metrics = s.metrics(&s.admin).await;
    for protocol in ["http", "mqtt", "coap"] {
        assert!(
            metrics.contains(&format!(
                "aemos_rate_limited_total{{protocol=\"{protocol}\"}}"
            )),
            "{protocol} refusals counted"
        );
    }
}

async fn coap_status(method: &str, url: &str, body: &str) -> String {
    let r = if method == "POST" {
        coap::UdpCoAPClient::post_with_timeout(
            url,
            body.as_bytes().to_vec(),
            Duration::from_secs(5),
        )
        .await
    } else {
        coap::UdpCoAPClient::get_with_timeout(url, Duration::from_secs(5)).await
    };
    format!("{:?}", r.expect("coap answer").get_status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coap_needs_the_device_token_for_writes_and_reads() {
    let s = start(&[]).await;
    let a = s.device("dev-a", &["a-s1"]).await;
    let b = s.device("dev-b", &[]).await;
    let viewer = user_jwt(SECRET, "viewer");
    let base = format!("coap://{}", s.server.coap_addr);
    let reading = r#"{"sensor": "a-s1", "variable": "t", "value": 1}"#;
    let cases = [
        ("POST", format!("{base}/telemetry"), reading, "Unauthorized"),
        (
            "POST",
            format!("{base}/telemetry/dev-a"),
            reading,
            "Unauthorized",
        ),
        (
            "POST",
            format!("{base}/telemetry?token=adt_forged"),
            reading,
            "Unauthorized",
        ),
        (
            "POST",
            format!("{base}/telemetry?token={b}"),
            reading,
            "Forbidden",
        ),
        (
            "POST",
            format!("{base}/telemetry/dev-a?token={b}"),
            reading,
            "Forbidden",
        ),
        (
            "POST",
            format!("{base}/telemetry?token={a}"),
            reading,
            "Changed",
        ),
        (
            "POST",
            format!("{base}/telemetry/dev-a?token={a}"),
            r#"{"t": 2}"#,
            "Changed",
        ),
        (
            "GET",
            format!("{base}/devices/dev-a/notifications"),
            "",
            "Unauthorized",
        ),
        (
            "GET",
            format!("{base}/devices/dev-a/notifications?token={b}"),
            "",
            "Forbidden",
        ),
        (
            "GET",
            format!("{base}/devices/dev-a/notifications?token={a}"),
            "",
            "Content",
        ),
        (
            "GET",
            format!("{base}/devices/dev-b/notifications?token={viewer}"),
            "",
            "Content",
        ),
    ];
    for (method, url, body, want) in cases {
        assert_eq!(
            coap_status(method, &url, body).await,
            want,
            "{method} {url}"
        );
    }
    let fresh = s.rotate("dev-a").await;
    assert_eq!(
        coap_status("POST", &format!("{base}/telemetry?token={a}"), reading).await,
        "Unauthorized"
    );
    assert_eq!(
        coap_status("POST", &format!("{base}/telemetry?token={fresh}"), reading).await,
        "Changed"
    );
    assert_eq!(s.count("a-s1").await, 2);
}

/// `node sio-auth.js`: each printed line.
fn sio(s: &Secure, token: Option<&str>, payloads: Value) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/sio-auth.js");
    let out = Command::new("node")
        .arg(script)
        .arg(&s.https)
        .arg(token.unwrap_or("-"))
        .arg(payloads.to_string())
        .env("NODE_EXTRA_CA_CERTS", &s.cert_path)
        .output()
        .expect("node and api/tests/clients installed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_io_checks_the_handshake_and_every_room() {
    let s = start(&[]).await;
    let a = s.device("dev-a", &[]).await;
    s.device("dev-b", &[]).await;
    for bad in [None, Some("adt_forged"), Some("not.a.jwt")] {
        let lines = sio(&s, bad, json!([]));
        assert_eq!(lines[0]["event"], "connect_error", "{bad:?}: {lines:?}");
    }
    let expired = super::access::jwt_with(
        SECRET,
        jsonwebtoken::Algorithm::HS256,
        json!({"sub": "v", "role": "viewer", "exp": 1}),
    );
    assert_eq!(
        sio(&s, Some(&expired), json!([]))[0]["event"],
        "connect_error"
    );
    let lines = sio(
        &s,
        Some(&a),
        json!([{"devices": ["dev-a"]}, {"rooms": ["device-uuid-dev-b"]}, {"devices": ["dev-a", "dev-b"]}]),
    );
    assert_eq!(lines[0]["event"], "connect", "{lines:?}");
    assert_eq!(lines[1]["data"], json!({"rooms": ["device-uuid-dev-a"]}));
    assert!(
        lines[2]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("may not read device \"dev-b\""),
        "{lines:?}"
    );
    assert!(
        lines[3]["data"]["error"].is_string(),
        "a join naming any refused room joins none: {lines:?}"
    );
    let viewer = user_jwt(SECRET, "viewer");
    let lines = sio(&s, Some(&viewer), json!([{"devices": ["dev-a", "dev-b"]}]));
    assert_eq!(
        lines[1]["data"],
        json!({"rooms": ["device-uuid-dev-a", "device-uuid-dev-b"]})
    );
    // A room named three times in one subscribe counts once, so the socket's disconnect
    // leaves no device watched.
    let dup = json!({"rooms": ["device-uuid-dev-a", "device-uuid-dev-a"], "devices": ["dev-a"]});
    let lines = sio(&s, Some(&viewer), json!([dup, dup]));
    assert_eq!(lines[1]["data"], json!({"rooms": ["device-uuid-dev-a"]}));
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let metrics = s.metrics(&viewer).await;
        if metrics
            .lines()
            .any(|l| l == "aemos_socketio_subscriptions 0")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "subscriptions left after every socket left: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_answers_with_the_certificate_and_plain_http_is_not_served() {
    let s = start(&[]).await;
    let r = s
        .http
        .get(format!("{}/api/v1/health/readiness", s.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = s
        .http
        .get(format!("{}/api/v1/health", s.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        reqwest::get(format!("{}/api/v1/health/readiness", s.server.url))
            .await
            .is_err()
    );
}

#[test]
fn production_refuses_to_start_unsafe() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aemos"));
        cmd.arg("serve")
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--mqtt-addr", "127.0.0.1:0", "--mqtt5-addr", "off"]);
        for (flag, default) in [
            ("--http-addr", "127.0.0.1:0"),
            ("--coap-addr", "127.0.0.1:0"),
        ] {
            if !args.contains(&flag) {
                cmd.args([flag, default]);
            }
        }
        let out = cmd.args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&["--mode", "production"]).contains("--jwt-secret"));
    // Every TCP listener beyond loopback needs TLS.
    for flag in ["--http-addr", "--pg-addr", "--flight-addr"] {
        let exposed = run(&[
            "--mode",
            "production",
            "--jwt-secret",
            SECRET,
            flag,
            "0.0.0.0:0",
        ]);
        assert!(
            exposed.contains("without TLS") && exposed.contains(flag),
            "{flag}: {exposed}"
        );
    }
    let short = run(&["--mode", "production", "--jwt-secret", "short"]);
    assert!(
        short.contains("at least 32 bytes") && !short.contains("short\""),
        "{short}"
    );
    let coap = run(&[
        "--mode",
        "production",
        "--jwt-secret",
        SECRET,
        "--coap-addr",
        "0.0.0.0:0",
    ]);
    assert!(coap.contains("DTLS"), "{coap}");
    // An external broker beyond loopback gets aemos's credentials only over TLS, and the
    // password is not repeated in the refusal.
    let broker = run(&[
        "--mode",
        "production",
        "--jwt-secret",
        SECRET,
        "--mqtt-broker",
        "mqtt://aemos:hunter2hunter2@broker.example:1883",
    ]);
    assert!(
        broker.contains("mqtts://") && !broker.contains("hunter2"),
        "{broker}"
    );
}
