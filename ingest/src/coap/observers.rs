//! Observers of `/devices/{device}/notifications` (RFC 7641).
//!
//! An observer is an endpoint and a token. It is removed when it deregisters (GET with
//! Observe = 1), when it answers a notification with RST, when it leaves too many confirmable
//! notifications unacknowledged, or when its registration is older than the lifetime without
//! being renewed (a client re-registers with a new GET). coap-lite's `Subject` keeps neither
//! the registration time nor a way to remove an observer by the message it rejected, so this
//! registry is ours.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Observer {
    pub(super) endpoint: SocketAddr,
    pub(super) token: Vec<u8>,
    /// The `?token=` it registered with, checked again before each notification: a revoked
    /// credential (a rotated device token, an expired user token) observes no more.
    pub(super) credential: Option<String>,
    registered: Instant,
    /// Confirmable notifications sent and not acknowledged.
    unacked: u8,
    /// Message id of the last notification sent.
    last_message: Option<u16>,
}

#[derive(Debug)]
pub(super) struct Observers {
    by_device: HashMap<String, Vec<Observer>>,
    count: usize,
    lifetime: Duration,
    max: usize,
    unacked_limit: u8,
}

impl Observers {
    pub(super) fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            by_device: HashMap::new(),
            count: 0,
            lifetime,
            max,
            unacked_limit: 4,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Adds or renews (same endpoint and token); `false` when the registry is full.
    pub(super) fn register(
        &mut self,
        device: &str,
        endpoint: SocketAddr,
        token: &[u8],
        credential: Option<&str>,
        now: Instant,
    ) -> bool {
        let list = self.by_device.entry(device.to_owned()).or_default();
        if let Some(o) = list
            .iter_mut()
            .find(|o| o.endpoint == endpoint && o.token == token)
        {
            o.registered = now;
            o.unacked = 0;
            o.credential = credential.map(str::to_owned);
            return true;
        }
        if self.count >= self.max {
            return false;
        }
        list.push(Observer {
            endpoint,
            token: token.to_vec(),
            credential: credential.map(str::to_owned),
            registered: now,
            unacked: 0,
            last_message: None,
        });
        self.count += 1;
        true
    }

    pub(super) fn deregister(&mut self, device: &str, endpoint: SocketAddr, token: &[u8]) {
        self.remove_where(Some(device), |o| o.endpoint == endpoint && o.token == token);
    }

    /// An ACK for a notification: the observer is alive.
    pub(super) fn acknowledged(&mut self, endpoint: SocketAddr, message_id: u16) {
        for o in self.by_device.values_mut().flatten() {
            if o.endpoint == endpoint && o.last_message == Some(message_id) {
                o.unacked = 0;
            }
        }
    }

    /// An RST for a notification: the observer is gone.
    pub(super) fn reset(&mut self, endpoint: SocketAddr, message_id: u16) {
        self.remove_where(None, |o| {
            o.endpoint == endpoint && o.last_message == Some(message_id)
        });
    }

    /// The observers to notify of a device's change, each given the message id to use;
    /// expired and unresponsive observers, and those whose credential `allowed` no longer
    /// accepts, are dropped first.
    pub(super) fn notify(
        &mut self,
        device: &str,
        now: Instant,
        mut allowed: impl FnMut(&Observer) -> bool,
        mut next_message_id: impl FnMut() -> u16,
    ) -> Vec<(Observer, u16)> {
        let (lifetime, limit) = (self.lifetime, self.unacked_limit);
        self.remove_where(Some(device), |o| {
            now.duration_since(o.registered) > lifetime || o.unacked > limit || !allowed(o)
        });
        let Some(list) = self.by_device.get_mut(device) else {
            return Vec::new();
        };
        list.iter_mut()
            .map(|o| {
                let id = next_message_id();
                o.unacked = o.unacked.saturating_add(1);
                o.last_message = Some(id);
                (o.clone(), id)
            })
            .collect()
    }

    /// Drops every registration older than the lifetime.
    pub(super) fn expire(&mut self, now: Instant) {
        let lifetime = self.lifetime;
        self.remove_where(None, |o| now.duration_since(o.registered) > lifetime);
    }

    fn remove_where(&mut self, device: Option<&str>, mut gone: impl FnMut(&Observer) -> bool) {
        let mut removed = 0;
        let mut prune = |list: &mut Vec<Observer>| {
            let before = list.len();
            list.retain(|o| !gone(o));
            removed += before - list.len();
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
        self.count -= removed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn register_renew_deregister_reset_expire() {
        let start = Instant::now();
        let mut obs = Observers::new(Duration::from_secs(60), 3);
        assert!(obs.register("d", addr(1), b"t1", None, start));
        assert!(obs.register("d", addr(1), b"t1", None, start), "renewal");
        assert!(obs.register("d", addr(2), b"t2", None, start));
        assert!(obs.register("e", addr(3), b"t3", None, start));
        assert!(!obs.register("e", addr(4), b"t4", None, start), "full");
        assert_eq!(obs.len(), 3);

        let mut id = 0u16;
        let sent = obs.notify(
            "d",
            start,
            |_| true,
            || {
                id += 1;
                id
            },
        );
        assert_eq!(sent.len(), 2);
        obs.reset(addr(2), sent[1].1);
        assert_eq!(obs.len(), 2);
        obs.deregister("d", addr(1), b"t1");
        assert_eq!(obs.len(), 1);
        obs.expire(start + Duration::from_secs(61));
        assert_eq!(obs.len(), 0);
    }

    #[test]
    fn observers_whose_credential_is_refused_are_dropped() {
        let start = Instant::now();
        let mut obs = Observers::new(Duration::from_secs(60), 10);
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
    fn unacknowledged_observers_are_dropped() {
        let start = Instant::now();
        let mut obs = Observers::new(Duration::from_secs(60), 10);
        obs.register("d", addr(1), b"t", None, start);
        obs.register("d", addr(2), b"u", None, start);
        let mut id = 0u16;
        for _ in 0..10 {
            let sent = obs.notify(
                "d",
                start,
                |_| true,
                || {
                    id += 1;
                    id
                },
            );
            // Only the second observer acknowledges.
            for (o, mid) in sent {
                if o.endpoint == addr(2) {
                    obs.acknowledged(o.endpoint, mid);
                }
            }
        }
        assert_eq!(obs.len(), 1);
    }
}
