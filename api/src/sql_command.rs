//! `aemos sql "SELECT ..."`: one query against a data directory or object store, no server.

use std::io::Write;
use std::sync::Arc;

use aemos_queries::{encode, OutputFormat, QueryEngine, QueryEngineArgs, StaticSource};
use aemos_storage::{read_only_snapshot, ObjectStoreConfig};

use crate::cli::SqlArgs;

pub async fn run(args: SqlArgs) -> anyhow::Result<()> {
    let url = args.store.object_store_url()?;
    let object_store = ObjectStoreConfig::from_url(&url)?;
    let snapshot = read_only_snapshot(&args.store.data_dir, &object_store).await?;
    let engine = QueryEngine::new(QueryEngineArgs {
        source: Arc::new(StaticSource(snapshot)),
        object_store: Arc::clone(&object_store.store),
        target_partitions: None,
        limits: Default::default(),
    })?;
    let (schema, batches) = engine.sql(&args.sql).await?;
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
