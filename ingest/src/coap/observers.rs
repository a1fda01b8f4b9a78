//! Observers of `/devices/{device}/notifications` (RFC 7641), and the retransmission of their
//! confirmable notifications (RFC 7252 §4.2).
//!
//! An observer is an endpoint and a token. Each notification goes to it as a confirmable
//! message; until it is acknowledged, the message is sent again after a timeout that starts
//! between `ACK_TIMEOUT` and 1.5 times it and doubles each time, at most `MAX_RETRANSMIT` (4)
//! times; then the observer is removed (RFC 7641 §4.5). A newer notification while one is
//! unacknowledged takes its place, with its retransmission count and timeout (§4.5.2), so
//! each observer has at most one message in flight and the retransmission state is bounded
//! by the observers. An observer is also removed when it deregisters (GET with Observe = 1),
//! answers a notification with RST, or when its registration is older than the lifetime
//! without being renewed (a client re-registers with a new GET). At most `max_per_source`
//! observers share one source address. coap-lite's `Subject` keeps neither the registration
//! time nor a way to remove an observer by the message it rejected, so this registry is ours.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Retransmissions of one confirmable message at most (RFC 7252 §4.8).
pub(super) const MAX_RETRANSMIT: u8 = 4;

#[derive(Debug, Clone)]
pub(super) struct Observer {
    pub(super) endpoint: SocketAddr,
    pub(super) token: Vec<u8>,
    /// The `?token=` it registered with, checked again before each notification: a revoked
    /// credential (a rotated device token, an expired user token) observes no more.
    pub(super) credential: Option<String>,
    registered: Instant,
    /// The confirmable notification sent and not acknowledged.
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    message_id: u16,
    bytes: Bytes,
    retransmits: u8,
    timeout: Duration,
    due: Instant,
}

/// One observer's place in the retransmission queue; stale when its observer's pending
/// message is gone or due at another time.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    at: Instant,
    device: String,
    endpoint: SocketAddr,
    token: Vec<u8>,
}

#[derive(Debug)]
pub(super) struct Observers {
    by_device: HashMap<String, Vec<Observer>>,
    /// Pending messages by endpoint and message id: an ACK or RST finds its observer at once.
    by_message: HashMap<(SocketAddr, u16), (String, Vec<u8>)>,
    per_source: HashMap<IpAddr, usize>,
    queue: BinaryHeap<Reverse<Due>>,
    count: usize,
    lifetime: Duration,
    max: usize,
    max_per_source: usize,
    ack_timeout: Duration,
}

/// What [`Observers::register`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Registered {
    New,
    Renewed,
    /// Refused: the registry, or the source's share of it, is full.
    Full,
}

