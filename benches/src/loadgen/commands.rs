//! `commands`: device commands end to end. The load registers `--devices` devices (or rotates
//! their tokens when they exist), connects each as its own MQTT client that obeys and
//! acknowledges its commands at once (as `aemos simulate` does), then `--concurrency` API
//! clients post `setFanSpeed` commands, each over its own share of the devices: post a command,
//! wait for its device to acknowledge it, go on to the next device.
//!
//! So each device has at most one command of the load in flight and none is superseded, and
//! the rate is the acknowledged rate. Two latencies: the `202` (the command made durable) and
//! the API call to the device's ack leaving the device. The server's own histogram of
//! creation-to-ack (`aemos_command_ack_seconds`, bucket bounds) is reported too. With
//! `--telemetry-interval`, each device also publishes seed 003's seven values at that period.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::report::{histogram, record, Failures, Progress, Report};
use super::{host_port, merge, metrics, CpuWindow};
use crate::purifiers::Purifiers;

#[derive(Debug, clap::Args)]
pub struct CommandsArgs {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// Devices, each its own MQTT client.
    #[arg(long, default_value_t = 10_000)]
    pub devices: usize,
    /// API clients posting commands, each waiting for its command's ack before the next.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Each device's telemetry period (`1s`, `2m`); none when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub telemetry_interval: Option<Duration>,
    /// An admin JWT for registering the devices (production mode).
    #[arg(long)]
    pub admin_token: Option<String>,
    /// How long a client waits for an ack before it counts the command lost and goes on.
    #[arg(long, default_value = "35s", value_parser = humantime::parse_duration)]
    pub ack_wait: Duration,
    /// The aemos process, for its CPU time per command.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// One simulated device: what its API client needs to reach it.
struct Device {
    id: String,
    /// The command ids the device has acknowledged, in order.
    acked: mpsc::Receiver<String>,
}

async fn register(
    http: &reqwest::Client,
    url: &str,
    admin: Option<&str>,
    id: &str,
) -> anyhow::Result<Option<String>> {
    let post = |path: String, body: Option<Value>| {
        let mut r = http.post(format!("{url}{path}"));
        if let Some(t) = admin {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let mut r = post("/api/v1/devices".into(), Some(json!({"id": id}))).await?;
    if r.status() == reqwest::StatusCode::CONFLICT {
        r = post(format!("/api/v1/devices/{id}/token"), None).await?;
    }
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "registering {id}: {status} {body}");
    Ok(body["token"].as_str().map(str::to_owned))
}

/// Connects one device; it acknowledges each command it receives and tells its API client.
fn connect(
    host: &str,
    port: u16,
    id: &str,
    token: Option<&str>,
    telemetry: Option<(Duration, Vec<bytes::Bytes>)>,
    acks: Arc<AtomicU64>,
) -> Device {
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(60));
    if let Some(t) = token {
        options.set_credentials(id, t);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let (tx, acked) = mpsc::channel(16);
    let topic = format!("aemos/devices/{id}/commands");
    let ack_topic = format!("aemos/devices/{id}/acks");
    let telemetry_topic = format!("aemos/devices/{id}/telemetry");
    tokio::spawn(async move {
        let (period, bodies) = telemetry.unwrap_or((Duration::from_secs(3600), Vec::new()));
        let mut tick = tokio::time::interval(period);
        let mut round = 0;
        // A tick must not cancel the event loop's poll while it connects (that drops the
        // connection): telemetry only between a CONNACK and an error.
        let mut connected = false;
        loop {
            tokio::select! {
                _ = tick.tick(), if connected && !bodies.is_empty() => {
                    let body = bodies[round % bodies.len()].clone();
                    round += 1;
                    let _ = client.try_publish(&telemetry_topic, QoS::AtLeastOnce, false, body);
                }
                event = eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        // A clean session each time: subscribe on every connect.
                        connected = true;
                        let _ = client.try_subscribe(&topic, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let command: Value = serde_json::from_slice(&p.payload).unwrap_or_default();
                        let Some(id) = command["commandId"].as_str() else { continue };
                        let ack = json!({"commandId": id, "status": "ok",
                                         "fanSpeed": command["value"], "power": true});
                        // Never awaited here: the event loop is what drains the client's queue.
                        // A full queue loses this ack; the server sends the command again.
                        if client.try_publish(&ack_topic, QoS::AtLeastOnce, false, ack.to_string()).is_err() {
                            continue;
                        }
                        acks.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.try_send(id.to_owned());
                    }
                    Ok(_) => {}
                    Err(_) => {
                        connected = false;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    });
    Device {
        id: id.to_owned(),
        acked,
    }
}

struct Latencies {
    accepted: Histogram<u64>,
    acked: Histogram<u64>,
}

/// One API client: a command to each of its devices in turn, each waited for.
async fn post_commands(
    http: reqwest::Client,
    url: String,
    admin: Option<String>,
    mut devices: Vec<Device>,
    ack_wait: Duration,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    failures: Failures,
) -> Latencies {
    let mut l = Latencies {
        accepted: histogram(),
        acked: histogram(),
    };
    let mut round = 0usize;
    let n = devices.len();
    while !stop.load(Ordering::Relaxed) {
        let device = &mut devices[round % n];
        let value = (round / n) % 6;
        round += 1;
        let start = Instant::now();
        let mut request = http
            .post(format!("{url}/api/v1/devices/{}/commands", device.id))
            .json(&json!({"action": "setFanSpeed", "value": value}));
        if let Some(t) = &admin {
            request = request.bearer_auth(t);
        }
        let answer = match request.send().await {
            Ok(r) if r.status() == 202 => r.json::<Value>().await.ok(),
            Ok(r) => {
                failures.count(r.status().as_str());
                None
            }
            Err(_) => {
                failures.count("connection");
                None
            }
        };
        let Some(id) = answer.and_then(|a| a["commandId"].as_str().map(str::to_owned)) else {
            continue;
        };
        record(&mut l.accepted, start.elapsed());
        let wait = async {
            while let Some(acked) = device.acked.recv().await {
                if acked == id {
                    return true;
                }
            }
            false
        };
        match tokio::time::timeout(ack_wait, wait).await {
            Ok(true) => {
                record(&mut l.acked, start.elapsed());
                done.fetch_add(1, Ordering::Relaxed);
            }
            _ => failures.count("no ack"),
        }
    }
    l
}

/// The server's `aemos_command_ack_seconds` percentiles (bucket bounds, in ms) and counters.
fn server_figures(text: &str, report: &mut Report) {
    let mut buckets = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        if let Some(rest) = name.strip_prefix("aemos_command_ack_seconds_bucket{") {
            let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next());
            let le = match le {
                Some("+Inf") => f64::INFINITY,
                Some(s) => s.parse().unwrap_or(f64::INFINITY),
                None => continue,
            };
            buckets.push((le, value));
        }
    }
    let total = buckets.last().map_or(0.0, |b| b.1);
    for (q, name) in [
        (0.5, "server_ack_p50_le_ms"),
        (0.99, "server_ack_p99_le_ms"),
    ] {
        if let Some((le, _)) = buckets.iter().find(|(_, n)| total > 0.0 && *n >= q * total) {
            report.figure(name, le * 1000.0);
        }
    }
}

pub async fn run(args: &CommandsArgs, seed: u64) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.devices >= args.concurrency && args.concurrency > 0,
        "--devices must be at least --concurrency (each API client has devices of its own)"
    );
    let (host, port) = host_port(&args.mqtt)?;
    let url = args.url.trim_end_matches('/').to_owned();
    let http = reqwest::Client::new();
    let admin = args.admin_token.clone();
    let mut purifiers = args
        .telemetry_interval
        .map(|i| Purifiers::new("cmd", args.devices, i, seed));
    let acks = Arc::new(AtomicU64::new(0));
    let registering = Instant::now();
    let mut shares: Vec<Vec<Device>> = (0..args.concurrency).map(|_| Vec::new()).collect();
    for d in 0..args.devices {
        let id = format!("cmd-{d:05}");
        let token = register(&http, &url, admin.as_deref(), &id).await?;
        let telemetry = purifiers.as_mut().map(|p| {
            let bodies = (0..8).map(|_| bytes::Bytes::from(p.message(d))).collect();
            (p.interval(), bodies)
        });
        let device = connect(
            &host,
            port,
            &id,
            token.as_deref(),
            telemetry,
            Arc::clone(&acks),
        );
        shares[d % args.concurrency].push(device);
    }
    let registered = registering.elapsed().as_secs_f64();
    // Let the last clients connect and subscribe.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failures = Failures::default();
    let cpu = CpuWindow::start(args.server_pid);
    let progress = Progress::start(args.seconds, "acks", Arc::clone(&done));
    let started = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|devices| {
            tokio::spawn(post_commands(
                http.clone(),
                url.clone(),
                admin.clone(),
                devices,
                args.ack_wait,
                Arc::clone(&stop),
                Arc::clone(&done),
                failures.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let in_window = done.load(Ordering::Relaxed) as f64;
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    progress.finish();
    let (mut accepted, mut to_ack) = (histogram(), histogram());
    for t in tasks {
        let l = t.await?;
        merge(&mut accepted, l.accepted)?;
        merge(&mut to_ack, l.acked)?;
    }
    // With the commands in flight at the end of the window, each with its latency.
    let acked = done.load(Ordering::Relaxed) as f64;
    let mut report = Report::new(
        "commands",
        json!({"devices": args.devices, "concurrency": args.concurrency,
               "telemetry_interval": args.telemetry_interval.map(|i| humantime::format_duration(i).to_string()),
               "seconds": args.seconds}),
    );
    report
        .figure("register_and_connect_seconds", registered.round())
        .figure("seconds", (elapsed * 10.0).round() / 10.0)
        .figure("acked_commands", acked)
        .figure("acked_commands_per_sec", (in_window / elapsed).round())
        .figure("device_acks_sent", acks.load(Ordering::Relaxed) as f64);
    report.failures(&failures);
    // Server CPU as cores (its per-reading figure does not apply to commands).
    cpu.finish(&mut report, 0.0);
    server_figures(&metrics(&http, &url).await?, &mut report);
    report
        .latency("api_202", accepted)
        .latency("api_call_to_device_ack", to_ack);
    Ok(report)
}
