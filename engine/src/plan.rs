//! A validated chain, lowered to what the dataflow needs: inputs in slots, the condition in
//! disjunctive normal form over atoms, and each atom classified by where it is evaluated.
//!
//! - a `Term` atom reads one slot: it becomes a row of the `terms` collection keyed by that
//!   slot's value key, and is evaluated where the value meets the term (the join), so a reading
//!   that does not change the atom's truth costs nothing downstream;
//! - a `Joined` atom reads several slots (`"b".t > t + 5`): its slots flow to the chain's
//!   reduce, which evaluates it;
//! - an `Absent` atom is `no_data('d')`: true while its slot has no value.

use crate::dataflow::Pred;
use crate::error::{Error, Result};
use crate::expr::{CmpOp, Expr, Slot};
use crate::keys::{raw_id, raw_key, value_id, value_key, Id};
use crate::model::{ChainSpec, Node, Trigger};
use crate::parse::{Input, Lowering, Site, Ty};
use chrono_tz::Tz;
use std::str::FromStr;

pub(crate) const MAX_CLAUSES: usize = 64;
pub(crate) const MAX_ATOMS: usize = 64;
const MAX_ID_LEN: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtomKind {
    Term(Slot),
    Joined,
    Absent(Slot),
}

#[derive(Clone, Debug)]
pub struct Atom {
    /// A threshold on the kind's slot, or the expression (always for joined atoms).
    pub(crate) pred: Pred,
    pub kind: AtomKind,
}

impl Atom {
    fn new(expr: Expr, kind: AtomKind) -> Self {
        let pred = match kind {
            AtomKind::Term(slot) | AtomKind::Absent(slot) => Pred::of(&expr, slot),
            AtomKind::Joined => Pred::Expr(Box::new(expr)),
        };
        Atom { pred, kind }
    }

    /// The expression of a joined atom (evaluated in the chain's reduce).
    pub(crate) fn joined_expr(&self) -> Option<&Expr> {
        match (&self.pred, self.kind) {
            (Pred::Expr(e), AtomKind::Joined) => Some(e),
            _ => None,
        }
    }
}

/// A chain ready to install. Kept small: it lives as long as the chain is registered.
#[derive(Debug)]
pub struct CompiledChain {
    pub spec: ChainSpec,
    pub inputs: Vec<Input>,
    /// The key of each input's value (hashing the names again for every firing was 1.2% of
    /// the engine bench's profile; caching it took 1.49 to 1.63 M readings/s with the changes
    /// beside it).
    value_keys: Box<[u64]>,
    pub atoms: Vec<Atom>,
    /// Disjunctive normal form: the chain is active when every atom of some clause holds.
    pub clauses: Vec<Vec<u16>>,
    pub transforms: Vec<(String, Expr)>,
    /// Boxed: a parsed cron schedule is a few hundred bytes, and most chains have none.
    pub schedule: Option<Box<(cron::Schedule, Tz)>>,
}

/// A chain's expressions lowered over one slot table.
struct Lowered {
    inputs: Vec<Input>,
    /// All filters ANDed.
    condition: Expr,
    transforms: Vec<(String, Expr)>,
}

fn lower(spec: &ChainSpec) -> Result<Lowered> {
    let mut lowering = Lowering::default();
    let mut filters = Vec::new();
    let mut transform_texts = Vec::new();
    for (index, node) in spec.nodes.iter().enumerate() {
        match node {
            Node::Filter { sensor, condition } => {
                if sensor.is_empty() {
                    return Err(Error::invalid("filter: sensor is empty", Some(index)));
                }
                let site = Site {
                    node: index,
                    sensor,
                };
                filters.push(lowering.lower(condition, site, Ty::Bool)?);
            }
            Node::Transform { set } => transform_texts.push((index, set)),
            Node::Action { .. } => check_action(node, index)?,
        }
    }
    let Some(home) = home_sensor(spec) else {
        return Err(Error::invalid(
            "a chain needs at least one filter node",
            None,
        ));
    };
    if lowering.inputs.is_empty() {
        let node = spec
            .nodes
            .iter()
            .position(|n| matches!(n, Node::Filter { .. }));
        return Err(Error::invalid("the condition references no variable", node));
    }
    let mut transforms = Vec::new();
    for (index, set) in transform_texts {
        for (name, text) in set {
            if name.is_empty() {
                return Err(Error::invalid(
                    "transform: a field name is empty",
                    Some(index),
                ));
            }
            let site = Site {
                node: index,
                sensor: home,
            };
            transforms.push((name.clone(), lowering.lower(text, site, Ty::Num)?));
        }
    }
    let condition = if filters.len() == 1 {
        filters.remove(0)
    } else {
        Expr::And(filters)
    };
    Ok(Lowered {
        inputs: lowering.inputs,
        condition,
        transforms,
    })
}

