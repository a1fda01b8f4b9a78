//! The timely workers. Worker 0 sequences: it alone takes commands, turns them into input
//! updates at its current tick, then closes the tick; the other workers only run their share
//! of the dataflow (their inputs are closed at once, so worker 0's inputs set the frontier).
//!
//! A tick is a millisecond of the engine's clock, and the feeds sent within one share it: a
//! feed's tick is the millisecond [`crate::Engine::feed`] was called in (its readings made
//! durable), not the one worker 0 takes it in, so neither many feeds a second nor a queue of
//! them moves the engine's time off the wall-clock time of its readings. A tick with readings
//! closes once a feed of a later millisecond comes or the channel is empty and the clock has
//! passed it (or [`COALESCE`] after its first feed, on a clock that stands still). A chain
//! command, an advance or a sync closes the open tick first, and the next tick is the clock's.
//!
//! Worker 0 keeps the latest value of every key, so that a reading becomes one retraction and
//! one insertion (upsert); a reading older than the latest one of its key is history and leaves
//! the rules alone. It also knows the longest window over each raw key, and gives each windowed
//! reading its retraction at `time + window` when it inserts it.
//!
//! It also keeps every key with the identity that owns it (see `keys`): a reading under a key
//! another identity owns goes nowhere, and a chain whose keys another identity owns is installed
//! without rows (quarantined) and says so in its status.

use crate::collector::{Collector, Meta};
use crate::dataflow::{self, ChainNo, Inputs, OutBatch, Time, Val};
use crate::expr::Num;
use crate::history::Latest;
use crate::plan::CompiledChain;
use crate::presence::Presence;
use crate::runtime::{Clock, Command, Reading, Shared, Worker0Parts};
use rustc_hash::{FxHashMap, FxHashSet};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::worker::Worker;

/// Worker 0 builds firings for at most this long before it looks at chain commands again.
const COLLECTOR_SLICE: Duration = Duration::from_millis(2);
/// Ticks that may be open (issued but not complete) before worker 0 stops taking commands.
const MAX_IN_FLIGHT: usize = 3;
/// How long the tick of a first feed waits for more feeds when the clock has not moved past it.
const COALESCE: Duration = Duration::from_millis(1);

mod rows;
mod watches;

pub(crate) fn run(worker: &mut Worker, shared: &Arc<Shared>) {
    let probe = ProbeHandle::new();
    let Ok(out) = shared.outputs.lock().map(|tx| tx.clone()) else {
        return;
    };
    let wake_path = Rc::new(std::cell::RefCell::new(Vec::new()));
    let inputs = worker.dataflow_named::<Time, _, _>("rules", |scope| {
        let path = Rc::clone(&wake_path);
        timely::dataflow::operators::generic::source::<
            _,
            timely::container::CapacityContainerBuilder<Vec<()>>,
            _,
            _,
        >(scope, "Wake", move |capability, info| {
            *path.borrow_mut() = info.address.to_vec();
            drop(capability);
            |_output| {}
        });
        dataflow::build(
            scope,
            &probe,
            Arc::clone(&shared.plans),
            move |batch: OutBatch| {
                let _ = out.send(batch);
            },
        )
    });
    if worker.index() != 0 {
        drop(inputs);
        while worker.step_or_park(None) {}
        return;
    }
    let activator = worker.sync_activator_for(wake_path.borrow().clone());
    let Some(Worker0Parts {
        feeds,
        control,
        outputs,
        collector,
    }) = shared.take_worker0_parts()
    else {
        return;
    };
    // The first tick is read from the clock before the handle is released to callers.
    let mut seq = Sequencer::new(
        inputs,
        Arc::clone(&shared.clock),
        collector,
        Arc::clone(shared),
    );
    let _ = shared.activator.lock().map(|mut a| *a = Some(activator));
    shared.started.notify_all();
    loop {
        shared.beat();
        // Chain commands first, and again before each feed: one sent before a feed is applied
        // before it, and one sent later may overtake queued readings.
        let mut stop = seq.drain(&control);
        let mut drained = false;
        while !stop && seq.in_flight.len() < MAX_IN_FLIGHT {
            match feeds.try_recv() {
                Ok(command) => {
                    stop = seq.drain(&control);
                    seq.apply(command);
                }
                Err(TryRecvError::Empty) => {
                    drained = true;
                    break;
                }
                Err(TryRecvError::Disconnected) => stop = true,
            }
        }
        if stop {
            break;
        }
        if drained {
            seq.close_if_due();
        }
        worker.step_or_park(Some(seq.park_for(shared.tick)));
        // A chain command that arrived during the step goes in before the collector's work.
        if seq.drain(&control) {
            break;
        }
        while let Ok(batch) = outputs.try_recv() {
            seq.collector.receive(batch);
        }
        seq.observe(&probe);
        seq.tick_clock(shared.tick);
    }
    drop(seq);
    while worker.step_or_park(None) {}
}

