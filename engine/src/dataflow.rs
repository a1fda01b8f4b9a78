//! The one shared dataflow in which chains are data.
//!
//! ```text
//!  latest (key -> value)  ───────────────────────────────┐
//!  window readings (raw key -> value, retracted at t+w) ─┤
//!     ⋈ window specs (raw key -> agg, w, value key)      │ concat, arrange by key: `values`
//!     reduce per value key: avg/min/max/count ───────────┘
//!  values ⋈ terms (value key -> chain, atom, predicate)  -> satisfied atoms, passthrough values, errors
//!  absent terms ▷ (antijoin) keys with a window value    -> satisfied no_data atoms
//!  marks (chain -> always: a clause with no atom)
//!  offline (watch: its device is offline, kept by worker 0) ────> beside the chains' output
//!  concat, reduce per chain: some clause has all its atoms  -> active(chain, values)  [firings]
//!                            (clauses and joined atoms read from the shared `Plans` table)
//! ```
//!
//! Every input is sharded by key hash across the workers, so a reading meets only the terms of
//! its own key; a reading that does not change any atom's truth stops at the join.

use crate::expr::{compare, CmpOp, EvalError, Expr, Num, Slot};
use crate::parse::Agg;
use differential_dataflow::input::{Input, InputSession};
use differential_dataflow::AsCollection;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, RwLock};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::Scope;

/// Logical time: the engine tick, in milliseconds of the engine clock.
pub(crate) type Time = u64;
pub(crate) type Diff = isize;
/// Internal number of an installed chain.
pub(crate) type ChainNo = u32;
/// Slot number of a part that carries no value (a `no_data` atom).
pub(crate) const NO_SLOT: Slot = Slot::MAX;

/// A value and the time of the reading it comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Val {
    pub v: Num,
    pub t: i64,
}

/// A row of `terms`: what chain `chain` wants from the value under this key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Term {
    pub chain: ChainNo,
    pub slot: Slot,
    pub atom: u16,
    /// `None`: pass the value through to the chain's reduce.
    pub pred: Option<Pred>,
    /// Whether a satisfied atom carries its value on (`"on": "every"` chains, window slots).
    /// Without it, a reading that keeps the atom true consolidates away at the join and costs
    /// nothing downstream; the firing reads latest values back from worker 0 instead.
    pub carry: bool,
}

/// An atom's predicate: most are a comparison of one slot with a constant, kept without the
/// expression tree's allocations; the rest keep their tree boxed (16 bytes either way, which
/// matters in every term row of the arrangements).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Pred {
    Threshold(CmpOp, Num),
    Expr(Box<Expr>),
}

impl Pred {
    pub(crate) fn of(expr: &Expr, slot: Slot) -> Pred {
        if let Expr::Cmp(op, a, b) = expr {
            if let (Expr::Slot(s), Expr::Num(c)) = (a.as_ref(), b.as_ref()) {
                if *s == slot {
                    return Pred::Threshold(*op, *c);
                }
            }
        }
        Pred::Expr(Box::new(expr.clone()))
    }

    fn test(&self, slot: Slot, v: f64) -> Result<bool, EvalError> {
        match self {
            Pred::Threshold(op, c) => compare(*op, v, c.0),
            Pred::Expr(e) => e.test(&|s| (s == slot).then_some(v)),
        }
    }
}

/// A row of `window specs`: aggregate the readings under a raw key into `value_key`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct WindowSpec {
    pub agg: Agg,
    pub window_ms: i64,
    pub value_key: u64,
}

/// A chain's clauses and the atoms evaluated in its reduce.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub clauses: Vec<Vec<u16>>,
    pub joined: Vec<(u16, Expr)>,
}

/// Every installed chain's plan, by number, shared by the workers' `Chains` reduces.
///
/// Plans are not rows of the reduce's input: the input's arrangement changes every tick (atoms
/// flip), and differential merges its batches again and again as it does, so plans there were
/// copied over and over, idle chains' included (a third of what 100,000 idle chains cost). A
/// chain number is never reused, so a plan never changes; worker 0 inserts it before it closes
/// the chain's install tick, and removes it once the chain's removal tick is complete.
pub(crate) type Plans = Arc<RwLock<FxHashMap<ChainNo, Plan>>>;

