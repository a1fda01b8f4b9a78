//! A bounded queue that never blocks its producer: when full, the oldest item is dropped and
//! counted. Used between a fan-out and each slow consumer (a protocol's sender), so a stalled
//! consumer costs memory up to its bound and nothing else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

#[derive(Debug)]
struct Inner<T> {
    items: VecDeque<T>,
    closed: bool,
}

/// Shared by producers and one consumer; clone the `Arc`.
#[derive(Debug)]
pub struct DropOldest<T> {
    inner: Mutex<Inner<T>>,
    ready: Condvar,
    wake: tokio::sync::Notify,
    capacity: usize,
    dropped: AtomicU64,
}

impl<T> DropOldest<T> {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner {
                items: VecDeque::with_capacity(capacity.min(1024)),
                closed: false,
            }),
            ready: Condvar::new(),
            wake: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues; returns false when an older item had to be dropped to make room.
    pub fn push(&self, item: T) -> bool {
        let mut inner = self.lock();
        let mut kept = true;
        if inner.items.len() >= self.capacity {
            inner.items.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            kept = false;
        }
        inner.items.push_back(item);
        drop(inner);
        self.ready.notify_one();
        self.wake.notify_one();
        kept
    }

    /// Takes everything queued into `out`; `false` once closed and drained.
    fn take_into(&self, inner: &mut Inner<T>, out: &mut Vec<T>) -> bool {
        out.extend(inner.items.drain(..));
        !(out.is_empty() && inner.closed)
    }

    /// Blocks until items are queued (for a consumer thread); `false` once closed and empty.
    pub fn wait_all(&self, out: &mut Vec<T>) -> bool {
        let mut inner = self.lock();
        while inner.items.is_empty() && !inner.closed {
            inner = self.ready.wait(inner).unwrap_or_else(|e| e.into_inner());
        }
        self.take_into(&mut inner, out)
    }

    /// Waits until items are queued (for a consumer task); `false` once closed and empty.
    pub async fn next_all(&self, out: &mut Vec<T>) -> bool {
        loop {
            let notified = self.wake.notified();
            {
                let mut inner = self.lock();
                if !inner.items.is_empty() || inner.closed {
                    return self.take_into(&mut inner, out);
                }
            }
            notified.await;
        }
    }

    /// Wakes the consumer for the last time.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.wake.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Items dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// What waits, the bound, what was dropped: for health.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            queued: self.len(),
            capacity: self.capacity,
            dropped: self.dropped(),
        }
    }
}

/// A queue's state for health: full means its consumer is not keeping up (and the oldest
/// items are being dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    pub queued: usize,
    pub capacity: usize,
    pub dropped: u64,
}

impl Backlog {
    pub fn full(&self) -> bool {
        self.queued >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_queue_drops_the_oldest_and_counts() {
        let q = DropOldest::new(2);
        assert!(q.push(1));
        assert!(q.push(2));
        assert!(!q.push(3));
        let mut out = Vec::new();
        assert!(q.wait_all(&mut out));
        assert_eq!(out, vec![2, 3]);
        assert_eq!(q.dropped(), 1);
        q.close();
        out.clear();
        assert!(!q.wait_all(&mut out));
    }
}