impl Observers {
    pub(super) fn new(
        lifetime: Duration,
        max: usize,
        max_per_source: usize,
        ack_timeout: Duration,
    ) -> Self {
        Self {
            by_device: HashMap::new(),
            by_message: HashMap::new(),
            per_source: HashMap::new(),
            queue: BinaryHeap::new(),
            count: 0,
            lifetime,
            max,
            max_per_source,
            ack_timeout,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Adds or renews (same endpoint and token).
    pub(super) fn register(
        &mut self,
        device: &str,
        endpoint: SocketAddr,
        token: &[u8],
        credential: Option<&str>,
        now: Instant,
    ) -> Registered {
        if let Some(o) = self.by_device.get_mut(device).and_then(|list| {
            list.iter_mut()
                .find(|o| o.endpoint == endpoint && o.token == token)
        }) {
            o.registered = now;
            o.credential = credential.map(str::to_owned);
            return Registered::Renewed;
        }
        let from_source = self.per_source.get(&endpoint.ip()).copied().unwrap_or(0);
        if self.count >= self.max || from_source >= self.max_per_source {
            return Registered::Full;
        }
        self.by_device
            .entry(device.to_owned())
            .or_default()
            .push(Observer {
                endpoint,
                token: token.to_vec(),
                credential: credential.map(str::to_owned),
                registered: now,
                pending: None,
            });
        *self.per_source.entry(endpoint.ip()).or_default() += 1;
        self.count += 1;
        Registered::New
    }

    pub(super) fn deregister(&mut self, device: &str, endpoint: SocketAddr, token: &[u8]) {
        self.remove_where(Some(device), |o| o.endpoint == endpoint && o.token == token);
    }

    /// An ACK for a notification: the observer is alive, and the message needs no more sends.
    /// `true` when it acknowledged a message of ours (the source has proven it receives).
    pub(super) fn acknowledged(&mut self, endpoint: SocketAddr, message_id: u16) -> bool {
        let Some((device, token)) = self.by_message.remove(&(endpoint, message_id)) else {
            return false;
        };
        if let Some(o) = self.find(&device, endpoint, &token) {
            o.pending = None;
        }
        true
    }

    /// An RST for a notification: the observer is gone.
    pub(super) fn reset(&mut self, endpoint: SocketAddr, message_id: u16) {
        if let Some((device, token)) = self.by_message.get(&(endpoint, message_id)).cloned() {
            self.deregister(&device, endpoint, &token);
        }
    }

    fn find(&mut self, device: &str, endpoint: SocketAddr, token: &[u8]) -> Option<&mut Observer> {
        self.by_device
            .get_mut(device)?
            .iter_mut()
            .find(|o| o.endpoint == endpoint && o.token == token)
    }

    /// The observers to notify of a device's change, each given the message id to use;
    /// expired observers, and those whose credential `allowed` no longer accepts, are dropped
    /// first. Each message is then handed to [`Observers::sent`].
    pub(super) fn notify(
        &mut self,
        device: &str,
        now: Instant,
        mut allowed: impl FnMut(&Observer) -> bool,
        mut next_message_id: impl FnMut() -> u16,
    ) -> Vec<(Observer, u16)> {
        let lifetime = self.lifetime;
        self.remove_where(Some(device), |o| {
            now.duration_since(o.registered) > lifetime || !allowed(o)
        });
        let Some(list) = self.by_device.get(device) else {
            return Vec::new();
        };
        list.iter()
            .map(|o| (o.clone(), next_message_id()))
            .collect()
    }

    /// Records a confirmable notification sent to an observer: it is sent again until
    /// acknowledged. `jitter` (0 to 1) places the first timeout in its range.
    pub(super) fn sent(
        &mut self,
        device: &str,
        observer: &Observer,
        message_id: u16,
        bytes: Bytes,
        now: Instant,
        jitter: f64,
    ) {
        let first = self.ack_timeout.mul_f64(1.0 + 0.5 * jitter.clamp(0.0, 1.0));
        let Some(o) = self.find(device, observer.endpoint, &observer.token) else {
            return;
        };
        let (replaced, pending) = match o.pending.take() {
            // A newer state replaces the one in flight, keeping its count and timer.
            Some(old) => (
                Some(old.message_id),
                Pending {
                    message_id,
                    bytes,
                    ..old
                },
            ),
            None => (
                None,
                Pending {
                    message_id,
                    bytes,
                    retransmits: 0,
                    timeout: first,
                    due: now + first,
                },
            ),
        };
        let due = (replaced.is_none()).then_some(pending.due);
        o.pending = Some(pending);
        let (endpoint, token) = (o.endpoint, o.token.clone());
        if let Some(old) = replaced {
            self.by_message.remove(&(endpoint, old));
        }
        self.by_message
            .insert((endpoint, message_id), (device.to_owned(), token.clone()));
        if let Some(at) = due {
            self.queue.push(Reverse(Due {
                at,
                device: device.to_owned(),
                endpoint,
                token,
            }));
        }
    }

    /// When the next retransmission is due.
    pub(super) fn next_due(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse(d)| d.at)
    }

    /// The messages to send again now (endpoint and bytes); observers that used up their
    /// retransmissions are removed, counted in the second value.
    pub(super) fn due(&mut self, now: Instant) -> (Vec<(SocketAddr, Bytes)>, usize) {
        let mut resend = Vec::new();
        let mut gone = Vec::new();
        while let Some(Reverse(d)) = self.queue.peek() {
            if d.at > now {
                break;
            }
            let Reverse(d) = self.queue.pop().expect("peeked");
            let Some(o) = self.find(&d.device, d.endpoint, &d.token) else {
                continue;
            };
            let Some(p) = o.pending.as_mut().filter(|p| p.due == d.at) else {
                continue;
            };
            if p.retransmits >= MAX_RETRANSMIT {
                gone.push(d);
                continue;
            }
            p.retransmits += 1;
            p.timeout *= 2;
            p.due = now + p.timeout;
            let at = p.due;
            resend.push((d.endpoint, p.bytes.clone()));
            self.queue.push(Reverse(Due { at, ..d }));
        }
        let removed = gone.len();
        for d in gone {
            self.deregister(&d.device, d.endpoint, &d.token);
        }
        (resend, removed)
    }

    /// Drops every registration older than the lifetime.
    pub(super) fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.remove_where(None, |o| now.duration_since(o.registered) > lifetime);
    }

