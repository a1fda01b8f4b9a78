//! `deploy/`: the Dockerfile (hadolint), the Kubernetes manifests (kubernetes-validate,
//! strict), the systemd unit (`systemd-analyze verify`, its ExecStart pointing at the built
//! binary) and the config files (loaded by the built binary), as `deploy/check.sh` lints them.

#[test]
fn deploy_files_lint_and_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new("bash")
        .arg("deploy/check.sh")
        .arg(env!("CARGO_BIN_EXE_aemos"))
        .current_dir(root)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "deploy/check.sh failed:\n{text}");
    assert!(text.contains("0 failed"), "{text}");
}
