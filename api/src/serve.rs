//! `aemos serve`: components started in dependency order, stopped in reverse.

use std::sync::Arc;

use aemos_queries::{QueryEngine, QueryEngineArgs};
use aemos_storage::{ObjectStoreConfig, Storage, StorageArgs, SystemClock};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::cli::ServeArgs;
use crate::http::{router, AppState, RouterArgs};
use crate::metrics::Metrics;
use crate::rules::{Rules, RulesArgs};

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // 1. The rule engine, its firings held back until its state is rebuilt (4).
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut engine_args = aemos_engine::EngineArgs::new(workers);
    engine_args.tick = args.engine_tick;
    let rules = Rules::start(RulesArgs {
        firings_dir: args.store.data_dir.join("firings"),
        engine: engine_args,
    })?;

    // 2. Storage: WAL replay completes before anything is served; durable batches feed the
    // engine from here on.
    let url = args.store.object_store_url()?;
    let object_store = ObjectStoreConfig::from_url(&url)?;
    let mut storage_args = StorageArgs::new(
        args.store.data_dir.clone(),
        object_store,
        Arc::new(SystemClock),
    );
    storage_args.persist_interval = args.persist_interval;
    storage_args.persist_rows = args.persist_rows;
    storage_args.retention = args.retention;
    storage_args.compaction_min_files = args.compaction_min_files;
    storage_args.wal_queue = args.wal_queue;
    storage_args.max_buffered_rows = args.max_buffered_rows;
    storage_args.observer = Some(rules.observer());
    let storage = Storage::open(storage_args)
        .await
        .context("opening storage")?;
    let (stop_storage, storage_stopped) = watch::channel(false);
    let background = tokio::spawn(Arc::clone(&storage).run_background(storage_stopped));

    // 3. Queries over storage.
    let queries = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: args.query_partitions,
    })?;
    rules.register_tables(&queries)?;

    // 4. Chains from the catalog, engine state from storage, the firing log reconciled.
    let chains = rules
        .restore(&storage, &queries)
        .await
        .context("rebuilding the rule engine")?;
    info!(chains, workers, "rule engine ready");

    // 5. HTTP.
    let state = AppState {
        storage: Arc::clone(&storage),
        queries,
        metrics: Metrics::new(),
        rules: rules.clone(),
    };
    let app = router(RouterArgs {
        state,
        max_body_bytes: args.max_body_bytes,
    });
    let listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    info!(%http_addr, object_store = %url, data_dir = %args.store.data_dir.display(), "aemos listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    // Reverse order: HTTP has drained; persist what the buffer holds.
    info!("shutting down: persisting the buffer");
    let _ = stop_storage.send(true);
    background.await?;
    rules.engine.shutdown();
    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
