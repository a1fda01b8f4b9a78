//! Rule chains in the server: the engine fed from the WAL, chains stored beside the data,
//! firings recorded, and the state rebuilt on start.
//!
//! Start order ([`Rules::start`], then storage with [`Rules::observer`], then
//! [`Rules::restore`]): the engine starts with firings held back; chains come back from
//! storage; latest values and windows are rebuilt from storage; the firing log is reconciled;
//! only then are firings recorded, and only then does the server listen.

mod feed;
mod firing_segments;
mod firings;
mod firings_table;
mod rebuild;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use aemos_engine::{Engine, EngineArgs, PresenceSpec};
use aemos_queries::{QueryEngine, SnapshotTable};
use aemos_storage::{DurableObserver, Storage};
use anyhow::Context;
use tokio::sync::watch;

pub use feed::EngineFeed;
pub use firings::{
    spawn_writer, FiringLog, FiringLogArgs, FiringRecord, MAX_RECENT, SEAL_AFTER, SEGMENT_RECORDS,
};
pub use firings_table::{
    persist_sealed, rule_firings_schema, run_persister, FiringsTable, RULE_FIRINGS,
};
pub use rebuild::{rebuild, restore_chains, CHAINS};

/// Firings queued for the log before the engine is held back.
const FIRING_QUEUE: usize = 4096;

pub struct RulesArgs {
    /// The firing log (`{data-dir}/firings`) and the notifier numbering its records.
    pub firings: FiringLogArgs,
    pub engine: EngineArgs,
}

/// The rule engine and the record of its firings.
#[derive(Clone)]
pub struct Rules {
    pub engine: Arc<Engine>,
    pub firings: Arc<FiringLog>,
    /// Serializes the API's chain writes (check, store, install), so that two requests for one
    /// id cannot both pass the check, and the stored document is the one the engine runs.
    pub writes: Arc<tokio::sync::Mutex<()>>,
    /// Device-seen marks fed to the engine beside the readings (see `feed`).
    pub presence_marks: Arc<AtomicU64>,
    live: Arc<AtomicBool>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").finish_non_exhaustive()
    }
}

impl Rules {
    /// Starts the engine and the firing writer; firings are dropped until [`Rules::restore`].
    pub fn start(args: RulesArgs) -> anyhow::Result<Self> {
        let dir = args.firings.dir.clone();
        let firings = FiringLog::open(args.firings)
            .with_context(|| format!("opening the firing log in {}", dir.display()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(FIRING_QUEUE);
        spawn_writer(Arc::clone(&firings), rx)?;
        let live = Arc::new(AtomicBool::new(false));
        let sink_live = Arc::clone(&live);
        let engine = Engine::start(args.engine, move |f| {
            if sink_live.load(Ordering::Acquire) {
                let _ = tx.send(f);
            }
        })?;
        Ok(Self {
            engine: Arc::new(engine),
            firings,
            writes: Arc::default(),
            presence_marks: Arc::default(),
            live,
        })
    }

    /// What storage calls with every durable group of readings.
    pub fn observer(&self) -> Arc<dyn DurableObserver> {
        Arc::new(EngineFeed::new(
            Arc::clone(&self.engine),
            Arc::clone(&self.presence_marks),
        ))
    }

    /// Registers `rule_firings` with the query engine and starts persisting the firing log's
    /// sealed segments to it, until `stop`.
    pub fn register_tables(
        &self,
        queries: &QueryEngine,
        storage: &Arc<Storage>,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        tokio::spawn(run_persister(
            Arc::clone(&self.firings),
            Arc::clone(storage),
            stop,
        ));
        let table = SnapshotTable::new(Arc::new(FiringsTable {
            log: Arc::clone(&self.firings),
            storage: Arc::clone(storage),
        }));
        queries
            .context()
            .register_table("rule_firings", Arc::new(table))?;
        Ok(())
    }

    /// Restores chains, watches the devices' presence (in one tick), rebuilds the engine's
    /// state from storage, reconciles the firing log, then lets firings through.
    pub async fn restore(
        &self,
        storage: &Storage,
        queries: &QueryEngine,
        presence: Vec<PresenceSpec>,
    ) -> anyhow::Result<usize> {
        let chains = restore_chains(storage, &self.engine).await?;
        let engine = Arc::clone(&self.engine);
        tokio::task::spawn_blocking(move || engine.watch(presence)).await??;
        rebuild(
            storage,
            queries,
            &self.engine,
            &self.firings,
            storage.now_ms(),
        )
        .await?;
        self.live.store(true, Ordering::Release);
        Ok(chains)
    }
}
