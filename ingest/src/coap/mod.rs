//! The CoAP server over UDP (`coap-lite` messages): telemetry in, notifications out.
//!
//! - `POST /telemetry?token=T` (or `/telemetry/{device}`, without a token in `dev` mode) with a
//!   JSON body as for MQTT answers `2.04 Changed` once the readings are durable, `4.00` with
//!   the reason otherwise, `4.01` without a valid token, `4.03` for a token of another device
//!   or a sensor it does not own, `4.29` over its rate limit, `5.03` with Max-Age 1 (retry in a
//!   second) when overloaded.
//! - `GET /devices/{device}/notifications` with Observe (RFC 7641) registers an observer
//!   ([`observers`]); each notification is then sent to it as a confirmable `2.05` with an
//!   increasing Observe number. Without Observe, the GET answers the last notification. Both
//!   need a credential that may read the device (`?token=`), as the authorizer decides.
//!
//! Confirmable requests are deduplicated by endpoint and message id for the exchange
//! lifetime, so a retransmitted POST is answered again, not stored twice; a reused id with
//! other bytes is a new request ([`dedup`]). Confirmable
//! notifications are retransmitted with backoff until acknowledged ([`observers`]), and what
//! goes to a source that has not shown it receives is bounded ([`amplification`]).

mod amplification;
mod dedup;
pub(crate) mod message;
mod observers;
mod recv_backoff;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aemos_storage::Storage;
use bytes::Bytes;
use coap_lite::{
    create_notification, CoapRequest, ContentFormat, MessageType, ObserveOption, Packet,
    ResponseType,
};
use serde_json::json;
use tokio::net::UdpSocket;
use tracing::{debug, warn};

use crate::queue::DropOldest;
use crate::validate::check_device;
use crate::{decode_device_payload, DecodeArgs};
use amplification::Amplification;
use dedup::Dedup;
use message::{encode_answer, error_body, query_param, retry_after, route, Route};
use observers::{Observer, Observers, Registered};
use recv_backoff::RecvBackoff;

#[derive(Debug, Clone)]
pub struct CoapArgs {
    /// UDP address; port 0 picks a free port.
    pub addr: SocketAddr,
    /// Who may write and observe; `None`: everyone (tests of the edge alone).
    pub authorizer: Option<Arc<dyn crate::EdgeAuthorizer>>,
    /// How long an observation lasts without being renewed.
    pub observe_lifetime: Duration,
    pub max_observers: usize,
    /// Observers sharing one source address at most.
    pub max_observers_per_source: usize,
    /// RFC 7252's ACK_TIMEOUT: the first wait for a confirmable notification's ACK (then
    /// doubling, four retransmissions at most).
    pub ack_timeout: Duration,
    /// Notifications waiting to be sent before the oldest is dropped.
    pub notify_queue: usize,
}

impl CoapArgs {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            authorizer: None,
            observe_lifetime: Duration::from_secs(24 * 3600),
            max_observers: 100_000,
            max_observers_per_source: 64,
            ack_timeout: Duration::from_secs(2),
            notify_queue: 65_536,
        }
    }
}

/// Counters of the CoAP edge.
#[derive(Debug, Default)]
pub struct CoapStats {
    pub requests: AtomicU64,
    pub malformed: AtomicU64,
    pub readings: AtomicU64,
    pub notifications: AtomicU64,
    /// Requests answered 5.03 because too many were in flight.
    pub refused: AtomicU64,
    /// Errors of `recv_from` (each ICMP port-unreachable of a gone observer among them).
    pub socket_errors: AtomicU64,
    /// The socket's last receive failed with an error that is waited out (not an ICMP
    /// port-unreachable of a gone observer); cleared by the next datagram.
    pub socket_failing: std::sync::atomic::AtomicBool,
    /// Confirmable notifications sent again for want of an ACK.
    pub retransmissions: AtomicU64,
    /// Observers removed after their notification went unacknowledged through every
    /// retransmission.
    pub observers_timed_out: AtomicU64,
    /// Datagrams not sent to an unverified source over its amplification bound.
    pub amplification_refused: AtomicU64,
    /// Readings refused, by [`crate::RejectReason`] (its discriminant).
    pub rejected: [AtomicU64; 5],
}