/// What reaches a chain's reduce.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Part {
    /// The chain has a clause without atoms (a part of the condition that is constant and
    /// true): the reduce must run even when no atom holds.
    Always,
    Sat {
        atom: u16,
        slot: Slot,
        val: Option<Val>,
    },
    Value {
        slot: Slot,
        val: Val,
    },
    Failed {
        atom: u16,
        err: EvalError,
    },
}

/// The output per chain: present while the chain is active, with the values it read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub(crate) enum Out {
    Active(Vec<(Slot, Val)>),
    Failed {
        atom: u16,
        err: EvalError,
    },
    /// A watched device is offline (the number is the watch's, see `presence`).
    Offline,
}

/// The input handles of one worker's copy of the dataflow.
pub(crate) struct Inputs {
    pub(crate) latest: InputSession<Time, (u64, Val), Diff>,
    pub(crate) window_readings: InputSession<Time, (u64, Val), Diff>,
    pub(crate) window_specs: InputSession<Time, (u64, WindowSpec), Diff>,
    pub(crate) terms: InputSession<Time, (u64, Term), Diff>,
    pub(crate) absent: InputSession<Time, (u64, (ChainNo, u16)), Diff>,
    pub(crate) marks: InputSession<Time, (ChainNo, Part), Diff>,
    /// Watches whose device is offline, by number (worker 0 keeps their state, see
    /// `worker::watches`).
    pub(crate) offline: InputSession<Time, ChainNo, Diff>,
}

impl Inputs {
    pub(crate) fn advance_to(&mut self, time: Time) {
        self.latest.advance_to(time);
        self.window_readings.advance_to(time);
        self.window_specs.advance_to(time);
        self.terms.advance_to(time);
        self.absent.advance_to(time);
        self.marks.advance_to(time);
        self.offline.advance_to(time);
    }

    pub(crate) fn flush(&mut self) {
        self.latest.flush();
        self.window_readings.flush();
        self.window_specs.flush();
        self.terms.flush();
        self.absent.flush();
        self.marks.flush();
        self.offline.flush();
    }
}

/// Output updates of one worker: `(chain, out)` at a time with a diff.
pub(crate) type OutBatch = Vec<((ChainNo, Out), Time, Diff)>;

/// Builds the dataflow in `scope`; every output batch goes to `output`.
pub(crate) fn build<'s>(
    scope: Scope<'s, Time>,
    probe: &ProbeHandle<Time>,
    plans: Plans,
    output: impl Fn(OutBatch) + 'static,
) -> Inputs {
    let (latest_in, latest) = scope.new_collection::<(u64, Val), Diff>();
    let (window_readings_in, window_readings) = scope.new_collection::<(u64, Val), Diff>();
    let (window_specs_in, window_specs) = scope.new_collection::<(u64, WindowSpec), Diff>();
    let (terms_in, terms) = scope.new_collection::<(u64, Term), Diff>();
    let (absent_in, absent) = scope.new_collection::<(u64, (ChainNo, u16)), Diff>();
    let (marks_in, marks) = scope.new_collection::<(ChainNo, Part), Diff>();
    let (offline_in, offline) = scope.new_collection::<ChainNo, Diff>();

    // Each windowed reading, once per distinct spec over its key (chains share specs), leaves
    // the window at t + w.
    let windowed = window_readings
        .arrange_by_key_named("WindowReadings")
        .join_core(
            window_specs.distinct().arrange_by_key_named("WindowSpecs"),
            |_raw, val, spec| Some((spec.value_key, (spec.agg, spec.window_ms, *val))),
        )
        .inner
        .flat_map(|((key, (agg, window, val)), time, diff)| {
            let expiry = val.t.saturating_add(window).max(0) as Time;
            let expiry = expiry.max(time);
            [
                ((key, (agg, val)), time, diff),
                ((key, (agg, val)), expiry, -diff),
            ]
        })
        .as_collection();
    let aggregates = windowed.reduce_named("WindowAggregate", aggregate);

    let values = latest
        .concat(aggregates.clone())
        .arrange_by_key_named("Values");
    let parts = values.join_core(terms.arrange_by_key_named("Terms"), evaluate_term);
    let window_keys = aggregates.map(|(key, _)| key);
    // No join, no reduce, no plan: the watch's row while its device is offline.
    let offline = offline.map(|watch| (watch, Out::Offline));
    let absent_parts = absent.antijoin(window_keys).map(|(_, (chain, atom))| {
        (
            chain,
            Part::Sat {
                atom,
                slot: NO_SLOT,
                val: None,
            },
        )
    });

    marks
        .concat(parts)
        .concat(absent_parts)
        .reduce_named("Chains", move |chain, input, output| {
            let plans = plans.read().unwrap_or_else(|e| e.into_inner());
            if let Some(plan) = plans.get(chain) {
                evaluate_chain(plan, input, output);
            }
        })
        .concat(offline)
        .inspect_batch(move |_time, batch| output(batch.to_vec()))
        .probe_with(probe);

    Inputs {
        latest: latest_in,
        window_readings: window_readings_in,
        window_specs: window_specs_in,
        terms: terms_in,
        absent: absent_in,
        marks: marks_in,
        offline: offline_in,
    }
}

