//! `http`: readings over HTTP from `--connections` keep-alive connections, each sending its next
//! request as soon as the last is answered.
//!
//! Bodies are generated before the clock starts (`--bodies` distinct ones, reused in a cycle)
//! so that the generator's own CPU does not count against the server on a shared machine. A
//! reading is counted when the server acknowledges it (`accepted` of a `200`, the body's count
//! for a `204`, one for a datastream's `201`); anything else is an error, counted by status.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use serde_json::json;

use super::report::{histogram, record, Failures, Progress, Report};
use super::{run_for, value_name, CpuWindow};
use crate::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Ndjson,
    /// Line protocol.
    Lp,
    /// Arrow IPC stream.
    Arrow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Endpoint {
    /// `POST /api/v1/write`, any format.
    Aemos,
    /// `POST /write` (InfluxDB 1), line protocol.
    InfluxV1,
    /// `POST /api/v2/write` (InfluxDB 2), line protocol.
    InfluxV2,
    /// `POST /api/v3/write_lp` (InfluxDB 3), line protocol.
    InfluxV3,
    /// `POST /api/v1/datastreams/token`, one reading per request with a device token.
    Datastream,
}

#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "aemos")]
    pub endpoint: Endpoint,
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Readings per request (1 with `--endpoint datastream`).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    #[arg(long, default_value_t = 10_000)]
    pub sensors: usize,
    #[arg(long, default_value_t = 4)]
    pub variables: usize,
    /// Distinct bodies generated up front.
    #[arg(long, default_value_t = 400)]
    pub bodies: usize,
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// A credential sent as `Authorization: Bearer` (a user JWT or a device token).
    #[arg(long)]
    pub token: Option<String>,
    /// Registers a device of this id owning every sensor of the workload (as `--admin-token`,
    /// an admin JWT, in production mode) and writes with its device token.
    #[arg(long)]
    pub register_device: Option<String>,
    #[arg(long)]
    pub admin_token: Option<String>,
    /// The aemos process, for its CPU time per reading.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

impl HttpArgs {
    fn path(&self) -> anyhow::Result<&'static str> {
        Ok(match (self.endpoint, self.format) {
            (Endpoint::Aemos, Format::Lp) => "/api/v1/write?precision=ms",
            (Endpoint::Aemos, _) => "/api/v1/write",
            (Endpoint::InfluxV1, Format::Lp) => "/write?db=aemos&precision=ms",
            (Endpoint::InfluxV2, Format::Lp) => "/api/v2/write?org=aemos&bucket=aemos&precision=ms",
            (Endpoint::InfluxV3, Format::Lp) => "/api/v3/write_lp?db=aemos&precision=millisecond",
            (Endpoint::Datastream, Format::Json) => "/api/v1/datastreams/token",
            (Endpoint::Datastream, _) => anyhow::bail!("--endpoint datastream takes --format json"),
            _ => anyhow::bail!("the InfluxDB endpoints take --format lp"),
        })
    }

    fn batch(&self) -> usize {
        if self.endpoint == Endpoint::Datastream {
            1
        } else {
            self.batch.max(1)
        }
    }
}

fn content_type(format: Format) -> &'static str {
    match format {
        Format::Json => "application/json",
        Format::Ndjson => "application/x-ndjson",
        Format::Lp => "text/plain; charset=utf-8",
        Format::Arrow => "application/vnd.apache.arrow.stream",
    }
}

fn bodies(args: &HttpArgs, workload: &mut Workload) -> Vec<bytes::Bytes> {
    let n = args.batch();
    (0..args.bodies.max(1))
        .map(|_| match (args.endpoint, args.format) {
            (Endpoint::Datastream, _) => {
                let r = workload.next_reading();
                let body =
                    json!({"sensor": r.sensor, "variableName": r.variable, "value": r.value});
                bytes::Bytes::from(body.to_string())
            }
            (_, Format::Json) => workload.json_body(n).into(),
            (_, Format::Ndjson) => workload.ndjson_body(n).into(),
            (_, Format::Lp) => workload.line_protocol_body(n).into(),
            (_, Format::Arrow) => workload.arrow_body(n).into(),
        })
        .collect()
}

/// Registers `id` owning every sensor of the workload; its device token.
async fn register(
    client: &reqwest::Client,
    base: &str,
    args: &HttpArgs,
    id: &str,
    workload: &Workload,
) -> anyhow::Result<String> {
    let sensors: Vec<&str> = (0..args.sensors).map(|i| workload.sensor_name(i)).collect();
    let mut request = client
        .post(format!("{base}/api/v1/devices"))
        .json(&json!({"id": id, "sensors": sensors}));
    if let Some(admin) = &args.admin_token {
        request = request.bearer_auth(admin);
    }
    let r = request.send().await?;
    anyhow::ensure!(r.status() == 201, "registering {id}: {}", r.text().await?);
    let v: serde_json::Value = r.json().await?;
    v["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("registering {id}: no token in {v}"))
}

pub async fn run(args: &HttpArgs, seed: u64) -> anyhow::Result<Report> {
    let start_ms = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut workload = Workload::new(args.sensors, args.variables, start_ms, seed);
    let path = args.path()?;
    let content_type = content_type(args.format);
    let per_body = args.batch() as u64;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let mut token = args.token.clone();
    if let Some(id) = &args.register_device {
        token = Some(register(&client, &base, args, id, &workload).await?);
    }
    let bodies = Arc::new(bodies(args, &mut workload));
    let avg_body = bodies.iter().map(|b| b.len()).sum::<usize>() / bodies.len();
    let url = format!("{base}{path}");
    let authorization = token.map(|t| format!("Bearer {t}"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Failures::default();
    let cpu = CpuWindow::start(args.server_pid);
    let progress = Progress::start(args.seconds, "readings", Arc::clone(&accepted));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (client, url, bodies, stop, accepted, errors) = (
            client.clone(),
            url.clone(),
            Arc::clone(&bodies),
            Arc::clone(&stop),
            Arc::clone(&accepted),
            errors.clone(),
        );
        let authorization = authorization.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
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
                let outcome = match request.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => Ok(per_body),
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => Ok(1),
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        Ok(v["accepted"].as_u64().unwrap_or(0))
                    }
                    Ok(r) => Err(r.status().as_u16().to_string()),
                    Err(e) if e.is_timeout() => Err("timeout".to_owned()),
                    Err(_) => Err("connection".to_owned()),
                };
                match outcome {
                    Ok(n) => {
                        accepted.fetch_add(n, Ordering::Relaxed);
                        record(&mut latencies, t.elapsed());
                    }
                    Err(kind) => {
                        errors.count(&kind);
                        // A refusing server is not hammered in a hot loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            latencies
        }));
    }
    let (latencies, elapsed) = run_for(args.seconds, &stop, tasks, started, progress).await?;
    let readings = accepted.load(Ordering::Relaxed) as f64;
    let mut report = Report::new(
        "http",
        json!({"endpoint": value_name(&args.endpoint), "format": value_name(&args.format),
               "connections": args.connections, "batch": args.batch(),
               "body_bytes": avg_body, "seed": seed}),
    );
    report.requests(elapsed, latencies.len(), readings, &errors);
    cpu.finish(&mut report, readings);
    report.latency("request", latencies);
    Ok(report)
}
