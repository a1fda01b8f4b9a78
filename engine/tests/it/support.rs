use aemos_engine::{
    ChainSpec, Clock, Engine, EngineArgs, Firing, FiringKind, ManualClock, Reading, Subject,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) const T0: i64 = 1_768_900_000_000; // 2026-01-20

/// An engine on a manual clock that records its firings.
pub(crate) struct Harness {
    pub(crate) engine: Engine,
    pub(crate) clock: Arc<ManualClock>,
    firings: Arc<Mutex<Vec<Firing>>>,
}

impl Harness {
    pub(crate) fn new(workers: usize) -> Self {
        let clock = Arc::new(ManualClock::new(T0));
        let firings = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&firings);
        let args = EngineArgs {
            workers,
            clock: Arc::clone(&clock) as _,
            command_capacity: 16,
            tick: Duration::from_secs(3600),
            ..EngineArgs::new(workers)
        };
        let engine = Engine::start(args, move |f| sink.lock().unwrap().push(f)).unwrap();
        Harness {
            engine,
            clock,
            firings,
        }
    }

    pub(crate) fn register(&self, chain: serde_json::Value) {
        self.engine.register(spec(chain)).unwrap();
        self.engine.sync().unwrap();
    }

    /// Feeds `(sensor, variable, value)` readings stamped with the clock, as one tick.
    pub(crate) fn feed(&self, readings: &[(&str, &str, f64)]) {
        let now = self.clock.now_ms();
        let batch = readings
            .iter()
            .map(|(s, v, x)| Reading::new(s, v, now, *x))
            .collect();
        self.engine.feed(batch).unwrap();
        self.engine.sync().unwrap();
    }

    /// Moves the clock and closes a tick there.
    pub(crate) fn advance(&self, ms: i64) {
        self.clock.advance(ms);
        self.engine.advance().unwrap();
        self.engine.sync().unwrap();
    }

    /// Firings since the last call, as `(chain, kind)`; a device's presence as
    /// `presence:{device}`.
    pub(crate) fn take(&self) -> Vec<(String, FiringKind)> {
        self.take_firings()
            .into_iter()
            .map(|f| {
                let id = match &f.subject {
                    Subject::Chain(chain) => chain.id().to_owned(),
                    Subject::Presence(p) => format!("presence:{}", p.device()),
                };
                (id, f.kind)
            })
            .collect()
    }

    pub(crate) fn take_firings(&self) -> Vec<Firing> {
        std::mem::take(&mut *self.firings.lock().unwrap())
    }
}

pub(crate) fn spec(chain: serde_json::Value) -> ChainSpec {
    serde_json::from_value(chain).unwrap()
}

/// A one-filter chain on `sensor`.
pub(crate) fn filter(id: &str, sensor: &str, condition: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "nodes": [{"type": "filter", "sensor": sensor, "condition": condition}]})
}
