//! A device played by rumqttc: connected to the embedded broker, subscribed to some of its
//! topics, what arrives kept in order with its topic, and its acks sent back.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::server::TestServer;

pub(crate) const WAIT: Duration = Duration::from_secs(20);

pub(crate) struct MqttDevice {
    pub(crate) client: AsyncClient,
    id: String,
    inbox: UnboundedReceiver<(String, Value)>,
}

impl MqttDevice {
    /// Connects as `id` (no credential: dev mode) and subscribes to `aemos/devices/{id}/{t}`
    /// for each of `topics`; returns once every subscription is acknowledged.
    pub(crate) async fn connect(server: &TestServer, id: &str, topics: &[&str]) -> Self {
        Self::connect_to(&server.mqtt_addr, id, topics).await
    }

    /// As [`MqttDevice::connect`], to the broker at `addr` (`host:port`).
    pub(crate) async fn connect_to(addr: &str, id: &str, topics: &[&str]) -> Self {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let mut options = MqttOptions::new(id, host, port.parse().unwrap());
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let (tx, inbox) = unbounded_channel();
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let mut subscribed_tx = Some(subscribed_tx);
        let (mut subacks, want) = (0, topics.len());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subacks += 1;
                        if subacks == want {
                            if let Some(s) = subscribed_tx.take() {
                                let _ = s.send(());
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send((p.topic.to_string(), body)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        for topic in topics {
            client
                .subscribe(format!("aemos/devices/{id}/{topic}"), QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        tokio::time::timeout(WAIT, subscribed)
            .await
            .expect("subacks")
            .unwrap();
        Self {
            client,
            id: id.to_owned(),
            inbox,
        }
    }

    /// The next message on the topic ending in `/{topic}`, skipping the others.
    pub(crate) async fn next_on(&mut self, topic: &str) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        let suffix = format!("/{topic}");
        loop {
            let (on, body) = tokio::time::timeout_at(deadline, self.inbox.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} in time"))
                .expect("connected");
            if on.ends_with(&suffix) {
                return body;
            }
        }
    }

    /// Whatever arrives within `wait`.
    pub(crate) async fn within(&mut self, wait: Duration) -> Option<(String, Value)> {
        tokio::time::timeout(wait, self.inbox.recv())
            .await
            .ok()
            .flatten()
    }

    /// Publishes `body` on the device's `acks` topic.
    pub(crate) async fn send_ack(&self, body: String) {
        self.client
            .publish(
                format!("aemos/devices/{}/acks", self.id),
                QoS::AtLeastOnce,
                false,
                body,
            )
            .await
            .unwrap();
    }

    /// Acknowledges a command with `status` (`ok` or `error`).
    pub(crate) async fn ack(&self, command_id: &str, status: &str) {
        self.send_ack(json!({"commandId": command_id, "status": status}).to_string())
            .await;
    }
}
