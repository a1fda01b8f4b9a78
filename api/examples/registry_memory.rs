//! Memory per registered device in the device registry: stores `N` (default 100,000) device
//! documents (one sensor of their own each, as `benches/devices/register.py` registers them),
//! then loads them in a fresh process with [`DeviceRegistry::load`], as the server does at start,
//! and prints that process's RSS growth per device (the heap the registry keeps, plus what
//! loading left behind). With a `DIR`, the devices are added there
//! (up to `N`) and kept.
//! Usage: cargo run --release -p aemos-api --example registry_memory [N] [DIR]

use std::sync::Arc;

use aemos_api::devices::DeviceRegistry;
use aemos_storage::{ObjectStoreConfig, Storage, StorageArgs, SystemClock};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in the process that only loads.
const LOAD_ONLY: &str = "REGISTRY_MEMORY_LOAD_ONLY";

fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let temp = tempfile::tempdir()?;
    let dir = std::env::args()
        .nth(2)
        .map_or_else(|| temp.path().to_path_buf(), std::path::PathBuf::from);
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(&dir))?;
    let args = StorageArgs::new(dir.clone(), store, Arc::new(SystemClock));
    let storage = Storage::open(args).await?;
    if std::env::var_os(LOAD_ONLY).is_none() {
        let registry = DeviceRegistry::load(Arc::clone(&storage)).await?;
        for i in registry.len()..n {
            let spec = serde_json::from_value(serde_json::json!({
                "id": format!("silent-{i:06}"),
                "sensors": [format!("silent-{i:06}-temperature")],
            }))?;
            registry
                .create(spec)
                .await
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        }
        // Measured in a fresh process, as at a restart: this one's heap holds the garbage of
        // the registrations.
        let status = std::process::Command::new(std::env::current_exe()?)
            .arg(n.to_string())
            .arg(&dir)
            .env(LOAD_ONLY, "1")
            .status()?;
        anyhow::ensure!(status.success(), "the loading process failed: {status}");
        return Ok(());
    }
    let rss = rss_kb();
    let start = std::time::Instant::now();
    let registry = DeviceRegistry::load(Arc::clone(&storage)).await?;
    let loaded = start.elapsed();
    let grown = (rss_kb() - rss) * 1024;
    println!(
        "{} devices loaded in {:.2} s: RSS +{} bytes per device",
        registry.len(),
        loaded.as_secs_f64(),
        grown / registry.len().max(1) as i64
    );
    Ok(())
}
