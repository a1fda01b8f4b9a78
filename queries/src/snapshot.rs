//! A table whose rows come from a snapshot taken at each scan: the adapter for small tables
//! kept in memory by the upper layers (`rule_firings`).

use std::fmt::Debug;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::ExecutionPlan;

/// Gives the current rows of a table.
pub trait SnapshotSource: Debug + Send + Sync + 'static {
    fn schema(&self) -> SchemaRef;
    fn batches(&self) -> Vec<RecordBatch>;
}

#[derive(Debug)]
pub struct SnapshotTable {
    source: Arc<dyn SnapshotSource>,
}

impl SnapshotTable {
    pub fn new(source: Arc<dyn SnapshotSource>) -> Self {
        Self { source }
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

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let table = MemTable::try_new(self.source.schema(), vec![self.source.batches()])?;
        table.scan(state, projection, filters, limit).await
    }
}
