//! Gap filling, as InfluxDB 3 has it: `date_bin_gapfill(stride, time[, origin])` in a GROUP BY
//! gives a row for every bin of the query's time range (its `WHERE time >= … AND time < …`) in
//! every group that has data, the aggregates NULL where the bin had no rows; around an
//! aggregate, `locf(x)` carries the last value seen forward and `interpolate(x)` draws a
//! straight line between the values either side (NULL before the first and after the last).
//!
//! The three are planned as placeholder functions, then [`fill_gaps`] rewrites the plan into
//! DataFusion's own operators, so the filled query streams, is bounded by the same memory pool
//! and is parallel like any other:
//!
//! ```text
//! Projection (locf(x) -> last_value(x) IGNORE NULLS OVER (PARTITION BY groups ORDER BY bin))
//!   Window
//!     LEFT JOIN ON bin, groups (NULLs equal)
//!       (DISTINCT groups of the aggregate) CROSS JOIN generate_series(first bin, last bin, stride)
//!       Aggregate (date_bin_gapfill -> date_bin)
//! ```
//! Whatever these functions are used for outside that shape is refused at plan time with the
//! reason, never run.

use std::sync::Arc;

use arrow::datatypes::{DataType, IntervalMonthDayNano};
use datafusion::catalog::TableFunctionArgs;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{
    plan_datafusion_err, plan_err, Column, DFSchema, NullEquality, Result, ScalarValue,
    TableReference,
};
use datafusion::datasource::provider_as_source;
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::expr::{NullTreatment, ScalarFunction};
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    cast, when, Aggregate, BinaryExpr, ColumnarValue, Expr, ExprFunctionExt, ExprSchemable,
    JoinType, LogicalPlan, LogicalPlanBuilder, Operator, Projection, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, SortExpr, Volatility, WindowFrame, WindowFrameBound,
    WindowFrameUnits,
};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;

const GAPFILL: &str = "date_bin_gapfill";
const LOCF: &str = "locf";
const INTERPOLATE: &str = "interpolate";
/// The most bins one query may ask for (a second over four months is 10 M).
const MAX_BINS: i64 = 10_000_000;
const BINS: &str = "__aemos_bins";
const BIN: &str = "__aemos_bin";
const KEYS: &str = "__aemos_keys";
const AGG: &str = "__aemos_agg";

/// The functions to register: planned as these placeholders, run as [`fill_gaps`] rewrites them.
pub(crate) fn functions() -> [ScalarUDF; 3] {
    let date_bin = datafusion::functions::datetime::date_bin();
    [
        ScalarUDF::new_from_impl(Placeholder {
            name: GAPFILL,
            signature: date_bin.signature().clone(),
        }),
        ScalarUDF::new_from_impl(Placeholder {
            name: LOCF,
            signature: Signature::any(1, Volatility::Immutable),
        }),
        ScalarUDF::new_from_impl(Placeholder {
            name: INTERPOLATE,
            signature: Signature::any(1, Volatility::Immutable),
        }),
    ]
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Placeholder {
    name: &'static str,
    signature: Signature,
}

impl ScalarUDFImpl for Placeholder {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match self.name {
            GAPFILL => datafusion::functions::datetime::date_bin().return_type(arg_types),
            _ => Ok(arg_types[0].clone()),
        }
    }
    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        plan_err!("{}", misuse())
    }
}

fn misuse() -> &'static str {
    "date_bin_gapfill(stride, time) belongs in the GROUP BY of a query with a time range \
     (WHERE time >= … AND time < …), and locf() and interpolate() around an aggregate of it"
}

fn is_call(e: &Expr, names: &[&str]) -> bool {
    matches!(e, Expr::ScalarFunction(f) if names.contains(&f.name()))
}