    fn remove_where(&mut self, device: Option<&str>, mut gone: impl FnMut(&Observer) -> bool) {
        let mut removed = Vec::new();
        let mut prune = |list: &mut Vec<Observer>| {
            list.retain(|o| {
                let keep = !gone(o);
                if !keep {
                    removed.push((o.endpoint, o.pending.as_ref().map(|p| p.message_id)));
                }
                keep
            });
        };
        match device {
            Some(d) => {
                if let Some(list) = self.by_device.get_mut(d) {
                    prune(list);
                }
            }
            None => self.by_device.values_mut().for_each(&mut prune),
        }
        self.by_device.retain(|_, list| !list.is_empty());
        self.count -= removed.len();
        for (endpoint, message) in removed {
            if let Some(id) = message {
                self.by_message.remove(&(endpoint, id));
            }
            if let Some(n) = self.per_source.get_mut(&endpoint.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&endpoint.ip());
                }
            }
        }
        // Removed observers leave stale entries in the queue; rebuild it when they dominate.
        if self.queue.len() > 2 * self.by_message.len() + 1024 {
            self.rebuild_queue();
        }
    }

    fn rebuild_queue(&mut self) {
        self.queue = self
            .by_device
            .iter()
            .flat_map(|(device, list)| {
                list.iter().filter_map(move |o| {
                    o.pending.as_ref().map(|p| {
                        Reverse(Due {
                            at: p.due,
                            device: device.clone(),
                            endpoint: o.endpoint,
                            token: o.token.clone(),
                        })
                    })
                })
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn observers(max: usize) -> Observers {
        Observers::new(Duration::from_secs(60), max, 2, Duration::from_secs(2))
    }

    /// Notifies `device`'s observers, recording each message as sent.
    fn notify_all(
        obs: &mut Observers,
        device: &str,
        now: Instant,
        id: &mut u16,
    ) -> Vec<(Observer, u16)> {
        let sent = obs.notify(
            device,
            now,
            |_| true,
            || {
                *id += 1;
                *id
            },
        );
        for (o, mid) in &sent {
            obs.sent(device, o, *mid, Bytes::from_static(b"n"), now, 0.0);
        }
        sent
    }

    #[test]
    fn register_renew_deregister_reset_expire() {
        let start = Instant::now();
        let mut obs = observers(3);
        assert_eq!(
            obs.register("d", addr(1), b"t1", None, start),
            Registered::New
        );
        assert_eq!(
            obs.register("d", addr(1), b"t1", None, start),
            Registered::Renewed
        );
        assert_eq!(
            obs.register("d", addr(2), b"t2", None, start),
            Registered::New
        );
        // Two per source address at most (ports differ, the address does not).
        assert_eq!(
            obs.register("e", addr(3), b"t3", None, start),
            Registered::Full
        );
        let other = SocketAddr::from(([127, 0, 0, 2], 3));
        assert_eq!(
            obs.register("e", other, b"t3", None, start),
            Registered::New
        );
        let fourth = SocketAddr::from(([127, 0, 0, 3], 4));
        assert_eq!(
            obs.register("e", fourth, b"t4", None, start),
            Registered::Full,
            "full"
        );
        assert_eq!(obs.len(), 3);

        let mut id = 0u16;
        let sent = notify_all(&mut obs, "d", start, &mut id);
        assert_eq!(sent.len(), 2);
        obs.reset(addr(2), sent[1].1);
        assert_eq!(obs.len(), 2);
        obs.deregister("d", addr(1), b"t1");
        assert_eq!(obs.len(), 1);
        // The source's share is free again.
        assert_eq!(
            obs.register("f", addr(5), b"t5", None, start),
            Registered::New
        );
        obs.expire(start + Duration::from_secs(61));
        assert_eq!(obs.len(), 0);
        assert!(obs.by_message.is_empty() && obs.per_source.is_empty());
    }

    #[test]
    fn observers_whose_credential_is_refused_are_dropped() {
        let start = Instant::now();
        let mut obs = observers(10);
        obs.register("d", addr(1), b"t", Some("old"), start);
        obs.register("d", addr(2), b"u", Some("new"), start);
        let sent = obs.notify("d", start, |o| o.credential.as_deref() == Some("new"), || 1);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0.endpoint, addr(2));
        assert_eq!(
            obs.len(),
            1,
            "the refused observer is gone, not skipped once"
        );
    }

    #[test]
    fn unacknowledged_notifications_are_retransmitted_with_backoff_then_the_observer_goes() {
        let start = Instant::now();
        let mut obs = observers(10);
        obs.register("d", addr(1), b"t", None, start);
        obs.register("d", addr(2), b"u", None, start);
        let mut id = 0u16;
        let sent = notify_all(&mut obs, "d", start, &mut id);
        // Only the second observer acknowledges.
        let acked = sent.iter().find(|(o, _)| o.endpoint == addr(2)).unwrap().1;
        assert!(obs.acknowledged(addr(2), acked));
        assert!(
            !obs.acknowledged(addr(2), acked),
            "a second ACK finds nothing"
        );
        // Timeouts 2, 4, 8, 16 s after each send: four retransmissions, then removal.
        let mut now = start;
        let mut resent = Vec::new();
        for wait in [2, 4, 8, 16] {
            assert_eq!(
                obs.due(now + Duration::from_millis(wait * 1000 - 1))
                    .0
                    .len(),
                0
            );
            now += Duration::from_secs(wait);
            let (again, removed) = obs.due(now);
            assert_eq!(removed, 0);
            resent.extend(again);
        }
        assert_eq!(resent.len(), 4);
        assert!(resent.iter().all(|(e, _)| *e == addr(1)));
        assert_eq!(obs.len(), 2);
        let (again, removed) = obs.due(now + Duration::from_secs(32));
        assert_eq!((again.len(), removed), (0, 1));
        assert_eq!(obs.len(), 1);
        assert_eq!(obs.next_due(), None);
    }

    #[test]
    fn a_newer_notification_replaces_the_one_in_flight_keeping_its_timer() {
        let start = Instant::now();
        let mut obs = observers(10);
        obs.register("d", addr(1), b"t", None, start);
        let mut id = 0u16;
        let first = notify_all(&mut obs, "d", start, &mut id)[0].1;
        let second = notify_all(&mut obs, "d", start + Duration::from_secs(1), &mut id)[0].1;
        assert_eq!(obs.next_due(), Some(start + Duration::from_secs(2)));
        assert!(
            !obs.acknowledged(addr(1), first),
            "the replaced message is forgotten"
        );
        let (again, _) = obs.due(start + Duration::from_secs(2));
        assert_eq!(again.len(), 1, "one message in flight, not two");
        assert!(obs.acknowledged(addr(1), second));
        assert_eq!(obs.due(start + Duration::from_secs(60)).0.len(), 0);
    }
}
