//! `mqtt`: telemetry publishes from `--devices` clients (rumqttc), each its own client id and
//! connection, to its own `aemos/devices/{device}/telemetry`.
//!
//! The workloads are [`super::devices`]'s.
//!
//! The rate reported as durable is what the server made durable (`aemos_mqtt_readings_total`
//! from its Prometheus endpoint, before and after the window), not what the clients sent. With
//! QoS 1, each publish's time from leaving the client to its PUBACK is a latency sample.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::json;

use super::devices::DeviceLoad;
use super::report::{histogram, record, Progress, Report};
use super::{host_port, merge, metrics, scrape, value_name, CpuWindow};

#[derive(Debug, clap::Args)]
pub struct MqttArgs {
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// The server's HTTP address, for its durable count.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    #[command(flatten)]
    pub load: DeviceLoad,
    /// 0 or 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// Unacknowledged publishes per client.
    #[arg(long, default_value_t = 50)]
    pub inflight: u16,
    /// The aemos process, for its CPU time per reading.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

pub async fn run(args: &MqttArgs, seed: u64) -> anyhow::Result<Report> {
    let (host, port) = host_port(&args.mqtt)?;
    let qos = if args.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let http = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let acked = Arc::new(AtomicU64::new(0));
    let load = &args.load;
    let per_publish = load.readings_per_message();
    // The clients connect first; the window starts when the counters are read.
    let (start_tx, start_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for (device, schedule) in load.schedules(seed) {
        let mut options = MqttOptions::new(format!("loadgen-{device}"), host.as_str(), port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(args.inflight.max(1));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, args.inflight.max(1) as usize);
        let (stop, sent, acked, mut start) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&acked),
            start_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let topic = aemos_ingest::mqtt::telemetry_topic(&device);
            let publisher = tokio::spawn(async move {
                let _ = start.wait_for(|go| *go).await;
                let begun = Instant::now();
                let mut round = 0;
                while schedule.wait(round, begun, &stop).await {
                    let body = schedule.body(round);
                    round += 1;
                    if client
                        .publish_bytes(topic.as_str(), qos, false, body)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                let _ = client.disconnect().await;
            });
            // Publish to PUBACK, by packet id.
            let mut out: HashMap<u16, Instant> = HashMap::new();
            let mut latencies = histogram();
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                        out.insert(pkid, Instant::now());
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        if let Some(t) = out.remove(&ack.pkid) {
                            record(&mut latencies, t.elapsed());
                        }
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = publisher.await;
            latencies
        }));
    }
    // Let the clients connect before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = scrape(&http, &url, "aemos_mqtt_readings_total").await?;
    let (sent_before, acked_before) = (sent.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
    let cpu = CpuWindow::start(args.server_pid);
    let progress = Progress::start(load.seconds, "publishes", Arc::clone(&sent));
    let started = Instant::now();
    let _ = start_tx.send(true);
    tokio::time::sleep(Duration::from_secs(load.seconds)).await;
    let after = scrape(&http, &url, "aemos_mqtt_readings_total").await?;
    let (sent_after, acked_after) = (sent.load(Ordering::Relaxed), acked.load(Ordering::Relaxed));
    let elapsed = started.elapsed().as_secs_f64();
    progress.finish();
    stop.store(true, Ordering::Relaxed);
    let mut latencies: Histogram<u64> = histogram();
    for t in tasks {
        if let Ok(Ok(h)) = tokio::time::timeout(Duration::from_secs(5), t).await {
            merge(&mut latencies, h)?;
        }
    }
    let durable = after - before;
    let publishes = (sent_after - sent_before) as f64;
    let mut report = Report::new(
        "mqtt",
        json!({"workload": value_name(&load.workload),
               "devices": load.devices, "qos": args.qos, "readings_per_publish": per_publish,
               "inflight": args.inflight, "seed": seed}),
    );
    report
        .figure("seconds", (elapsed * 10.0).round() / 10.0)
        .figure("publishes_per_sec", (publishes / elapsed).round())
        .figure(
            "sent_readings_per_sec",
            (publishes * per_publish as f64 / elapsed).round(),
        )
        .figure(
            "acked_publishes_per_sec",
            ((acked_after - acked_before) as f64 / elapsed).round(),
        )
        .figure("durable_readings", durable)
        .figure("durable_readings_per_sec", (durable / elapsed).round());
    cpu.finish(&mut report, durable);
    if args.qos == 1 {
        report.latency("publish_to_puback", latencies);
    }
    // What the server says it dropped (acknowledged, then lost), if anything.
    let text = metrics(&http, &url).await?;
    let dropped: f64 = text
        .lines()
        .filter(|l| l.starts_with("aemos_mqtt_dropped"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    report.figure("server_dropped", dropped);
    Ok(report)
}
