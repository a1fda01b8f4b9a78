//! The real `aemos serve` (built beside `aemos-loadgen` by the workspace's test build) on free
//! ports, and `aemos-loadgen` runs against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    pub(crate) mqtt: String,
    pub(crate) coap: String,
}

/// `aemos`, next to this package's binary in the same target directory.
fn aemos() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_aemos-loadgen")).with_file_name("aemos");
    assert!(
        path.exists(),
        "{} is missing: run the workspace's tests (`cargo nextest run --workspace`)",
        path.display()
    );
    path
}

/// The value of `key=` in a log line (`Some(...)` unwrapped).
fn field(line: &str, key: &str) -> Option<String> {
    let rest = line.split(&format!(" {key}=")).nth(1)?;
    let value = rest.split_whitespace().next()?;
    Some(
        value
            .trim_start_matches("Some(")
            .trim_end_matches(')')
            .to_owned(),
    )
}

impl Server {
    pub(crate) fn start(data_dir: &Path) -> Self {
        let mut child = Command::new(aemos())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
            .args(["--mqtt5-addr", "off", "--coap-addr", "127.0.0.1:0"])
            .args(["--pg-addr", "off", "--flight-addr", "off"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start aemos");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the server's whole life, so logging never blocks it.
        std::thread::spawn(move || {
            let (mut mqtt, mut coap, mut sent) = (None, None, false);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                mqtt = mqtt.or_else(|| field(&line, "mqtt_addr"));
                coap = coap.or_else(|| field(&line, "coap_addr"));
                if let (false, Some(http)) = (sent, field(&line, "http_addr")) {
                    let _ = tx.send((http, mqtt.clone(), coap.clone()));
                    sent = true;
                }
            }
        });
        let (http, mqtt, coap) = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("aemos did not report its address in time");
        Self {
            child,
            url: format!("http://{http}"),
            mqtt: mqtt.expect("the MQTT address is logged before HTTP's"),
            coap: coap.expect("the CoAP address is logged before HTTP's"),
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for readiness (the listener opens before replay and the rebuild are done).
    pub(crate) async fn ready(&self, http: &reqwest::Client) {
        for _ in 0..600 {
            let r = http
                .get(format!("{}/api/v1/health/readiness", self.url))
                .send()
                .await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("aemos did not become ready");
    }

    /// `count(*)` of readings matching `filter`, through the HTTP API.
    pub(crate) async fn count(&self, http: &reqwest::Client, filter: &str) -> u64 {
        self.count_in(http, "readings", filter).await
    }

    /// Rows of `table` matching `filter`.
    pub(crate) async fn count_in(&self, http: &reqwest::Client, table: &str, filter: &str) -> u64 {
        let query = format!("SELECT count(*) AS n FROM {table} WHERE {filter}");
        let r = http
            .post(format!("{}/api/v1/query", self.url))
            .json(&serde_json::json!({ "sql": query }))
            .send()
            .await
            .expect("a query answer");
        assert!(r.status().is_success(), "{query}: {}", r.status());
        let rows: Value = r.json().await.expect("JSON rows");
        rows[0]["n"]
            .as_u64()
            .unwrap_or_else(|| panic!("{query}: {rows}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `aemos-loadgen --json F ARGS` to success (off the runtime's threads); its JSON report.
pub(crate) async fn loadgen(args: &[&str]) -> Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run_loadgen(&args))
        .await
        .expect("aemos-loadgen ran")
}

fn run_loadgen(args: &[String]) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_aemos-loadgen"))
        .arg("--json")
        .arg(&json)
        .args(args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run aemos-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aemos-loadgen {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("the JSON report")).expect("JSON");
    // The table printed names every figure the JSON has.
    for name in report["figures"].as_object().expect("figures").keys() {
        assert!(
            stdout.contains(name.as_str()),
            "{name} missing from\n{stdout}"
        );
    }
    report
}