/// The sensor of the first filter: bare variables in transforms belong to it.
fn home_sensor(spec: &ChainSpec) -> Option<&str> {
    spec.nodes.iter().find_map(|n| match n {
        Node::Filter { sensor, .. } => Some(sensor.as_str()),
        _ => None,
    })
}

impl CompiledChain {
    /// Validates and compiles `spec`. Errors name the node and the column.
    pub fn compile(spec: ChainSpec) -> Result<CompiledChain> {
        check_id(&spec.id)?;
        let lowered = lower(&spec)?;
        let schedule = spec
            .schedule
            .as_ref()
            .map(|s| parse_schedule(s).map(Box::new))
            .transpose()?;
        let (atoms, clauses) = normal_form(&lowered.condition, &lowered.inputs)?;
        let mut inputs = lowered.inputs;
        inputs.shrink_to_fit();
        let value_keys = inputs.iter().map(value_key).collect();
        Ok(CompiledChain {
            spec,
            inputs,
            value_keys,
            atoms,
            clauses,
            transforms: lowered.transforms,
            schedule,
        })
    }

    /// The whole condition as written (all filters ANDed), over the same slots: what a plain
    /// re-evaluation reads. Lowered again on demand rather than kept.
    pub fn condition(&self) -> Expr {
        lower(&self.spec)
            .map(|l| l.condition)
            .unwrap_or(Expr::Bool(false))
    }

    /// The name a slot's value carries in firings: `temperature`, `sensor-b.temperature`,
    /// `avg(temperature, 300s)`.
    pub fn name(&self, slot: Slot) -> String {
        let home = home_sensor(&self.spec).unwrap_or_default();
        self.inputs
            .get(slot as usize)
            .map(|i| i.display_name(home))
            .unwrap_or_default()
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn every(&self) -> bool {
        self.spec.on == Trigger::Every
    }

    /// Slots whose values must reach the chain's reduce unconditionally: those of joined atoms
    /// and of transforms.
    pub fn passthrough_slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for expr in self.atoms.iter().filter_map(Atom::joined_expr) {
            expr.slots(&mut slots);
        }
        for (_, e) in &self.transforms {
            e.slots(&mut slots);
        }
        slots
    }

    /// The key of the value a slot reads (see `keys`).
    pub fn value_key(&self, slot: Slot) -> u64 {
        self.value_keys[slot as usize]
    }

    /// The key of the readings a windowed slot aggregates.
    pub fn raw_key(&self, slot: Slot) -> Option<u64> {
        raw_key(&self.inputs[slot as usize])
    }

    pub(crate) fn raw_id(&self, slot: Slot) -> Option<Id> {
        raw_id(&self.inputs[slot as usize])
    }

    /// Every identity the chain's rows are keyed by, with its slot: values and raw readings.
    /// (Hashed again rather than kept: only an install needs the checks.)
    pub(crate) fn ids(&self) -> Vec<(Slot, Id)> {
        let mut ids = Vec::with_capacity(2 * self.inputs.len());
        for (slot, input) in self.inputs.iter().enumerate() {
            let slot = slot as Slot;
            ids.push((slot, value_id(input)));
            ids.extend(raw_id(input).map(|id| (slot, id)));
        }
        ids
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::invalid(
            format!("id must be 1 to {MAX_ID_LEN} characters without '/' or control characters"),
            None,
        ));
    }
    Ok(())
}

fn check_action(node: &Node, index: usize) -> Result<()> {
    let Node::Action {
        action,
        device,
        state,
        command,
    } = node
    else {
        return Ok(());
    };
    if device.as_deref().is_some_and(str::is_empty) {
        return Err(Error::invalid("action: device is empty", Some(index)));
    }
    match action {
        crate::model::ActionKind::Notify if state.as_ref().is_some_and(|s| s.name.is_empty()) => {
            Err(Error::invalid("action: state.name is empty", Some(index)))
        }
        crate::model::ActionKind::Command if !command.as_ref().is_some_and(|c| c.is_object()) => {
            Err(Error::invalid(
                "action: a command action needs a \"command\" object",
                Some(index),
            ))
        }
        crate::model::ActionKind::Command if device.is_none() => Err(Error::invalid(
            "action: a command action needs a \"device\"",
            Some(index),
        )),
        _ => Ok(()),
    }
}

fn parse_schedule(s: &crate::model::Schedule) -> Result<(cron::Schedule, Tz)> {
    let cron = cron::Schedule::from_str(&s.cron)
        .map_err(|e| Error::invalid(format!("schedule.cron {:?}: {e}", s.cron), None))?;
    let tz = Tz::from_str(&s.timezone).map_err(|_| {
        Error::invalid(
            format!("schedule.timezone {:?} is not a time zone", s.timezone),
            None,
        )
    })?;
    Ok((cron, tz))
}

