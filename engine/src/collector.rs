//! Turns the dataflow's output into firings, on worker 0.
//!
//! Output updates arrive from every worker, stamped with their tick. Once the probe shows a
//! tick complete, its updates are consolidated and applied in tick order: a chain whose
//! `Active` record appears became active, one whose record disappears cleared, one whose
//! record changed read new values while staying active (a firing only for `"on": "every"`).
//! Installs and removals are applied at their own tick, before that tick's updates, so a
//! removed chain's retraction is not mistaken for a clear.

use crate::dataflow::{ChainNo, Diff, Out, OutBatch, Time, Val};
use crate::expr::Slot;
use crate::plan::CompiledChain;
use crate::presence::Presence;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How a chain's state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FiringKind {
    /// The condition started to hold.
    Activated,
    /// The condition stopped holding.
    Cleared,
    /// `"on": "every"`: a value the chain read changed while it stays active.
    Repeated,
    /// A scheduled chain's tick found the condition holding.
    Scheduled,
}

impl FiringKind {
    /// Whether the chain is active after this firing.
    pub fn active(self) -> bool {
        !matches!(self, FiringKind::Cleared)
    }
}

/// What fired: a chain, or a watched device's presence (see `presence`).
#[derive(Clone, Debug)]
pub enum Subject {
    Chain(Arc<CompiledChain>),
    /// `Activated`: the device went offline; `Cleared`: it is back.
    Presence(Arc<Presence>),
}

/// One firing of a chain, for the notification layer and the `rule_firings` table.
#[derive(Clone, Debug)]
pub struct Firing {
    pub subject: Subject,
    pub kind: FiringKind,
    /// The engine tick (milliseconds since the epoch) at which the state changed.
    pub time_ms: i64,
    /// The values the chain read, by name (`temperature`, `sensor-b.humidity`).
    pub values: Vec<(String, f64)>,
    /// The transform fields computed from those values.
    pub fields: Vec<(String, f64)>,
}

impl Firing {
    /// The chain that fired, if a chain did.
    pub fn chain(&self) -> Option<&Arc<CompiledChain>> {
        match &self.subject {
            Subject::Chain(chain) => Some(chain),
            Subject::Presence(_) => None,
        }
    }
}

/// What the API shows of a chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChainStatus {
    pub active: bool,
    /// The values the chain read when last evaluated active, by name.
    pub values: Vec<(String, f64)>,
    pub firings: u64,
    /// Runtime evaluation errors (division by zero on a value, NaN), counted as they appear.
    pub errors: u64,
    pub last_error: Option<String>,
}

/// A chain's status as the collector keeps it: slots, not names (names are built on demand).
#[derive(Clone, Debug, Default)]
pub(crate) struct RawStatus {
    pub(crate) active: Option<Vec<(Slot, f64)>>,
    pub(crate) firings: u64,
    pub(crate) errors: u64,
    pub(crate) last_error: Option<String>,
}

impl RawStatus {
    pub(crate) fn named(&self, chain: &CompiledChain) -> ChainStatus {
        ChainStatus {
            active: self.active.is_some(),
            values: self
                .active
                .iter()
                .flatten()
                .map(|(s, v)| (chain.name(*s), *v))
                .collect(),
            firings: self.firings,
            errors: self.errors,
            last_error: self.last_error.clone(),
        }
    }
}

pub(crate) type StatusMap = Arc<Mutex<FxHashMap<ChainNo, RawStatus>>>;

type Updates = Vec<((ChainNo, Out), Diff)>;
/// A key's latest value as of a tick (worker 0's `history::Latest::at`).
pub(crate) type Lookup<'a> = &'a dyn Fn(u64, Time) -> Option<Val>;
/// A firing about to be emitted: what fired, how it changed, the values by slot.
type Pending = (Subject, FiringKind, Vec<(Slot, Val)>);

pub(crate) enum Meta {
    Install(ChainNo, Arc<CompiledChain>),
    Uninstall(ChainNo),
    /// A device watched, with the watch it replaces (whose state it takes on).
    Watch(ChainNo, Arc<Presence>, Option<ChainNo>),
    Unwatch(ChainNo),
}

/// A watched device as the collector keeps it.
struct Watched {
    presence: Arc<Presence>,
    /// Whether its row is in the dataflow's output.
    offline: bool,
    /// While its install tick is applied: the state it had before (that of the watch it
    /// replaces, else online), against which the tick's outcome fires.
    before: Option<bool>,
}

struct ChainState {
    chain: Arc<CompiledChain>,
    active: Option<Vec<(Slot, Val)>>,
}

/// A tick whose updates are being applied, in slices.
struct Applying {
    time: Time,
    /// Consolidated, sorted by chain.
    updates: Updates,
    next: usize,
}