fn mentions(plan: &LogicalPlan) -> Result<bool> {
    let names = [GAPFILL, LOCF, INTERPOLATE];
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            found |= e.exists(|e| Ok(is_call(e, &names)))?;
        }
        Ok(if found {
            datafusion::common::tree_node::TreeNodeRecursion::Stop
        } else {
            datafusion::common::tree_node::TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// `plan` with every gap-filling aggregate rewritten (see the module); unchanged (and not
/// analyzed) when it uses none of the three functions.
pub(crate) fn fill_gaps(plan: LogicalPlan, state: &SessionState) -> Result<LogicalPlan> {
    if !mentions(&plan)? {
        return Ok(plan);
    }
    // Types coerced and wildcards expanded: the literals of the time range can be evaluated.
    let plan = state
        .analyzer()
        .execute_and_check(plan, state.config_options(), |_, _| {})?;
    let filled = plan
        .transform_up_with_subqueries(|node| fill(node, state))?
        .data;
    if mentions(&filled)? {
        return plan_err!("{}", misuse());
    }
    Ok(filled)
}

/// A constant expression (a literal, `now() - INTERVAL '1 hour'`, a cast string) evaluated.
fn constant(e: &Expr, schema: &Arc<DFSchema>, state: &SessionState) -> Option<ScalarValue> {
    // `now()` as of planning: the optimizer's own is a few microseconds later, and the rows
    // between are still filtered by the query's own WHERE.
    let start = state
        .execution_props()
        .query_execution_start_time
        .unwrap_or_else(chrono::Utc::now);
    let context = SimplifyContext::builder()
        .with_schema(Arc::clone(schema))
        .with_config_options(Arc::clone(state.config_options()))
        .with_query_execution_start_time(Some(start))
        .build();
    match ExprSimplifier::new(context).simplify(e.clone()).ok()? {
        Expr::Literal(v, _) => Some(v),
        _ => None,
    }
}

/// The column `e` is, through casts (type coercion adds them).
fn column_of(e: &Expr) -> Option<&Column> {
    match e {
        Expr::Column(c) => Some(c),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
}

fn nanos(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(t), _) => t.checked_mul(1_000_000_000),
        ScalarValue::TimestampMillisecond(Some(t), _) => t.checked_mul(1_000_000),
        ScalarValue::TimestampMicrosecond(Some(t), _) => t.checked_mul(1_000),
        ScalarValue::TimestampNanosecond(Some(t), _) => Some(*t),
        _ => None,
    }
}

/// The query's time range on `time` from the filters below the aggregate, in ns: the lower
/// bound and the upper, each with whether it is inclusive.
fn time_range(
    input: &LogicalPlan,
    time: &Column,
    state: &SessionState,
) -> Result<(i64, (i64, bool))> {
    let (mut lower, mut upper): (Option<i64>, Option<(i64, bool)>) = (None, None);
    let is_time = |e: &Expr| column_of(e).is_some_and(|c| c.name == time.name);
    input.apply(|node| {
        if let LogicalPlan::Filter(filter) = node {
            let schema = filter.input.schema();
            for conjunct in split_conjunction(&filter.predicate) {
                let mut bound = |op: Operator, other: &Expr| {
                    let Some(t) = constant(other, schema, state).as_ref().and_then(nanos) else {
                        return;
                    };
                    match op {
                        Operator::Gt | Operator::GtEq => {
                            lower = Some(lower.map_or(t, |l| l.max(t)));
                        }
                        Operator::Lt | Operator::LtEq => {
                            let candidate = (t, op == Operator::LtEq);
                            upper = Some(upper.map_or(candidate, |u| u.min(candidate)));
                        }
                        _ => {}
                    }
                };
                match conjunct {
                    Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_time(left) => {
                        bound(*op, right)
                    }
                    Expr::BinaryExpr(BinaryExpr { left, op, right }) if is_time(right) => {
                        if let Some(op) = op.swap() {
                            bound(op, left)
                        }
                    }
                    Expr::Between(b) if !b.negated && is_time(&b.expr) => {
                        bound(Operator::GtEq, &b.low);
                        bound(Operator::LtEq, &b.high);
                    }
                    _ => {}
                }
            }
        }
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    })?;
    match (lower, upper) {
        (Some(l), Some(u)) => Ok((l, u)),
        (None, None) => plan_err!(
            "date_bin_gapfill needs the query's time range: WHERE {0} >= … AND {0} < … \
             (both bounds are missing)",
            time.name
        ),
        (None, _) => plan_err!(
            "date_bin_gapfill needs the query's time range: the lower bound ({} >= …) is missing",
            time.name
        ),
        (_, None) => plan_err!(
            "date_bin_gapfill needs the query's time range: the upper bound ({} < …) is missing",
            time.name
        ),
    }
}

/// The grid of bins: `generate_series` from the bin of the lower bound to the last bin the
/// upper bound reaches, as `BINS.BIN` of the time column's type.
fn bins(args: &[Expr], input: &LogicalPlan, state: &SessionState) -> Result<LogicalPlan> {
    let schema = input.schema();
    let Some(time) = column_of(&args[1]) else {
        return plan_err!("date_bin_gapfill's second argument must be the time column");
    };
    let stride = match constant(&args[0], schema, state) {
        Some(ScalarValue::IntervalMonthDayNano(Some(i))) if i.months == 0 => {
            i64::from(i.days) * 86_400_000_000_000 + i.nanoseconds
        }
        Some(ScalarValue::IntervalMonthDayNano(Some(_))) => {
            return plan_err!(
                "date_bin_gapfill's stride must be a fixed length (seconds to weeks), not months"
            )
        }
        _ => return plan_err!("date_bin_gapfill's stride must be a constant interval"),
    };
    if stride <= 0 {
        return plan_err!("date_bin_gapfill's stride must be longer than zero");
    }
    let origin = match args.get(2) {
        None => 0,
        Some(o) => constant(o, schema, state)
            .as_ref()
            .and_then(nanos)
            .ok_or_else(|| {
                plan_datafusion_err!("date_bin_gapfill's origin must be a constant time")
            })?,
    };
    let (lower, (upper, inclusive)) = time_range(input, time, state)?;
    let bin_of = |t: i64| origin + (t - origin).div_euclid(stride) * stride;
    let first = bin_of(lower);
    let last = bin_of(if inclusive { upper } else { upper - 1 });
    if (last - first) / stride + 1 > MAX_BINS {
        return plan_err!(
            "date_bin_gapfill would make {} bins per group, more than {MAX_BINS}: \
             use a longer stride or a shorter time range",
            (last - first) / stride + 1
        );
    }
    let time_type = args[1].get_type(schema)?;
    let tz = match &time_type {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    let series = [
        Expr::Literal(
            ScalarValue::TimestampNanosecond(Some(first), tz.clone()),
            None,
        ),
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(last), tz), None),
        Expr::Literal(
            ScalarValue::IntervalMonthDayNano(Some(IntervalMonthDayNano::new(0, 0, stride))),
            None,
        ),
    ];
    let generate = state
        .table_functions()
        .get("generate_series")
        .ok_or_else(|| plan_datafusion_err!("generate_series is not registered"))?;
    let provider =
        generate.create_table_provider_with_args(TableFunctionArgs::new(&series, state))?;
    let value = Expr::Column(Column::new(Some(BINS), "value"));
    LogicalPlanBuilder::scan(BINS, provider_as_source(provider), None)?
        .project([cast(value, time_type).alias(BIN)])?
        .alias(BINS)?
        .build()
}

