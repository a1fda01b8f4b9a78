//! aemos as a client of the user's broker (`--mqtt-broker mqtt://host:port` or `mqtts://`):
//! Mosquitto, EMQX, HiveMQ, AWS IoT Core in place of the embedded one.
//!
//! Two connections, both with a persistent session (clean session off), so that what the
//! broker holds for aemos while it is down or restarting is delivered when it comes back:
//! - **ingest** (client id `{id}`): subscribes to the telemetry topics at QoS 1, through a
//!   shared subscription `$share/{group}/aemos/devices/+/telemetry` when a group is set, so
//!   several aemos processes split the devices' load. Acknowledgements are manual: a publish
//!   is acknowledged to the broker only once its readings are in the WAL ([`ingest`]), in the
//!   order the publishes came, and a redelivery after a crash is recognised by its packet id
//!   ([`slots`]) and stored exactly once.
//! - **control** (client id `{id}-control`): publishes notifications (retained) and commands
//!   (not retained) at QoS 1 and subscribes to every device's `acks` topic, unshared: each
//!   process gets every ack and ignores those of commands it did not send.
//!
//! The broker authenticates the devices; aemos trusts the device id in the topic, as the
//! broker's ACLs let it through, and still applies the device's sensor scope.
//! A lost connection is retried with backoff (100 ms doubling to 10 s); a refused
//! subscription is asked for again at the same pace; health reports both connections.

mod control;
mod ingest;
mod slots;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aemos_storage::Storage;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeReasonCode,
    TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{MqttEdge, MqttMetrics, MqttMode};
use crate::EdgeAuthorizer;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The largest packet MQTT allows: aemos refuses large payloads itself (and acknowledges
/// them), so that the client never drops a connection over one and gets it again forever.
const MAX_PACKET: usize = 268_435_455;
/// Requests (acks, publishes) waiting for the connection. Acks in it never exceed the
/// publishes the broker has in flight to aemos (its window, e.g. Mosquitto's
/// `max_inflight_messages`), so the writer's acks never wait on a full channel.
const REQUESTS: usize = 1 << 20;
/// Publishes received and not yet taken by the writer.
const RECEIVED: usize = 4096;

#[derive(Clone)]
pub struct ExternalArgs {
    /// `mqtt://[user[:password]@]host[:port]` or `mqtts://...`.
    pub url: String,
    /// Client id of the ingest connection; `{id}-control` is the other one.
    pub client_id: String,
    /// Shared subscription group for telemetry; `None`: a plain subscription.
    pub share_group: Option<String>,
    /// Override the URL's credentials.
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the broker's certificate (`mqtts://`); otherwise the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// Where the delivery slots are kept (the data directory).
    pub state_dir: PathBuf,
    pub keep_alive: Duration,
    pub max_payload_bytes: usize,
    pub notify_queue: usize,
    pub authorizer: Option<Arc<dyn EdgeAuthorizer>>,
}

impl std::fmt::Debug for ExternalArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalArgs")
            .field("url", &redacted(&self.url))
            .field("client_id", &self.client_id)
            .field("share_group", &self.share_group)
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for logs and health.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable url)".into(),
    }
}

/// Connects both connections and starts their tasks; returns at once (connections are made
/// and retried in the background, and health says how they are).
pub fn start(
    args: ExternalArgs,
    storage: Arc<Storage>,
    metrics: MqttMetrics,
) -> crate::Result<MqttEdge> {
    let ingest_options = options(&args, args.client_id.clone())?;
    let control_options = options(&args, format!("{}-control", args.client_id))?;
    let slots_path = args
        .state_dir
        .join("mqtt-client")
        .join(format!("{}.slots", args.client_id));
    let tag_key = format!("mqtt.{}", args.client_id);
    let replayed = storage.replay_report().tagged(&tag_key);
    let slots = slots::DeliverySlots::open(&slots_path, replayed).map_err(|e| {
        crate::Error::Edge(format!(
            "opening the delivery slots {}: {e}",
            slots_path.display()
        ))
    })?;
    let telemetry = match &args.share_group {
        Some(group) => format!("$share/{group}/{}", super::TELEMETRY_FILTER),
        None => super::TELEMETRY_FILTER.to_owned(),
    };
    let status = Arc::new(ExternalStatus {
        url: redacted(&args.url),
        ingest: Arc::new(LinkStatus::new(&telemetry)),
        control: Arc::new(LinkStatus::new(super::ACKS_FILTER)),
    });
    ingest::start(
        ingest::IngestArgs {
            options: ingest_options,
            filter: telemetry,
            max_payload_bytes: args.max_payload_bytes,
            authorizer: args.authorizer.clone(),
            slots,
            tag_key,
            status: Arc::clone(&status.ingest),
        },
        storage,
        metrics.clone(),
    )
    .map_err(|e| crate::Error::Edge(format!("starting the delivery slot recorder: {e}")))?;
    let (publisher, commands, acks) = control::start(
        control_options,
        args.notify_queue,
        Arc::clone(&status.control),
        metrics,
    );
    info!(url = %status.url, client_id = %args.client_id, "mqtt: using an external broker");
    Ok(MqttEdge {
        publisher,
        commands,
        acks: std::sync::Mutex::new(Some(acks)),
        mode: MqttMode::External(status),
    })
}

