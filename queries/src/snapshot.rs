//! A table whose rows come from a snapshot taken at each scan: the adapter for the tables the
//! upper layers keep (`rule_firings`, `notifications`): rows in memory and, for a table
//! persisted as a log, the Parquet files of its sealed segments.

use std::fmt::Debug;
use std::sync::Arc;

use aemos_storage::{ParquetFile, ReadSnapshot};
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_plan::ExecutionPlan;

use crate::provider::{projected_schema, scan_parquet, union_or_empty, TimeRange};

/// Gives the current rows of a table.
pub trait SnapshotSource: Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    /// The rows in memory now.
    fn batches(&self) -> Vec<RecordBatch>;
    /// The rows now, each exactly once: batches in memory and files in `schema` (with a
    /// `time` column when there are files, which prunes them by the query's time bounds).
    /// A table kept in memory only has no files.
    fn snapshot(&self) -> ReadSnapshot {
        ReadSnapshot {
            batches: self.batches(),
            files: Vec::new(),
        }
    }
}

#[derive(Debug)]
pub struct SnapshotTable {
    source: Arc<dyn SnapshotSource>,
    store_url: ObjectStoreUrl,
}

impl SnapshotTable {
    pub fn new(source: Arc<dyn SnapshotSource>) -> Self {
        Self {
            source,
            store_url: ObjectStoreUrl::parse(crate::engine::STORE_URL).expect("a valid url"),
        }
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
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
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.source.schema();
        let ReadSnapshot { batches, files } = self.source.snapshot();
        let range = TimeRange::from_filters(filters);
        let files: Vec<&ParquetFile> = files.iter().filter(|f| range.overlaps(f)).collect();
        let mut inputs = Vec::new();
        if !files.is_empty() {
            let target = state.config().target_partitions().max(1).min(files.len());
            let mut groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); target];
            for (i, file) in files.iter().enumerate() {
                groups[i % target].push(PartitionedFile::new(file.path.clone(), file.size_bytes));
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
        if !batches.is_empty() {
            let table = MemTable::try_new(Arc::clone(&schema), vec![batches])?;
            inputs.push(table.scan(state, projection, filters, limit).await?);
        }
        union_or_empty(inputs, projected_schema(&schema, projection)?)
    }
}