pub(crate) struct Collector {
    pending: BTreeMap<Time, Updates>,
    applying: Option<Applying>,
    meta: BTreeMap<Time, Vec<Meta>>,
    chains: FxHashMap<ChainNo, ChainState>,
    watched: FxHashMap<ChainNo, Watched>,
    /// Watches installed at the tick being applied: they fire, if at all, once it is.
    fresh: Vec<ChainNo>,
    /// Next tick of each scheduled chain.
    ticks: BTreeSet<(i64, ChainNo)>,
    sink: Box<dyn FnMut(Firing) + Send>,
    status: StatusMap,
    metrics: Arc<crate::runtime::EngineMetrics>,
}

impl Collector {
    pub(crate) fn new(
        sink: Box<dyn FnMut(Firing) + Send>,
        status: StatusMap,
        metrics: Arc<crate::runtime::EngineMetrics>,
    ) -> Self {
        Collector {
            pending: BTreeMap::new(),
            applying: None,
            meta: BTreeMap::new(),
            chains: FxHashMap::default(),
            watched: FxHashMap::default(),
            fresh: Vec::new(),
            ticks: BTreeSet::new(),
            sink,
            status,
            metrics,
        }
    }

    /// Counts an error against a chain, with its message: one found at install (see `keys`).
    pub(crate) fn error(&self, no: ChainNo, message: String) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let s = status.entry(no).or_default();
        s.errors += 1;
        s.last_error = Some(message);
    }

    pub(crate) fn meta(&mut self, time: Time, meta: Meta) {
        self.meta.entry(time).or_default().push(meta);
    }

    pub(crate) fn receive(&mut self, batch: OutBatch) {
        for ((chain, out), time, diff) in batch {
            self.pending
                .entry(time)
                .or_default()
                .push(((chain, out), diff));
        }
    }

    /// The earliest scheduled tick, if any.
    pub(crate) fn next_tick(&self) -> Option<i64> {
        self.ticks.first().map(|(t, _)| *t)
    }

    /// Applies the ticks before `frontier`, and scheduled ticks up to `now_ms`, until
    /// `deadline`: returns the tick before which everything is applied (`frontier` when caught
    /// up). Worker 0 takes chain commands between slices, so a tick with many firings does not
    /// hold up a registration.
    pub(crate) fn complete(
        &mut self,
        frontier: Time,
        now_ms: i64,
        latest: Lookup<'_>,
        deadline: Instant,
    ) -> Time {
        loop {
            if let Some(applying) = self.applying.take() {
                let time = applying.time;
                if let Some(rest) = self.apply_slice(applying, latest, deadline) {
                    self.applying = Some(rest);
                    return time;
                }
                continue;
            }
            let next_meta = self.meta.first_key_value().map(|(t, _)| *t);
            let next_out = self.pending.first_key_value().map(|(t, _)| *t);
            let Some(time) = next_meta.into_iter().chain(next_out).min() else {
                break;
            };
            if time >= frontier {
                break;
            }
            // Due schedules before `time` fire first, even when the slice ends here: the caller
            // forgets what came before it.
            self.fire_schedules_before(time as i64, now_ms, latest);
            if Instant::now() >= deadline {
                return time;
            }
            for meta in self.meta.remove(&time).unwrap_or_default() {
                self.apply_meta(meta, time);
            }
            let updates = consolidate(self.pending.remove(&time).unwrap_or_default());
            self.applying = Some(Applying {
                time,
                updates,
                next: 0,
            });
        }
        self.fire_schedules_before(frontier.min(i64::MAX as Time) as i64, now_ms, latest);
        frontier
    }

    fn apply_meta(&mut self, meta: Meta, time: Time) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        match meta {
            Meta::Install(no, chain) => {
                if let Some((schedule, tz)) = chain.schedule.as_deref() {
                    if let Some(next) = next_tick(schedule, tz, time as i64) {
                        self.ticks.insert((next, no));
                    }
                }
                self.chains.insert(
                    no,
                    ChainState {
                        chain,
                        active: None,
                    },
                );
            }
            Meta::Uninstall(no) => {
                if self.chains.remove(&no).is_some() {
                    status.remove(&no);
                    self.ticks.retain(|(_, n)| *n != no);
                }
            }
            Meta::Watch(no, presence, replaced) => {
                // Its row is a new record: offline is whether it appears at this tick.
                let old = replaced.and_then(|old| self.watched.remove(&old));
                let before = old.is_some_and(|w| w.offline);
                if replaced.is_some() {
                    // Until the tick is applied, readers see the state it replaces (a new
                    // watch's device is offline, as never seen).
                    presence.set_offline(before);
                }
                self.fresh.push(no);
                let watched = Watched {
                    presence,
                    offline: false,
                    before: Some(before),
                };
                self.watched.insert(no, watched);
            }
            Meta::Unwatch(no) => {
                self.watched.remove(&no);
            }
        }
    }

    /// Applies a watched device's updates of a tick; returns the firing it makes, if any.
    fn apply_watched(
        &mut self,
        no: ChainNo,
        updates: &[((ChainNo, Out), Diff)],
    ) -> Option<Pending> {
        let watched = self.watched.get_mut(&no)?;
        let diff: Diff = updates
            .iter()
            .filter(|((_, out), _)| matches!(out, Out::Offline))
            .map(|(_, d)| *d)
            .sum();
        let offline = diff > 0;
        if diff == 0 || offline == watched.offline {
            return None;
        }
        watched.offline = offline;
        if watched.before.is_some() {
            return None; // installed at this tick: see `settle_fresh`
        }
        watched.presence.set_offline(offline);
        Some(presence_firing(&watched.presence, offline))
    }

    /// Once the tick that installed watches is applied: each fires if its state differs
    /// from the one it had before.
    fn settle_fresh(&mut self) -> Vec<Pending> {
        let mut firings = Vec::new();
        for no in self.fresh.drain(..) {
            let Some(w) = self.watched.get_mut(&no) else {
                continue;
            };
            w.presence.set_offline(w.offline);
            if w.before.take() != Some(w.offline) {
                firings.push(presence_firing(&w.presence, w.offline));
            }
        }
        firings
    }

    /// Applies a tick's updates chain by chain until `deadline`; returns the rest, if any.
    fn apply_slice(
        &mut self,
        mut applying: Applying,
        latest: Lookup<'_>,
        deadline: Instant,
    ) -> Option<Applying> {
        let time = applying.time;
        let mut firings = Vec::new();
        {
            let status = Arc::clone(&self.status);
            let mut status = status.lock().unwrap_or_else(|e| e.into_inner());
            let rest = &applying.updates[applying.next..];
            for (i, group) in rest.chunk_by(|a, b| a.0 .0 == b.0 .0).enumerate() {
                if i % 64 == 63 && Instant::now() >= deadline {
                    break;
                }
                applying.next += group.len();
                let no = group[0].0 .0;
                if let Some(firing) = self.apply_chain(no, group, &mut status, time, latest) {
                    status.entry(no).or_default().firings += 1;
                    firings.push(firing);
                } else if let Some(firing) = self.apply_watched(no, group) {
                    firings.push(firing);
                }
            }
        }
        for (subject, kind, values) in firings {
            self.emit(subject, kind, time as i64, &values);
        }
        if applying.next < applying.updates.len() {
            return Some(applying);
        }
        for (subject, kind, values) in self.settle_fresh() {
            self.emit(subject, kind, time as i64, &values);
        }
        None
    }

    /// Applies one chain's updates of a tick; returns the firing it makes, if any.
    fn apply_chain(
        &mut self,
        no: ChainNo,
        updates: &[((ChainNo, Out), Diff)],
        status: &mut FxHashMap<ChainNo, RawStatus>,
        time: Time,
        latest: Lookup<'_>,
    ) -> Option<Pending> {
        let state = self.chains.get_mut(&no)?;
        let mut added = None;
        let mut removed = None;
        let mut errors = Vec::new();
        for ((_, out), diff) in updates {
            match out {
                Out::Active(values) if *diff > 0 => added = Some(values.clone()),
                Out::Active(values) => removed = Some(values.clone()),
                Out::Failed { atom, err } if *diff > 0 => {
                    errors.push(format!("atom {atom}: {err}"))
                }
                Out::Failed { .. } | Out::Offline => {}
            }
        }
        let kind = match &added {
            Some(values) => match state.active.replace(values.clone()) {
                None => Some(FiringKind::Activated),
                Some(_) if state.chain.every() => Some(FiringKind::Repeated),
                Some(_) => None,
            },
            None if removed.is_some() => state.active.take().map(|_| FiringKind::Cleared),
            None => None,
        };
        // The values now active, read once for the status and for an activation's firing.
        let active = state
            .active
            .as_ref()
            .map(|carried| with_latest(&state.chain, carried, time, latest));
        // A chain's status entry appears with its first activation, firing or error: most
        // chains are inactive (at 10,000 chains: 2,033-2,114 bytes per chain with an entry
        // each, 1,935-1,967 without).
        let status = match status.get_mut(&no) {
            Some(s) => Some(s),
            None if active.is_some() || !errors.is_empty() => Some(status.entry(no).or_default()),
            None => None,
        };
        if let Some(s) = status {
            s.active = active
                .as_ref()
                .map(|all| all.iter().map(|(slot, val)| (*slot, val.v.0)).collect());
            s.errors += errors.len() as u64;
            self.metrics
                .eval_errors
                .fetch_add(errors.len() as u64, std::sync::atomic::Ordering::Relaxed);
            if let Some(e) = errors.pop() {
                s.last_error = Some(e);
            }
        }
        let kind = kind?;
        if state.chain.schedule.is_some() {
            return None; // scheduled chains fire on their ticks only
        }
        // The values as of this tick: for a clear, the ones that ended it (the removed row
        // carries those of its last activation: the latest values replace them).
        let values = match kind {
            FiringKind::Cleared => {
                let carried: Vec<_> = removed
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(slot, _)| !is_latest(&state.chain, *slot))
                    .collect();
                with_latest(&state.chain, &carried, time, latest)
            }
            _ => active.unwrap_or_default(),
        };
        Some((Subject::Chain(Arc::clone(&state.chain)), kind, values))
    }

    fn emit(&mut self, subject: Subject, kind: FiringKind, time_ms: i64, slots: &[(Slot, Val)]) {
        let chain = match subject {
            Subject::Chain(chain) => chain,
            presence @ Subject::Presence(_) => {
                return (self.sink)(Firing {
                    subject: presence,
                    kind,
                    time_ms,
                    values: Vec::new(),
                    fields: Vec::new(),
                })
            }
        };
        let lookup = |s: Slot| {
            slots
                .iter()
                .find(|(slot, _)| *slot == s)
                .map(|(_, v)| v.v.0)
        };
        let fields = chain
            .transforms
            .iter()
            .filter_map(|(name, e)| e.num(&lookup).ok().map(|v| (name.clone(), v)))
            .collect();
        let values = slots.iter().map(|(s, v)| (chain.name(*s), v.v.0)).collect();
        (self.sink)(Firing {
            subject: Subject::Chain(chain),
            kind,
            time_ms,
            values,
            fields,
        });
    }

    /// Fires scheduled chains whose tick is before `before` (and not in the future).
    fn fire_schedules_before(&mut self, before: i64, now_ms: i64, latest: Lookup<'_>) {
        while let Some(&(tick, no)) = self.ticks.first() {
            if tick >= before || tick > now_ms {
                break;
            }
            self.ticks.pop_first();
            let Some(state) = self.chains.get(&no) else {
                continue;
            };
            let chain = Arc::clone(&state.chain);
            let active = state.active.clone();
            if let Some((schedule, tz)) = chain.schedule.as_deref() {
                if let Some(next) = next_tick(schedule, tz, tick) {
                    self.ticks.insert((next, no));
                }
            }
            if let Some(carried) = active {
                let values = with_latest(&chain, &carried, tick.max(0) as Time, latest);
                self.status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(no)
                    .or_default()
                    .firings += 1;
                self.emit(Subject::Chain(chain), FiringKind::Scheduled, tick, &values);
            }
        }
    }
}

