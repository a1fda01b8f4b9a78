//! `coap`: telemetry over CoAP from `--devices` devices, each its own UDP socket with one
//! confirmable `POST /telemetry/{device}` (or `/telemetry?token=T`) outstanding at a time, as a
//! constrained device sends. A reading counts when its `2.04 Changed` arrives (the server
//! answers once it is durable); a request unanswered within `--timeout` counts as a timeout
//! (not acknowledged, though the server may have stored it) and the device goes on with its
//! next message.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coap_lite::{CoapRequest, MessageClass, MessageType, Packet, RequestType, ResponseType};
use serde_json::json;

use super::devices::DeviceLoad;
use super::report::{histogram, record, Failures, Progress, Report};
use super::{run_for, value_name, CpuWindow};

#[derive(Debug, clap::Args)]
pub struct CoapArgs {
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub coap: String,
    #[command(flatten)]
    pub load: DeviceLoad,
    /// A device token for every device (production mode): `POST /telemetry?token=T`.
    #[arg(long)]
    pub token: Option<String>,
    /// How long to wait for an answer.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The aemos process, for its CPU time per reading.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// Requests sent from one socket before the device moves to a new one.
const IDS_PER_SOCKET: usize = 60_000;

/// A device's socket, bound to a free port and connected to the server.
async fn device_socket(server: std::net::SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// A confirmable POST of `body` with message id `id`.
fn post(path: &str, query: Option<&str>, id: u16, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut request: CoapRequest<std::net::SocketAddr> = CoapRequest::new();
    request.set_method(RequestType::Post);
    request.set_path(path);
    if let Some(q) = query {
        request
            .message
            .add_option(coap_lite::CoapOption::UriQuery, q.as_bytes().to_vec());
    }
    request.message.header.set_type(MessageType::Confirmable);
    request.message.header.message_id = id;
    request.message.set_token(id.to_be_bytes().to_vec());
    request.message.payload = body.to_vec();
    request
        .message
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("encoding a CoAP request: {e:?}"))
}

/// Sends one request and waits for its answer (matched by message id): the time it took, or
/// what went wrong.
async fn exchange(
    socket: &tokio::net::UdpSocket,
    request: &[u8],
    id: u16,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<Duration, &'static str> {
    let t = Instant::now();
    socket.send(request).await.map_err(|_| "send")?;
    let answer = tokio::time::timeout(timeout, async {
        loop {
            let n = socket.recv(buf).await.map_err(|_| "recv")?;
            match Packet::from_bytes(&buf[..n]) {
                Ok(p) if p.header.message_id == id => return Ok::<_, &'static str>(p),
                _ => continue,
            }
        }
    })
    .await
    .map_err(|_| "timeout")??;
    match answer.header.code {
        MessageClass::Response(ResponseType::Changed) => Ok(t.elapsed()),
        MessageClass::Response(ResponseType::ServiceUnavailable) => Err("5.03"),
        MessageClass::Response(ResponseType::BadRequest) => Err("4.00"),
        MessageClass::Response(ResponseType::Unauthorized) => Err("4.01"),
        MessageClass::Response(ResponseType::Forbidden) => Err("4.03"),
        _ => Err("other"),
    }
}

pub async fn run(args: &CoapArgs, seed: u64) -> anyhow::Result<Report> {
    let server: std::net::SocketAddr = tokio::net::lookup_host(&args.coap)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--coap {}", args.coap))?;
    let load = &args.load;
    let per_message = load.readings_per_message() as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Failures::default();
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let query = args.token.as_ref().map(|t| format!("token={t}"));
    let mut tasks = Vec::new();
    for (k, (device, schedule)) in load.schedules(seed).into_iter().enumerate() {
        let mut socket = device_socket(server).await?;
        let path = match &query {
            Some(_) => "/telemetry".to_owned(),
            None => format!("/telemetry/{device}"),
        };
        let (stop, accepted, errors, query, mut start, timeout) = (
            Arc::clone(&stop),
            Arc::clone(&accepted),
            errors.clone(),
            query.clone(),
            start_rx.clone(),
            args.timeout,
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram();
            let _ = start.wait_for(|go| *go).await;
            let begun = Instant::now();
            let mut id = (k as u16).wrapping_mul(7919).wrapping_add(seed as u16);
            let mut round = 0usize;
            let mut buf = vec![0u8; 2048];
            while schedule.wait(round, begun, &stop).await {
                id = id.wrapping_add(1);
                // The server answers a message id it saw from this endpoint within the
                // exchange lifetime from its cache, without storing: a new endpoint before
                // the ids come round.
                if round > 0 && round % IDS_PER_SOCKET == 0 {
                    match device_socket(server).await {
                        Ok(s) => socket = s,
                        Err(_) => break,
                    }
                }
                let body = schedule.body(round);
                round += 1;
                let outcome = match post(&path, query.as_deref(), id, &body) {
                    Ok(bytes) => exchange(&socket, &bytes, id, &mut buf, timeout).await,
                    Err(_) => Err("encode"),
                };
                match outcome {
                    Ok(elapsed) => {
                        accepted.fetch_add(per_message, Ordering::Relaxed);
                        record(&mut latencies, elapsed);
                    }
                    Err(kind) => {
                        errors.count(kind);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            latencies
        }));
    }
    let cpu = CpuWindow::start(args.server_pid);
    let progress = Progress::start(load.seconds, "readings", Arc::clone(&accepted));
    let started = Instant::now();
    let _ = start_tx.send(true);
    let (latencies, elapsed) = run_for(load.seconds, &stop, tasks, started, progress).await?;
    let readings = accepted.load(Ordering::Relaxed) as f64;
    let mut report = Report::new(
        "coap",
        json!({"workload": value_name(&load.workload),
               "devices": load.devices, "readings_per_message": per_message, "seed": seed}),
    );
    report.requests(elapsed, latencies.len(), readings, &errors);
    cpu.finish(&mut report, readings);
    report.latency("request", latencies);
    Ok(report)
}
