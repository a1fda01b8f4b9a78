//! `aemos-loadgen`: one load generator for every protocol aemos speaks, a subcommand each.
//!
//! - [`http`]: readings to `POST /api/v1/write` (JSON, NDJSON, line protocol, Arrow IPC), the
//!   InfluxDB write endpoints, or one reading per request to `/api/v1/datastreams/token` with
//!   a device token;
//! - [`mqtt`]: telemetry publishes, QoS 0 or 1, one client (and client id) per device;
//! - [`coap`]: confirmable `POST /telemetry/{device}`, one outstanding request per socket;
//! - [`commands`]: device commands posted to the API, obeyed and acknowledged by simulated
//!   MQTT devices, one in flight per device: acknowledged commands per second, call to ack;
//! - `hold`: many idle MQTT devices ([`crate::hold`]), the server's memory per connection;
//!   with `--rounds`, a reconnect loop (all disconnect, all connect again);
//! - [`notify`]: reading-to-notification latency over Socket.IO, MQTT and CoAP Observe.
//!
//! The workloads are seeded (`--seed`): random walks over `sensors x variables`
//! ([`crate::Workload`]) or seed 003's air purifiers ([`crate::purifiers`]). Each run shows a
//! live rate on a terminal, prints a table and, with `--json FILE`, writes its figures there
//! ([`report`]). With `--server-pid`, the server's CPU time over the run is read from `/proc`
//! and reported per reading.

pub mod coap;
pub mod commands;
pub mod devices;
pub mod http;
pub mod mqtt;
pub mod notify;
pub mod report;

use std::time::{Duration, Instant};

use crate::hold::{hold, HoldArgs};
use report::Report;

/// The server's CPU time (user + system, seconds) from `/proc/{pid}/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The server's CPU over a run: started before the load, read after it.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    pid: Option<u32>,
    cpu: Option<f64>,
    at: Instant,
}

impl CpuWindow {
    pub fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            cpu: pid.and_then(cpu_seconds),
            at: Instant::now(),
        }
    }

    /// Adds `server_cores` and `server_cpu_us_per_reading` to `report` when the pid was given.
    pub fn finish(&self, report: &mut Report, readings: f64) {
        let (Some(pid), Some(before)) = (self.pid, self.cpu) else {
            return;
        };
        let Some(after) = cpu_seconds(pid) else {
            return;
        };
        let cpu = after - before;
        report.figure("server_cores", cpu / self.at.elapsed().as_secs_f64());
        if readings > 0.0 {
            report.figure("server_cpu_us_per_reading", cpu * 1e6 / readings);
        }
    }
}

/// The server's Prometheus text.
pub async fn metrics(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    Ok(client
        .get(format!("{url}/api/v1/metrics/prometheus"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?)
}

/// The sum over labels of a series of the server's Prometheus text.
pub async fn scrape(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let text = metrics(client, url).await?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// The name a value of a `--flag` enum is spelled with on the command line.
pub fn value_name<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map_or_else(String::new, |p| p.get_name().to_owned())
}

/// Merges one connection's latencies into the run's.
pub fn merge(
    into: &mut hdrhistogram::Histogram<u64>,
    one: hdrhistogram::Histogram<u64>,
) -> anyhow::Result<()> {
    into.add(one)
        .map_err(|e| anyhow::anyhow!("merging latency histograms: {e:?}"))
}

/// Runs request tasks for `seconds`, then raises `stop`, waits for each task's last answer and
/// merges their latencies: the run's latencies and its length in seconds.
pub async fn run_for(
    seconds: u64,
    stop: &std::sync::atomic::AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<hdrhistogram::Histogram<u64>>>,
    started: Instant,
    progress: report::Progress,
) -> anyhow::Result<(hdrhistogram::Histogram<u64>, f64)> {
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut latencies = report::histogram();
    for t in tasks {
        merge(&mut latencies, t.await?)?;
    }
    progress.finish();
    Ok((latencies, started.elapsed().as_secs_f64()))
}

/// `host:port` into its parts.
pub fn host_port(addr: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{addr}: expected host:port"))?;
    Ok((host.to_owned(), port.parse()?))
}

#[derive(Debug, clap::Args)]
pub struct HoldCli {
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// Idle devices to connect and hold.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Connects in flight at once (the storm).
    #[arg(long, default_value_t = 1000)]
    pub concurrency: usize,
    /// Each device's keep-alive (a PINGREQ every 4/5 of it).
    #[arg(long, default_value_t = 60)]
    pub keep_alive: u16,
    /// Seconds to hold them once connected.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Each device subscribes to its `aemos/devices/{id}/commands` topic, as a real one does.
    #[arg(long)]
    pub subscribe: bool,
    /// Connect, hold and disconnect every device this many times in a row (a reconnect loop);
    /// the figures of the rounds after the first are reported with their number.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// The aemos process whose memory to read (`/proc/{pid}/status`).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `hold`: many idle devices' connections, the storm's rate and the server's memory per
/// connection.
pub async fn run_hold(args: &HoldCli) -> anyhow::Result<Report> {
    use std::net::ToSocketAddrs;
    let broker = args
        .mqtt
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("--mqtt {}", args.mqtt))?;
    let mut report = Report::new(
        "hold",
        serde_json::json!({"connections": args.connections, "concurrency": args.concurrency,
                           "keep_alive": args.keep_alive, "seconds": args.seconds,
                           "subscribe": args.subscribe, "rounds": args.rounds}),
    );
    for round in 1..=args.rounds.max(1) {
        let cpu = args.server_pid.and_then(cpu_seconds);
        let r = hold(HoldArgs {
            broker,
            connections: args.connections,
            concurrency: args.concurrency,
            keep_alive_secs: args.keep_alive,
            subscribe: args.subscribe,
            hold: Duration::from_secs(args.seconds),
            server_pid: args.server_pid,
        })
        .await?;
        let name = |figure: &str| match round {
            1 => figure.to_owned(),
            n => format!("round{n}_{figure}"),
        };
        report
            .figure(&name("connected"), r.connected as f64)
            .figure(&name("failed"), r.failed as f64)
            .figure(&name("connect_seconds"), r.connect_seconds)
            .figure(
                &name("connects_per_sec"),
                r.connected as f64 / r.connect_seconds,
            )
            .figure(&name("alive_at_end"), r.alive_at_end as f64);
        // The server's CPU from this round's first connect to a second after its last
        // disconnect (the router cleans up after each one).
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let (Some(before), Some(after)) = (cpu, args.server_pid.and_then(cpu_seconds)) {
            report.figure(&name("server_cpu_seconds"), after - before);
        }
        if let (Some(b), Some(a)) = (r.rss_before_kib, r.rss_after_kib) {
            report
                .figure(&name("server_rss_before_mib"), (b / 1024) as f64)
                .figure(&name("server_rss_after_mib"), (a / 1024) as f64);
            if r.connected > 0 && round == 1 {
                report.figure(
                    "server_bytes_per_connection",
                    ((a.saturating_sub(b) * 1024) as f64 / r.connected as f64).round(),
                );
            }
        }
    }
    Ok(report)
}
