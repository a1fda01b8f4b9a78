//! The embedded MQTT broker (`rumqttd`, MQTT 3.1.1 and 5), read through its in-process link.
//!
//! Devices publish to `aemos/devices/{device}/telemetry`. The broker's router acknowledges a
//! QoS 1 publish when it appends it to its in-memory commit log, before aemos sees it; the
//! ingest link ([`ingest`]) then drains everything the router has queued, decodes each publish
//! ([`crate::stage_device_payload`]), appends the valid ones to one batch and writes it
//! through the WAL, with a few writes in flight so that publishes share group commits. The
//! time from the link's receipt to durability is the `mqtt_durable_window_seconds` histogram.
//! A refused publish stores nothing and its reason goes to `aemos/devices/{device}/errors`.
//!
//! Every packet a remote client sends passes the authorizer first (the vendored rumqttd's
//! packet filter, see `vendor/rumqttd/AEMOS.md`): in `production` mode a device connects with
//! its id as client id and username and its token as password, publishes only to its own
//! `telemetry` (and `acks`) topics and subscribes only to its own `commands`, `notifications`
//! and `errors` topics; nobody but aemos publishes to `notifications` or `commands`. A refused
//! packet closes the connection (MQTT 5: DISCONNECT with the reason code first).
//!
//! Notifications go the other way through a second link ([`publisher`]), retained, from a
//! thread fed by a drop-oldest queue, so a stalled router never holds up the fan-out.
//!
//! With `--mqtt-broker`, the user's broker takes the embedded one's place ([`external`]): aemos
//! is its client, and acknowledges telemetry to it only once it is durable.

mod commands;
mod config;
mod embedded_status;
pub mod external;
mod ingest;
mod publisher;
mod throttle;
#[cfg(test)]
mod throttle_tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aemos_storage::Storage;
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};

pub use commands::{CommandAck, CommandLink, ACKS_FILTER};
pub use embedded_status::EmbeddedStatus;
pub use publisher::MqttPublisher;

/// Telemetry topics: `aemos/devices/{device}/telemetry`.
pub const TELEMETRY_FILTER: &str = "aemos/devices/+/telemetry";

pub fn telemetry_topic(device: &str) -> String {
    format!("aemos/devices/{device}/telemetry")
}

pub fn errors_topic(device: &str) -> String {
    format!("aemos/devices/{device}/errors")
}

pub fn notifications_topic(device: &str) -> String {
    format!("aemos/devices/{device}/notifications")
}

/// The device of a telemetry topic, if it is one.
pub fn device_of_telemetry(topic: &str) -> Option<&str> {
    topic
        .strip_prefix("aemos/devices/")?
        .strip_suffix("/telemetry")
        .filter(|d| !d.is_empty() && !d.contains('/'))
}

#[derive(Debug, Clone)]
pub struct MqttArgs {
    /// MQTT 3.1.1 listener; port 0 picks a free port.
    pub v4_addr: SocketAddr,
    /// MQTT 5 listener, if any.
    pub v5_addr: Option<SocketAddr>,
    /// Largest accepted publish; larger ones close the publisher's connection.
    pub max_payload_bytes: usize,
    pub max_connections: usize,
    /// Bytes of telemetry the router keeps for the ingest link (its commit log for the
    /// telemetry filter, two segments of half of it). If aemos falls this far behind, the
    /// router drops the oldest publishes: counted in `mqtt_dropped_publishes_total`.
    pub backlog_bytes: usize,
    /// Notifications waiting for the broker before the oldest is dropped.
    pub notify_queue: usize,
    /// Who may connect, publish and subscribe; `None`: everyone, but only aemos publishes to
    /// `notifications` and `commands` topics.
    pub authorizer: Option<Arc<dyn crate::EdgeAuthorizer>>,
    /// TLS for both listeners: PEM certificate chain and key files.
    pub tls: Option<(String, String)>,
}

impl MqttArgs {
    pub fn new(v4_addr: SocketAddr) -> Self {
        Self {
            v4_addr,
            v5_addr: None,
            max_payload_bytes: 256 * 1024,
            max_connections: 10_000,
            backlog_bytes: 256 * 1024 * 1024,
            notify_queue: 65_536,
            authorizer: None,
            tls: None,
        }
    }
}

/// Counters of the MQTT edge, registered in the server's Prometheus registry.
#[derive(Debug, Clone)]
pub struct MqttMetrics {
    pub publishes: IntCounter,
    pub readings: IntCounter,
    pub rejected_publishes: IntCounter,
    /// The server's `readings_rejected_total{protocol, reason}`, shared with HTTP and CoAP.
    pub rejected_readings: prometheus::IntCounterVec,
    pub lost_readings: IntCounter,
    pub dropped_publishes: IntCounter,
    /// External broker: publishes delivered again after a crash and recognised as stored.
    pub redeliveries: IntCounter,
    /// External broker: publishes left unacknowledged because their write failed.
    pub unacknowledged: IntCounter,
    /// Embedded broker: heavy publishers disconnected while the circuit breaker was open or
    /// the telemetry backlog filled.
    pub throttled: IntCounter,
    pub notifications: IntCounter,
    pub durable_window: Histogram,
}

