//! `aemos-loadgen`: load over every protocol aemos speaks, one subcommand each (see
//! [`aemos_benches::loadgen`]).
//!
//! ```text
//! aemos-loadgen http --url http://127.0.0.1:3000 --format json --connections 8 --batch 1000 --seconds 30
//! aemos-loadgen http --endpoint datastream --register-device d1 --connections 50 --seconds 10
//! aemos-loadgen mqtt --mqtt 127.0.0.1:1883 --devices 1000 --batch 1 --qos 1 --seconds 20
//! aemos-loadgen mqtt --workload purifiers --devices 10000 --interval 2m --seconds 300
//! aemos-loadgen coap --coap 127.0.0.1:5683 --devices 50 --batch 10 --seconds 20
//! aemos-loadgen commands --url http://127.0.0.1:3000 --mqtt 127.0.0.1:1883 --devices 10000 --concurrency 200
//! aemos-loadgen hold --mqtt 127.0.0.1:1883 --connections 19000 --server-pid $PID
//! aemos-loadgen notify --rate 10000 --flips 200 --seconds 20
//! aemos-loadgen --json run.json --seed 7 http ...
//! ```
//!
//! Prints a table of the run's figures and latency percentiles; `--json FILE` writes them as
//! JSON too (`{"name", "params", "figures", "latency_ms"}`).

use std::path::PathBuf;

use aemos_benches::loadgen::{self, coap, commands, http, mqtt, notify};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Load generator for aemos: HTTP, MQTT, CoAP, commands, idle devices, notification latency"
)]
struct Cli {
    /// Also write the run's figures to this file, as JSON.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
    /// The workload's seed: the same seed, the same readings.
    #[arg(long, global = true, default_value_t = 42)]
    seed: u64,
    #[command(subcommand)]
    load: Load,
}

#[derive(Debug, Subcommand)]
enum Load {
    /// Readings over HTTP: aemos's write API in each format, the InfluxDB endpoints, or one
    /// reading per request with a device token.
    Http(http::HttpArgs),
    /// Telemetry publishes over MQTT, one client per device.
    Mqtt(mqtt::MqttArgs),
    /// Confirmable CoAP POSTs, one socket per device.
    Coap(coap::CoapArgs),
    /// Device commands: posted, obeyed and acknowledged over MQTT, acks per second.
    Commands(commands::CommandsArgs),
    /// Many idle MQTT devices: connection storm, memory per connection.
    Hold(loadgen::HoldCli),
    /// Reading-to-notification latency over Socket.IO, MQTT and CoAP Observe.
    Notify(notify::NotifyArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let report = match &cli.load {
        Load::Http(args) => http::run(args, cli.seed).await?,
        Load::Mqtt(args) => mqtt::run(args, cli.seed).await?,
        Load::Coap(args) => coap::run(args, cli.seed).await?,
        Load::Commands(args) => commands::run(args, cli.seed).await?,
        Load::Hold(args) => loadgen::run_hold(args).await?,
        Load::Notify(args) => notify::run(args).await?,
    };
    print!("{}", report.table());
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.to_json())?)?;
    }
    Ok(())
}