/// Rewrites `Projection(Aggregate(GROUP BY date_bin_gapfill(…), …))`; other nodes pass.
fn fill(node: LogicalPlan, state: &SessionState) -> Result<Transformed<LogicalPlan>> {
    let LogicalPlan::Projection(projection) = &node else {
        return Ok(Transformed::no(node));
    };
    let LogicalPlan::Aggregate(aggregate) = projection.input.as_ref() else {
        return Ok(Transformed::no(node));
    };
    let Some(bin_at) = aggregate
        .group_expr
        .iter()
        .position(|e| is_call(&e.clone().unalias_nested().data, &[GAPFILL]))
    else {
        return Ok(Transformed::no(node));
    };
    let Expr::ScalarFunction(call) = aggregate.group_expr[bin_at].clone().unalias_nested().data
    else {
        unreachable!("position found a call");
    };
    let bins = bins(&call.args, &aggregate.input, state)?;

    // The aggregate as the user wrote it, with date_bin: the same output names.
    let fields: Vec<(Option<TableReference>, String)> = aggregate
        .schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.name().clone()))
        .collect();
    let mut group_expr = aggregate.group_expr.clone();
    group_expr[bin_at] = Expr::ScalarFunction(ScalarFunction::new_udf(
        datafusion::functions::datetime::date_bin(),
        call.args.clone(),
    ))
    .alias(fields[bin_at].1.clone());
    let groups = group_expr.len();
    let aggregated = LogicalPlan::Aggregate(Aggregate::try_new(
        Arc::clone(&aggregate.input),
        group_expr,
        aggregate.aggr_expr.clone(),
    )?);
    let aggregated = LogicalPlanBuilder::from(aggregated).alias(AGG)?.build()?;
    let in_agg = |i: usize| Expr::Column(Column::new(Some(AGG), &fields[i].1));
    let in_bins = Expr::Column(Column::new(Some(BINS), BIN));

    // Every group that has data, in every bin.
    let others: Vec<usize> = (0..groups).filter(|&i| i != bin_at).collect();
    let grid = if others.is_empty() {
        LogicalPlanBuilder::from(bins)
    } else {
        let keys = LogicalPlanBuilder::from(aggregated.clone())
            .project(others.iter().map(|&i| in_agg(i)))?
            .distinct()?
            .alias(KEYS)?
            .build()?;
        LogicalPlanBuilder::from(keys).cross_join(bins)?
    };
    let in_keys = |i: usize| Expr::Column(Column::new(Some(KEYS), &fields[i].1));
    let left: Vec<Column> = std::iter::once(Column::new(Some(BINS), BIN))
        .chain(
            others
                .iter()
                .map(|&i| Column::new(Some(KEYS), &fields[i].1)),
        )
        .collect();
    let right: Vec<Column> = std::iter::once(bin_at)
        .chain(others.iter().copied())
        .map(|i| Column::new(Some(AGG), &fields[i].1))
        .collect();
    let outputs = (0..fields.len()).map(|i| {
        let e = match i {
            _ if i == bin_at => in_bins.clone(),
            _ if i < groups => in_keys(i),
            _ => in_agg(i),
        };
        e.alias_qualified(fields[i].0.clone(), &fields[i].1)
    });
    let filled = grid
        .join_detailed(
            aggregated,
            JoinType::Left,
            (left, right),
            None,
            NullEquality::NullEqualsNull,
        )?
        .project(outputs)?
        .build()?;

    // locf() and interpolate(): windows over each group in bin order.
    let column = |i: usize| Expr::Column(Column::new(fields[i].0.clone(), &fields[i].1));
    let bin = column(bin_at);
    let window = Window {
        partition: others.iter().map(|&i| column(i)).collect(),
        order: vec![bin.clone().sort(true, true)],
    };
    let mut window_exprs: Vec<Expr> = Vec::new();
    let mut exprs = Vec::with_capacity(projection.expr.len());
    for e in &projection.expr {
        let e = e.clone().transform_up(|e| {
            let Expr::ScalarFunction(f) = &e else {
                return Ok(Transformed::no(e));
            };
            let x = match f.name() {
                LOCF | INTERPOLATE => f.args[0].clone(),
                _ => return Ok(Transformed::no(e)),
            };
            let replaced = if f.name() == LOCF {
                window.last(x, &mut window_exprs)?
            } else {
                window.interpolate(x, &bin, filled.schema(), &mut window_exprs)?
            };
            Ok(Transformed::yes(replaced))
        })?;
        exprs.push(e.data);
    }
    let input = if window_exprs.is_empty() {
        filled
    } else {
        LogicalPlanBuilder::window_plan(filled, window_exprs)?
    };
    let rewritten = Projection::try_new(exprs, Arc::new(input))?;
    Ok(Transformed::yes(LogicalPlan::Projection(rewritten)))
}