impl MqttMetrics {
    /// The counters, registered in `registry`; `rejected_readings` is the server's (registered
    /// already).
    pub fn new(
        registry: &Registry,
        rejected_readings: prometheus::IntCounterVec,
    ) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let durable_window = Histogram::with_opts(
            HistogramOpts::new(
                "mqtt_durable_window_seconds",
                "From the ingest link's receipt of a publish (already acknowledged by the broker) to its WAL sync",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
            ]),
        )?;
        registry.register(Box::new(durable_window.clone()))?;
        Ok(Self {
            publishes: counter("mqtt_publishes_total", "Telemetry publishes received")?,
            readings: counter("mqtt_readings_total", "Readings from MQTT made durable")?,
            rejected_publishes: counter(
                "mqtt_rejected_publishes_total",
                "Telemetry publishes refused (bad topic or payload), reported on the errors topic",
            )?,
            rejected_readings,
            lost_readings: counter(
                "mqtt_lost_readings_total",
                "Acknowledged readings that could not be written (storage failure)",
            )?,
            dropped_publishes: counter(
                "mqtt_dropped_publishes_total",
                "Acknowledged telemetry publishes the broker dropped before aemos read them (backlog full)",
            )?,
            redeliveries: counter(
                "mqtt_redeliveries_skipped_total",
                "Publishes an external broker delivered again (after a crash) that were already stored",
            )?,
            unacknowledged: counter(
                "mqtt_unacknowledged_publishes_total",
                "Publishes left unacknowledged to an external broker because their write failed (delivered again later)",
            )?,
            throttled: counter(
                "mqtt_throttled_total",
                "Heavy telemetry publishers disconnected while the circuit breaker was open or the broker's backlog filled",
            )?,
            notifications: counter(
                "mqtt_notifications_total",
                "Notifications published to the broker",
            )?,
            durable_window,
        })
    }
}

/// The MQTT side of the device edge, embedded or external: the notification publisher, the
/// command link and the device acks.
#[derive(Debug)]
pub struct MqttEdge {
    pub publisher: MqttPublisher,
    pub commands: CommandLink,
    /// Taken once by the command service.
    pub acks: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<CommandAck>>>,
    pub mode: MqttMode,
}

/// Which broker the devices talk to.
#[derive(Debug, Clone)]
pub enum MqttMode {
    Embedded {
        v4_addr: SocketAddr,
        v5_addr: Option<SocketAddr>,
        status: Arc<EmbeddedStatus>,
    },
    External(Arc<external::ExternalStatus>),
}

impl MqttMode {
    /// The broker's entry in `GET /api/v1/health`.
    pub fn health(&self) -> serde_json::Value {
        match self {
            Self::Embedded {
                v4_addr,
                v5_addr,
                status,
            } => {
                let mut health = status.health();
                health["mode"] = "embedded".into();
                health["v4Addr"] = v4_addr.to_string().into();
                health["v5Addr"] = v5_addr.map(|a| a.to_string()).into();
                health
            }
            Self::External(status) => status.health(),
        }
    }
}

/// The embedded broker.
#[derive(Debug)]
pub struct MqttBroker;

impl MqttBroker {
    /// Starts the broker's threads, the ingest link on the current runtime and the publisher;
    /// returns once the listeners accept connections.
    pub async fn start(
        args: MqttArgs,
        storage: Arc<Storage>,
        metrics: MqttMetrics,
    ) -> crate::Result<MqttEdge> {
        let v4_addr = config::resolve(args.v4_addr)?;
        let v5_addr = args.v5_addr.map(config::resolve).transpose()?;
        let telemetry = config::telemetry_segments(&args);
        let status = Arc::new(EmbeddedStatus::new(
            Arc::clone(telemetry.appended.as_ref().expect("metered")),
            (telemetry.max_segment_size * telemetry.max_segment_count) as u64,
        ));
        let throttle = Arc::new(throttle::Throttle::new(
            Arc::clone(&storage),
            Arc::clone(&status),
            metrics.throttled.clone(),
        ));
        let mut broker = rumqttd::Broker::new(config::broker_config(
            &args,
            v4_addr,
            v5_addr,
            telemetry,
            Some(throttle),
            &status,
        ));
        let link_error =
            |e: rumqttd::local::LinkError| crate::Error::Edge(format!("mqtt link: {e}"));
        let (ingest_tx, ingest_rx) = broker.link("aemos-ingest").map_err(link_error)?;
        let (notify_tx, notify_rx) = broker.link("aemos-notify").map_err(link_error)?;
        let (command_tx, command_rx) = broker.link("aemos-commands").map_err(link_error)?;
        let listeners = status.listeners_guard();
        std::thread::Builder::new()
            .name("aemos-mqtt".into())
            .spawn(move || {
                let _listeners = listeners;
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "mqtt broker stopped");
                }
            })
            .map_err(|e| crate::Error::Edge(format!("starting the mqtt broker: {e}")))?;
        let link = status.link_guard();
        let (metrics_for_link, args_authorizer) = (metrics.clone(), args.authorizer.clone());
        let for_link = Arc::clone(&status);
        tokio::spawn(async move {
            let _link = link;
            ingest::run(
                ingest_tx,
                ingest_rx,
                storage,
                metrics_for_link,
                args_authorizer,
                for_link,
            )
            .await;
        });
        let publisher = MqttPublisher::start(notify_tx, notify_rx, args.notify_queue, metrics)?;
        let (commands, acks) = CommandLink::start(command_tx, command_rx, 4096)?;
        for addr in std::iter::once(v4_addr).chain(v5_addr) {
            config::wait_listening(addr, Duration::from_secs(10)).await?;
        }
        Ok(MqttEdge {
            publisher,
            commands,
            acks: std::sync::Mutex::new(Some(acks)),
            mode: MqttMode::Embedded {
                v4_addr,
                v5_addr,
                status,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_topics() {
        assert_eq!(
            device_of_telemetry("aemos/devices/d-1/telemetry"),
            Some("d-1")
        );
        assert_eq!(device_of_telemetry("aemos/devices//telemetry"), None);
        assert_eq!(device_of_telemetry("aemos/devices/a/b/telemetry"), None);
        assert_eq!(device_of_telemetry("aemos/devices/a/errors"), None);
    }
}
