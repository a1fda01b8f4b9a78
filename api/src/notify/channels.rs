//! The three ways out. Each takes a notification into its own bounded, drop-oldest queue and
//! returns at once; a slow broker, socket or observer holds up only its own queue.
//!
//! - MQTT: retained on `aemos/devices/{device}/notifications` ([`MqttPublisher`]); a
//!   subscriber with QoS 1 gets it with QoS 1 (the router forwards at the subscription's QoS).
//! - CoAP: to the observers of `/devices/{device}/notifications` ([`CoapServer`]).
//! - Socket.IO: `device-state-change` to room `device-uuid-{device}`. Each socket has its own
//!   bounded buffer in engine.io; a socket whose buffer is full misses the event (counted),
//!   and catches up with the replay endpoint by `seq`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aemos_ingest::coap::CoapServer;
use aemos_ingest::mqtt::{notifications_topic, MqttPublisher};
use aemos_ingest::queue::{Backlog, DropOldest};
use bytes::Bytes;
use socketioxide::BroadcastError;
use socketioxide::SocketIo;

use super::{Notification, NotificationChannel};

impl NotificationChannel for MqttPublisher {
    fn deliver(&self, n: &Arc<Notification>, json: &Bytes) {
        self.publish(notifications_topic(&n.device_uuid), json.clone());
    }

    fn backlog(&self) -> (&'static str, Backlog) {
        ("mqtt", MqttPublisher::backlog(self))
    }
}

impl NotificationChannel for CoapServer {
    fn deliver(&self, n: &Arc<Notification>, json: &Bytes) {
        self.notify(n.device_uuid.clone(), json.clone());
    }

    fn backlog(&self) -> (&'static str, Backlog) {
        ("coap", CoapServer::backlog(self))
    }
}

/// The room of a device's events.
pub fn device_room(device: &str) -> String {
    format!("device-uuid-{device}")
}

/// Socket.IO delivery: a task emits what the queue holds.
#[derive(Debug)]
pub struct SocketIoChannel {
    queue: Arc<DropOldest<Arc<Notification>>>,
    /// Sockets that missed an event because their buffer was full.
    pub missed: Arc<AtomicU64>,
}

impl SocketIoChannel {
    /// Starts the emitting task on the current runtime.
    pub fn start(io: SocketIo, capacity: usize) -> Self {
        let queue: Arc<DropOldest<Arc<Notification>>> = DropOldest::new(capacity);
        let missed = Arc::new(AtomicU64::new(0));
        let (q, m) = (Arc::clone(&queue), Arc::clone(&missed));
        tokio::spawn(async move {
            let mut items = Vec::new();
            while q.next_all(&mut items).await {
                for n in items.drain(..) {
                    let sent = io
                        .to(device_room(&n.device_uuid))
                        .emit(n.kind.as_str(), &*n)
                        .await;
                    if let Err(BroadcastError::Socket(failed)) = sent {
                        m.fetch_add(failed.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        Self { queue, missed }
    }

    /// Notifications dropped before emitting because the task fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}

impl NotificationChannel for SocketIoChannel {
    fn deliver(&self, n: &Arc<Notification>, _json: &Bytes) {
        self.queue.push(Arc::clone(n));
    }

    fn backlog(&self) -> (&'static str, Backlog) {
        ("socketio", self.queue.backlog())
    }
}