fn aggregate(_key: &u64, input: &[(&(Agg, Val), Diff)], output: &mut Vec<(Val, Diff)>) {
    let agg = input[0].0 .0;
    let (mut count, mut sum, mut min, mut max, mut newest) =
        (0i64, 0.0, f64::INFINITY, f64::NEG_INFINITY, i64::MIN);
    for ((_, val), diff) in input {
        if *diff <= 0 {
            continue;
        }
        count += *diff as i64;
        sum += val.v.0 * *diff as f64;
        min = min.min(val.v.0);
        max = max.max(val.v.0);
        newest = newest.max(val.t);
    }
    if count == 0 {
        return;
    }
    let v = match agg {
        Agg::Avg => sum / count as f64,
        Agg::Min => min,
        Agg::Max => max,
        Agg::Count => count as f64,
    };
    output.push((
        Val {
            v: Num(v),
            t: newest,
        },
        1,
    ));
}

fn evaluate_term(_key: &u64, val: &Val, term: &Term) -> Option<(ChainNo, Part)> {
    let Some(pred) = &term.pred else {
        return Some((
            term.chain,
            Part::Value {
                slot: term.slot,
                val: *val,
            },
        ));
    };
    let slot = term.slot;
    match pred.test(slot, val.v.0) {
        Ok(true) => Some((
            term.chain,
            Part::Sat {
                atom: term.atom,
                slot,
                val: term.carry.then_some(*val),
            },
        )),
        Ok(false) | Err(EvalError::Missing) => None,
        Err(err) => Some((
            term.chain,
            Part::Failed {
                atom: term.atom,
                err,
            },
        )),
    }
}

fn evaluate_chain(plan: &Plan, input: &[(&Part, Diff)], output: &mut Vec<(Out, Diff)>) {
    let mut satisfied = 0u64;
    let mut values: Vec<(Slot, Val)> = Vec::new();
    let mut failures: Vec<(u16, EvalError)> = Vec::new();
    for (part, diff) in input {
        if *diff <= 0 {
            continue;
        }
        match part {
            Part::Sat { atom, slot, val } => {
                satisfied |= 1 << atom;
                if let Some(val) = val {
                    values.push((*slot, *val));
                }
            }
            Part::Value { slot, val } => values.push((*slot, *val)),
            Part::Failed { atom, err } => failures.push((*atom, *err)),
            Part::Always => {}
        }
    }
    values.sort_unstable();
    values.dedup_by_key(|(slot, _)| *slot);
    for (atom, expr) in &plan.joined {
        let lookup = |s: Slot| {
            values
                .binary_search_by_key(&s, |(slot, _)| *slot)
                .ok()
                .map(|i| values[i].1.v.0)
        };
        match expr.test(&lookup) {
            Ok(true) => satisfied |= 1 << atom,
            Ok(false) | Err(EvalError::Missing) => {}
            Err(err) => failures.push((*atom, err)),
        }
    }
    failures.sort_unstable();
    failures.dedup();
    output.extend(
        failures
            .into_iter()
            .map(|(atom, err)| (Out::Failed { atom, err }, 1)),
    );
    if plan
        .clauses
        .iter()
        .any(|c| c.iter().all(|a| satisfied & (1 << a) != 0))
    {
        output.push((Out::Active(values), 1));
    }
    output.sort();
}
