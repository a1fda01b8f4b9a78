//! The handle the rest of aemos holds: chains are validated and compiled here, on the caller's
//! side, then sent as commands to worker 0, which sequences them: readings through one bounded
//! channel, chain changes through another that worker 0 drains first.
//! A full channel blocks the sender: that is the backpressure on ingestion.

use crate::collector::{ChainStatus, Collector, Firing, StatusMap};
use crate::dataflow::{ChainNo, OutBatch};
use crate::error::{Error, Result};
use crate::keys::{reading_ids, Id};
use crate::model::ChainSpec;
use crate::plan::CompiledChain;
use crate::presence::{Presence, Watch};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use timely::scheduling::SyncActivator;

pub use aemos_clock::{Clock, ManualClock, SystemClock};

/// A reading as the engine sees it: keys instead of names (see `keys`), made by
/// [`Reading::new`] only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reading {
    /// `key_of(sensor, variable)`.
    pub key: u64,
    /// `sensor_key(sensor)`.
    pub sensor: u64,
    pub time_ms: i64,
    pub value: f64,
    /// The other halves of the two identities, which tell apart names whose keys collide.
    pub(crate) check: u64,
    pub(crate) sensor_check: u64,
}

impl Reading {
    pub fn new(sensor: &str, variable: &str, time_ms: i64, value: f64) -> Self {
        let (sensor, pair) = reading_ids(sensor, variable);
        Reading {
            key: pair.key,
            sensor: sensor.key,
            time_ms,
            value,
            check: pair.check,
            sensor_check: sensor.check,
        }
    }

    /// The identity of the reading's `(sensor, variable)`.
    pub(crate) fn id(&self) -> Id {
        Id {
            key: self.key,
            check: self.check,
        }
    }

    /// The identity of the reading's sensor.
    pub(crate) fn sensor_id(&self) -> Id {
        Id {
            key: self.sensor,
            check: self.sensor_check,
        }
    }
}

pub(crate) enum Command {
    /// Readings made durable together, and when `feed` was called with them: on the monotonic
    /// clock (for the feed latency) and on the engine's clock, whose millisecond is the tick
    /// they join however long they wait in the channel.
    Feed(Vec<Reading>, Instant, i64),
    /// Remove a chain, install one, or both in the same tick (a replacement); `done` is
    /// answered once worker 0 has sequenced it: every feed after it is judged by the change. Sent on the control channel, which worker 0 drains
    /// first, so a registration does not wait behind queued readings.
    Swap {
        remove: Option<ChainNo>,
        install: Option<(ChainNo, Arc<CompiledChain>)>,
        done: SyncSender<()>,
    },
    /// Stop watching devices and watch others (each with the watch it replaces), in one tick,
    /// on the control channel like `Swap` (see `presence`).
    Presence {
        remove: Vec<ChainNo>,
        install: Vec<(ChainNo, Arc<Presence>, Option<ChainNo>)>,
        done: SyncSender<()>,
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
    /// Runtime evaluation errors (division by zero on a value, NaN), over all chains.
    pub eval_errors: AtomicU64,
    /// Readings left out and chains quarantined because another name holds their key (a
    /// chance collision of 64-bit keyed hashes, see `keys`).
    pub key_collisions: AtomicU64,
    /// The dataflow's frontier: every tick before it is complete.
    pub frontier: AtomicI64,
    /// When worker 0 last went round its loop (which it does at least once a `tick` unless
    /// something holds it: a blocked sink, a step that never ends), in ms since the start.
    pub heartbeat_ms: AtomicU64,
}

/// What health says about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineHealth {
    /// `ok`, `stalled` (worker 0 held for [`EngineArgs::stalled_after`]) or `failed` (a worker thread
    /// ended: a panic; the engine evaluates nothing until a restart).
    pub status: &'static str,
    pub workers: usize,
    pub workers_running: usize,
    /// Since worker 0 last went round its loop.
    pub since_heartbeat: Duration,
    /// Readings fed and not yet taken by worker 0 (of [`EngineArgs::max_queued_readings`]).
    pub queued_readings: usize,
}