/// Options of one connection: persistent session, credentials, TLS, no packet limit.
fn options(args: &ExternalArgs, client_id: String) -> crate::Result<MqttOptions> {
    let bad = |why: String| crate::Error::Edge(format!("--mqtt-broker: {why}"));
    let url = url::Url::parse(&args.url).map_err(|e| bad(format!("{e}")))?;
    let host = url
        .host_str()
        .ok_or_else(|| bad("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let (tls, default_port) = match url.scheme() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        other => return Err(bad(format!("scheme {other:?}: use mqtt:// or mqtts://"))),
    };
    let mut options = MqttOptions::new(client_id, host, url.port().unwrap_or(default_port));
    options
        .set_keep_alive(args.keep_alive)
        .set_clean_session(false)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_inflight(1000);
    // Userinfo is percent-encoded; form decoding would also turn `+` into a space.
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let username = args
        .username
        .clone()
        .or_else(|| (!url.username().is_empty()).then(|| decode(url.username())));
    let password = args.password.clone().or_else(|| url.password().map(decode));
    if let Some(user) = username {
        options.set_credentials(user, password.unwrap_or_default());
    }
    if tls {
        let transport = match &args.ca_file {
            Some(path) => {
                let ca = std::fs::read(path).map_err(|e| {
                    bad(format!("reading --mqtt-broker-ca {}: {e}", path.display()))
                })?;
                Transport::tls_with_config(TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth: None,
                })
            }
            None => Transport::tls_with_default_config(),
        };
        options.set_transport(transport);
    }
    Ok(options)
}

/// What health says about the external broker.
#[derive(Debug)]
pub struct ExternalStatus {
    pub url: String,
    pub ingest: Arc<LinkStatus>,
    pub control: Arc<LinkStatus>,
}

impl ExternalStatus {
    pub fn is_connected(&self) -> bool {
        self.ingest.connected.load(Ordering::Relaxed)
            && self.control.connected.load(Ordering::Relaxed)
            && self.ingest.subscribed.load(Ordering::Relaxed)
            && self.control.subscribed.load(Ordering::Relaxed)
    }

    pub fn health(&self) -> serde_json::Value {
        json!({
            "status": if self.is_connected() { "ok" } else { "degraded" },
            "mode": "external",
            "url": self.url,
            "ingest": self.ingest.health(),
            "control": self.control.health(),
        })
    }
}

/// One connection's state.
#[derive(Debug)]
pub struct LinkStatus {
    filter: String,
    connected: AtomicBool,
    subscribed: AtomicBool,
    connects: AtomicU64,
    failures: AtomicU64,
    refused_subscriptions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl LinkStatus {
    fn new(filter: &str) -> Self {
        Self {
            filter: filter.to_owned(),
            connected: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            refused_subscriptions: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    fn set_error(&self, error: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    fn health(&self) -> serde_json::Value {
        json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "subscribed": self.subscribed.load(Ordering::Relaxed),
            "filter": self.filter,
            "connects": self.connects.load(Ordering::Relaxed),
            "failures": self.failures.load(Ordering::Relaxed),
            "refusedSubscriptions": self.refused_subscriptions.load(Ordering::Relaxed),
            "lastError": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// Polls one connection for ever: (re)connects with backoff, subscribes to `filter` whenever
/// the broker has no session for aemos (and again, with backoff, when it refuses), and hands
/// every publish to `publishes` (waiting when the receiver is behind: the broker's window then
/// stops the flow).
async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    filter: String,
    status: Arc<LinkStatus>,
    publishes: mpsc::Sender<Publish>,
) {
    let mut backoff = MIN_BACKOFF;
    let subscribe = |client: &AsyncClient, after: Duration| {
        let (client, filter) = (client.clone(), filter.clone());
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Err(e) = client.try_subscribe(filter, QoS::AtLeastOnce) {
                warn!(error = %e, "mqtt: could not ask the external broker for a subscription");
            }
        });
    };
    let mut refused_backoff = MIN_BACKOFF;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                status.connected.store(true, Ordering::Relaxed);
                status.connects.fetch_add(1, Ordering::Relaxed);
                backoff = MIN_BACKOFF;
                if !ack.session_present || !status.subscribed.load(Ordering::Relaxed) {
                    status.subscribed.store(false, Ordering::Relaxed);
                    subscribe(&client, Duration::ZERO);
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure))
                {
                    status.refused_subscriptions.fetch_add(1, Ordering::Relaxed);
                    status.set_error(format!("the broker refused the subscription {filter}"));
                    warn!(%filter, "mqtt: the external broker refused the subscription; asking again");
                    subscribe(&client, refused_backoff);
                    refused_backoff = (refused_backoff * 2).min(MAX_BACKOFF);
                } else {
                    status.subscribed.store(true, Ordering::Relaxed);
                    refused_backoff = MIN_BACKOFF;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publishes.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                let was = status.connected.swap(false, Ordering::Relaxed);
                status.failures.fetch_add(1, Ordering::Relaxed);
                status.set_error(e.to_string());
                if was {
                    warn!(error = %e, "mqtt: lost the external broker; reconnecting");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
