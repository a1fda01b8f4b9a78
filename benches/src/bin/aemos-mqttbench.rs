//! MQTT telemetry load: `--publishers` clients (rumqttc) each publish arrays of `--batch`
//! readings to their own `aemos/devices/{device}/telemetry`, QoS 1, as fast as the broker's
//! acknowledgements allow (`--inflight` unacknowledged publishes per client).
//!
//! ```text
//! cargo run --release -p aemos-benches --bin aemos-mqttbench -- \
//!     --mqtt 127.0.0.1:1883 --url http://127.0.0.1:3000 --publishers 100 --batch 100 --seconds 20
//! ```
//!
//! `--hold N` instead holds N idle devices' connections (MQTT 3.1.1, their own client ids and
//! keep-alives, connected as a storm) for `--seconds`, and reports the server's resident memory
//! per connection (`--server-pid`):
//!
//! ```text
//! ulimit -n 1048576; aemos-mqttbench --mqtt 127.0.0.1:1883 --hold 100000 --seconds 30 --server-pid $PID
//! ```
//!
//! The rate reported is what the server made durable (`aemos_mqtt_readings_total` from its
//! Prometheus endpoint, before and after), not what the clients sent; the broker acknowledges
//! on receipt, so the two differ when the server falls behind. Also prints the server's
//! receipt-to-durable window histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:1883")]
    mqtt: String,
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    url: String,
    #[arg(long, default_value_t = 100)]
    publishers: usize,
    /// Readings per publish.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Unacknowledged publishes per client.
    #[arg(long, default_value_t = 50)]
    inflight: u16,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Readings per second in all (0: as fast as the broker acknowledges).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Instead of publishing: hold this many idle devices' connections (`aemos_benches::hold`)
    /// and report the server's resident memory per connection.
    #[arg(long)]
    hold: Option<usize>,
    /// With --hold: connects in flight at once (the storm).
    #[arg(long, default_value_t = 1000)]
    concurrency: usize,
    /// With --hold: each device's keep-alive (a PINGREQ every 4/5 of it).
    #[arg(long, default_value_t = 60)]
    keep_alive: u16,
    /// With --hold: the aemos process whose memory to read (`/proc/{pid}/status`).
    #[arg(long)]
    server_pid: Option<u32>,
}

async fn hold(args: &Args, connections: usize) -> anyhow::Result<()> {
    use std::net::ToSocketAddrs;
    let broker = args
        .mqtt
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--mqtt {}", args.mqtt))?;
    let r = aemos_benches::hold::hold(aemos_benches::hold::HoldArgs {
        broker,
        connections,
        concurrency: args.concurrency,
        keep_alive_secs: args.keep_alive,
        hold: Duration::from_secs(args.seconds),
        server_pid: args.server_pid,
    })
    .await?;
    let per_connection = match (r.rss_before_kib, r.rss_after_kib) {
        (Some(b), Some(a)) if r.connected > 0 => {
            format!(
                "{:.0}",
                (a.saturating_sub(b) * 1024) as f64 / r.connected as f64
            )
        }
        _ => "-".into(),
    };
    println!(
        "connections={connections} connected={} failed={} connect_seconds={:.1} connects_per_sec={:.0} \
         server_rss_before_mib={} server_rss_after_mib={} server_bytes_per_connection={per_connection} alive_after_{}s={}",
        r.connected,
        r.failed,
        r.connect_seconds,
        r.connected as f64 / r.connect_seconds,
        r.rss_before_kib.map_or("-".into(), |k| (k / 1024).to_string()),
        r.rss_after_kib.map_or("-".into(), |k| (k / 1024).to_string()),
        args.seconds,
        r.alive_at_end,
    );
    Ok(())
}

/// The server's Prometheus text.
async fn metrics(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{url}/api/v1/metrics/prometheus"))
        .send()
        .await?
        .text()
        .await?)
}

/// A counter of the server's Prometheus text.
async fn scrape(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = metrics(client, url).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn payload(device: usize, batch: usize, round: usize) -> bytes::Bytes {
    let mut s = String::with_capacity(batch * 64);
    s.push('[');
    for i in 0..batch {
        if i > 0 {
            s.push(',');
        }
        let v = 15.0 + ((device * 7 + round * 13 + i) % 150) as f64 / 10.0;
        s.push_str(&format!(
            r#"{{"sensor":"mq-{device:04}-{}","variable":"temperature","value":{v}}}"#,
            i % 10
        ));
    }
    s.push(']');
    bytes::Bytes::from(s)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(connections) = args.hold {
        return hold(&args, connections).await;
    }
    let (host, port) = args
        .mqtt
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("--mqtt host:port"))?;
    let port: u16 = port.parse()?;
    let http = reqwest::Client::new();
    let url = args.url.trim_end_matches('/').to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for p in 0..args.publishers {
        let mut options = MqttOptions::new(format!("bench-{p}"), host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_inflight(args.inflight);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, args.inflight as usize);
        let (stop, sent, batch) = (Arc::clone(&stop), Arc::clone(&sent), args.batch);
        // Publishes per second of this client, when paced.
        let per_client = args.rate as f64 / args.publishers as f64 / args.batch as f64;
        let bodies: Vec<bytes::Bytes> = (0..8).map(|r| payload(p, batch, r)).collect();
        tasks.push(tokio::spawn(async move {
            let topic = aemos_ingest::mqtt::telemetry_topic(&format!("mq-{p:04}"));
            let publisher = tokio::spawn(async move {
                let mut round = 0;
                let start = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    if per_client > 0.0 {
                        let due = Duration::from_secs_f64(round as f64 / per_client);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                    let body = bodies[round % bodies.len()].clone();
                    round += 1;
                    if client
                        .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, body)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    sent.fetch_add(batch as u64, Ordering::Relaxed);
                }
                let _ = client.disconnect().await;
            });
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = publisher.await;
        }));
    }
    // Let the clients connect before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = scrape(&http, &url, "aemos_mqtt_readings_total").await?;
    let sent_before = sent.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let after = scrape(&http, &url, "aemos_mqtt_readings_total").await?;
    let sent_after = sent.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let durable = after - before;
    println!(
        "publishers={} batch={} seconds={elapsed:.1} sent_readings_per_sec={:.0} durable_readings_per_sec={:.0}",
        args.publishers,
        args.batch,
        (sent_after - sent_before) as f64 / elapsed,
        durable / elapsed,
    );
    // The receipt-to-durable window, as the server measured it.
    let text = metrics(&http, &url).await?;
    for line in text.lines().filter(|l| {
        l.starts_with("aemos_mqtt_durable_window_seconds") || l.starts_with("aemos_mqtt_dropped")
    }) {
        println!("{line}");
    }
    Ok(())
}
