//! Notifications into the broker: retained publishes from a dedicated thread.

use std::sync::Arc;

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::protocol::{Packet, Publish};
use rumqttd::Notification;
use tracing::error;

use super::MqttMetrics;
use crate::queue::DropOldest;

/// A handle that queues `(topic, payload)` publishes; never blocks.
#[derive(Debug, Clone)]
pub struct MqttPublisher {
    queue: Arc<DropOldest<(String, Bytes)>>,
}

impl MqttPublisher {
    pub(super) fn start(
        mut tx: LinkTx,
        mut rx: LinkRx,
        capacity: usize,
        metrics: MqttMetrics,
    ) -> crate::Result<Self> {
        let queue = DropOldest::new(capacity);
        let consumer = Arc::clone(&queue);
        let spawn_error =
            |e: std::io::Error| crate::Error::Edge(format!("starting the mqtt publisher: {e}"));
        std::thread::Builder::new()
            .name("aemos-mqtt-notify".into())
            .spawn(move || {
                let mut items = Vec::new();
                while consumer.wait_all(&mut items) {
                    for (topic, payload) in items.drain(..) {
                        // The retained copy is what a device that subscribes later gets first.
                        let publish = Publish::new(Bytes::from(topic), payload, true);
                        // `send` is the link's only way to set `retain`; it never awaits (it
                        // blocks on the router's bounded channel), and this is our own thread.
                        #[allow(clippy::disallowed_methods)]
                        let sent =
                            futures::executor::block_on(tx.send(Packet::Publish(publish, None)));
                        if let Err(e) = sent {
                            error!(error = %e, "mqtt: the notification link closed");
                            return;
                        }
                        metrics.notifications.inc();
                    }
                }
            })
            .map_err(spawn_error)?;
        // The router acknowledges nothing to a link without subscriptions, but keep it drained
        // and scheduled all the same.
        std::thread::Builder::new()
            .name("aemos-mqtt-notify-rx".into())
            .spawn(move || loop {
                match rx.recv() {
                    Ok(Some(Notification::Unschedule)) => {
                        if rx.ready().is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            })
            .map_err(spawn_error)?;
        Ok(Self { queue })
    }

    /// A publisher over a queue that the caller drains (the external broker's control link).
    pub(super) fn over(queue: Arc<DropOldest<(String, Bytes)>>) -> Self {
        Self { queue }
    }

    /// The queue of publishes waiting for the broker.
    pub fn backlog(&self) -> crate::queue::Backlog {
        self.queue.backlog()
    }

    /// Queues a retained publish; the oldest queued one is dropped when full.
    pub fn publish(&self, topic: String, payload: Bytes) {
        self.queue.push((topic, payload));
    }

    /// Publishes dropped because the broker fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }
}
