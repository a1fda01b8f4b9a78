//! Reading-to-notification latency, and Socket.IO fan-out.
//!
//! Registers one chain per device (`temperature > 25`, notify), then writes readings over HTTP
//! at `--rate` readings/s for `--seconds`, in batches every 10 ms. `--flips` of them per second
//! cross the threshold (each device alternates hot and normal), the rest keep each device on
//! its side. Every reading carries its send time; a flip's notification is matched by device
//! and `seq` (the k-th flip of a device is its k-th notification), and its latency is the time
//! of arrival at an MQTT subscriber (rumqttc, QoS 1) and at a Socket.IO client (node, the
//! stock `socket.io-client`) minus the reading's time.
//!
//! With `--sio-clients N`, N Socket.IO clients all subscribe to every device instead, and the
//! result is the deliveries per second they count.
//!
//! ```text
//! cargo run --release -p aemos-benches --bin aemos-notifybench -- --rate 100000 --flips 500
//! cargo run --release -p aemos-benches --bin aemos-notifybench -- --flips 2000 --sio-clients 1000
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aemos_benches::percentile;
use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Readings per second in all.
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
    /// Threshold crossings per second in all.
    #[arg(long, default_value_t = 200)]
    flips: usize,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Instead of latency: this many Socket.IO clients, each subscribed to every device.
    #[arg(long)]
    sio_clients: Option<usize>,
    /// Node processes the clients are spread over.
    #[arg(long, default_value_t = 1)]
    sio_procs: usize,
    /// Folder with node_modules/socket.io-client and the scripts.
    #[arg(long, default_value = "api/tests/clients")]
    clients: String,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Send times of each device's flips, by flip number (= notification seq - 1).
type Sent = Arc<Mutex<HashMap<String, Vec<i64>>>>;

fn latency(sent: &Sent, n: &Value, at: i64) -> Option<f64> {
    let device = n["deviceUuid"].as_str()?;
    let seq = n["seq"].as_u64()? as usize;
    let sent = sent.lock().unwrap();
    let t = *sent.get(device)?.get(seq.checked_sub(1)?)?;
    Some((at - t) as f64)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let mqtt_latencies = Arc::new(Mutex::new(Vec::new()));
    let (host, port) = args
        .mqtt
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt host:port"))?;
    let mut options = MqttOptions::new(format!("notifybench-{run}"), host, port.parse()?);
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
                        if let Some(l) = latency(&sent, &n, at) {
                            lat.lock().unwrap().push(l);
                        }
                    }
                }
            }
        });
    }
    let sio_latencies = Arc::new(Mutex::new(Vec::new()));
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
                    if let Some(l) = latency(&sent, &v["data"], v["at"].as_i64().unwrap_or(0)) {
                        lat.lock().unwrap().push(l);
                    }
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
    let started = Instant::now();
    let mut written = 0usize;
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
        written += batch.len();
        http.post(format!("{url}/api/v1/write"))
            .json(&batch)
            .send()
            .await?
            .error_for_status()?;
    }
    let elapsed = started.elapsed().as_secs_f64();
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
    println!(
        "devices={} readings_per_sec={:.0} flips={} seconds={elapsed:.1}",
        args.devices,
        written as f64 / elapsed,
        flips
    );
    let report = |name: &str, samples: &Mutex<Vec<f64>>| {
        let mut s = samples.lock().unwrap().clone();
        s.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: notifications={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
            s.len(),
            percentile(&s, 0.5),
            percentile(&s, 0.99),
            s.last().copied().unwrap_or(f64::NAN)
        );
    };
    report("mqtt", &mqtt_latencies);
    match args.sio_clients {
        None => report("socketio", &sio_latencies),
        Some(n) => {
            // From the first reading written to the last event counted, as the clients saw it.
            let secs = last_move.duration_since(started).as_secs_f64() - 1.0;
            println!(
                "socketio_clients={n} procs={procs} deliveries={last_total} expected={} deliveries_per_sec={:.0} notifications_per_sec={:.0}",
                flips * n,
                last_total as f64 / secs,
                flips as f64 / elapsed
            );
        }
    }
    Ok(())
}