/// The window of one group in bin order.
struct Window {
    partition: Vec<Expr>,
    order: Vec<SortExpr>,
}

impl Window {
    /// `f` over the rows before and at this one (`preceding`) or at and after it, NULLs skipped;
    /// its column, the window expression added to `exprs`.
    fn over(&self, f: Expr, preceding: bool, exprs: &mut Vec<Expr>) -> Result<Expr> {
        let unbounded = ScalarValue::UInt64(None);
        let frame = if preceding {
            (
                WindowFrameBound::Preceding(unbounded),
                WindowFrameBound::CurrentRow,
            )
        } else {
            (
                WindowFrameBound::CurrentRow,
                WindowFrameBound::Following(unbounded),
            )
        };
        let w = f
            .partition_by(self.partition.clone())
            .order_by(self.order.clone())
            .window_frame(WindowFrame::new_bounds(
                WindowFrameUnits::Rows,
                frame.0,
                frame.1,
            ))
            .null_treatment(NullTreatment::IgnoreNulls)
            .build()?;
        let name = w.schema_name().to_string();
        if !exprs.contains(&w) {
            exprs.push(w);
        }
        Ok(Expr::Column(Column::new_unqualified(name)))
    }

    /// `locf(x)`: the last non-NULL `x` of the group so far.
    fn last(&self, x: Expr, exprs: &mut Vec<Expr>) -> Result<Expr> {
        self.over(
            datafusion::functions_window::expr_fn::last_value(x),
            true,
            exprs,
        )
    }

    /// `interpolate(x)`: `x` where it is known, else on the line between the known values
    /// either side (by time), NULL before the first and after the last.
    fn interpolate(
        &self,
        x: Expr,
        bin: &Expr,
        schema: &DFSchema,
        exprs: &mut Vec<Expr>,
    ) -> Result<Expr> {
        use datafusion::functions_window::expr_fn::{first_value, last_value};
        let x_type = x.get_type(schema)?;
        if !x_type.is_numeric() {
            return plan_err!("interpolate() needs a number, not {x_type}");
        }
        let known_at = when(x.clone().is_not_null(), bin.clone()).end()?;
        let prev_v = self.over(last_value(x.clone()), true, exprs)?;
        let prev_t = self.over(last_value(known_at.clone()), true, exprs)?;
        let next_v = self.over(first_value(x.clone()), false, exprs)?;
        let next_t = self.over(first_value(known_at), false, exprs)?;
        let float = |e: Expr| cast(e, DataType::Float64);
        let ms = |e: Expr| float(cast(e, DataType::Int64));
        let line = float(prev_v.clone())
            + (float(next_v) - float(prev_v)) * (ms(bin.clone()) - ms(prev_t.clone()))
                / (ms(next_t) - ms(prev_t));
        when(x.clone().is_not_null(), x).otherwise(cast(line, x_type))
    }
}
