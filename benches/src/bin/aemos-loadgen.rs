//! HTTP load generator: batches of readings to `POST /api/v1/write` over several connections.
//!
//! ```text
//! cargo run --release -p aemos-benches --bin aemos-loadgen -- \
//!     --url http://127.0.0.1:3000 --format json --connections 8 --batch 1000 --duration 30s
//! ```
//!
//! Bodies are generated before the clock starts (`--bodies` distinct ones, reused in a cycle)
//! so that the generator's own CPU does not count against the server on a shared machine.
//! Prints readings/s and request latency percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aemos_benches::{percentile, Workload};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    /// json or lp (line protocol).
    #[arg(long, default_value = "json")]
    format: String,
    /// Where to write: `aemos` (`/api/v1/write`), `influx-v1` (`/write`), `influx-v2`
    /// (`/api/v2/write`) or `influx-v3` (`/api/v3/write_lp`); the InfluxDB ones take `lp` only
    /// and answer `204`, counted as the body's readings.
    #[arg(long, default_value = "aemos")]
    endpoint: String,
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Readings per request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(long, default_value_t = 10_000)]
    sensors: usize,
    #[arg(long, default_value_t = 4)]
    variables: usize,
    /// Distinct bodies generated up front.
    #[arg(long, default_value_t = 400)]
    bodies: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// A credential sent as `Authorization: Bearer` (a user JWT or a device token).
    #[arg(long)]
    token: Option<String>,
    /// Registers a device of this id owning every sensor of the workload (with `--admin-token`,
    /// an admin JWT) and writes with its device token.
    #[arg(long, requires = "admin_token")]
    register_device: Option<String>,
    #[arg(long)]
    admin_token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start_ms = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let mut workload = Workload::new(args.sensors, args.variables, start_ms, 42);
    let (content_type, query) = match args.format.as_str() {
        "json" => ("application/json", ""),
        "lp" => ("text/plain", "?precision=ms"),
        other => anyhow::bail!("unknown format {other}"),
    };
    let path = match (args.endpoint.as_str(), args.format.as_str()) {
        ("aemos", _) => format!("/api/v1/write{query}"),
        ("influx-v1", "lp") => "/write?db=aemos&precision=ms".to_owned(),
        ("influx-v2", "lp") => "/api/v2/write?org=aemos&bucket=aemos&precision=ms".to_owned(),
        ("influx-v3", "lp") => "/api/v3/write_lp?db=aemos&precision=millisecond".to_owned(),
        (other, format) => {
            anyhow::bail!("endpoint {other} with format {format}: InfluxDB endpoints take lp")
        }
    };
    let per_body = args.batch as u64;
    let bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..args.bodies)
            .map(|_| {
                let body = if args.format == "json" {
                    workload.json_body(args.batch)
                } else {
                    workload.line_protocol_body(args.batch)
                };
                bytes::Bytes::from(body)
            })
            .collect(),
    );
    let avg_body = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len().max(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let base = args.url.trim_end_matches('/');
    let url = format!("{base}{path}");
    let mut token = args.token.clone();
    if let (Some(id), Some(admin)) = (&args.register_device, &args.admin_token) {
        let sensors: Vec<String> = (0..args.sensors)
            .map(|i| workload.sensor_name(i).to_owned())
            .collect();
        let r = client
            .post(format!("{base}/api/v1/devices"))
            .bearer_auth(admin)
            .json(&serde_json::json!({"id": id, "sensors": sensors}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "registering {id}: {}", r.text().await?);
        let v: serde_json::Value = r.json().await?;
        token = v["token"].as_str().map(str::to_owned);
        println!("registered device {id} with {} sensors", args.sensors);
    }
    let authorization = token.map(|t| format!("Bearer {t}"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (client, url, bodies, stop, accepted, errors) = (
            client.clone(),
            url.clone(),
            Arc::clone(&bodies),
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&errors),
        );
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = c;
            while !stop.load(Ordering::Relaxed) {
                let body = bodies[i % bodies.len()].clone();
                i += 1;
                let t = Instant::now();
                let mut request = client
                    .post(&url)
                    .header("content-type", content_type)
                    .body(body);
                if let Some(a) = &authorization {
                    request = request.header("authorization", a);
                }
                let result = request.send().await;
                match result {
                    Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                        accepted.fetch_add(per_body, Ordering::Relaxed);
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        accepted.fetch_add(v["accepted"].as_u64().unwrap_or(0), Ordering::Relaxed);
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let n = accepted.load(Ordering::Relaxed);
    println!(
        "endpoint={} format={} connections={} batch={} body_bytes~{} requests={} errors={} readings={} seconds={:.1}",
        args.endpoint,
        args.format,
        args.connections,
        args.batch,
        avg_body,
        latencies.len(),
        errors.load(Ordering::Relaxed),
        n,
        elapsed
    );
    println!(
        "readings_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        n as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    Ok(())
}