/// The windows over a raw key: the check of the identity whose readings they take, and the
/// number of specs per window length, shortest first (a key has one or two lengths: a vector
/// of them is 16 bytes each where a `BTreeMap`'s first node took about 200).
struct Windows {
    check: u64,
    lengths: Vec<(i64, usize)>,
}

struct Sequencer {
    inputs: Inputs,
    epoch: Time,
    clock: Arc<dyn Clock>,
    latest: Latest,
    /// Per raw key, the windows over it.
    windows: HashMap<u64, Windows, foldhash::fast::RandomState>,
    installed: FxHashMap<ChainNo, Arc<CompiledChain>>,
    /// Watched devices (see `presence`).
    watching: FxHashMap<ChainNo, Arc<Presence>>,
    /// Their keys' latest readings and their devices' state.
    watches: watches::Watches,
    /// Installed chains left without rows: a key they read belongs to another identity.
    quarantined: FxHashSet<ChainNo>,
    in_flight: VecDeque<Time>,
    /// Whether complete ticks wait for the collector's next slice.
    collector_behind: bool,
    /// Removed chains and their removal ticks: their plans go once those are complete.
    retired: Vec<(Time, ChainNo)>,
    syncs: Vec<(Time, std::sync::mpsc::SyncSender<()>)>,
    /// When the open tick took its first feed (`None`: it has none).
    fed_since: Option<Instant>,
    /// When the open tick's earliest feed was sent (`Engine::feed`).
    fed_at: Option<Instant>,
    /// Closed ticks with readings, and when their earliest feed was sent: their latency is
    /// observed once the collector has applied them.
    fed_ticks: VecDeque<(Time, Instant)>,
    collector: Collector,
    shared: Arc<Shared>,
}

impl Drop for Sequencer {
    /// Worker 0 has ended (or unwinds a panic): feeds waiting for room would wait forever.
    fn drop(&mut self) {
        self.shared.feed_budget.close();
    }
}

impl Sequencer {
    fn new(
        mut inputs: Inputs,
        clock: Arc<dyn Clock>,
        collector: Collector,
        shared: Arc<Shared>,
    ) -> Self {
        let epoch = clock.now_ms().max(1) as Time;
        inputs.advance_to(epoch);
        inputs.flush();
        Sequencer {
            inputs,
            epoch,
            clock,
            latest: Latest::default(),
            windows: HashMap::default(),
            installed: FxHashMap::default(),
            watching: FxHashMap::default(),
            watches: watches::Watches::default(),
            quarantined: FxHashSet::default(),
            in_flight: VecDeque::new(),
            retired: Vec::new(),
            collector_behind: false,
            syncs: Vec::new(),
            fed_since: None,
            fed_at: None,
            fed_ticks: VecDeque::new(),
            collector,
            shared,
        }
    }

