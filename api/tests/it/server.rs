//! Starts the real `aemos` binary for end-to-end tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub(crate) struct TestServer {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// The MQTT 3.1.1 listener, `host:port`.
    pub(crate) mqtt_addr: String,
    /// The MQTT 5 listener, `host:port` (empty when off).
    pub(crate) mqtt5_addr: String,
    /// The CoAP (UDP) address, `host:port`.
    pub(crate) coap_addr: String,
    /// The Postgres wire protocol listener, `host:port` (empty when off).
    pub(crate) pg_addr: String,
    /// The Arrow Flight SQL listener, `host:port` (empty when off).
    pub(crate) flight_addr: String,
}

/// The listeners whose addresses the server logs before `http_addr`, in [`TestServer`] order.
const LISTENERS: [&str; 5] = [
    "mqtt_addr",
    "mqtt5_addr",
    "coap_addr",
    "pg_addr",
    "flight_addr",
];

/// The value of `key=` in a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let rest = line.split(&format!("{key}=")).nth(1)?;
    Some(
        rest.split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
    )
}

impl TestServer {
    /// `aemos serve` on a free port with `data_dir` and extra flags; returns once it listens.
    pub(crate) fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aemos"));
        cmd.arg("serve");
        // Free ports for every listener the test does not place itself.
        for flag in [
            "--http-addr",
            "--pg-addr",
            "--flight-addr",
            "--mqtt-addr",
            "--mqtt5-addr",
            "--coap-addr",
        ] {
            if !extra.contains(&flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start aemos");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Keep draining stderr for the server's whole life, so logging never blocks it.
        std::thread::spawn(move || {
            let mut addrs = [const { String::new() }; LISTENERS.len()];
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    for (slot, key) in addrs.iter_mut().zip(LISTENERS) {
                        if let Some(a) = field(&line, key) {
                            // `mqtt5_addr=Some(127.0.0.1:1884)`
                            *slot = a
                                .trim_start_matches("Some(")
                                .trim_end_matches(')')
                                .to_owned();
                        }
                    }
                    if let Some(http) = field(&line, "http_addr") {
                        let _ = tx.send((http, addrs.clone()));
                        sent = true;
                    }
                }
                if std::env::var_os("AEMOS_TEST_LOG").is_some() {
                    eprintln!("[aemos] {line}");
                }
            }
        });
        let (http, [mqtt_addr, mqtt5_addr, coap_addr, pg_addr, flight_addr]) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("aemos did not report its address in time");
        Self {
            child,
            url: format!("http://{http}"),
            mqtt_addr,
            mqtt5_addr,
            coap_addr,
            pg_addr,
            flight_addr,
        }
    }

    pub(crate) fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM: graceful shutdown.
    pub(crate) fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// POSTs JSON to `path`: the status and the JSON answer (`null` when it is not JSON).
    pub(crate) async fn post(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GETs `path`: its JSON answer.
    pub(crate) async fn get_json(&self, client: &reqwest::Client, path: &str) -> serde_json::Value {
        let r = client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    /// GETs `path` every 50 ms until its JSON answer satisfies `done` (20 s at most).
    pub(crate) async fn get_until(
        &self,
        client: &reqwest::Client,
        path: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let answer = self.get_json(client, path).await;
            if done(&answer) {
                return answer;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{path} stays {answer}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Prometheus text.
    pub(crate) async fn metrics(&self, client: &reqwest::Client) -> String {
        client
            .get(format!("{}/api/v1/metrics/prometheus", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub(crate) async fn sql(&self, client: &reqwest::Client, sql: &str) -> serde_json::Value {
        let r = client
            .post(format!("{}/api/v1/query", self.url))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{sql}: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `aemos sql` and returns stdout.
pub(crate) fn aemos_sql(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aemos"));
    cmd.arg("sql").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run aemos sql");
    assert!(
        out.status.success(),
        "aemos sql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
