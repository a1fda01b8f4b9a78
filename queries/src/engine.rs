//! [`QueryEngine`]: one DataFusion session with the `readings` table registered.

use std::sync::Arc;
use std::time::Duration;

use aemos_storage::schema::{DEVICE, TIME, VALUE, VARIABLE};
use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::functions_aggregate::expr_fn::{avg, count, max, min};
use datafusion::logical_expr::{col, lit, Expr, LogicalPlan};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use futures::StreamExt;
use object_store::ObjectStore;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result, TIMEOUT_MARK};
use crate::provider::{ReadingsSource, ReadingsTable};
use crate::rollup::RollupRule;

/// The catalog (Postgres: the database) holding the tables, in schema `public`.
pub const CATALOG: &str = "aemos";

/// The URL under which the object store is registered with DataFusion.
pub const STORE_URL: &str = "aemos://store";

pub struct QueryEngineArgs {
    pub source: Arc<dyn ReadingsSource>,
    pub object_store: Arc<dyn ObjectStore>,
    /// Parallelism of query plans; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    pub limits: QueryLimits,
}

/// Bounds on the users' queries ([`QueryEngine::execute_limited`]), so that one query cannot
/// take the server's memory or CPU for good.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// A query running longer is stopped with an error.
    pub timeout: Duration,
    /// Queries running at once; one more is refused ([`Error::Busy`]).
    pub concurrency: usize,
    /// Memory all queries together may hold (hash tables, sorts); a query that needs more
    /// fails with DataFusion's "resources exhausted". `None`: unbounded.
    pub memory_bytes: Option<usize>,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(60),
            concurrency: 16,
            memory_bytes: None,
        }
    }
}

#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    /// The runtime of internal queries (`sql`): the server's own, outside the users' memory
    /// bound (a user's query holding the pool must not fail the rebuild at start).
    unbounded: Arc<RuntimeEnv>,
    limits: QueryLimits,
    slots: Arc<Semaphore>,
    latency: Option<prometheus::Histogram>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine").finish_non_exhaustive()
    }
}

/// min, max, avg and count of one variable.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VariableStatistics {
    pub variable: String,
    pub min: f64,
    pub max: f64,
    pub avg: f64,
    pub count: i64,
}

