//! The broker's configuration, built in code from aemos's flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, SegmentConfig, ServerSettings};

use super::{MqttArgs, TELEMETRY_FILTER};

/// Commit log of every other filter (device subscriptions: notifications, errors, commands).
const OTHER_SEGMENT_BYTES: usize = 1024 * 1024;

/// Checks that the address can be bound, and turns port 0 into a free port, here: rumqttd
/// binds inside its own threads and reports neither the port nor a failure to bind.
pub(super) fn resolve(addr: SocketAddr) -> crate::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(addr)
        .map_err(|e| crate::Error::Edge(format!("binding {addr}: {e}")))?;
    probe
        .local_addr()
        .map_err(|e| crate::Error::Edge(format!("binding {addr}: {e}")))
}

/// Waits until `addr` accepts TCP connections.
pub(super) async fn wait_listening(addr: SocketAddr, limit: Duration) -> crate::Result<()> {
    let start = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if start.elapsed() > limit {
            return Err(crate::Error::Edge(format!(
                "the mqtt listener on {addr} did not start within {limit:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn server(name: &str, listen: SocketAddr, args: &MqttArgs) -> HashMap<String, ServerSettings> {
    let settings = ServerSettings {
        name: name.to_owned(),
        listen,
        tls: None,
        next_connection_delay_ms: 0,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: args.max_payload_bytes,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    HashMap::from([("1".to_owned(), settings)])
}

pub(super) fn broker_config(
    args: &MqttArgs,
    v4_addr: SocketAddr,
    v5_addr: Option<SocketAddr>,
) -> Config {
    let telemetry = SegmentConfig {
        max_segment_size: (args.backlog_bytes / 2).max(args.max_payload_bytes * 2),
        max_segment_count: 2,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: args.max_connections + 16,
            max_outgoing_packet_count: 200,
            max_segment_size: OTHER_SEGMENT_BYTES.max(args.max_payload_bytes * 2),
            max_segment_count: 2,
            custom_segment: Some(HashMap::from([(TELEMETRY_FILTER.to_owned(), telemetry)])),
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(server("aemos-mqtt-v4", v4_addr, args)),
        v5: v5_addr.map(|addr| server("aemos-mqtt-v5", addr, args)),
        ..Config::default()
    }
}
