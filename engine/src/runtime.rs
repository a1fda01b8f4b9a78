//! The handle the rest of aemos holds: chains are validated and compiled here, on the caller's
//! side, then sent as commands through one bounded channel to worker 0, which sequences them.
//! A full channel blocks the sender: that is the backpressure on ingestion.

use crate::collector::{ChainStatus, Collector, Firing, StatusMap};
use crate::dataflow::{ChainNo, OutBatch};
use crate::error::{Error, Result};
use crate::keys::{key_of, sensor_key};
use crate::model::ChainSpec;
use crate::plan::CompiledChain;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use timely::scheduling::SyncActivator;

/// The engine's notion of now, injected so tests control time.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// Wall-clock time.
#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that moves only when told to.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        ManualClock(AtomicI64::new(now_ms))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A reading as the engine sees it: keys instead of names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    pub key: u64,
    pub sensor: u64,
    pub time_ms: i64,
    pub value: f64,
}

impl Reading {
    pub fn new(sensor: &str, variable: &str, time_ms: i64, value: f64) -> Self {
        Reading {
            key: key_of(sensor, variable),
            sensor: sensor_key(sensor),
            time_ms,
            value,
        }
    }
}

pub(crate) enum Command {
    /// Readings made durable together: one tick.
    Feed(Vec<Reading>),
    /// Remove a chain, install one, or both in the same tick (a replacement).
    Swap {
        remove: Option<ChainNo>,
        install: Option<(ChainNo, Arc<CompiledChain>)>,
    },
    /// Close a tick at the clock's time (windows move, schedules come due).
    Advance,
    /// Answer once everything sent before is complete.
    Sync(SyncSender<()>),
}

/// Counters the API exports.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    pub readings: AtomicU64,
    pub ticks: AtomicU64,
    pub firings: AtomicU64,
    /// The dataflow's frontier: every tick before it is complete.
    pub frontier: AtomicI64,
}

pub struct EngineArgs {
    /// Timely worker threads.
    pub workers: usize,
    pub clock: Arc<dyn Clock>,
    /// Commands (a feed is one command) queued before senders block.
    pub command_capacity: usize,
    /// How often time moves forward without readings, when windows or schedules need it.
    pub tick: Duration,
}

impl EngineArgs {
    pub fn new(workers: usize) -> Self {
        EngineArgs {
            workers,
            clock: Arc::new(SystemClock),
            command_capacity: 64,
            tick: Duration::from_millis(100),
        }
    }
}

type Worker0Parts = (Receiver<Command>, Receiver<OutBatch>, Collector);

/// What the workers share with the handle.
pub(crate) struct Shared {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tick: Duration,
    pub(crate) outputs: Mutex<Sender<OutBatch>>,
    pub(crate) activator: Mutex<Option<SyncActivator>>,
    pub(crate) started: Condvar,
    pub(crate) metrics: Arc<EngineMetrics>,
    worker0: Mutex<Option<Worker0Parts>>,
}

impl Shared {
    pub(crate) fn take_worker0_parts(&self) -> Option<Worker0Parts> {
        self.worker0.lock().ok()?.take()
    }
}

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, (ChainNo, Arc<CompiledChain>)>,
    next: ChainNo,
}

/// The rule engine: timely workers in their own threads, and the handle to command them.
pub struct Engine {
    commands: Mutex<Option<SyncSender<Command>>>,
    shared: Arc<Shared>,
    registry: Mutex<Registry>,
    status: StatusMap,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
}

impl Engine {
    /// Starts the workers. Every firing is handed to `sink`, on worker 0, in tick order; a
    /// sink that blocks holds the engine back (and through it, ingestion).
    pub fn start(args: EngineArgs, sink: impl FnMut(Firing) + Send + 'static) -> Result<Engine> {
        let (command_tx, command_rx) = mpsc::sync_channel(args.command_capacity.max(1));
        let (out_tx, out_rx) = mpsc::channel();
        let status: StatusMap = Arc::default();
        let metrics = Arc::new(EngineMetrics::default());
        let counting_sink = {
            let metrics = Arc::clone(&metrics);
            let mut sink = sink;
            move |f: Firing| {
                metrics.firings.fetch_add(1, Ordering::Relaxed);
                sink(f)
            }
        };
        let collector = Collector::new(Box::new(counting_sink), Arc::clone(&status));
        let shared = Arc::new(Shared {
            clock: args.clock,
            tick: args.tick,
            outputs: Mutex::new(out_tx),
            activator: Mutex::new(None),
            started: Condvar::new(),
            metrics,
            worker0: Mutex::new(Some((command_rx, out_rx, collector))),
        });
        let config = timely::Config::process(args.workers.max(1));
        let worker_shared = Arc::clone(&shared);
        let guards = timely::execute(config, move |worker| {
            crate::worker::run(worker, &worker_shared)
        })
        .map_err(Error::Start)?;
        // Wait for worker 0 to hand out its activator.
        let mut activator = shared.activator.lock().map_err(|_| Error::Stopped)?;
        while activator.is_none() {
            activator = shared.started.wait(activator).map_err(|_| Error::Stopped)?;
        }
        drop(activator);
        Ok(Engine {
            commands: Mutex::new(Some(command_tx)),
            shared,
            registry: Mutex::default(),
            status,
            guards: Mutex::new(Some(guards)),
        })
    }

