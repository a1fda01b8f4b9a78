//! The rule engine: rule chains compiled into one shared differential dataflow.
//!
//! A chain ([`ChainSpec`], the document of API.md) is validated and compiled on the caller's
//! side ([`CompiledChain::compile`]): its SQL expressions are parsed with `sqlparser`, typed,
//! and lowered to [`Expr`] trees over input slots; its condition is put in disjunctive normal
//! form. Installing it inserts rows into the dataflow's `terms`, `defs` and `window specs`
//! collections: chains are data, no dataflow is built per chain.
//!
//! Readings arrive in batches (one batch per WAL group commit) through [`Engine::feed`]. Worker
//! 0 sequences every command into ticks (logical times in milliseconds of the injected
//! [`Clock`]), upserts the latest value per `(sensor, variable)` key (a keyed hash that names
//! cannot forge, see [`keys`]), and the dataflow (`dataflow.rs`) joins the changed values with
//! the terms of their key, counts satisfied atoms per chain and emits `active(chain, values)`.
//! Worker 0 turns changes of that collection into [`Firing`]s, in tick order, handed to the sink
//! given at start.
//!
//! A tick is the unit of simultaneity: readings fed together are applied together, and a value
//! that crosses a threshold and comes back within one tick fires nothing.

mod collector;
mod dataflow;
mod error;
pub mod expr;
mod feed_budget;
#[doc(hidden)]
pub mod fuzzing;
mod history;
pub mod keys;
pub mod model;
mod name;
mod parse;
mod plan;
mod presence;
mod runtime;
mod worker;
pub mod workload;

pub use collector::{ChainStatus, Firing, FiringKind, Subject};
pub use error::{Error, Result};
pub use expr::{EvalError, Expr, Slot};
pub use model::{ActionKind, ChainSpec, Node, Schedule, StateSpec, Trigger};
pub use name::Name;
pub use parse::{Agg, Input};
pub use plan::{Atom, AtomKind, CompiledChain};
pub use presence::{Presence, PresenceSpec};
pub use runtime::{
    Clock, Engine, EngineArgs, EngineHealth, EngineMetrics, ManualClock, Reading, SystemClock,
};
