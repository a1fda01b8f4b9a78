//! Admission of writes: priorities and a circuit breaker in front of the WAL (seed 004's
//! backpressure, on aemos's own queues).
//!
//! The load is the fuller of the two queues a write joins: writes waiting for the WAL's group
//! commit (of `--wal-queue`) and readings made durable but waiting for persistence (of
//! `--max-buffered-rows`), as a fraction. The breaker follows it:
//!
//! ```text
//! CLOSED ── load ≥ open_at ──> OPEN ── load ≤ recover_at ──> HALF_OPEN ── load ≤ recover_at
//!   ^                           ^                                 │         for `stable` ──> CLOSED
//!   └─────── reset (admin) ─────┴──────── load ≥ open_at ─────────┘
//! ```
//!
//! Critical writes (commands and acks of the command path, events aemos makes itself) are
//! always admitted; normal ones (telemetry) are shed while OPEN; low ones (`?priority=low`,
//! backfill) are shed unless CLOSED and the load is below `low_until`. Beyond the queues' hard
//! bounds every write is refused, whatever its priority, so memory stays bounded. A shed write
//! is refused before it is decoded or logged: nothing refused is acknowledged, and nothing
//! acknowledged is dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How much a write matters when the server must shed load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    Critical,
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Critical, Priority::Normal, Priority::Low];

    /// A client's `?priority=`: `normal` or `low` (critical is for aemos's own events).
    pub fn from_client(text: &str) -> Result<Self, String> {
        match text {
            "normal" => Ok(Self::Normal),
            "low" => Ok(Self::Low),
            other => Err(format!(
                "priority: {other:?} is not one of \"normal\", \"low\" (critical is reserved for commands and the server's own events)"
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Normal => "normal",
            Self::Low => "low",
        }
    }
}

/// The breaker's state, named as seed 004 names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Closed => "CLOSED",
            Self::Open => "OPEN",
            Self::HalfOpen => "HALF_OPEN",
        }
    }

    /// As a number for Prometheus (seed 004's `circuit_state`): 0 closed, 1 half-open, 2 open.
    pub fn code(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }
}

/// The breaker's thresholds, as fractions of the queues' bounds (`--breaker-*` flags).
#[derive(Debug, Clone, Copy)]
pub struct BreakerArgs {
    /// The breaker opens at this load.
    pub open_at: f64,
    /// An open breaker half-opens at this load, and a half-open one closes once the load has
    /// stayed at most this for `stable`.
    pub recover_at: f64,
    /// Low-priority writes are admitted only below this load (and only while closed).
    pub low_until: f64,
    pub stable: Duration,
}

impl Default for BreakerArgs {
    fn default() -> Self {
        Self {
            open_at: 0.9,
            recover_at: 0.5,
            low_until: 0.7,
            stable: Duration::from_secs(5),
        }
    }
}

/// Why a write was refused at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Shed by priority (the breaker's state or the load).
    Shed,
    /// A queue is at its hard bound.
    Full,
}

#[derive(Debug)]
struct Breaker {
    state: CircuitState,
    /// When the breaker entered its state, or (half-open) when the load last rose above
    /// `recover_at`.
    since_ms: i64,
}

/// Counts of refusals, since start (for Prometheus) and since the last reset (the summary).
#[derive(Debug, Default)]
struct Counts {
    total: [[AtomicU64; 2]; 3],
    since_reset: AtomicU64,
    transitions: AtomicU64,
}

/// The breaker and its counters.
#[derive(Debug)]
pub(crate) struct Admission {
    args: BreakerArgs,
    breaker: Mutex<Breaker>,
    counts: Counts,
}

/// What the operations endpoints show.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionStatus {
    pub circuit_state: CircuitState,
    /// Milliseconds since the breaker entered its state.
    pub in_state_ms: i64,
    pub load: f64,
    pub open_at: f64,
    pub recover_at: f64,
    pub low_until: f64,
    pub stable_ms: u64,
    /// Writes refused since the last reset.
    pub rejected_since_reset: u64,
    pub transitions: u64,
}

impl Admission {
    pub(crate) fn new(args: BreakerArgs, now_ms: i64) -> Self {
        Self {
            args,
            breaker: Mutex::new(Breaker {
                state: CircuitState::Closed,
                since_ms: now_ms,
            }),
            counts: Counts::default(),
        }
    }

    /// Moves the breaker for `load` at `now_ms`; returns its state.
    pub(crate) fn observe(&self, load: f64, now_ms: i64) -> CircuitState {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        let a = &self.args;
        let next = match b.state {
            CircuitState::Closed if load >= a.open_at => Some(CircuitState::Open),
            CircuitState::Open if load <= a.recover_at => Some(CircuitState::HalfOpen),
            CircuitState::HalfOpen if load >= a.open_at => Some(CircuitState::Open),
            CircuitState::HalfOpen if load > a.recover_at => {
                b.since_ms = now_ms; // not stable: the wait starts again
                None
            }
            CircuitState::HalfOpen if now_ms - b.since_ms >= a.stable.as_millis() as i64 => {
                Some(CircuitState::Closed)
            }
            _ => None,
        };
        if let Some(state) = next {
            tracing::warn!(
                from = b.state.name(),
                to = state.name(),
                load,
                "circuit breaker"
            );
            b.state = state;
            b.since_ms = now_ms;
            self.counts.transitions.fetch_add(1, Ordering::Relaxed);
        }
        b.state
    }