/// A watched device's change: offline is the `Activated` state.
fn presence_firing(presence: &Arc<Presence>, offline: bool) -> Pending {
    let kind = if offline {
        FiringKind::Activated
    } else {
        FiringKind::Cleared
    };
    (Subject::Presence(Arc::clone(presence)), kind, Vec::new())
}

/// Whether a chain's slot is the latest value of a key (not a window aggregate).
fn is_latest(chain: &CompiledChain, slot: Slot) -> bool {
    matches!(
        chain.inputs.get(slot as usize),
        Some(crate::parse::Input::Latest { .. })
    )
}

/// The values a chain read at `time`: those carried through the dataflow (window aggregates,
/// `"on": "every"` chains, several-slot atoms) and the latest values of its other slots, read
/// back from worker 0.
fn with_latest(
    chain: &CompiledChain,
    carried: &[(Slot, Val)],
    time: Time,
    latest: Lookup<'_>,
) -> Vec<(Slot, Val)> {
    let mut values = carried.to_vec();
    for (slot, input) in chain.inputs.iter().enumerate() {
        let slot = slot as Slot;
        if matches!(input, crate::parse::Input::Latest { .. })
            && !carried.iter().any(|(s, _)| *s == slot)
        {
            if let Some(v) = latest(chain.value_key(slot), time) {
                values.push((slot, v));
            }
        }
    }
    values.sort_unstable_by_key(|(s, _)| *s);
    values
}

/// Sorted by chain, equal records summed, zeros dropped.
fn consolidate(mut updates: Updates) -> Updates {
    updates.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut consolidated: Updates = Vec::with_capacity(updates.len());
    for (record, diff) in updates {
        match consolidated.last_mut() {
            Some((last, d)) if *last == record => *d += diff,
            _ => consolidated.push((record, diff)),
        }
    }
    consolidated.retain(|(_, d)| *d != 0);
    consolidated
}

/// The first tick of `schedule` in `tz` strictly after `after_ms`.
fn next_tick(schedule: &cron::Schedule, tz: &chrono_tz::Tz, after_ms: i64) -> Option<i64> {
    let after = chrono::DateTime::from_timestamp_millis(after_ms)?.with_timezone(tz);
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}
