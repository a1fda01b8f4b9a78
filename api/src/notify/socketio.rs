//! Socket.IO (protocol v5) on the HTTP server: clients `subscribe` to device rooms and get
//! `device-state-change` and `datastream` events.
//!
//! `subscribe` takes `{"rooms": ["device-uuid-abc"]}`, `{"devices": ["abc"]}`, a room name or
//! an array of room names, and acknowledges (when the client asks) with the rooms joined or
//! the reason for refusing. `unsubscribe` takes the same. The subscribed devices are counted
//! here so that the `datastream` throttle does nothing for devices nobody watches; a socket
//! counts once per device it has joined, whatever a payload repeats.
//!
//! The handshake's `auth` payload (`{"token": ...}`, a user JWT or a device token) is checked
//! before the socket connects: a wrong credential (or none, in `production` mode) gets a
//! CONNECT_ERROR naming the reason. A socket joins only rooms of devices its credential may
//! read; a `subscribe` naming any other is refused whole, with the reason in its ack. The token
//! is checked again at each `subscribe`, and at each rotation or removal of a device and when
//! a user token expires: a socket whose credential is refused is disconnected, so a rotated
//! device token neither joins nor receives anything more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use aemos_ingest::validate::check_device;
use serde_json::{json, Value};
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide::SocketIo;

use super::channels::device_room;
use crate::auth::{Access, Auth, AuthError, Principal};

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

/// The token of a handshake's `auth` payload: `{"token": "..."}` or a bare string.
fn token_of(auth: Option<&Value>) -> Result<Option<&str>, AuthError> {
    match auth {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) => Ok(Some(t)),
        Some(Value::Object(o)) => match o.get("token") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(t)) => Ok(Some(t)),
            Some(_) => Err(AuthError::Invalid("`auth.token` must be a string".into())),
        },
        Some(_) => Err(AuthError::Invalid(
            "the handshake's `auth` must be {\"token\": \"...\"}".into(),
        )),
    }
}

/// Joins (or leaves) the rooms a payload names, keeping the device counts; the answer is
/// `{"rooms": [...]}` or `{"error": "..."}`.
fn change_rooms(
    socket: &SocketRef,
    subs: &Subscriptions,
    payload: &Value,
    join: bool,
    may_read: impl Fn(&str) -> Result<(), AuthError>,
) -> Value {
    let mut rooms = match rooms_of(payload) {
        Ok(rooms) => rooms,
        Err(error) => return json!({ "error": error }),
    };
    // A room named twice (or as a room and as a device) changes membership once.
    let mut seen = std::collections::HashSet::new();
    rooms.retain(|r| seen.insert(r.clone()));
    if join {
        for room in &rooms {
            let device = device_of_room(room).unwrap_or_default();
            if let Err(e) = may_read(device) {
                return json!({ "error": e.to_string(), "room": room });
            }
        }
    }
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

/// Builds the layer for the router and the handle used to emit; the namespace is served once
/// [`serve_namespace`] has registered it.
pub fn socket_io(max_buffer: usize) -> (SocketIoLayer, SocketIo) {
    SocketIo::builder()
        .max_buffer_size(max_buffer)
        .build_layer()
}

/// Registers the `/` namespace: the handshake's credential checked, `subscribe` and
/// `unsubscribe` handled.
pub fn serve_namespace(io: &SocketIo, subscriptions: Arc<Subscriptions>, auth: Arc<Auth>) {
    let check_auth = Arc::clone(&auth);
    let middleware = move |TryData(payload): TryData<Value>| {
        let outcome = token_of(payload.as_ref().ok())
            .and_then(|token| check_auth.authenticate(token))
            .map(|_| ());
        async move { outcome }
    };
    // Handlers are registered in the connect callback itself, before its future runs, so an
    // event that follows the connection at once is not missed.
    let handler = move |socket: SocketRef, TryData(payload): TryData<Value>| {
        let token = token_of(payload.as_ref().ok())
            .ok()
            .flatten()
            .map(str::to_owned);
        for (event, join) in [("subscribe", true), ("unsubscribe", false)] {
            let subs = Arc::clone(&subscriptions);
            let auth = Arc::clone(&auth);
            let token = token.clone();
            socket.on(
                event,
                move |socket: SocketRef, Data(payload): Data<Value>, ack: AckSender| {
                    let principal = auth.authenticate(token.as_deref());
                    let may_read = |device: &str| -> Result<(), AuthError> {
                        let p: &Principal = principal.as_ref().map_err(Clone::clone)?;
                        if p.allows(&Access::ReadDevice(device)) {
                            Ok(())
                        } else {
                            Err(AuthError::Forbidden(format!(
                                "{} may not read device {device:?}",
                                p.describe()
                            )))
                        }
                    };
                    let answer = change_rooms(&socket, &subs, &payload, join, may_read);
                    async move {
                        let _ = ack.send(&answer);
                    }
                },
            );
        }
        let closed = Arc::new(tokio::sync::Notify::new());
        if let Ok(principal) = auth.authenticate(token.as_deref()) {
            if !matches!(principal, Principal::Anonymous) {
                let deadline = match &principal {
                    Principal::User(user) => Some(user.refused_from()),
                    _ => None,
                };
                tokio::spawn(end_when_revoked(
                    socket.clone(),
                    Arc::clone(&auth),
                    token.clone(),
                    deadline,
                    Arc::clone(&closed),
                ));
            }
        }
        let subs = Arc::clone(&subscriptions);
        socket.on_disconnect(move |socket: SocketRef| {
            for room in socket.rooms() {
                if let Some(d) = device_of_room(&room) {
                    subs.remove(d);
                }
            }
            closed.notify_one();
            async {}
        });
        async {}
    };
    io.ns("/", handler.with(middleware));
}

/// Disconnects the socket once its credential is refused: checked again at each rotation or
/// removal of a device and when a user token expires (`deadline`, seconds since the epoch).
/// Ends when the socket disconnects (`closed`).
async fn end_when_revoked(
    socket: SocketRef,
    auth: Arc<Auth>,
    token: Option<String>,
    deadline: Option<u64>,
    closed: Arc<tokio::sync::Notify>,
) {
    let mut revocations = auth.registry.revocations();
    loop {
        let expiry = async {
            match deadline {
                Some(at) => {
                    let now = chrono::Utc::now().timestamp().max(0) as u64;
                    // At least a second: a clock behind the token's issuer must not spin.
                    let wait = at.saturating_sub(now).max(1);
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = closed.notified() => return,
            changed = revocations.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = expiry => {}
        }
        if let Err(e) = auth.authenticate(token.as_deref()) {
            tracing::info!(socket = %socket.id, reason = %e, "socket.io: credential no longer valid, disconnecting");
            let _ = socket.disconnect();
            return;
        }
    }
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
