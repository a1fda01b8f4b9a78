//! The `readings` table: a thin adapter that hands DataFusion the buffer's batches and the
//! Parquet files whose time range can match the query's filters.

use std::fmt::Debug;
use std::sync::Arc;

use aemos_storage::schema::{readings_schema, SENSOR, TIME, VARIABLE};
use aemos_storage::{ParquetFile, ReadSnapshot};
use arrow::array::{RecordBatch, RecordBatchOptions};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::col;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;

/// Where the rows of the `readings` table are right now.
pub trait ReadingsSource: Debug + Send + Sync + 'static {
    fn snapshot(&self) -> ReadSnapshot;
}

impl ReadingsSource for aemos_storage::Storage {
    fn snapshot(&self) -> ReadSnapshot {
        self.read_snapshot()
    }
}

/// A fixed snapshot (`aemos sql` on a data directory).
#[derive(Debug)]
pub struct StaticSource(pub ReadSnapshot);

impl ReadingsSource for StaticSource {
    fn snapshot(&self) -> ReadSnapshot {
        self.0.clone()
    }
}

/// The table as SQL sees it: the storage schema with `Utf8View` strings, which is what
/// DataFusion's Parquet reader produces natively (no per-query cast of every string read).
pub(crate) fn table_schema() -> SchemaRef {
    static SCHEMA: std::sync::LazyLock<SchemaRef> =
        std::sync::LazyLock::new(|| with_string_views(&readings_schema()));
    Arc::clone(&SCHEMA)
}

/// `schema` with its `Utf8` columns as `Utf8View`.
pub(crate) fn with_string_views(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A buffered batch, projected, with its strings as views (no string bytes are copied).
fn buffered_for_table(batch: &RecordBatch, projection: Option<&Vec<usize>>) -> Result<RecordBatch> {
    let schema = table_schema();
    let indices: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let projected = Arc::new(schema.project(&indices)?);
    let columns = indices
        .iter()
        .zip(projected.fields())
        .map(|(i, field)| Ok(cast(batch.column(*i), field.data_type())?))
        .collect::<Result<Vec<_>>>()?;
    // `count(*)` projects no column at all: keep the row count.
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        projected, columns, &options,
    )?)
}

/// Up to this many files per core, each file is scanned as its own ordered partition.
const FILES_PER_PARTITION_FOR_ORDER: usize = 8;

#[derive(Debug)]
pub struct ReadingsTable {
    source: Arc<dyn ReadingsSource>,
    store_url: ObjectStoreUrl,
}

impl ReadingsTable {
    pub fn new(source: Arc<dyn ReadingsSource>, store_url: ObjectStoreUrl) -> Self {
        Self { source, store_url }
    }
}

/// Inclusive time bounds (epoch ms) implied by a conjunction of filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub min: i64,
    pub max: i64,
}

impl Default for TimeRange {
    fn default() -> Self {
        Self {
            min: i64::MIN,
            max: i64::MAX,
        }
    }
}

impl TimeRange {
    pub fn from_filters(filters: &[Expr]) -> Self {
        let mut range = Self::default();
        for f in filters {
            range.narrow(f);
        }
        range
    }

