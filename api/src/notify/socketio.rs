//! Socket.IO (protocol v5) on the HTTP server: clients `subscribe` to device rooms and get
//! `device-state-change` and `datastream` events.
//!
//! `subscribe` takes `{"rooms": ["device-uuid-abc"]}`, `{"devices": ["abc"]}`, a room name or
//! an array of room names, and acknowledges (when the client asks) with the rooms joined or
//! the reason for refusing. `unsubscribe` takes the same. The subscribed devices are counted
//! here so that the `datastream` throttle does nothing for devices nobody watches.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aemos_ingest::validate::check_device;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;

use super::channels::device_room;

/// Sockets per subscribed device.
#[derive(Debug, Default)]
pub struct Subscriptions {
    devices: RwLock<HashMap<String, usize>>,
    total: AtomicUsize,
}

impl Subscriptions {
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// Subscriptions of sockets to device rooms.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn watched(&self, device: &str) -> bool {
        self.devices
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(device)
    }

    pub(crate) fn add(&self, device: &str) {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        *devices.entry(device.to_owned()).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, device: &str) {
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = devices.get_mut(device) {
            *n -= 1;
            if *n == 0 {
                devices.remove(device);
            }
            self.total.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The device of a room name, when it is a device room.
fn device_of_room(room: &str) -> Option<&str> {
    room.strip_prefix("device-uuid-")
}

/// The device rooms a `subscribe` payload names, or why it is refused.
pub fn rooms_of(payload: &Value) -> Result<Vec<String>, String> {
    let list = |v: &Value, what: &str| -> Result<Vec<String>, String> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("`{what}` must hold strings, found {i}"))
                })
                .collect(),
            other => Err(format!(
                "`{what}` must be a string or an array of strings, found {other}"
            )),
        }
    };
    let rooms = match payload {
        Value::Object(o) => {
            let mut rooms = match o.get("rooms") {
                Some(v) => list(v, "rooms")?,
                None => Vec::new(),
            };
            if let Some(v) = o.get("devices") {
                rooms.extend(list(v, "devices")?.iter().map(|d| device_room(d)));
            }
            if rooms.is_empty() {
                return Err("expected {\"rooms\": [...]} or {\"devices\": [...]}".into());
            }
            rooms
        }
        other => list(other, "subscribe")?,
    };
    for room in &rooms {
        let device = device_of_room(room).ok_or_else(|| {
            format!("room {room:?} is not a device room (device-uuid-{{device}})")
        })?;
        check_device(device).map_err(|e| format!("room {room:?}: {e}"))?;
    }
    Ok(rooms)
}

/// Joins (or leaves) the rooms a payload names, keeping the device counts; the answer is
/// `{"rooms": [...]}` or `{"error": "..."}`.
fn change_rooms(socket: &SocketRef, subs: &Subscriptions, payload: &Value, join: bool) -> Value {
    let rooms = match rooms_of(payload) {
        Ok(rooms) => rooms,
        Err(error) => return json!({ "error": error }),
    };
    let joined = socket.rooms();
    for room in &rooms {
        // Count a device once per socket: only rooms whose membership changes.
        if joined.iter().any(|r| r == room.as_str()) != join {
            if let Some(d) = device_of_room(room) {
                if join {
                    subs.add(d);
                } else {
                    subs.remove(d);
                }
            }
        }
    }
    if join {
        socket.join(rooms.clone());
    } else {
        socket.leave(rooms.clone());
    }
    json!({ "rooms": rooms })
}

/// Builds the layer for the router and the handle used to emit.
pub fn socket_io(
    subscriptions: Arc<Subscriptions>,
    max_buffer: usize,
) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(max_buffer)
        .build_layer();
    // Handlers are registered in the connect callback itself, before its future runs, so an
    // event that follows the connection at once is not missed.
    io.ns("/", move |socket: SocketRef| {
        for (event, join) in [("subscribe", true), ("unsubscribe", false)] {
            let subs = Arc::clone(&subscriptions);
            socket.on(
                event,
                move |socket: SocketRef, Data(payload): Data<Value>, ack: AckSender| {
                    let answer = change_rooms(&socket, &subs, &payload, join);
                    async move {
                        let _ = ack.send(&answer);
                    }
                },
            );
        }
        let subs = Arc::clone(&subscriptions);
        socket.on_disconnect(move |socket: SocketRef| {
            for room in socket.rooms() {
                if let Some(d) = device_of_room(&room) {
                    subs.remove(d);
                }
            }
            async {}
        });
        async {}
    });
    (layer, io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_payloads() {
        assert_eq!(
            rooms_of(&json!({"rooms": ["device-uuid-a"]})).unwrap(),
            vec!["device-uuid-a"]
        );
        assert_eq!(
            rooms_of(&json!({"devices": ["a", "b"]})).unwrap(),
            vec!["device-uuid-a", "device-uuid-b"]
        );
        assert_eq!(
            rooms_of(&json!("device-uuid-a")).unwrap(),
            vec!["device-uuid-a"]
        );
        assert!(rooms_of(&json!({"rooms": ["lobby"]}))
            .unwrap_err()
            .contains("not a device room"));
        assert!(rooms_of(&json!({"rooms": [1]}))
            .unwrap_err()
            .contains("strings"));
        assert!(rooms_of(&json!({})).is_err());
        assert!(rooms_of(&json!({"devices": ["bad device"]})).is_err());
    }
}
