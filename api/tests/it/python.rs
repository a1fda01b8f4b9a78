//! The stock Python clients of the tests (`tests/clients/*.py`, in the venv that
//! `.ci/install-test-deps` makes): a script is given its request as JSON on stdin and prints
//! what the client library saw as JSON.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

/// Runs `tests/clients/{script}` with `args`, `input` on its stdin; its JSON output.
pub(crate) fn client(script: &str, args: &[&str], input: &Value) -> Value {
    let python = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/.venv/bin/python"
    );
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python)
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tests' Python venv (bash .ci/install-test-deps makes it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}
