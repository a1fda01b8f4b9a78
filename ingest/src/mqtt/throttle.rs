//! Overload on the embedded broker: while the circuit breaker is open, or while the ingest
//! link has fallen a quarter of the backlog behind the router, the heaviest telemetry
//! publishers are disconnected.
//!
//! The router acknowledges a QoS 1 publish on receipt, so a broker that kept taking telemetry
//! while storage sheds (or while the ingest link's writes wait) would fill its backlog and
//! then drop the oldest acknowledged publishes. Instead, each telemetry publish is counted per
//! client over a window of one second; while the breaker is `OPEN` or the backlog fills
//! ([`EmbeddedStatus::backlog_filling`]), a client that has sent at least the average of the
//! window's publishers (the heavier half) and more than 64 KiB in it (so that a device sending
//! now and then is never cut off) is disconnected before its publish reaches the router: MQTT 5 clients
//! get DISCONNECT with reason `0x97` (quota exceeded) and the reason, then the connection
//! closes (MQTT 3.1.1 has no reason codes). Counted in `mqtt_throttled_total`. Light
//! publishers, acks and commands go on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aemos_storage::{CircuitState, Storage};

use super::EmbeddedStatus;
use prometheus::IntCounter;
use rumqttd::protocol::DisconnectReasonCode;
use rumqttd::PacketVerdict;

const WINDOW: Duration = Duration::from_secs(1);
/// Bytes per window below which a publisher is never disconnected.
const FLOOR_BYTES: u64 = 64 * 1024;

#[derive(Debug)]
struct Window {
    started: Instant,
    by_client: HashMap<String, u64>,
    total: u64,
}

pub(super) struct Throttle {
    storage: Arc<Storage>,
    status: Arc<EmbeddedStatus>,
    window: Mutex<Window>,
    throttled: IntCounter,
}

impl Throttle {
    pub(super) fn new(
        storage: Arc<Storage>,
        status: Arc<EmbeddedStatus>,
        throttled: IntCounter,
    ) -> Self {
        Self {
            storage,
            status,
            window: Mutex::new(Window {
                started: Instant::now(),
                by_client: HashMap::new(),
                total: 0,
            }),
            throttled,
        }
    }

    /// Counts a telemetry publish of `bytes`; a refusal when the client is to be cut off.
    pub(super) fn check(&self, client_id: &str, bytes: usize) -> Option<PacketVerdict> {
        let now = Instant::now();
        let (mine, average) = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            if now.duration_since(w.started) >= WINDOW {
                w.started = now;
                w.by_client.clear();
                w.total = 0;
            }
            w.total += bytes as u64;
            let mine = match w.by_client.get_mut(client_id) {
                Some(n) => {
                    *n += bytes as u64;
                    *n
                }
                None => {
                    w.by_client.insert(client_id.to_owned(), bytes as u64);
                    bytes as u64
                }
            };
            (mine, w.total / w.by_client.len().max(1) as u64)
        };
        if mine <= FLOOR_BYTES || mine < average {
            return None;
        }
        let cause = if self.storage.admission_status().circuit_state == CircuitState::Open {
            "circuit breaker open"
        } else if self.status.backlog_filling() {
            "telemetry backlog filling"
        } else {
            return None;
        };
        self.throttled.inc();
        Some(PacketVerdict::Refuse {
            reason: DisconnectReasonCode::QuotaExceeded,
            message: format!(
                "aemos is overloaded ({cause}) and {client_id} is among its heaviest publishers ({mine} bytes in the last second); reconnect later"
            ),
        })
    }
}