impl CoapStats {
    fn count_rejections(&self, counts: &crate::RejectionCounts) {
        for (reason, n) in counts.iter() {
            self.rejected[reason as usize].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Readings refused for `reason` so far.
    pub fn rejected(&self, reason: crate::RejectReason) -> u64 {
        self.rejected[reason as usize].load(Ordering::Relaxed)
    }
}

/// Requests handled at once.
const MAX_IN_FLIGHT: usize = 4096;

struct Shared {
    socket: UdpSocket,
    storage: Arc<Storage>,
    args: CoapArgs,
    observers: Mutex<Observers>,
    /// The last notification per device, answered to a plain GET and to a new observer.
    last: Mutex<HashMap<String, (u32, Bytes)>>,
    dedup: Mutex<Dedup>,
    amplification: Mutex<Amplification>,
    message_id: AtomicU16,
    stats: Arc<CoapStats>,
    /// Requests being handled (most wait for a group commit); beyond it 5.03 at once.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The running server.
#[derive(Clone)]
pub struct CoapServer {
    pub addr: SocketAddr,
    pub stats: Arc<CoapStats>,
    queue: Arc<DropOldest<(String, Bytes)>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CoapServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoapServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl CoapServer {
    /// Binds and starts the receive loop and the notification sender on the current runtime.
    pub async fn start(args: CoapArgs, storage: Arc<Storage>) -> crate::Result<Self> {
        let socket = UdpSocket::bind(args.addr)
            .await
            .map_err(|e| crate::Error::Edge(format!("binding coap {}: {e}", args.addr)))?;
        let addr = socket
            .local_addr()
            .map_err(|e| crate::Error::Edge(format!("coap address: {e}")))?;
        let stats = Arc::new(CoapStats::default());
        let shared = Arc::new(Shared {
            socket,
            storage,
            observers: Mutex::new(Observers::new(
                args.observe_lifetime,
                args.max_observers,
                args.max_observers_per_source,
                args.ack_timeout,
            )),
            amplification: Mutex::new(Amplification::new(Instant::now())),
            last: Mutex::new(HashMap::new()),
            dedup: Mutex::new(Dedup::new(Duration::from_secs(247), 65_536)),
            message_id: AtomicU16::new(rand_start()),
            stats: Arc::clone(&stats),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            args,
        });
        let queue = DropOldest::new(shared.args.notify_queue);
        tokio::spawn(receive_loop(Arc::clone(&shared)));
        tokio::spawn(notify_loop(Arc::clone(&shared), Arc::clone(&queue)));
        Ok(Self {
            addr,
            stats,
            queue,
            shared,
        })
    }

    /// Queues a notification for a device's observers; never blocks.
    pub fn notify(&self, device: String, payload: Bytes) {
        self.queue.push((device, payload));
    }

    pub fn observers(&self) -> usize {
        lock(&self.shared.observers).len()
    }

    /// Notifications dropped because the sender fell behind.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped()
    }

    /// The queue of notifications waiting for the sender.
    pub fn backlog(&self) -> crate::queue::Backlog {
        self.queue.backlog()
    }

    /// `degraded` while the socket keeps failing (the receive loop waits between errors),
    /// else `ok`; with the counters.
    pub fn health(&self) -> serde_json::Value {
        let s = &self.shared.stats;
        let failing = s.socket_failing.load(Ordering::Relaxed);
        json!({
            "status": if failing { "degraded" } else { "ok" },
            "observers": self.observers(),
            "requests": s.requests.load(Ordering::Relaxed),
            "malformed": s.malformed.load(Ordering::Relaxed),
            "socketErrors": s.socket_errors.load(Ordering::Relaxed),
            "refused": s.refused.load(Ordering::Relaxed),
        })
    }
}

fn rand_start() -> u16 {
    (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        & 0xffff) as u16
}

async fn receive_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65_536];
    let mut backoff = RecvBackoff::default();
    loop {
        let (len, src) = match shared.socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                shared.stats.socket_errors.fetch_add(1, Ordering::Relaxed);
                match backoff.after_error(e.kind()) {
                    // ICMP port unreachable from a gone observer: about one datagram.
                    None => debug!(error = %e, "coap: receive"),
                    Some(wait) => {
                        shared.stats.socket_failing.store(true, Ordering::Relaxed);
                        if backoff.should_warn() {
                            warn!(error = %e, ?wait, "coap: socket error; waiting before the next receive");
                        }
                        tokio::time::sleep(wait).await;
                    }
                }
                continue;
            }
        };
        backoff.after_datagram();
        shared.stats.socket_failing.store(false, Ordering::Relaxed);
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        lock(&shared.amplification).received(src.ip(), len, Instant::now());
        let packet = match Packet::from_bytes(&buf[..len]) {
            Ok(p) => p,
            Err(e) => {
                shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                debug!(%src, error = ?e, "coap: malformed message");
                continue;
            }
        };
        let message_id = packet.header.message_id;
        // Of a confirmable request's bytes: what tells its retransmissions from a reused id.
        let mut fingerprint = 0;
        match packet.header.get_type() {
            MessageType::Acknowledgement => {
                if lock(&shared.observers).acknowledged(src, message_id) {
                    // It received our message: its address is its own.
                    lock(&shared.amplification).verify(src.ip(), Instant::now());
                }
                continue;
            }
            MessageType::Reset => {
                lock(&shared.observers).reset(src, message_id);
                continue;
            }
            MessageType::Confirmable => {
                let cached = {
                    let mut dedup = lock(&shared.dedup);
                    fingerprint = dedup.fingerprint(&buf[..len]);
                    dedup.seen(src, message_id, fingerprint, Instant::now())
                };
                match cached {
                    dedup::Seen::New => {}
                    dedup::Seen::Answered(bytes) => {
                        send(&shared, &bytes, src).await;
                        continue;
                    }
                    dedup::Seen::InProgress => continue,
                }
            }
            MessageType::NonConfirmable => {}
        }
        let request = CoapRequest::from_packet(packet, src);
        match Arc::clone(&shared.in_flight).try_acquire_owned() {
            Ok(permit) => {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    handle(shared, request, fingerprint).await;
                    drop(permit);
                });
            }
            // Too many requests waiting for the WAL: refuse this one now, not later (and
            // answer a retransmission of it the same way).
            Err(_) => {
                let mut request = request;
                let confirmable = request.message.header.get_type() == MessageType::Confirmable;
                let body = error_body("too many requests in flight; retry later");
                if let Some(r) = request.response.as_mut() {
                    r.set_status(ResponseType::ServiceUnavailable);
                    retry_after(&mut r.message);
                    r.message.payload = body.to_vec();
                    if let Ok(bytes) = r.message.to_bytes() {
                        if confirmable {
                            lock(&shared.dedup).answered(
                                src,
                                message_id,
                                fingerprint,
                                bytes.clone(),
                                Instant::now(),
                            );
                        }
                        send(&shared, &bytes, src).await;
                    }
                }
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Answers one request; `fingerprint` (of its bytes) keeps the answer for its
/// retransmissions.
async fn handle(shared: Arc<Shared>, mut request: CoapRequest<SocketAddr>, fingerprint: u64) {
    let Some(src) = request.source else { return };
    let confirmable = request.message.header.get_type() == MessageType::Confirmable;
    let message_id = request.message.header.message_id;
    let (status, body) = match route(&request) {
        Route::Telemetry(device) => post_telemetry(&shared, device.as_deref(), &request).await,
        Route::Notifications(device) => get_notifications(&shared, &device, &mut request),
        Route::Refused(status, body) => (status, body),
    };
    let Some(bytes) = encode_answer(&mut request, status, body) else {
        return;
    };
    if confirmable {
        lock(&shared.dedup).answered(src, message_id, fingerprint, bytes.clone(), Instant::now());
    }
    send(&shared, &bytes, src).await;
}

/// Sends a datagram unless it is over the destination's amplification bound.
async fn send(shared: &Shared, bytes: &[u8], to: SocketAddr) -> bool {
    if !lock(&shared.amplification).may_send(to.ip(), bytes.len(), Instant::now()) {
        shared
            .stats
            .amplification_refused
            .fetch_add(1, Ordering::Relaxed);
        return false;
    }
    shared.socket.send_to(bytes, to).await.is_ok()
}

/// The answer to a refused credential.
fn refused(refusal: crate::EdgeRefusal) -> (ResponseType, Bytes) {
    let status = match &refusal {
        crate::EdgeRefusal::Unauthorized(_) => ResponseType::Unauthorized,
        crate::EdgeRefusal::Forbidden(_) => ResponseType::Forbidden,
        crate::EdgeRefusal::RateLimited(_) => ResponseType::TooManyRequests,
    };
    (status, error_body(refusal))
}

async fn post_telemetry(
    shared: &Shared,
    device: Option<&str>,
    request: &CoapRequest<SocketAddr>,
) -> (ResponseType, Bytes) {
    if let Some(Err(reason)) = device.map(check_device) {
        return (
            ResponseType::BadRequest,
            error_body(format!("device: {reason}")),
        );
    }
    let token = query_param(request, "token");
    let (device, scope) = match (&shared.args.authorizer, device) {
        (Some(auth), _) => {
            let Some(src) = request.source else {
                return (ResponseType::BadRequest, error_body("no source"));
            };
            match auth.coap_write(token.as_deref(), device, src) {
                Ok(granted) => (granted.id, granted.scope),
                Err(refusal) => return refused(refusal),
            }
        }
        (None, Some(device)) => (device.to_owned(), None),
        (None, None) => {
            return (
                ResponseType::Unauthorized,
                error_body("device tokens need a device registry; use /telemetry/{device}"),
            )
        }
    };
    let device = device.as_str();
    if let Err(e) = shared.storage.check_admission() {
        return (ResponseType::ServiceUnavailable, error_body(e));
    }
    let args = DecodeArgs::for_storage(&shared.storage).with_scope(scope);
    let decoded = match decode_device_payload(device, &request.message.payload, &args) {
        Ok(d) => d,
        Err(e) => {
            shared
                .stats
                .count_rejections(&crate::RejectionCounts::one(crate::RejectReason::Malformed));
            return (ResponseType::BadRequest, error_body(e));
        }
    };
    shared.stats.count_rejections(&decoded.rejected_by);
    if decoded.rejected_count > 0 {
        let body = json!({
            "error": format!("{} of {} readings rejected; nothing was stored", decoded.rejected_count, decoded.rejected_count + decoded.accepted()),
            "rejected": decoded.rejected,
        });
        let status = if decoded.forbidden {
            ResponseType::Forbidden
        } else {
            ResponseType::BadRequest
        };
        return (status, Bytes::from(body.to_string()));
    }
    let accepted = decoded.accepted();
    match shared.storage.write(decoded.batch).await {
        Ok(()) => {
            shared
                .stats
                .readings
                .fetch_add(accepted as u64, Ordering::Relaxed);
            (
                ResponseType::Changed,
                Bytes::from(json!({ "accepted": accepted }).to_string()),
            )
        }
        Err(e) if e.retry_later() => (ResponseType::ServiceUnavailable, error_body(e)),
        Err(e) => (ResponseType::InternalServerError, error_body(e)),
    }
}

fn get_notifications(
    shared: &Shared,
    device: &str,
    request: &mut CoapRequest<SocketAddr>,
) -> (ResponseType, Bytes) {
    if let Err(reason) = check_device(device) {
        return (
            ResponseType::BadRequest,
            error_body(format!("device: {reason}")),
        );
    }
    let Some(src) = request.source else {
        return (ResponseType::BadRequest, error_body("no source"));
    };
    let credential = query_param(request, "token");
    if let Some(auth) = &shared.args.authorizer {
        if let Err(refusal) = auth.coap_read(credential.as_deref(), device, src) {
            return refused(refusal);
        }
    }
    let token = request.message.get_token().to_vec();
    let (sequence, last) = lock(&shared.last)
        .get(device)
        .cloned()
        .unwrap_or((0, Bytes::from_static(b"{}")));
    match request.get_observe_flag() {
        // A full registry answers without Observe: the client knows it is not observing.
        Some(Ok(ObserveOption::Register))
            if lock(&shared.observers).register(
                device,
                src,
                &token,
                credential.as_deref(),
                Instant::now(),
            ) != Registered::Full =>
        {
            if let Some(r) = request.response.as_mut() {
                r.message.set_observe_value(sequence);
            }
        }
        Some(Ok(ObserveOption::Register)) => {}
        Some(Ok(ObserveOption::Deregister)) => {
            lock(&shared.observers).deregister(device, src, &token);
        }
        Some(Err(_)) => {
            return (
                ResponseType::BadOption,
                error_body("Observe must be 0 or 1"),
            )
        }
        None => {}
    }
    (ResponseType::Content, last)
}

async fn notify_loop(shared: Arc<Shared>, queue: Arc<DropOldest<(String, Bytes)>>) {
    let mut items = Vec::new();
    let mut last_sweep = Instant::now();
    loop {
        let next_due = lock(&shared.observers).next_due();
        let retransmit = async {
            match next_due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            more = queue.next_all(&mut items) => {
                if !more {
                    return;
                }
            }
            () = retransmit => {}
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) > Duration::from_secs(60) {
            lock(&shared.observers).expire(now);
            last_sweep = now;
        }
        let (again, timed_out) = lock(&shared.observers).due(now);
        shared
            .stats
            .observers_timed_out
            .fetch_add(timed_out as u64, Ordering::Relaxed);
        for (endpoint, bytes) in again {
            if send(&shared, &bytes, endpoint).await {
                shared.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (device, payload) in items.drain(..) {
            let sequence = {
                let mut last = lock(&shared.last);
                let entry = last.entry(device.clone()).or_insert((0, Bytes::new()));
                entry.0 = (entry.0 + 1) & 0x00ff_ffff;
                entry.1 = payload.clone();
                entry.0
            };
            let allowed = |o: &Observer| match &shared.args.authorizer {
                Some(auth) => auth
                    .coap_read(o.credential.as_deref(), &device, o.endpoint)
                    .is_ok(),
                None => true,
            };
            let targets = lock(&shared.observers).notify(&device, now, allowed, || {
                shared.message_id.fetch_add(1, Ordering::Relaxed)
            });
            for (observer, message_id) in targets {
                let mut packet = create_notification(
                    message_id,
                    observer.token.clone(),
                    sequence,
                    payload.to_vec(),
                    true,
                );
                packet.set_content_format(ContentFormat::ApplicationJSON);
                match packet.to_bytes() {
                    Ok(bytes) => {
                        let bytes = Bytes::from(bytes);
                        lock(&shared.observers).sent(
                            &device,
                            &observer,
                            message_id,
                            bytes.clone(),
                            now,
                            jitter(message_id),
                        );
                        if send(&shared, &bytes, observer.endpoint).await {
                            shared.stats.notifications.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => warn!(error = ?e, "coap: encoding a notification"),
                }
            }
        }
    }
}

/// A value in [0, 1) that spreads first retransmission timeouts (RFC 7252 §4.2's random
/// factor) without a random number generator: the message id's bits, reversed.
fn jitter(message_id: u16) -> f64 {
    f64::from(message_id.reverse_bits()) / 65_536.0
}