/// Pushes negations down to the atoms (comparisons, BETWEEN, IN, constants).
fn push_not(e: &Expr, negate: bool) -> Expr {
    match e {
        Expr::Not(inner) => push_not(inner, !negate),
        Expr::And(v) | Expr::Or(v) => {
            let items = v.iter().map(|x| push_not(x, negate)).collect();
            if matches!(e, Expr::And(_)) != negate {
                Expr::And(items)
            } else {
                Expr::Or(items)
            }
        }
        _ if !negate => e.clone(),
        Expr::Bool(b) => Expr::Bool(!b),
        Expr::Cmp(op, a, b) => Expr::Cmp(flip(*op), a.clone(), b.clone()),
        Expr::Between {
            expr,
            low,
            high,
            negated,
        } => Expr::Between {
            expr: expr.clone(),
            low: low.clone(),
            high: high.clone(),
            negated: !negated,
        },
        Expr::InList {
            expr,
            list,
            negated,
        } => Expr::InList {
            expr: expr.clone(),
            list: list.clone(),
            negated: !negated,
        },
        other => Expr::Not(Box::new(other.clone())),
    }
}

/// Comparisons fail on NaN rather than answer false, so negating one flips its operator.
fn flip(op: CmpOp) -> CmpOp {
    match op {
        CmpOp::Eq => CmpOp::NotEq,
        CmpOp::NotEq => CmpOp::Eq,
        CmpOp::Lt => CmpOp::GtEq,
        CmpOp::LtEq => CmpOp::Gt,
        CmpOp::Gt => CmpOp::LtEq,
        CmpOp::GtEq => CmpOp::Lt,
    }
}

/// Clauses of atoms; `None` atoms are constants already decided.
fn dnf(e: &Expr) -> Result<Vec<Vec<Expr>>> {
    let too_many = || {
        Error::invalid(
            format!("the condition expands to more than {MAX_CLAUSES} OR-clauses"),
            None,
        )
    };
    Ok(match e {
        Expr::Bool(true) => vec![vec![]],
        Expr::Bool(false) => vec![],
        Expr::Or(v) => {
            let mut out = Vec::new();
            for x in v {
                out.extend(dnf(x)?);
                if out.len() > MAX_CLAUSES {
                    return Err(too_many());
                }
            }
            out
        }
        Expr::And(v) => {
            let mut out: Vec<Vec<Expr>> = vec![vec![]];
            for x in v {
                let right = dnf(x)?;
                let mut next = Vec::with_capacity(out.len() * right.len());
                for l in &out {
                    for r in &right {
                        let mut c = l.clone();
                        c.extend(r.iter().cloned());
                        next.push(c);
                    }
                }
                if next.len() > MAX_CLAUSES {
                    return Err(too_many());
                }
                out = next;
            }
            out
        }
        atom => vec![vec![atom.clone()]],
    })
}

fn normal_form(condition: &Expr, inputs: &[Input]) -> Result<(Vec<Atom>, Vec<Vec<u16>>)> {
    let mut atoms: Vec<(Expr, AtomKind)> = Vec::new();
    let mut clauses = Vec::new();
    'clauses: for clause in dnf(&push_not(condition, false))? {
        let mut ids = Vec::new();
        for expr in clause {
            let mut slots = Vec::new();
            expr.slots(&mut slots);
            if slots.is_empty() {
                match expr.test(&|_| None) {
                    Ok(true) => continue,
                    Ok(false) => continue 'clauses,
                    Err(e) => {
                        return Err(Error::invalid(
                            format!("a constant part of the condition fails: {e}"),
                            None,
                        ))
                    }
                }
            }
            let kind = match slots.as_slice() {
                [s] if matches!(inputs[*s as usize], Input::Recent { .. }) => match &expr {
                    Expr::Cmp(CmpOp::Eq, _, _) => AtomKind::Absent(*s),
                    _ => AtomKind::Term(*s),
                },
                [s] => AtomKind::Term(*s),
                _ => AtomKind::Joined,
            };
            let id = match atoms.iter().position(|(e, _)| *e == expr) {
                Some(i) => i,
                None => {
                    if atoms.len() == MAX_ATOMS {
                        return Err(Error::invalid(
                            format!("the condition has more than {MAX_ATOMS} distinct comparisons"),
                            None,
                        ));
                    }
                    atoms.push((expr, kind));
                    atoms.len() - 1
                }
            };
            if !ids.contains(&(id as u16)) {
                ids.push(id as u16);
            }
        }
        ids.sort_unstable();
        if !clauses.contains(&ids) {
            ids.shrink_to_fit();
            clauses.push(ids);
        }
    }
    // Exact sizes: a compiled chain lives as long as it is registered.
    let atoms = atoms
        .into_iter()
        .map(|(expr, kind)| Atom::new(expr, kind))
        .collect();
    clauses.shrink_to_fit();
    Ok((atoms, clauses))
}