    /// Whether a write of `priority` is admitted at `load` (after [`Self::observe`]).
    pub(crate) fn decide(
        &self,
        priority: Priority,
        state: CircuitState,
        load: f64,
    ) -> Result<(), Refusal> {
        let admitted = match priority {
            Priority::Critical => true,
            Priority::Normal => state != CircuitState::Open,
            Priority::Low => state == CircuitState::Closed && load < self.args.low_until,
        };
        if admitted {
            Ok(())
        } else {
            self.count(priority, Refusal::Shed);
            Err(Refusal::Shed)
        }
    }

    /// Counts a refusal (the caller's, for the hard bounds).
    pub(crate) fn count(&self, priority: Priority, refusal: Refusal) {
        let p = Priority::ALL
            .iter()
            .position(|x| *x == priority)
            .unwrap_or(1);
        let r = usize::from(refusal == Refusal::Full);
        self.counts.total[p][r].fetch_add(1, Ordering::Relaxed);
        self.counts.since_reset.fetch_add(1, Ordering::Relaxed);
    }

    /// Refusals since start of `priority` for `refusal`.
    pub(crate) fn refused(&self, priority: Priority, refusal: Refusal) -> u64 {
        let p = Priority::ALL
            .iter()
            .position(|x| *x == priority)
            .unwrap_or(1);
        self.counts.total[p][usize::from(refusal == Refusal::Full)].load(Ordering::Relaxed)
    }

    /// Closes the breaker and zeroes the refusals since the last reset (an operator's
    /// `POST /api/v1/metrics/backpressure/reset`); the load opens it again if it is still high.
    pub(crate) fn reset(&self, now_ms: i64) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if b.state != CircuitState::Closed {
            tracing::warn!(
                from = b.state.name(),
                "circuit breaker reset by an operator"
            );
            self.counts.transitions.fetch_add(1, Ordering::Relaxed);
        }
        b.state = CircuitState::Closed;
        b.since_ms = now_ms;
        self.counts.since_reset.store(0, Ordering::Relaxed);
    }

    pub(crate) fn status(&self, load: f64, now_ms: i64) -> AdmissionStatus {
        let state = self.observe(load, now_ms);
        let since = self
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .since_ms;
        AdmissionStatus {
            circuit_state: state,
            in_state_ms: now_ms - since,
            load,
            open_at: self.args.open_at,
            recover_at: self.args.recover_at,
            low_until: self.args.low_until,
            stable_ms: self.args.stable.as_millis() as u64,
            rejected_since_reset: self.counts.since_reset.load(Ordering::Relaxed),
            transitions: self.counts.transitions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CircuitState::*;

    #[test]
    fn closed_open_half_open_closed_and_back_open_on_a_spike() {
        let a = Admission::new(BreakerArgs::default(), 0);
        assert_eq!(a.observe(0.3, 1), Closed);
        assert_eq!(a.observe(0.89, 2), Closed);
        assert_eq!(a.observe(0.9, 3), Open);
        assert_eq!(a.observe(0.6, 4), Open, "not yet down to recover_at");
        assert_eq!(a.observe(0.5, 5), HalfOpen);
        assert_eq!(a.observe(0.4, 4_000), HalfOpen, "not stable for 5 s yet");
        assert_eq!(
            a.observe(0.6, 4_500),
            HalfOpen,
            "above recover_at: the wait restarts"
        );
        assert_eq!(a.observe(0.4, 9_000), HalfOpen);
        assert_eq!(a.observe(0.4, 9_500), Closed);
        assert_eq!(a.observe(0.95, 9_600), Open);
        assert_eq!(a.observe(0.1, 9_700), HalfOpen);
        assert_eq!(a.observe(0.92, 9_800), Open, "a spike while half-open");
        assert_eq!(a.status(0.92, 9_900).transitions, 6);
    }

    #[test]
    fn priorities_shed_in_order_and_reset_closes() {
        let a = Admission::new(BreakerArgs::default(), 0);
        let admit = |p, load, now| {
            let state = a.observe(load, now);
            a.decide(p, state, load)
        };
        assert_eq!(admit(Priority::Low, 0.69, 1), Ok(()));
        assert_eq!(
            admit(Priority::Low, 0.7, 2),
            Err(Refusal::Shed),
            "low goes first"
        );
        assert_eq!(admit(Priority::Normal, 0.7, 3), Ok(()));
        assert_eq!(admit(Priority::Normal, 0.95, 4), Err(Refusal::Shed), "open");
        assert_eq!(
            admit(Priority::Critical, 0.95, 5),
            Ok(()),
            "critical always"
        );
        assert_eq!(
            admit(Priority::Normal, 0.2, 6),
            Ok(()),
            "half-open admits normal"
        );
        assert_eq!(
            admit(Priority::Low, 0.2, 7),
            Err(Refusal::Shed),
            "but not low"
        );
        assert_eq!(a.refused(Priority::Low, Refusal::Shed), 2);
        assert_eq!(a.refused(Priority::Normal, Refusal::Shed), 1);
        assert_eq!(a.status(0.2, 8).rejected_since_reset, 3);
        a.reset(9);
        let s = a.status(0.2, 10);
        assert_eq!((s.circuit_state, s.rejected_since_reset), (Closed, 0));
        assert_eq!(
            a.refused(Priority::Low, Refusal::Shed),
            2,
            "totals stay monotonic"
        );
        assert_eq!(admit(Priority::Low, 0.2, 11), Ok(()));
    }

    #[test]
    fn a_client_may_ask_for_normal_or_low_only() {
        assert_eq!(Priority::from_client("low"), Ok(Priority::Low));
        assert_eq!(Priority::from_client("normal"), Ok(Priority::Normal));
        let e = Priority::from_client("critical").unwrap_err();
        assert!(e.starts_with("priority:") && e.contains("reserved"), "{e}");
        assert!(Priority::from_client("high").is_err());
    }
}
