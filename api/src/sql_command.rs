//! `aemos sql "SELECT ..."`: one query against a data directory or object store, no server;
//! without a query, the interactive shell ([`crate::sql_shell`]).

use std::io::Write;
use std::sync::Arc;

use aemos_queries::{encode, OutputFormat, QueryEngine, QueryEngineArgs, StaticSource};
use aemos_storage::{read_only_snapshot, ObjectStoreConfig};

use crate::cli::{SqlArgs, StoreArgs};

/// A query engine over a snapshot of what `store` holds: its files and the WAL's records not
/// yet persisted, read without changing anything.
async fn open(store: StoreArgs) -> anyhow::Result<QueryEngine> {
    let url = store.object_store_url()?;
    let object_store = ObjectStoreConfig::from_url(&url)?;
    let snapshot = read_only_snapshot(&store.data_dir, &object_store).await?;
    Ok(QueryEngine::new(QueryEngineArgs {
        source: Arc::new(StaticSource(snapshot)),
        object_store: Arc::clone(&object_store.store),
        target_partitions: None,
        limits: Default::default(),
    })?)
}

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let Some(sql) = args.sql else {
        let store = args.store;
        return crate::sql_shell::run(Box::new(move || Box::pin(open(store.clone())))).await;
    };
    let engine = open(args.store).await?;
    let (schema, batches) = engine.sql(&sql).await?;
    let mut stdout = std::io::stdout().lock();
    if args.format == "table" {
        writeln!(
            stdout,
            "{}",
            arrow::util::pretty::pretty_format_batches(&batches)?
        )?;
    } else {
        let format = OutputFormat::parse(&args.format)?;
        stdout.write_all(&encode(format, &schema, &batches)?)?;
    }
    Ok(())
}
