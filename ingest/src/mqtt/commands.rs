//! The command link: device commands into the broker, device acks out of it.
//!
//! Commands are published on `aemos/devices/{id}/commands`, not retained (a device that
//! subscribes later must not act on an old command; the sender retries instead), delivered at
//! the subscription's QoS. Acks published by devices on `aemos/devices/{id}/acks` come out on a
//! bounded channel: when the command service falls behind, this link stops reading and the
//! router holds the acks back.

use bytes::Bytes;
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::Notification;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::error;

use crate::edge_auth::device_topic;

/// Acks of every device.
pub const ACKS_FILTER: &str = "aemos/devices/+/acks";

/// One message a device published on its `acks` topic.
#[derive(Debug, Clone)]
pub struct CommandAck {
    pub device: String,
    pub payload: Bytes,
}

/// Publishes commands; cheap to clone.
#[derive(Clone)]
pub struct CommandLink {
    tx: Sender,
}

/// The embedded broker's link, or a client of an external broker.
#[derive(Clone)]
enum Sender {
    Local(Arc<Mutex<LocalTx>>),
    Remote(rumqttc::AsyncClient),
}

/// The link into the embedded router, and whether publishes wait in its buffer for a wake-up.
struct LocalTx {
    tx: LinkTx,
    /// A `try_publish` put its publish in the link's buffer but found the router's channel
    /// full: the router reads the buffer only when woken, so it must be woken again.
    unwoken: bool,
}

impl std::fmt::Debug for CommandLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLink").finish_non_exhaustive()
    }
}

impl CommandLink {
    /// Starts the link's reader thread; returns the link and the acks it receives.
    pub(super) fn start(
        mut tx: LinkTx,
        mut rx: LinkRx,
        capacity: usize,
    ) -> crate::Result<(Self, mpsc::Receiver<CommandAck>)> {
        tx.subscribe(ACKS_FILTER)
            .map_err(|e| crate::Error::Edge(format!("subscribing the command link: {e}")))?;
        let (acks, received) = mpsc::channel(capacity);
        std::thread::Builder::new()
            .name("aemos-mqtt-acks".into())
            .spawn(move || loop {
                match rx.recv() {
                    Ok(Some(Notification::Forward(forward))) => {
                        let topic = String::from_utf8_lossy(&forward.publish.topic);
                        let Some((device, "acks")) = device_topic(&topic) else {
                            continue;
                        };
                        let ack = CommandAck {
                            device: device.to_owned(),
                            payload: forward.publish.payload,
                        };
                        if acks.blocking_send(ack).is_err() {
                            return;
                        }
                    }
                    Ok(Some(Notification::Unschedule)) => {
                        if rx.ready().is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        error!(error = %e, "mqtt: the command link closed");
                        return;
                    }
                }
            })
            .map_err(|e| crate::Error::Edge(format!("starting the command link: {e}")))?;
        Ok((
            Self {
                tx: Sender::Local(Arc::new(Mutex::new(LocalTx { tx, unwoken: false }))),
            },
            received,
        ))
    }

    /// Commands published through a client of an external broker, at QoS 1.
    pub(super) fn remote(client: rumqttc::AsyncClient) -> Self {
        Self {
            tx: Sender::Remote(client),
        }
    }

    /// Publishes a command to the device's `commands` topic; an error when the broker is gone
    /// or the client's queue is full (the caller retries). Into the embedded router, a publish
    /// whose wake-up found the router's channel full is queued in the link's buffer already:
    /// [`wake`](Self::wake) must then be called until it succeeds.
    pub fn send(&self, device: &str, payload: String) -> crate::Result<()> {
        let topic = format!("aemos/devices/{device}/commands");
        let failed =
            |e: &dyn std::fmt::Display| crate::Error::Edge(format!("publishing a command: {e}"));
        match &self.tx {
            Sender::Local(tx) => {
                let mut local = tx.lock().unwrap_or_else(|e| e.into_inner());
                match local.tx.try_publish(topic, payload) {
                    Ok(_) => Ok(()),
                    Err(e) if e.is_full() => {
                        local.unwoken = true;
                        Ok(())
                    }
                    Err(e) => Err(failed(&e)),
                }
            }
            Sender::Remote(client) => client
                .try_publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
                .map_err(|e| failed(&e)),
        }
    }

    /// Wakes the router for publishes left in the link's buffer by [`send`](Self::send);
    /// `true` while some still wait (the router's channel is still full: call again soon).
    pub fn wake(&self) -> bool {
        let Sender::Local(tx) = &self.tx else {
            return false;
        };
        let mut local = tx.lock().unwrap_or_else(|e| e.into_inner());
        if local.unwoken && local.tx.try_notify().is_ok() {
            local.unwoken = false;
        }
        local.unwoken
    }
}
