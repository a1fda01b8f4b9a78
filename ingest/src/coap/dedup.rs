//! Deduplication of confirmable requests (RFC 7252 §4.5): a retransmission within the
//! exchange lifetime gets the first answer again instead of being handled twice.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

type Key = (SocketAddr, u16);

pub(super) enum Seen {
    New,
    /// Still being handled: the client will retransmit again if needed.
    InProgress,
    Answered(Vec<u8>),
}

pub(super) struct Dedup {
    answers: HashMap<Key, Option<Vec<u8>>>,
    order: VecDeque<(Instant, Key)>,
    lifetime: Duration,
    max: usize,
}

impl Dedup {
    pub(super) fn new(lifetime: Duration, max: usize) -> Self {
        Self {
            answers: HashMap::new(),
            order: VecDeque::new(),
            lifetime,
            max,
        }
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) > self.lifetime || self.order.len() > self.max {
                self.order.pop_front();
                self.answers.remove(&key);
            } else {
                break;
            }
        }
    }

    /// Marks the request as in progress if it is new.
    pub(super) fn seen(&mut self, from: SocketAddr, message_id: u16, now: Instant) -> Seen {
        self.evict(now);
        let key = (from, message_id);
        match self.answers.get(&key) {
            Some(Some(bytes)) => Seen::Answered(bytes.clone()),
            Some(None) => Seen::InProgress,
            None => {
                self.answers.insert(key, None);
                self.order.push_back((now, key));
                Seen::New
            }
        }
    }

    pub(super) fn answered(
        &mut self,
        from: SocketAddr,
        message_id: u16,
        bytes: Vec<u8>,
        now: Instant,
    ) {
        if let Some(slot) = self.answers.get_mut(&(from, message_id)) {
            *slot = Some(bytes);
        }
        self.evict(now);
    }
}