impl QueryEngine {
    pub fn new(args: QueryEngineArgs) -> Result<Self> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, "public");
        if let Some(n) = args.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        // No spilling to disk: the memory bound is the bound, and a query beyond it fails.
        let no_spill = || {
            RuntimeEnvBuilder::new().with_disk_manager_builder(
                DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
            )
        };
        let mut runtime = no_spill();
        if let Some(bytes) = args.limits.memory_bytes {
            runtime = runtime.with_memory_limit(bytes, 1.0);
        }
        let runtime = runtime.build_arc().map_err(Error::from_datafusion)?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let url = ObjectStoreUrl::parse(STORE_URL).map_err(Error::from_datafusion)?;
        ctx.register_object_store(url.as_ref(), args.object_store);
        // The same object stores, without the memory bound.
        let unbounded = no_spill()
            .with_object_store_registry(Arc::clone(&ctx.runtime_env().object_store_registry))
            .build_arc()
            .map_err(Error::from_datafusion)?;
        ctx.register_table("readings", Arc::new(ReadingsTable::new(args.source, url)))
            .map_err(Error::from_datafusion)?;
        ctx.add_optimizer_rule(Arc::new(RollupRule));
        for selector in crate::selectors::selectors() {
            ctx.register_udaf(selector);
        }
        for function in crate::gapfill::functions() {
            ctx.register_udf(function);
        }
        // What Postgres clients ask on connect (psql's `\d`, Grafana's and DBeaver's catalog queries).
        datafusion_pg_catalog::setup_pg_catalog(&ctx, CATALOG, EmptyContextProvider)
            .map_err(|e| Error::from_datafusion(*e))?;
        Ok(Self {
            ctx,
            unbounded,
            limits: args.limits,
            slots: Arc::new(Semaphore::new(args.limits.concurrency.max(1))),
            latency: None,
        })
    }

    /// Observes each user query's time, from admission to the end of its stream.
    pub fn with_latency(mut self, histogram: prometheus::Histogram) -> Self {
        self.latency = Some(histogram);
        self
    }

    /// [`QueryEngine::execute`] for a user's query: refused when every slot is taken, and its
    /// stream fails once it has run longer than the timeout (the slot is held until the stream
    /// ends or is dropped). Internal queries (the rebuild at start) are not bounded.
    pub async fn execute_limited(
        &self,
        sql: &str,
    ) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let admission = self.admit(None)?;
        let (schema, stream) = admission.within(self.execute(sql)).await??;
        Ok((schema, admission.bound(stream)))
    }

    /// A slot for one user query, and its deadline: `--query-timeout` from now, or a session's
    /// own shorter `timeout` (Postgres' `statement_timeout`). Refused when every slot is taken.
    pub fn admit(&self, timeout: Option<Duration>) -> Result<Admission> {
        let permit = Arc::clone(&self.slots)
            .try_acquire_owned()
            .map_err(|_| Error::Busy {
                running: self.limits.concurrency,
            })?;
        let (timeout, setting) = match timeout {
            Some(t) if t < self.limits.timeout => (t, "statement_timeout"),
            _ => (self.limits.timeout, "--query-timeout"),
        };
        Ok(Admission {
            permit,
            deadline: tokio::time::Instant::now() + timeout,
            timeout,
            setting,
            started: std::time::Instant::now(),
            latency: self.latency.clone(),
        })
    }

    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plans a read-only statement: DDL, DML and `SET` are refused.
    pub async fn plan(&self, sql: &str) -> Result<DataFrame> {
        Self::plan_in(self.ctx.state(), sql).await
    }

    async fn plan_in(state: SessionState, sql: &str) -> Result<DataFrame> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let plan = state
            .create_logical_plan(sql)
            .await
            .map_err(Error::from_datafusion)?;
        options.verify_plan(&plan).map_err(Error::from_datafusion)?;
        let plan = crate::gapfill::fill_gaps(plan, &state).map_err(Error::from_datafusion)?;
        Ok(DataFrame::new(state, plan))
    }

    /// Plans a read-only statement ([`QueryEngine::plan`]) and starts it.
    pub async fn execute(&self, sql: &str) -> Result<(SchemaRef, SendableRecordBatchStream)> {
        let df = self.plan(sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await.map_err(Error::from_datafusion)?;
        Ok((schema, stream))
    }

    /// Runs a user's statement to completion, within the limits.
    pub async fn sql_limited(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        use futures::TryStreamExt;
        let (schema, stream) = self.execute_limited(sql).await?;
        let batches = stream.try_collect().await.map_err(Error::from_datafusion)?;
        Ok((schema, batches))
    }

    /// Runs an internal statement to completion: outside the users' limits and memory pool.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(Arc::clone(&self.unbounded))
            .build();
        let df = Self::plan_in(state, sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await.map_err(Error::from_datafusion)?;
        Ok((schema, batches))
    }

    /// min, max, avg, count per variable of one device, within `[from, to)` (epoch ms).
    pub async fn device_statistics(
        &self,
        device: &str,
        from_ms: Option<i64>,
        to_ms: Option<i64>,
        variable: Option<&str>,
    ) -> Result<Vec<VariableStatistics>> {
        let ts = |ms| {
            lit(ScalarValue::TimestampMillisecond(
                Some(ms),
                Some("UTC".into()),
            ))
        };
        let mut filter = col(DEVICE).eq(lit(device));
        if let Some(from) = from_ms {
            filter = filter.and(col(TIME).gt_eq(ts(from)));
        }
        if let Some(to) = to_ms {
            filter = filter.and(col(TIME).lt(ts(to)));
        }
        if let Some(v) = variable {
            filter = filter.and(col(VARIABLE).eq(lit(v)));
        }
        let df = self
            .ctx
            .table("readings")
            .await
            .and_then(|t| t.filter(filter))
            .and_then(|t| {
                t.aggregate(
                    vec![col(VARIABLE)],
                    vec![
                        min(col(VALUE)).alias("min"),
                        max(col(VALUE)).alias("max"),
                        avg(col(VALUE)).alias("avg"),
                        count(col(VALUE)).alias("count"),
                    ],
                )
            })
            .and_then(|t| t.sort_by(vec![col(VARIABLE)]))
            .map_err(Error::from_datafusion)?;
        let batches = df.collect().await.map_err(Error::from_datafusion)?;
        let mut out = Vec::new();
        for b in &batches {
            let variables = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
            let var = variables.as_any().downcast_ref::<StringArray>();
            let mn = b.column(1).as_any().downcast_ref::<Float64Array>();
            let mx = b.column(2).as_any().downcast_ref::<Float64Array>();
            let av = b.column(3).as_any().downcast_ref::<Float64Array>();
            let ct = b.column(4).as_any().downcast_ref::<Int64Array>();
            let (Some(var), Some(mn), Some(mx), Some(av), Some(ct)) = (var, mn, mx, av, ct) else {
                return Err(Error::Execution(
                    datafusion::error::DataFusionError::Internal(
                        "unexpected statistics schema".into(),
                    ),
                ));
            };
            for i in 0..b.num_rows() {
                out.push(VariableStatistics {
                    variable: var.value(i).to_string(),
                    min: mn.value(i),
                    max: mx.value(i),
                    avg: av.value(i),
                    count: ct.value(i),
                });
            }
        }
        Ok(out)
    }
}

