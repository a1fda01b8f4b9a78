//! The rows worker 0 inserts and retracts to install and remove chains and presence watches:
//! terms, absent atoms, marks, window specs and the windows' lengths per raw key, each claimed
//! for the identity that owns its keys.

use super::{Sequencer, Windows};
use crate::dataflow::{ChainNo, Part, Plan, Term, WindowSpec};
use crate::keys::Id;
use crate::parse::Input;
use crate::plan::{AtomKind, CompiledChain};
use crate::presence::Presence;
use std::sync::atomic::Ordering;

impl Sequencer {
    /// Claims the keys of a chain being installed; `false` (and the chain is quarantined: it
    /// gets no rows) when another identity owns one of them.
    fn claim(&mut self, no: ChainNo, chain: &CompiledChain) -> bool {
        let (slots, ids): (Vec<_>, Vec<_>) = chain.ids().into_iter().unzip();
        let Err(at) = self.latest.claim(&ids) else {
            return true;
        };
        let input = chain.name(slots[at]);
        tracing::warn!(chain = chain.id(), input = %input, "key collision: chain quarantined");
        self.quarantined.insert(no);
        self.shared
            .metrics
            .key_collisions
            .fetch_add(1, Ordering::Relaxed);
        self.collector.error(
            no,
            format!(
                "{input}: another name has the same key in this process (a chance collision \
                 of 64-bit keys); the chain is quarantined and does not fire: replace it \
                 after a restart"
            ),
        );
        false
    }

    /// Inserts (`diff` 1) or retracts (-1) a window spec over the readings of `raw`.
    fn window(&mut self, raw: Id, spec: WindowSpec, diff: isize) {
        self.inputs.window_specs.update((raw.key, spec), diff);
        let windows = self.windows.entry(raw.key).or_insert_with(|| Windows {
            check: raw.check,
            lengths: Vec::new(),
        });
        let lengths = &mut windows.lengths;
        let at = match lengths.binary_search_by_key(&spec.window_ms, |(w, _)| *w) {
            Ok(at) => at,
            Err(at) => {
                lengths.insert(at, (spec.window_ms, 0));
                at
            }
        };
        let n = &mut lengths[at].1;
        *n = n.saturating_add_signed(diff);
        if *n == 0 {
            lengths.remove(at);
        }
        lengths.shrink_to_fit();
        if lengths.is_empty() {
            self.windows.remove(&raw.key);
        }
    }

    /// Starts (`diff` 1) or ends (-1) a device's watch (see `watches`).
    pub(super) fn watch_rows(&mut self, no: ChainNo, presence: &Presence, diff: isize) {
        let quarantined = if diff > 0 {
            let claimed = self.latest.claim(&[presence.raw, presence.value]).is_ok();
            if !claimed {
                tracing::warn!(
                    device = presence.device(),
                    "key collision: presence not watched"
                );
                self.shared
                    .metrics
                    .key_collisions
                    .fetch_add(1, Ordering::Relaxed);
                self.quarantined.insert(no);
            }
            !claimed
        } else {
            self.quarantined.remove(&no)
        };
        if quarantined {
            return;
        }
        if diff > 0 {
            self.watches
                .install(no, presence, self.epoch, &mut self.inputs.offline);
        } else {
            self.watches.remove(no, presence, &mut self.inputs.offline);
        }
    }

    /// Inserts (`diff` 1) or retracts (-1) the rows that make up a chain.
    pub(super) fn rows(&mut self, no: ChainNo, chain: &CompiledChain, diff: isize) {
        let quarantined = if diff > 0 {
            !self.claim(no, chain)
        } else {
            self.quarantined.remove(&no)
        };
        if quarantined {
            return;
        }
        let mut joined = Vec::new();
        for (atom, a) in chain.atoms.iter().enumerate() {
            let atom = atom as u16;
            match a.kind {
                AtomKind::Term(slot) => {
                    let carry = chain.every()
                        || !matches!(chain.inputs[slot as usize], Input::Latest { .. });
                    let term = Term {
                        chain: no,
                        slot,
                        atom,
                        pred: Some(a.pred.clone()),
                        carry,
                    };
                    self.inputs
                        .terms
                        .update((chain.value_key(slot), term), diff);
                }
                AtomKind::Absent(slot) => self
                    .inputs
                    .absent
                    .update((chain.value_key(slot), (no, atom)), diff),
                AtomKind::Joined => joined.extend(a.joined_expr().map(|e| (atom, e.clone()))),
            }
        }
        for slot in chain.passthrough_slots() {
            let term = Term {
                chain: no,
                slot,
                atom: u16::MAX,
                pred: None,
                carry: true,
            };
            self.inputs
                .terms
                .update((chain.value_key(slot), term), diff);
        }
        for (slot, input) in chain.inputs.iter().enumerate() {
            if let Input::Latest { .. } = input {
                let key = chain.value_key(slot as u16);
                self.latest.watch(key, diff);
                if diff > 0 {
                    if let Some(val) = self.latest.admit(key) {
                        self.inputs.latest.update((key, val), 1);
                    }
                }
            }
            let Some(raw) = chain.raw_id(slot as u16) else {
                continue;
            };
            let (agg, window_ms) = match input {
                crate::parse::Input::Window { agg, window_ms, .. } => (*agg, *window_ms),
                crate::parse::Input::Recent { window_ms, .. } => {
                    (crate::parse::Agg::Count, *window_ms)
                }
                crate::parse::Input::Latest { .. } => continue,
            };
            let spec = WindowSpec {
                agg,
                window_ms,
                value_key: chain.value_key(slot as u16),
            };
            self.window(raw, spec, diff);
        }
        if chain.clauses.iter().any(Vec::is_empty) {
            self.inputs.marks.update((no, Part::Always), diff);
        }
        if diff > 0 {
            // Before this tick closes: the rows may reach the workers earlier (an input flushes
            // when its buffer fills), but no reduce evaluates this tick before it is closed.
            let plan = Plan {
                clauses: chain.clauses.clone(),
                joined,
            };
            let mut plans = self.shared.plans.write().unwrap_or_else(|e| e.into_inner());
            plans.insert(no, plan);
        } else {
            self.retired.push((self.epoch, no));
        }
    }
}