    fn narrow(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr {
                left,
                op: Operator::And,
                right,
            }) => {
                self.narrow(left);
                self.narrow(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = match (left.as_ref(), right.as_ref()) {
                    (Expr::Column(c), Expr::Literal(v, _)) if c.name == TIME => (*op, v),
                    (Expr::Literal(v, _), Expr::Column(c)) if c.name == TIME => match op.swap() {
                        Some(op) => (op, v),
                        None => return,
                    },
                    _ => return,
                };
                let Some((floor, ceil)) = literal_ms(value) else {
                    return;
                };
                // Rows are whole milliseconds t; the literal v may fall between two.
                match op {
                    // t > v ⇔ t ≥ ⌊v⌋ + 1
                    Operator::Gt => self.min = self.min.max(floor.saturating_add(1)),
                    Operator::GtEq => self.min = self.min.max(ceil),
                    // t < v ⇔ t ≤ ⌈v⌉ − 1
                    Operator::Lt => self.max = self.max.min(ceil.saturating_sub(1)),
                    Operator::LtEq => self.max = self.max.min(floor),
                    Operator::Eq => {
                        self.min = self.min.max(ceil);
                        self.max = self.max.min(floor);
                    }
                    _ => {}
                }
            }
            Expr::Between(b) if !b.negated => {
                if let (Expr::Column(c), Expr::Literal(lo, _), Expr::Literal(hi, _)) =
                    (b.expr.as_ref(), b.low.as_ref(), b.high.as_ref())
                {
                    if c.name == TIME {
                        if let Some((_, lo)) = literal_ms(lo) {
                            self.min = self.min.max(lo);
                        }
                        if let Some((hi, _)) = literal_ms(hi) {
                            self.max = self.max.min(hi);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    pub fn overlaps(&self, file: &ParquetFile) -> bool {
        file.max_time >= self.min && file.min_time <= self.max
    }
}

/// A time literal's floor and ceiling in milliseconds: a finer literal (µs, ns) may fall
/// between two, and truncating it would prune a file holding a matching row.
fn literal_ms(value: &ScalarValue) -> Option<(i64, i64)> {
    if let Ok(ScalarValue::TimestampNanosecond(Some(ns), _)) =
        value.cast_to(&DataType::Timestamp(TimeUnit::Nanosecond, None))
    {
        let floor = ns.div_euclid(1_000_000);
        return Some((floor, floor + i64::from(ns.rem_euclid(1_000_000) != 0)));
    }
    // Beyond the nanosecond range (years past 2262): milliseconds are exact.
    match value
        .cast_to(&DataType::Timestamp(TimeUnit::Millisecond, None))
        .ok()?
    {
        ScalarValue::TimestampMillisecond(Some(v), _) => Some((v, v)),
        _ => None,
    }
}

#[async_trait]
impl TableProvider for ReadingsTable {
    fn schema(&self) -> SchemaRef {
        table_schema()
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
        let snapshot = self.source.snapshot();
        let range = TimeRange::from_filters(filters);
        let files: Vec<&ParquetFile> = snapshot
            .files
            .iter()
            .filter(|f| range.overlaps(f))
            .collect();
        let inputs = scan_rows(
            state,
            &self.store_url,
            &files,
            snapshot.batches,
            projection,
            filters,
        )?;
        union_or_empty(inputs, projected_schema(&table_schema(), projection)?)
    }
}

impl ReadingsTable {
    pub(crate) fn source(&self) -> &Arc<dyn ReadingsSource> {
        &self.source
    }

    pub(crate) fn store_url(&self) -> &ObjectStoreUrl {
        &self.store_url
    }
}

pub(crate) fn projected_schema(
    schema: &SchemaRef,
    projection: Option<&Vec<usize>>,
) -> Result<SchemaRef> {
    Ok(match projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => Arc::clone(schema),
    })
}

pub(crate) fn union_or_empty(
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    schema: SchemaRef,
) -> Result<Arc<dyn ExecutionPlan>> {
    if inputs.is_empty() {
        return Ok(Arc::new(EmptyExec::new(schema)));
    }
    UnionExec::try_new(inputs)
}

/// The plans reading `files` and the buffered `batches` row by row, in the table's schema.
pub(crate) fn scan_rows(
    state: &dyn Session,
    store_url: &ObjectStoreUrl,
    files: &[&ParquetFile],
    batches: Vec<RecordBatch>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    let schema = table_schema();
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    if !files.is_empty() {
        // Every file is sorted by (sensor, variable, time). Alone in its group a file keeps
        // that order, which DataFusion can use (sorted aggregation, merge instead of sort);
        // past a few files per core, files are spread over fewer groups instead.
        let target = state.config().target_partitions().max(1);
        let ordered = files.len() <= target * FILES_PER_PARTITION_FOR_ORDER;
        let group_count = if ordered { files.len() } else { target };
        let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); group_count];
        for (i, file) in files.iter().enumerate() {
            groups[i % group_count].push(PartitionedFile::new(file.path.clone(), file.size_bytes));
        }
        let sort = if ordered {
            let sort = [SENSOR, VARIABLE, TIME]
                .iter()
                .map(|name| Ok(PhysicalSortExpr::new_default(col(name, &schema)?)))
                .collect::<Result<Vec<_>>>()?;
            LexOrdering::new(sort)
        } else {
            None
        };
        inputs.push(scan_parquet(
            state, store_url, &schema, groups, sort, projection, filters,
        )?);
    }

    let batches: Vec<_> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    if !batches.is_empty() {
        let target = state.config().target_partitions().max(1).min(batches.len());
        let mut partitions = vec![Vec::new(); target];
        for (i, batch) in batches.iter().enumerate() {
            partitions[i % target].push(buffered_for_table(batch, projection)?);
        }
        inputs.push(MemorySourceConfig::try_new_exec(
            &partitions,
            projected_schema(&schema, projection)?,
            None,
        )?);
    }
    Ok(inputs)
}

/// A Parquet scan of `groups` (one partition each) read as `schema`, with the filters as a
/// pruning predicate.
pub(crate) fn scan_parquet(
    state: &dyn Session,
    store_url: &ObjectStoreUrl,
    schema: &SchemaRef,
    groups: Vec<Vec<PartitionedFile>>,
    ordering: Option<LexOrdering>,
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
) -> Result<Arc<dyn ExecutionPlan>> {
    let mut source = ParquetSource::new(Arc::clone(schema));
    if let Some(predicate) = conjunction(filters.iter().cloned()) {
        let df_schema = DFSchema::try_from(Arc::clone(schema))?;
        source = source.with_predicate(state.create_physical_expr(predicate, &df_schema)?);
    }
    let mut builder = FileScanConfigBuilder::new(store_url.clone(), Arc::new(source))
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect());
    if let Some(ordering) = ordering {
        builder = builder.with_output_ordering(vec![ordering]);
    }
    let config = builder
        .with_projection_indices(projection.cloned())?
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    /// Pruning reads a finer literal's floor and ceiling: a file whose only rows are at
    /// x.000 ms is kept for `time < x.0005` and `time <= x.0005`, dropped for `time > x.0005`.
    /// (DataFusion's own coercion casts such literals to the column's milliseconds before they
    /// reach the provider today; the range must not depend on that.)
    #[test]
    fn sub_millisecond_bounds_keep_the_files_that_hold_matching_rows() {
        const X: i64 = 1_768_906_800_000;
        let ns = |n: i64| {
            lit(ScalarValue::TimestampNanosecond(
                Some(n),
                Some("UTC".into()),
            ))
        };
        let range = |e: Expr| TimeRange::from_filters(&[e]);
        let at = X * 1_000_000 + 500_000;
        assert_eq!(range(col(TIME).lt(ns(at))).max, X);
        assert_eq!(range(col(TIME).lt_eq(ns(at))).max, X);
        assert_eq!(range(col(TIME).gt(ns(at))).min, X + 1);
        assert_eq!(range(col(TIME).gt_eq(ns(at))).min, X + 1);
        let eq = range(col(TIME).eq(ns(at)));
        assert!(eq.min > eq.max, "no whole millisecond equals x.0005");
        // Whole milliseconds as before.
        assert_eq!(range(col(TIME).lt(ns(X * 1_000_000))).max, X - 1);
        assert_eq!(range(col(TIME).gt_eq(ns(X * 1_000_000))).min, X);
        // Before 1970 the floor is below: -0.5 ms lies between -1 and 0.
        assert_eq!(range(col(TIME).lt(ns(-500_000))).max, -1);
        assert_eq!(range(col(TIME).gt(ns(-500_000))).min, 0);
    }
}