    /// Applies every queued chain command; `true` once the handle is gone.
    fn drain(&mut self, control: &Receiver<Command>) -> bool {
        loop {
            match control.try_recv() {
                Ok(command) => self.apply(command),
                Err(TryRecvError::Empty) => return false,
                Err(TryRecvError::Disconnected) => return true,
            }
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Feed(readings, sent, sent_ms) => {
                self.shared.feed_budget.give_back(readings.len());
                // The tick is the millisecond the feed was sent in, not the one it is taken
                // in: a queue of feeds (load) must not push their firings' times later.
                let now = sent_ms.max(0) as Time;
                if self.fed_since.is_some() {
                    // A feed sent in a later millisecond than the open tick's starts its own
                    // tick, at that millisecond.
                    if now > self.epoch {
                        self.close_tick_at(now);
                    }
                } else if now > self.epoch {
                    // The open tick has nothing yet: it takes the time of its first feed.
                    self.inputs.advance_to(now);
                    self.epoch = now;
                }
                self.feed(&readings);
                self.fed_since.get_or_insert_with(Instant::now);
                let at = self.fed_at.get_or_insert(sent);
                *at = (*at).min(sent);
                return;
            }
            Command::Swap {
                remove,
                install,
                done,
            } => {
                self.close_fed_tick();
                if let Some(no) = remove {
                    if let Some(chain) = self.installed.remove(&no) {
                        self.rows(no, &chain, -1);
                        self.collector.meta(self.epoch, Meta::Uninstall(no));
                    }
                }
                if let Some((no, chain)) = install {
                    self.rows(no, &chain, 1);
                    self.collector
                        .meta(self.epoch, Meta::Install(no, Arc::clone(&chain)));
                    self.installed.insert(no, chain);
                }
                self.close_tick();
                // In effect from here: every feed sequenced after this is judged by it.
                let _ = done.send(());
                return;
            }
            Command::Presence {
                remove,
                install,
                done,
            } => {
                self.close_fed_tick();
                // A replaced watch's state goes to the one replacing it.
                let replaced: FxHashSet<ChainNo> =
                    install.iter().filter_map(|(_, _, old)| *old).collect();
                let mut unwatched = Vec::new();
                for no in remove {
                    if let Some(presence) = self.watching.remove(&no) {
                        self.watch_rows(no, &presence, -1);
                        unwatched.push(presence.raw.key);
                        if !replaced.contains(&no) {
                            self.collector.meta(self.epoch, Meta::Unwatch(no));
                        }
                    }
                }
                for (no, presence, old) in install {
                    self.watch_rows(no, &presence, 1);
                    let meta = Meta::Watch(no, Arc::clone(&presence), old);
                    self.collector.meta(self.epoch, meta);
                    self.watching.insert(no, presence);
                }
                // After the installs: a replacing watch keeps its key's latest reading.
                self.watches.forget_unwatched(unwatched);
                self.close_tick();
                let _ = done.send(());
                return;
            }
            Command::Advance => {}
            Command::Sync(reply) => {
                self.close_fed_tick();
                // Complete once every earlier tick is.
                self.syncs.push((self.epoch, reply));
                return;
            }
        }
        self.close_tick();
    }

    fn clock_ms(&self) -> Time {
        self.clock.now_ms().max(0) as Time
    }

    /// Closes the open tick if it has readings.
    fn close_fed_tick(&mut self) {
        if self.fed_since.is_some() {
            self.close_tick();
        }
    }

    /// With no feed queued: closes the open tick if it has readings and the clock has passed
    /// it (no feed of its millisecond can come any more), or its first feed has waited
    /// [`COALESCE`]. (With feeds queued the tick stays open: the next feed of a later
    /// millisecond closes it.)
    fn close_if_due(&mut self) {
        if let Some(since) = self.fed_since {
            if self.clock_ms() > self.epoch || since.elapsed() >= COALESCE {
                self.close_tick();
            }
        }
    }

    /// Closes the open tick; the next one is at the clock's time.
    fn close_tick(&mut self) {
        self.close_tick_at(self.clock_ms());
    }

    /// Closes the open tick; the next one is at `at` (or the next millisecond, if `at` is not
    /// later).
    fn close_tick_at(&mut self, at: Time) {
        self.fed_since = None;
        if let Some(sent) = self.fed_at.take() {
            if self.shared.feed_latency.is_some() {
                self.fed_ticks.push_back((self.epoch, sent));
            }
        }
        let next = (self.epoch + 1).max(at);
        self.watches
            .expire_before(next, self.epoch, &mut self.inputs.offline);
        self.inputs.advance_to(next);
        self.inputs.flush();
        self.in_flight.push_back(self.epoch);
        self.epoch = next;
        self.shared.metrics.ticks.fetch_add(1, Ordering::Relaxed);
    }

