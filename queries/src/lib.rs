//! SQL over readings with Apache DataFusion.
//!
//! The `readings` table ([`ReadingsTable`]) is a thin adapter over a [`ReadingsSource`]: on
//! each scan it takes a consistent snapshot (buffered batches plus the catalog's Parquet files),
//! drops the files whose time range cannot match the query's `time` filters, hands the rest to
//! DataFusion's Parquet scan (with the filters as a predicate, so row groups and pages are
//! pruned by their statistics) and the buffered batches to an in-memory scan, and unions them.
//! Filters are reported `Inexact`, so DataFusion applies them again on top. Aggregations over
//! all time that the files' summaries answer exactly (min, max, sum, avg, count per device,
//! sensor or variable) are rewritten by [`RollupRule`] to read the summaries instead of every
//! row. Results leave
//! through [`ResultEncoder`] in the format the client asked for, or as Postgres rows through
//! the wire-protocol front-end ([`PgServer`]), which plans on the same session and runs within
//! the same limits ([`QueryEngine::admit`]).

mod engine;
mod error;
mod flight;
mod format;
mod gapfill;
mod login;
mod pg;
mod provider;
mod rollup;
mod selectors;
mod snapshot;

pub use engine::{
    Admission, QueryEngine, QueryEngineArgs, QueryLimits, VariableStatistics, CATALOG, STORE_URL,
};
pub use error::{Error, Result};
pub use flight::{FlightServer, FlightServerArgs, FlightTls};
pub use format::{encode, OutputFormat, ResultEncoder};
pub use login::SqlLogin;
pub use pg::{PgServer, PgServerArgs};
pub use provider::{ReadingsSource, ReadingsTable, StaticSource, TimeRange};
pub use rollup::{RollupRule, RollupTable};
pub use snapshot::{SnapshotSource, SnapshotTable};