pub struct EngineArgs {
    /// Timely worker threads.
    pub workers: usize,
    pub clock: Arc<dyn Clock>,
    /// Commands (a feed is one command) queued before senders block.
    pub command_capacity: usize,
    /// Readings fed and not yet taken by worker 0 before a feed blocks (a feed alone always
    /// goes in): bounds the queue's latency when feeds are large.
    pub max_queued_readings: usize,
    /// How often time moves forward without readings, when windows or schedules need it.
    pub tick: Duration,
    /// Health calls the engine stalled when worker 0 has not gone round its loop for this long.
    pub stalled_after: Duration,
    /// Observes, per tick with readings, the time from its first feed's [`Engine::feed`]
    /// call (waiting for room in the feed channel included) to its firings handed to the
    /// sink.
    pub feed_latency: Option<prometheus::Histogram>,
}

impl EngineArgs {
    pub fn new(workers: usize) -> Self {
        EngineArgs {
            workers,
            clock: Arc::new(SystemClock),
            command_capacity: 64,
            max_queued_readings: 65_536,
            tick: Duration::from_millis(100),
            stalled_after: Duration::from_secs(10),
            feed_latency: None,
        }
    }
}

pub(crate) struct Worker0Parts {
    pub(crate) feeds: Receiver<Command>,
    pub(crate) control: Receiver<Command>,
    pub(crate) outputs: Receiver<OutBatch>,
    pub(crate) collector: Collector,
}

/// Chain commands queued before registering blocks.
const CONTROL_CAPACITY: usize = 1024;

/// What the workers share with the handle.
pub(crate) struct Shared {
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tick: Duration,
    pub(crate) outputs: Mutex<Sender<OutBatch>>,
    pub(crate) activator: Mutex<Option<SyncActivator>>,
    pub(crate) started: Condvar,
    pub(crate) metrics: Arc<EngineMetrics>,
    pub(crate) feed_latency: Option<prometheus::Histogram>,
    pub(crate) feed_budget: crate::feed_budget::FeedBudget,
    /// Installed chains' plans, read by every worker's `Chains` reduce.
    pub(crate) plans: crate::dataflow::Plans,
    /// The origin of `metrics.heartbeat_ms`.
    pub(crate) born: Instant,
    worker0: Mutex<Option<Worker0Parts>>,
}

