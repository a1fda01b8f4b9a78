//! Aggregates over all time answered from the files' summaries.
//!
//! Every persisted file has a summary: its row count and the min, max and sum of its values per
//! `(device, sensor, variable)` (`aemos_storage::summary`). [`RollupRule`] finds aggregations
//! over `readings` that these numbers answer exactly: grouped by any of `device`, `sensor` and
//! `variable`, computing `min`, `max`, `sum`, `avg` and `count` of `value` (or `count(*)`),
//! filtered on those three columns only (no time bounds: a summary covers its whole file). It
//! replaces the scan by [`RollupTable`], whose rows are the summaries of the files plus, for
//! rows not summarized (the buffer, files older than summaries), one row per reading with a
//! count of one, and re-aggregates: `min` of mins, `max` of maxes, sums of counts and sums.
//! `avg` becomes the sum over the count. Anything else is left to the row-by-row plan.

use std::sync::Arc;

use aemos_storage::schema::{DEVICE, SENSOR, VALUE, VARIABLE};
use aemos_storage::summary::{summary_schema, MAX_VALUE, MIN_VALUE, ROWS, SUM_VALUE};
use aemos_storage::ParquetFile;
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::{provider_as_source, source_as_provider, TableType};
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::functions_aggregate::expr_fn::{max, min, sum};
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    cast, lit, Aggregate, Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
    TableScan, TableScanBuilder,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::expressions::{col, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::coalesce;

use crate::provider::{
    projected_schema, scan_parquet, scan_rows, table_schema, union_or_empty, with_string_views,
    ReadingsSource, ReadingsTable,
};

/// The columns a summary is keyed by; filters and groups on anything else need the rows.
const DIMENSIONS: [&str; 3] = [DEVICE, SENSOR, VARIABLE];

/// Summaries as SQL sees them: the storage's summary schema with `Utf8View` strings, like
/// the `readings` table.
fn rollup_schema() -> SchemaRef {
    static SCHEMA: std::sync::LazyLock<SchemaRef> =
        std::sync::LazyLock::new(|| with_string_views(&summary_schema()));
    Arc::clone(&SCHEMA)
}

/// Summary rows of the summarized files, and rows of count one for everything else.
#[derive(Debug)]
pub struct RollupTable {
    source: Arc<dyn ReadingsSource>,
    store_url: ObjectStoreUrl,
}

#[async_trait]
impl TableProvider for RollupTable {
    fn schema(&self) -> SchemaRef {
        rollup_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = rollup_schema();
        let snapshot = self.source.snapshot();
        let (summarized, unsummarized): (Vec<&ParquetFile>, Vec<&ParquetFile>) =
            snapshot.files.iter().partition(|f| f.summary.is_some());
        let mut inputs = Vec::new();
        if !summarized.is_empty() {
            let target = state.config().target_partitions().max(1);
            let mut groups: Vec<Vec<PartitionedFile>> =
                vec![Vec::new(); target.min(summarized.len())];
            let count = groups.len();
            for (i, file) in summarized.iter().enumerate() {
                let summary = file.summary.as_ref().expect("partitioned on summary");
                groups[i % count].push(PartitionedFile::new(
                    summary.path.clone(),
                    summary.size_bytes,
                ));
            }
            inputs.push(scan_parquet(
                state,
                &self.store_url,
                &schema,
                groups,
                None,
                projection,
                filters,
            )?);
        }
        // Rows read one by one: (device, sensor, variable, value) as rows of count one.
        let readings = table_schema();
        let raw_projection: Vec<usize> = [DEVICE, SENSOR, VARIABLE, VALUE]
            .iter()
            .map(|name| readings.index_of(name))
            .collect::<std::result::Result<_, _>>()?;
        let raw = scan_rows(
            state,
            &self.store_url,
            &unsummarized,
            snapshot.batches,
            Some(&raw_projection),
            filters,
        )?;
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        for input in raw {
            let input_schema = input.schema();
            let exprs = wanted
                .iter()
                .map(|i| {
                    let name = schema.field(*i).name();
                    let expr: Arc<dyn PhysicalExpr> = match name.as_str() {
                        ROWS => Arc::new(Literal::new(ScalarValue::Int64(Some(1)))),
                        MIN_VALUE | MAX_VALUE | SUM_VALUE => col(VALUE, &input_schema)?,
                        dimension => col(dimension, &input_schema)?,
                    };
                    Ok((expr, name.clone()))
                })
                .collect::<Result<Vec<_>>>()?;
            inputs.push(Arc::new(ProjectionExec::try_new(exprs, input)?));
        }
        union_or_empty(inputs, projected_schema(&schema, projection)?)
    }
}

/// Rewrites aggregations over `readings` that summaries answer into aggregations over
/// [`RollupTable`]; see the module documentation.
#[derive(Debug, Default)]
pub struct RollupRule;

impl OptimizerRule for RollupRule {
    fn name(&self) -> &str {
        "aemos_rollup"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_aggregate(aggregate)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// What one aggregate of the original plan becomes.
enum Measure {
    Min,
    Max,
    Sum,
    Count,
    Avg,
}

fn measure_of(expr: &Expr) -> Option<Measure> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = expr.clone().unalias() else {
        return None;
    };
    if params.distinct || params.filter.is_some() || !params.order_by.is_empty() {
        return None;
    }
    let on_value = matches!(params.args.as_slice(), [Expr::Column(c)] if c.name == VALUE);
    let count_star = matches!(params.args.as_slice(), [Expr::Literal(v, _)] if !v.is_null());
    match func.name() {
        "min" if on_value => Some(Measure::Min),
        "max" if on_value => Some(Measure::Max),
        "sum" if on_value => Some(Measure::Sum),
        "avg" if on_value => Some(Measure::Avg),
        "count" if on_value || count_star => Some(Measure::Count),
        _ => None,
    }
}

/// Whether a filter reads nothing but dimensions, and gives the same answer for every reading
/// of a summary row (`random()` would not).
fn only_dimensions(expr: &Expr) -> bool {
    !expr.is_volatile()
        && expr
            .column_refs()
            .iter()
            .all(|c| DIMENSIONS.contains(&c.name.as_str()))
}

/// The scan under an aggregate if it reads the `readings` table through nothing but
/// projections of columns and filters on dimensions; with those filters' predicates and the
/// rollup table over the same source.
fn readings_scan(input: &LogicalPlan) -> Option<(&TableScan, Vec<Expr>, RollupTable)> {
    let mut predicates = Vec::new();
    let mut node = input;
    let scan = loop {
        match node {
            LogicalPlan::TableScan(scan) => break scan,
            LogicalPlan::Filter(filter) if only_dimensions(&filter.predicate) => {
                predicates.push(filter.predicate.clone());
                node = filter.input.as_ref();
            }
            LogicalPlan::Projection(projection)
                if projection.expr.iter().all(|e| matches!(e, Expr::Column(_))) =>
            {
                node = projection.input.as_ref();
            }
            _ => return None,
        }
    };
    if scan.fetch.is_some() || !scan.filters.iter().all(only_dimensions) {
        return None;
    }
    let provider = source_as_provider(&scan.source).ok()?;
    let readings = provider.as_ref().downcast_ref::<ReadingsTable>()?;
    let rollup = RollupTable {
        source: Arc::clone(readings.source()),
        store_url: readings.store_url().clone(),
    };
    Some((scan, predicates, rollup))
}

fn rewrite_aggregate(aggregate: &Aggregate) -> Result<Option<LogicalPlan>> {
    let Some((scan, predicates, rollup)) = readings_scan(&aggregate.input) else {
        return Ok(None);
    };
    if !aggregate
        .group_expr
        .iter()
        .all(|g| matches!(g, Expr::Column(c) if DIMENSIONS.contains(&c.name.as_str())))
    {
        return Ok(None);
    }
    let Some(measures) = aggregate
        .aggr_expr
        .iter()
        .map(measure_of)
        .collect::<Option<Vec<_>>>()
    else {
        return Ok(None);
    };
    let rollup_scan = TableScanBuilder::new(
        scan.table_name.clone(),
        provider_as_source(Arc::new(rollup)),
    )
    .with_filters(scan.filters.clone())
    .build()?;
    let rollup_scan = LogicalPlan::TableScan(rollup_scan);
    let mut builder = LogicalPlanBuilder::from(rollup_scan);
    if let Some(predicate) = conjunction(predicates) {
        builder = builder.filter(predicate)?;
    }

    // Aggregates over the summaries, then a projection giving each original output its name.
    let column = |name: &str| Expr::Column(Column::new(Some(scan.table_name.clone()), name));
    let mut partials = Vec::new();
    let mut partial = |expr: Expr| {
        let name = format!("__rollup_{}", partials.len());
        partials.push(expr.alias(&name));
        Expr::Column(Column::from_name(name))
    };
    let outputs: Vec<Expr> = measures
        .iter()
        .map(|m| match m {
            Measure::Min => partial(min(column(MIN_VALUE))),
            Measure::Max => partial(max(column(MAX_VALUE))),
            Measure::Sum => partial(sum(column(SUM_VALUE))),
            Measure::Count => coalesce(vec![partial(sum(column(ROWS))), lit(0i64)]),
            Measure::Avg => {
                let total = partial(sum(column(SUM_VALUE)));
                let rows = partial(sum(column(ROWS)));
                total / cast(rows, DataType::Float64)
            }
        })
        .collect();
    let original = aggregate.schema.as_ref();
    let groups = aggregate.group_expr.len();
    let mut projection: Vec<Expr> = aggregate.group_expr.clone();
    for (i, expr) in outputs.into_iter().enumerate() {
        let (qualifier, field) = original.qualified_field(groups + i);
        projection.push(expr.alias_qualified(qualifier.cloned(), field.name()));
    }
    let plan = builder
        .aggregate(aggregate.group_expr.clone(), partials)?
        .project(projection)?
        .build()?;
    Ok(Some(plan))
}