/// The types of `$1`, `$2`, ... in order: as DataFusion infers them from their use, else from
/// a cast (`$1::int`), else unknown (the client's own type, or text, decides).
pub(crate) fn parameter_types(plan: &LogicalPlan) -> Result<Vec<Option<DataType>>> {
    let mut inferred = plan.get_parameter_types().map_err(Error::from_datafusion)?;
    let _ = plan.apply(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|e| {
                if let Expr::Cast(c) = e {
                    if let Expr::Placeholder(p) = c.expr.as_ref() {
                        let slot = inferred.entry(p.id.clone()).or_insert(None);
                        if slot.is_none() {
                            *slot = Some(c.field.data_type().clone());
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    let mut numbered: Vec<(usize, Option<DataType>)> = inferred
        .into_iter()
        .filter_map(|(id, t)| Some((id.strip_prefix('$')?.parse().ok()?, t)))
        .collect();
    numbered.sort_by_key(|(n, _)| *n);
    let count = numbered.last().map_or(0, |(n, _)| *n);
    let mut types = vec![None; count];
    for (n, t) in numbered {
        types[n - 1] = t;
    }
    Ok(types)
}

/// One admitted user query ([`QueryEngine::admit`]): its slot, held until its stream ends, and
/// its deadline.
#[derive(Debug)]
pub struct Admission {
    permit: OwnedSemaphorePermit,
    deadline: tokio::time::Instant,
    timeout: Duration,
    setting: &'static str,
    started: std::time::Instant,
    latency: Option<prometheus::Histogram>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(h) = &self.latency {
            h.observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Admission {
    /// Runs `work` (planning, starting the stream) within the deadline.
    pub async fn within<T>(&self, work: impl std::future::Future<Output = T>) -> Result<T> {
        tokio::time::timeout_at(self.deadline, work)
            .await
            .map_err(|_| Error::from_datafusion(self.timed_out()))
    }

    /// `stream`, failing once the deadline passes; the slot is given back when it ends.
    pub fn bound(self, stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
        let schema = stream.schema();
        let bounded = futures::stream::unfold(Some((stream, self)), |state| async move {
            let (mut stream, admission) = state?;
            match tokio::time::timeout_at(admission.deadline, stream.next()).await {
                Ok(Some(item)) => Some((item, Some((stream, admission)))),
                Ok(None) => None,
                Err(_) => Some((Err(admission.timed_out()), None)),
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, bounded))
    }

    fn timed_out(&self) -> datafusion::error::DataFusionError {
        let _slot = &self.permit;
        datafusion::error::DataFusionError::Execution(format!(
            "the query {TIMEOUT_MARK} {}s ({}) and was stopped",
            self.timeout.as_secs_f64(),
            self.setting
        ))
    }
}
