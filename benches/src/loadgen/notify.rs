//! `notify`: reading-to-notification latency, and Socket.IO fan-out.
//!
//! Registers one chain per device (`temperature > 25`, notify), then writes readings over HTTP
//! at `--rate` readings/s for `--seconds`, in batches every 10 ms. `--flips` of them per second
//! cross the threshold (each device alternates hot and normal), the rest keep each device on
//! its side. Every reading carries its send time; a flip's notification is matched by device
//! and `seq` (the k-th flip of a device is its k-th notification), and its latency is the time
//! of arrival minus the reading's time, at three subscribers: an MQTT client (rumqttc, QoS 1,
//! `aemos/devices/+/notifications`), a Socket.IO client (node, the stock `socket.io-client`)
//! and CoAP observers (`GET /devices/{id}/notifications` with Observe, one socket per device,
//! the first `--coap-observers` devices).
//!
//! With `--sio-clients N`, N Socket.IO clients all subscribe to every device instead, and the
//! result is the deliveries per second they count.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

use super::report::{histogram, Progress, Report};
use super::{host_port, CpuWindow};

#[derive(Debug, clap::Args)]
pub struct NotifyArgs {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Readings per second in all.
    #[arg(long, default_value_t = 10_000)]
    pub rate: usize,
    /// Threshold crossings per second in all.
    #[arg(long, default_value_t = 200)]
    pub flips: usize,
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// Instead of latency: this many Socket.IO clients, each subscribed to every device.
    #[arg(long)]
    pub sio_clients: Option<usize>,
    /// Node processes the clients are spread over.
    #[arg(long, default_value_t = 1)]
    pub sio_procs: usize,
    /// Folder with node_modules/socket.io-client and the scripts.
    #[arg(long, default_value = "api/tests/clients")]
    pub clients: String,
    /// The CoAP address of the server (UDP).
    #[arg(long, default_value = "127.0.0.1:5683")]
    pub coap: String,
    /// Devices observed over CoAP, each from its own socket (0: none).
    #[arg(long, default_value_t = 100)]
    pub coap_observers: usize,
    /// The aemos process, for its CPU time per reading.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Send times of each device's flips, by flip number (= notification seq - 1).
type Sent = Arc<Mutex<HashMap<String, Vec<i64>>>>;
/// One subscriber's latencies.
type Latencies = Arc<Mutex<Histogram<u64>>>;

/// Records the latency of notification `n`, received at `at` (ms), if it is a flip's.
fn latency(sent: &Sent, n: &Value, at: i64, into: &Latencies) {
    let Some(device) = n["deviceUuid"].as_str() else {
        return;
    };
    let Some(seq) = n["seq"].as_u64().and_then(|s| (s as usize).checked_sub(1)) else {
        return;
    };
    let t = sent
        .lock()
        .unwrap()
        .get(device)
        .and_then(|v| v.get(seq).copied());
    if let Some(t) = t {
        let micros = ((at - t).max(0) as u64 * 1000).max(1);
        into.lock().unwrap().saturating_record(micros);
    }
}

pub async fn run(args: &NotifyArgs) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_owned();
    let run = now_ms() % 1_000_000;
    let devices: Vec<String> = (0..args.devices)
        .map(|i| format!("nb{run}-{i:04}"))
        .collect();
    for d in &devices {
        let chain = json!({"id": format!("hot-{d}"), "nodes": [
            {"type": "filter", "sensor": d, "condition": "temperature > 25"},
            {"type": "action", "action": "notify", "device": d,
             "state": {"name": "alert", "value": "hot", "clear": "normal"}}]});
        let r = http
            .post(format!("{url}/api/v1/rulechains"))
            .json(&chain)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "registering a chain: {}",
            r.text().await?
        );
    }
    let sent: Sent = Arc::new(Mutex::new(
        devices.iter().map(|d| (d.clone(), Vec::new())).collect(),
    ));

    // Subscribers.
    let mqtt_latencies: Latencies = Arc::new(Mutex::new(histogram()));
    let (host, port) = host_port(&args.mqtt)?;
    let mut options = MqttOptions::new(format!("loadgen-notify-{run}"), host, port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (mqtt, mut eventloop) = AsyncClient::new(options, 1000);
    mqtt.subscribe("aemos/devices/+/notifications", QoS::AtLeastOnce)
        .await?;
    {
        let (sent, lat) = (Arc::clone(&sent), Arc::clone(&mqtt_latencies));
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event {
                    let at = now_ms();
                    if let Ok(n) = serde_json::from_slice::<Value>(&p.payload) {
                        latency(&sent, &n, at, &lat);
                    }
                }
            }
        });
    }
    let coap_latencies: Latencies = Arc::new(Mutex::new(histogram()));
    // Each observation ends when its sender is dropped: kept for the run.
    let mut observations = Vec::new();
    for d in devices.iter().take(args.coap_observers) {
        let client = coap::UdpCoAPClient::new_udp(args.coap.as_str()).await?;
        let (sent, lat) = (Arc::clone(&sent), Arc::clone(&coap_latencies));
        let observation = client
            .observe(&format!("/devices/{d}/notifications"), move |message| {
                let at = now_ms();
                if let Ok(n) = serde_json::from_slice::<Value>(&message.payload) {
                    latency(&sent, &n, at, &lat);
                }
            })
            .await?;
        observations.push((client, observation));
    }
    let sio_latencies: Latencies = Arc::new(Mutex::new(histogram()));
    let procs = if args.sio_clients.is_some() {
        args.sio_procs.max(1)
    } else {
        1
    };
    // The latest count of each node process.
    let counts: Arc<Vec<AtomicU64>> = Arc::new((0..procs).map(|_| AtomicU64::new(0)).collect());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut children = Vec::new();
    for p in 0..procs {
        let mut node = Command::new("node");
        match args.sio_clients {
            Some(n) => node
                .arg(format!("{}/sio-count.js", args.clients))
                .arg(&url)
                .arg(devices.join(","))
                .arg((n / procs + usize::from(p < n % procs)).to_string()),
            None => node
                .arg(format!("{}/sio-listen.js", args.clients))
                .arg(&url)
                .arg(devices.join(",")),
        };
        let mut child = node.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdout = child.stdout.take().expect("piped");
        children.push(child);
        let (sent, lat, counts, ready_tx) = (
            Arc::clone(&sent),
            Arc::clone(&sio_latencies),
            Arc::clone(&counts),
            ready_tx.clone(),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["event"] == "subscribed" || v.get("connected").is_some() {
                    let _ = ready_tx.send(());
                } else if v["event"] == "device-state-change" {
                    latency(&sent, &v["data"], v["at"].as_i64().unwrap_or(0), &lat);
                } else if let Some(n) = v["events"].as_u64() {
                    counts[p].store(n, Ordering::Relaxed);
                }
            }
        });
    }
    tokio::task::spawn_blocking(move || {
        (0..procs).try_for_each(|_| ready_rx.recv_timeout(Duration::from_secs(300)))
    })
    .await??;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Start every device on the normal side.
    let start: Vec<Value> = devices
        .iter()
        .map(|d| json!({"sensor": d, "variable": "temperature", "value": 20.0}))
        .collect();
    http.post(format!("{url}/api/v1/write"))
        .json(&start)
        .send()
        .await?
        .error_for_status()?;

    // Load: a batch every 10 ms.
    let per_tick = (args.rate / 100).max(1);
    let flips_per_tick = (args.flips as f64 / 100.0).max(0.0);
    let mut hot = vec![false; devices.len()];
    let mut flip_credit = 0.0;
    let (mut next_flip, mut next_filler) = (0usize, 0usize);
    let written = Arc::new(AtomicU64::new(0));
    let cpu = CpuWindow::start(args.server_pid);
    let progress = Progress::start(args.seconds, "readings", Arc::clone(&written));
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < Duration::from_secs(args.seconds) {
        tick.tick().await;
        let t = now_ms();
        let mut batch = Vec::with_capacity(per_tick);
        flip_credit += flips_per_tick;
        let mut flipped = Vec::new();
        while flip_credit >= 1.0 && batch.len() < per_tick {
            flip_credit -= 1.0;
            let i = next_flip % devices.len();
            next_flip += 1;
            hot[i] = !hot[i];
            flipped.push(i);
            let v = if hot[i] { 30.0 } else { 20.0 };
            batch.push(
                json!({"sensor": devices[i], "variable": "temperature", "value": v, "time": t}),
            );
        }
        while batch.len() < per_tick {
            let i = next_filler % devices.len();
            next_filler += 1;
            if flipped.contains(&i) {
                continue;
            }
            // Same side as the device's state: no crossing.
            let v = if hot[i] {
                26.0 + (next_filler % 7) as f64
            } else {
                18.0 + (next_filler % 7) as f64
            };
            batch.push(
                json!({"sensor": devices[i], "variable": "temperature", "value": v, "time": t}),
            );
        }
        {
            let mut s = sent.lock().unwrap();
            for &i in &flipped {
                s.get_mut(&devices[i]).expect("device").push(t);
            }
        }
        written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        http.post(format!("{url}/api/v1/write"))
            .json(&batch)
            .send()
            .await?
            .error_for_status()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish();
    let written = written.load(Ordering::Relaxed) as f64;
    let mut report = Report::new(
        "notify",
        json!({"devices": args.devices, "rate": args.rate, "flips_per_sec": args.flips,
               "coap_observers": args.coap_observers.min(args.devices),
               "sio_clients": args.sio_clients, "sio_procs": procs}),
    );
    // The server's CPU over the load, before the wait for late notifications.
    cpu.finish(&mut report, written);
    // Clients may lag behind the server: wait until their counts stop moving.
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (mut last_total, mut last_move) = (total(), Instant::now());
    while last_move.elapsed() < Duration::from_secs(3)
        && started.elapsed().as_secs() < args.seconds + 300
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if total() != last_total {
            (last_total, last_move) = (total(), Instant::now());
        }
    }
    for mut child in children {
        let _ = child.kill();
    }
    let flips: usize = sent.lock().unwrap().values().map(Vec::len).sum();
    report
        .figure("seconds", (elapsed * 10.0).round() / 10.0)
        .figure("readings_per_sec", (written / elapsed).round())
        .figure("flips", flips as f64);
    let take = |l: &Latencies| std::mem::replace(&mut *l.lock().unwrap(), histogram());
    report.latency("mqtt", take(&mqtt_latencies));
    if args.coap_observers > 0 {
        report.latency("coap", take(&coap_latencies));
    }
    match args.sio_clients {
        None => {
            report.latency("socketio", take(&sio_latencies));
        }
        Some(n) => {
            // From the first reading written to the last event counted, as the clients saw it.
            let secs = last_move.duration_since(started).as_secs_f64() - 1.0;
            report
                .figure("socketio_clients", n as f64)
                .figure("deliveries", last_total as f64)
                .figure("deliveries_expected", (flips * n) as f64)
                .figure("deliveries_per_sec", (last_total as f64 / secs).round())
                .figure("notifications_per_sec", (flips as f64 / elapsed).round());
        }
    }
    drop(observations);
    Ok(report)
}
