//! The control connection: notifications and commands out, device acks in.

use std::sync::Arc;

use bytes::Bytes;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::sync::mpsc;
use tracing::error;

use super::{LinkStatus, RECEIVED};

/// Notifications and commands waiting for the connection: when the broker is away, the
/// notification queue drops its oldest and command sends fail (and are retried).
const REQUESTS: usize = 4096;
use crate::edge_auth::device_topic;
use crate::mqtt::{CommandAck, CommandLink, MqttMetrics, MqttPublisher, ACKS_FILTER};
use crate::queue::DropOldest;

/// Starts the connection; returns the notification publisher, the command link and the acks.
pub(super) fn start(
    options: MqttOptions,
    notify_queue: usize,
    status: Arc<LinkStatus>,
    metrics: MqttMetrics,
) -> (MqttPublisher, CommandLink, mpsc::Receiver<CommandAck>) {
    let (client, eventloop) = AsyncClient::new(options, REQUESTS);
    let (publishes, mut received) = mpsc::channel(RECEIVED);
    tokio::spawn(super::drive(
        eventloop,
        client.clone(),
        ACKS_FILTER.to_owned(),
        status,
        publishes,
    ));
    let (acks, acks_out) = mpsc::channel(RECEIVED);
    tokio::spawn(async move {
        while let Some(publish) = received.recv().await {
            let Some((device, "acks")) = device_topic(&publish.topic) else {
                continue;
            };
            let ack = CommandAck {
                device: device.to_owned(),
                payload: publish.payload,
            };
            if acks.send(ack).await.is_err() {
                return;
            }
        }
    });
    let queue = DropOldest::<(String, Bytes)>::new(notify_queue);
    let consumer = Arc::clone(&queue);
    let notifier = client.clone();
    tokio::spawn(async move {
        let mut items = Vec::new();
        while consumer.next_all(&mut items).await {
            for (topic, payload) in items.drain(..) {
                // Retained: what a device that subscribes later gets first.
                if let Err(e) = notifier
                    .publish(topic, QoS::AtLeastOnce, true, payload)
                    .await
                {
                    error!(error = %e, "mqtt: the notification connection closed");
                    return;
                }
                metrics.notifications.inc();
            }
        }
    });
    (
        MqttPublisher::over(queue),
        CommandLink::remote(client),
        acks_out,
    )
}