impl Shared {
    /// Worker 0 goes round its loop.
    pub(crate) fn beat(&self) {
        let now = self.born.elapsed().as_millis() as u64;
        self.metrics.heartbeat_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn take_worker0_parts(&self) -> Option<Worker0Parts> {
        self.worker0.lock().ok()?.take()
    }
}

#[derive(Default)]
pub(crate) struct Registry {
    by_id: HashMap<String, (ChainNo, Arc<CompiledChain>)>,
    /// Watched devices (see `presence`): their numbers come from `next` too, so a chain's and
    /// a watch's never meet in the dataflow's output.
    pub(crate) presence: HashSet<Watch>,
    pub(crate) next: ChainNo,
}

/// The rule engine: timely workers in their own threads, and the handle to command them.
pub struct Engine {
    feeds: Mutex<Option<SyncSender<Command>>>,
    control: Mutex<Option<SyncSender<Command>>>,
    shared: Arc<Shared>,
    /// Held across a chain change, from its lookup to its send to worker 0 (which may wait for
    /// room in the control channel), so chain commands reach the workers in the registry's
    /// order; `registry` itself is locked only to read or update it, so readers of the chains
    /// never wait on that send.
    pub(crate) changes: Mutex<()>,
    pub(crate) registry: Mutex<Registry>,
    status: StatusMap,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
    workers: usize,
    stalled_after: Duration,
}

impl Engine {
    /// Starts the workers. Every firing is handed to `sink`, on worker 0, in tick order; a
    /// sink that blocks holds the engine back (and through it, ingestion).
    pub fn start(args: EngineArgs, sink: impl FnMut(Firing) + Send + 'static) -> Result<Engine> {
        let (feed_tx, feed_rx) = mpsc::sync_channel(args.command_capacity.max(1));
        let (control_tx, control_rx) = mpsc::sync_channel(CONTROL_CAPACITY);
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
        let collector = Collector::new(
            Box::new(counting_sink),
            Arc::clone(&status),
            Arc::clone(&metrics),
        );
        let shared = Arc::new(Shared {
            clock: args.clock,
            tick: args.tick,
            outputs: Mutex::new(out_tx),
            activator: Mutex::new(None),
            started: Condvar::new(),
            metrics,
            feed_latency: args.feed_latency,
            feed_budget: crate::feed_budget::FeedBudget::new(args.max_queued_readings),
            plans: Default::default(),
            born: Instant::now(),
            worker0: Mutex::new(Some(Worker0Parts {
                feeds: feed_rx,
                control: control_rx,
                outputs: out_rx,
                collector,
            })),
        });
        let workers = args.workers.max(1);
        let config = timely::Config::process(workers);
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
            feeds: Mutex::new(Some(feed_tx)),
            control: Mutex::new(Some(control_tx)),
            shared,
            changes: Mutex::default(),
            registry: Mutex::default(),
            status,
            guards: Mutex::new(Some(guards)),
            workers,
            stalled_after: args.stalled_after,
        })
    }

    pub(crate) fn send(&self, command: Command) -> Result<()> {
        let channel = if matches!(command, Command::Swap { .. } | Command::Presence { .. }) {
            &self.control
        } else {
            &self.feeds
        };
        let sender = channel
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

    /// Feeds readings made durable together; they form one tick. Blocks while the feed
    /// channel is full, or the readings queued exceed [`EngineArgs::max_queued_readings`].
    pub fn feed(&self, readings: Vec<Reading>) -> Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let n = readings.len();
        self.shared.feed_budget.take(n)?;
        let sent_ms = self.shared.clock.now_ms();
        let sent = self.send(Command::Feed(readings, Instant::now(), sent_ms));
        if sent.is_err() {
            self.shared.feed_budget.give_back(n);
        }
        sent
    }

    /// Closes a tick at the clock's time, so windows and schedules see it.
    pub fn advance(&self) -> Result<()> {
        self.send(Command::Advance)
    }

    /// Blocks until everything sent before (readings and chains) is processed and its firings
    /// handed to the sink.
    pub fn sync(&self) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Command::Sync(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// Registers a new chain. Returns once it is in effect: worker 0 has sequenced it, so every
    /// reading fed from now on is judged by it (its state appears in `status` once its tick
    /// is complete). Chain commands overtake queued readings, so this does not wait behind
    /// ingestion.
    pub fn register(&self, spec: ChainSpec) -> Result<Arc<CompiledChain>> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        if self.numbered(chain.id())?.is_some() {
            return Err(Error::ChainExists(chain.id().to_owned()));
        }
        let done = self.install(None, Arc::clone(&chain))?;
        drop(order);
        done.recv().map_err(|_| Error::Stopped)?;
        Ok(chain)
    }

    /// Replaces an existing chain in one tick.
    pub fn replace(&self, spec: ChainSpec) -> Result<Arc<CompiledChain>> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        let Some(old) = self.numbered(chain.id())? else {
            return Err(Error::UnknownChain(chain.id().to_owned()));
        };
        let done = self.install(Some(old), Arc::clone(&chain))?;
        drop(order);
        done.recv().map_err(|_| Error::Stopped)?;
        Ok(chain)
    }

    /// Registers or replaces; `true` when the chain is new.
    pub fn upsert(&self, spec: ChainSpec) -> Result<(Arc<CompiledChain>, bool)> {
        let chain = Arc::new(CompiledChain::compile(spec)?);
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        let old = self.numbered(chain.id())?;
        let done = self.install(old, Arc::clone(&chain))?;
        drop(order);
        done.recv().map_err(|_| Error::Stopped)?;
        Ok((chain, old.is_none()))
    }

    /// The number of the registered chain of this id.
    fn numbered(&self, id: &str) -> Result<Option<ChainNo>> {
        let registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        Ok(registry.by_id.get(id).map(|(no, _)| *no))
    }

    /// Sends the swap (the caller holds `changes`, so chain commands keep the registry's
    /// order), then records the chain; returns what answers once worker 0 has sequenced it.
    fn install(&self, old: Option<ChainNo>, chain: Arc<CompiledChain>) -> Result<Receiver<()>> {
        // `next` only moves under `changes`, which the caller holds.
        let no = self.registry.lock().map_err(|_| Error::Stopped)?.next;
        let done = self.swap(old, Some((no, Arc::clone(&chain))))?;
        let mut registry = self.registry.lock().map_err(|_| Error::Stopped)?;
        registry.next += 1;
        registry.by_id.insert(chain.id().to_owned(), (no, chain));
        Ok(done)
    }

    fn swap(
        &self,
        remove: Option<ChainNo>,
        install: Option<(ChainNo, Arc<CompiledChain>)>,
    ) -> Result<Receiver<()>> {
        let (done, wait) = mpsc::sync_channel(1);
        self.send(Command::Swap {
            remove,
            install,
            done,
        })?;
        Ok(wait)
    }

    /// Removes a chain; its state goes without a clear. Returns once it is out of effect.
    pub fn remove(&self, id: &str) -> Result<()> {
        let order = self.changes.lock().map_err(|_| Error::Stopped)?;
        let Some(no) = self.numbered(id)? else {
            return Err(Error::UnknownChain(id.to_owned()));
        };
        let done = self.swap(Some(no), None)?;
        self.registry
            .lock()
            .map_err(|_| Error::Stopped)?
            .by_id
            .remove(id);
        drop(order);
        done.recv().map_err(|_| Error::Stopped)
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
        let (no, chain) = {
            let registry = self.registry.lock().ok()?;
            let (no, chain) = registry.by_id.get(id)?;
            (*no, Arc::clone(chain))
        };
        // No entry yet: the chain has not been active, fired or failed.
        let raw = self
            .status
            .lock()
            .ok()?
            .get(&no)
            .cloned()
            .unwrap_or_default();
        Some(raw.named(&chain))
    }

    pub fn metrics(&self) -> &EngineMetrics {
        &self.shared.metrics
    }

    /// Timely worker threads.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Whether the workers are running and worker 0 goes round its loop.
    pub fn health(&self) -> EngineHealth {
        let workers_running = self.guards.lock().map_or(0, |g| {
            g.as_ref().map_or(0, |g| {
                g.guards().iter().filter(|t| !t.is_finished()).count()
            })
        });
        let beat = self.shared.metrics.heartbeat_ms.load(Ordering::Relaxed);
        let since_heartbeat = self
            .shared
            .born
            .elapsed()
            .saturating_sub(Duration::from_millis(beat));
        let status = if workers_running < self.workers {
            "failed"
        } else if since_heartbeat >= self.stalled_after {
            "stalled"
        } else {
            "ok"
        };
        EngineHealth {
            status,
            workers: self.workers,
            workers_running,
            queued_readings: self.shared.feed_budget.queued(),
            since_heartbeat,
        }
    }

    /// Registered chains.
    pub fn chain_count(&self) -> usize {
        self.registry.lock().map_or(0, |r| r.by_id.len())
    }

    /// Stops the workers and waits for them.
    pub fn shutdown(&self) {
        for channel in [&self.feeds, &self.control] {
            if let Ok(mut c) = channel.lock() {
                c.take();
            }
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
