//! `--log-format json`: every line the server logs is one JSON object with its level, target,
//! message and fields.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn json_logs_are_one_object_per_line_with_the_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aemos"))
        .args(["--log-format", "json", "serve", "--data-dir"])
        .arg(dir.path())
        .args(["--http-addr", "127.0.0.1:0", "--mqtt-addr", "127.0.0.1:0"])
        .args([
            "--mqtt5-addr",
            "off",
            "--coap-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "off",
            "--flight-addr",
            "off",
        ])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut ready = None;
    let mut lines = 0;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            event["level"].is_string() && event["target"].is_string(),
            "{line}"
        );
        lines += 1;
        if event["fields"]["message"] == "aemos listening and ready" {
            ready = Some(event);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let ready = ready.expect("the ready line");
    assert!(lines > 3);
    assert!(
        ready["fields"]["http_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{ready}"
    );
}
