//! Deduplication of confirmable requests (RFC 7252 §4.5): a retransmission within the
//! exchange lifetime gets the first answer again instead of being handled twice.
//!
//! A retransmission is the same message again, so an entry is keyed by endpoint and message
//! id and holds a fingerprint of the request's bytes: a request that reuses a message id with
//! other bytes (a client whose 16-bit ids came round within the 247 s lifetime, as a fast
//! sequential client's do after 65,536 requests) is a new request, handled, not answered from
//! the cache, which would acknowledge a reading that was never stored.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Key = (SocketAddr, u16);

pub(super) enum Seen {
    New,
    /// Still being handled: the client will retransmit again if needed.
    InProgress,
    Answered(Vec<u8>),
}

struct Entry {
    fingerprint: u64,
    since: Instant,
    answer: Option<Vec<u8>>,
}

pub(super) struct Dedup {
    answers: HashMap<Key, Entry>,
    order: VecDeque<(Instant, Key)>,
    lifetime: Duration,
    max: usize,
    hasher: foldhash::fast::RandomState,
}

impl Dedup {
    pub(super) fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            answers: HashMap::new(),
            order: VecDeque::new(),
            lifetime,
            max,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// The fingerprint of a request's bytes.
    pub(super) fn fingerprint(&self, request: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write(request);
        h.finish()
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) > self.lifetime || self.order.len() > self.max {
                self.order.pop_front();
                // A key taken over by a newer request keeps that request's entry.
                if self.answers.get(&key).is_some_and(|e| e.since == at) {
                    self.answers.remove(&key);
                }
            } else {
                break;
            }
        }
    }

    /// Marks the request as in progress if it is new.
    pub(super) fn seen(
        &mut self,
        from: SocketAddr,
        message_id: u16,
        fingerprint: u64,
        now: Instant,
    ) -> Seen {
        self.evict(now);
        let key = (from, message_id);
        match self.answers.get(&key) {
            Some(e) if e.fingerprint == fingerprint => match &e.answer {
                Some(bytes) => Seen::Answered(bytes.clone()),
                None => Seen::InProgress,
            },
            // New, or another request under a reused id.
            _ => {
                let entry = Entry {
                    fingerprint,
                    since: now,
                    answer: None,
                };
                self.answers.insert(key, entry);
                self.order.push_back((now, key));
                Seen::New
            }
        }
    }

    /// Keeps the answer to the request of `fingerprint` for its retransmissions.
    pub(super) fn answered(
        &mut self,
        from: SocketAddr,
        message_id: u16,
        fingerprint: u64,
        bytes: Vec<u8>,
        now: Instant,
    ) {
        if let Some(e) = self.answers.get_mut(&(from, message_id)) {
            if e.fingerprint == fingerprint {
                e.answer = Some(bytes);
            }
        }
        self.evict(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retransmission_is_answered_from_the_cache_and_a_reused_id_is_new() {
        let mut d = Dedup::new(Duration::from_secs(247), 1000);
        let from: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let now = Instant::now();
        let (a, b) = (d.fingerprint(b"first"), d.fingerprint(b"second"));
        assert!(matches!(d.seen(from, 7, a, now), Seen::New));
        assert!(matches!(d.seen(from, 7, a, now), Seen::InProgress));
        d.answered(from, 7, a, b"2.04".to_vec(), now);
        assert!(matches!(d.seen(from, 7, a, now), Seen::Answered(x) if x == b"2.04"));
        // The id came round with another request: handled, not answered from the cache.
        assert!(matches!(d.seen(from, 7, b, now), Seen::New));
        // The first request's late answer does not become the second's.
        d.answered(from, 7, a, b"old".to_vec(), now);
        assert!(matches!(d.seen(from, 7, b, now), Seen::InProgress));
        d.answered(from, 7, b, b"new".to_vec(), now);
        assert!(matches!(d.seen(from, 7, b, now), Seen::Answered(x) if x == b"new"));
        // The first entry's expiry leaves the second's alone.
        let later = now + Duration::from_secs(1);
        assert!(matches!(d.seen(from, 8, a, later), Seen::New));
        let expired = now + Duration::from_secs(248);
        assert!(matches!(d.seen(from, 9, a, expired), Seen::New));
        assert!(matches!(d.seen(from, 8, a, expired), Seen::InProgress));
    }
}
