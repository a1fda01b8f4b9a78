//! The broker's configuration, built in code from aemos's flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use rumqttd::protocol::{DisconnectReasonCode, Packet};
use rumqttd::{
    Config, ConnectionSettings, PacketVerdict, RouterConfig, SegmentConfig, ServerSettings,
    TlsConfig,
};

use crate::{EdgeAuthorizer, EdgeRefusal};

use super::throttle::Throttle;
use super::{EmbeddedStatus, MqttArgs, TELEMETRY_FILTER};

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

/// The broker's verdict on one packet of a remote client.
fn verdict(
    authorizer: Option<&dyn EdgeAuthorizer>,
    throttle: Option<&Throttle>,
    status: &EmbeddedStatus,
    client_id: &str,
    packet: &Packet,
) -> PacketVerdict {
    let refuse = refusal_verdict;
    match packet {
        Packet::Publish(publish, _) => {
            let topic = String::from_utf8_lossy(&publish.topic);
            let telemetry = super::device_of_telemetry(&topic).is_some();
            if let Some(cut) = throttle
                .filter(|_| telemetry)
                .and_then(|t| t.check(client_id, publish.payload.len()))
            {
                return cut;
            }
            let outcome = match authorizer {
                Some(a) => a.mqtt_publish(client_id, &topic),
                None if crate::edge_auth::is_server_topic(&topic) => Err(EdgeRefusal::Forbidden(
                    format!("only aemos publishes to {topic:?}"),
                )),
                None => Ok(()),
            };
            if outcome.is_ok() && telemetry {
                status.admitted();
            }
            outcome.map_or_else(refuse, |()| PacketVerdict::Allow)
        }
        Packet::Subscribe(subscribe, _) => {
            let Some(a) = authorizer else {
                return PacketVerdict::Allow;
            };
            subscribe
                .filters
                .iter()
                .try_for_each(|f| a.mqtt_subscribe(client_id, &f.path))
                .map_or_else(refuse, |()| PacketVerdict::Allow)
        }
        // A second CONNECT is a protocol violation (MQTT 3.1.1 §3.1.0-2); the router would log
        // it whole, password included.
        Packet::Connect(..) => refuse(EdgeRefusal::Forbidden(
            "a second CONNECT on one connection".into(),
        )),
        _ => match authorizer {
            Some(a) => a
                .mqtt_session(client_id)
                .map_or_else(refuse, |()| PacketVerdict::Allow),
            None => PacketVerdict::Allow,
        },
    }
}

/// The broker's verdict for a refusal: MQTT 5 clients get the reason code and the message.
fn refusal_verdict(refusal: EdgeRefusal) -> PacketVerdict {
    let reason = match refusal {
        EdgeRefusal::Unauthorized(_) => DisconnectReasonCode::NotAuthorized,
        EdgeRefusal::Forbidden(_) => DisconnectReasonCode::NotAuthorized,
        EdgeRefusal::RateLimited(_) => DisconnectReasonCode::MessageRateTooHigh,
    };
    PacketVerdict::Refuse {
        reason,
        message: refusal.to_string(),
    }
}

fn server(
    name: &str,
    listen: SocketAddr,
    args: &MqttArgs,
    throttle: Option<Arc<Throttle>>,
    status: &Arc<EmbeddedStatus>,
) -> HashMap<String, ServerSettings> {
    let mut connections = ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: args.max_payload_bytes,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
        packet_filter: None,
        session_check: None,
        read_pause: None,
    };
    let backlog = Arc::clone(status);
    connections.read_pause = Some(Arc::new(move || backlog.read_pause()));
    let filter_auth = args.authorizer.clone();
    let filter_status = Arc::clone(status);
    connections.packet_filter = Some(Arc::new(move |client_id: &str, packet: &Packet| {
        verdict(
            filter_auth.as_deref(),
            throttle.as_deref(),
            &filter_status,
            client_id,
            packet,
        )
    }));
    if let Some(authorizer) = args.authorizer.clone() {
        connections.session_check = Some(Arc::new(move |client_id: &str| {
            authorizer
                .mqtt_session(client_id)
                .map_or_else(refusal_verdict, |()| PacketVerdict::Allow)
        }));
    }
    if let Some(authorizer) = args.authorizer.clone().filter(|a| a.mqtt_requires_login()) {
        connections.set_auth_handler(move |client_id, username, password| {
            let allowed = authorizer.mqtt_connect(&client_id, &username, &password);
            async move { allowed }
        });
    }
    let settings = ServerSettings {
        name: name.to_owned(),
        listen,
        tls: args.tls.as_ref().map(|(cert, key)| TlsConfig::Rustls {
            capath: None,
            certpath: cert.clone(),
            keypath: key.clone(),
        }),
        next_connection_delay_ms: 0,
        connections,
    };
    HashMap::from([("1".to_owned(), settings)])
}

/// The router's log of telemetry: `--mqtt-backlog-bytes` in two segments, its appends metered.
pub(super) fn telemetry_segments(args: &MqttArgs) -> SegmentConfig {
    SegmentConfig {
        max_segment_size: (args.backlog_bytes / 2).max(args.max_payload_bytes * 2),
        max_segment_count: 2,
        appended: Some(Arc::default()),
    }
}

pub(super) fn broker_config(
    args: &MqttArgs,
    v4_addr: SocketAddr,
    v5_addr: Option<SocketAddr>,
    telemetry: SegmentConfig,
    throttle: Option<Arc<Throttle>>,
    status: &Arc<EmbeddedStatus>,
) -> Config {
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
        v4: Some(server(
            "aemos-mqtt-v4",
            v4_addr,
            args,
            throttle.clone(),
            status,
        )),
        v5: v5_addr.map(|addr| server("aemos-mqtt-v5", addr, args, throttle, status)),
        ..Config::default()
    }
}