    fn feed(&mut self, readings: &[Reading]) {
        let epoch = self.epoch as i64;
        let mut collisions = 0;
        for r in readings {
            let val = Val {
                v: Num(r.value),
                t: r.time_ms,
            };
            let upsert = self.latest.upsert(r.id(), val, self.epoch);
            if let Ok(Some(old)) = upsert {
                if let Some(old) = old {
                    self.inputs.latest.update((r.key, old), -1);
                }
                self.inputs.latest.update((r.key, val), 1);
            }
            let mut collided = upsert.is_err();
            for raw in [r.id(), r.sensor_id()] {
                let watched =
                    self.watches
                        .seen(raw, r.time_ms, self.epoch, &mut self.inputs.offline);
                collided |= watched == Some(false);
                let Some(windows) = self.windows.get(&raw.key) else {
                    continue;
                };
                // Windows over a key take the readings of the identity that owns it only.
                if windows.check != raw.check {
                    collided = true;
                    continue;
                }
                let Some((longest, _)) = windows.lengths.last() else {
                    continue;
                };
                let expiry = r.time_ms.saturating_add(*longest);
                if expiry > epoch {
                    self.inputs.window_readings.update((raw.key, val), 1);
                    self.inputs
                        .window_readings
                        .update_at((raw.key, val), expiry as Time, -1);
                }
            }
            collisions += u64::from(collided);
        }
        let metrics = &self.shared.metrics;
        metrics
            .readings
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        if collisions > 0 {
            metrics
                .key_collisions
                .fetch_add(collisions, Ordering::Relaxed);
        }
    }

    /// Processes what the probe shows complete.
    fn observe(&mut self, probe: &ProbeHandle<Time>) {
        let frontier = probe
            .with_frontier(|f| f.first().copied())
            .unwrap_or(Time::MAX);
        let latest = &self.latest;
        let applied = self.collector.complete(
            frontier,
            self.clock.now_ms(),
            &|key, tick| latest.at(key, tick),
            Instant::now() + COLLECTOR_SLICE,
        );
        self.collector_behind = applied < frontier;
        // What the collector has not applied yet still reads undo entries, counts as in
        // flight (so feeds wait for it: its backlog is bounded) and holds back syncs.
        self.latest.forget_before(applied);
        if self.retired.first().is_some_and(|(t, _)| *t < frontier) {
            // Removal ticks complete: no reduce evaluates those chains any more.
            let mut plans = self.shared.plans.write().unwrap_or_else(|e| e.into_inner());
            self.retired.retain(|(t, no)| {
                let done = *t < frontier;
                if done {
                    plans.remove(no);
                }
                !done
            });
        }
        while self.in_flight.front().is_some_and(|t| *t < applied) {
            self.in_flight.pop_front();
        }
        if let Some(latency) = &self.shared.feed_latency {
            while let Some((_, sent)) = self.fed_ticks.front().filter(|(t, _)| *t < applied) {
                latency.observe(sent.elapsed().as_secs_f64());
                self.fed_ticks.pop_front();
            }
        }
        self.syncs.retain(|(epoch, reply)| {
            if *epoch <= applied {
                let _ = reply.send(());
                false
            } else {
                true
            }
        });
        self.shared
            .metrics
            .frontier
            .store(frontier.min(i64::MAX as Time) as i64, Ordering::Relaxed);
    }

    /// Moves time forward when the clock has, if anything depends on time (windows, schedules).
    fn tick_clock(&mut self, tick: Duration) {
        let now = self.clock.now_ms().max(0) as Time;
        let due_schedule = self
            .collector
            .next_tick()
            .is_some_and(|t| t >= 0 && (t as Time) < now);
        let timed = !self.windows.is_empty() || self.watches.has_expiries() || due_schedule;
        if timed && now >= self.epoch + tick.as_millis() as Time && self.in_flight.is_empty() {
            self.close_tick();
        }
    }

    fn park_for(&self, tick: Duration) -> Duration {
        if self.collector_behind {
            return Duration::ZERO;
        }
        if let Some(since) = self.fed_since {
            // Until the open tick is due (a new feed wakes the worker sooner).
            return COALESCE.saturating_sub(since.elapsed());
        }
        if !self.in_flight.is_empty() {
            return tick;
        }
        match self.collector.next_tick() {
            Some(t) => {
                let wait = (t - self.clock.now_ms()).max(0) as u64;
                tick.min(Duration::from_millis(wait))
            }
            None => tick,
        }
    }
}