    fn send(&self, command: Command) -> Result<()> {
        let sender = self
            .commands
            .lock()
            .map_err(|_| Error::Stopped)?
            .clone()
            .ok_or(Error::Stopped)?;
        sender.send(command).map_err(|_| Error::Stopped)?;
        if let Some(a) = self
            .shared
            .activator
            .lock()
            .map_err(|_| Error::Stopped)?
            .as_ref()
        {
            a.activate().map_err(|_| Error::Stopped)?;
        }
        Ok(())
    }

    /// Feeds readings made durable together; they form one tick. Blocks while the command
    /// channel is full.
    pub fn feed(&self, readings: Vec<Reading>) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        self.send(Command::Feed(readings))
    }

    /// Closes a tick at the clock's time, so windows and schedules see it.
    pub fn advance(&self) -> Result<()> {
        self.send(Command::Advance)
    }

    /// Blocks until everything sent before is processed and its firings handed to the sink.
    pub fn sync(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Sync(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// Registers a new chain; it takes effect at the next tick.
    pub fn register(&self, spec: ChainSpec) -> Result<Arc<CompiledChain>> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        if registry.by_id.contains_key(chain.id()) {
            return Err(Error::ChainExists(chain.id().to_owned()));
        }
        self.install(&mut registry, None, chain)
    }

    /// Replaces an existing chain in one tick.
    pub fn replace(&self, spec: ChainSpec) -> Result<Arc<CompiledChain>> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        let Some((old, _)) = registry.by_id.get(chain.id()) else {
            return Err(Error::UnknownChain(chain.id().to_owned()));
        };
        let old = *old;
        self.install(&mut registry, Some(old), chain)
    }

    /// Registers or replaces; `true` when the chain is new.
    pub fn upsert(&self, spec: ChainSpec) -> Result<(Arc<CompiledChain>, bool)> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        let old = registry.by_id.get(chain.id()).map(|(no, _)| *no);
        Ok((self.install(&mut registry, old, chain)?, old.is_none()))
    }

    fn install(
        &self,
        registry: &mut Registry,
        old: Option<ChainNo>,
        chain: Arc<CompiledChain>,
    ) -> Result<Arc<CompiledChain>> {
        let no = registry.next;
        self.send(Command::Swap {
            remove: old,
            install: Some((no, Arc::clone(&chain))),
        })?;
        registry.next += 1;
        registry
            .by_id
            .insert(chain.id().to_owned(), (no, Arc::clone(&chain)));
        Ok(chain)
    }

    /// Removes a chain; its state goes without a clear.
    pub fn remove(&self, id: &str) -> Result<()> {
        let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        let Some((no, _)) = registry.by_id.get(id) else {
            return Err(Error::UnknownChain(id.to_owned()));
        };
        self.send(Command::Swap {
            remove: Some(*no),
            install: None,
        })?;
        registry.by_id.remove(id);
        Ok(())
    }

    pub fn chain(&self, id: &str) -> Option<Arc<CompiledChain>> {
        self.registry
            .lock()
            .ok()?
            .by_id
            .get(id)
            .map(|(_, c)| Arc::clone(c))
    }

    /// Every registered chain, by id.
    pub fn chains(&self) -> Vec<Arc<CompiledChain>> {
        let Ok(registry) = self.registry.lock() else {
            return Vec::new();
        };
        let mut chains: Vec<_> = registry
            .by_id
            .values()
            .map(|(_, c)| Arc::clone(c))
            .collect();
        chains.sort_by(|a, b| a.id().cmp(b.id()));
        chains
    }

    /// The chain's state as of the last completed tick.
    pub fn status(&self, id: &str) -> Option<ChainStatus> {
        self.status.lock().ok()?.get(id).cloned()
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        if let Ok(mut c) = self.commands.lock() {
            c.take();
        }
        if let Ok(activator) = self.shared.activator.lock() {
            if let Some(a) = activator.as_ref() {
                let _ = a.activate();
            }
        }
        if let Some(guards) = self.guards.lock().ok().and_then(|mut g| g.take()) {
            let _ = guards.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
