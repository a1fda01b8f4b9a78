//! Start-up: chains come back from storage, the engine's state (latest values, window
//! contents) is rebuilt from storage, and the firing log is reconciled with the rebuilt state,
//! all before the server is ready. The engine's calls, which wait for room in its channels,
//! and the firing log's fsync run on blocking threads, not on the runtime's.

use std::collections::HashMap;
use std::sync::Arc;

use aemos_engine::{ChainSpec, Engine, Input, Reading};
use aemos_queries::QueryEngine;
use aemos_storage::Storage;
use anyhow::Context;
use arrow::array::{Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::DataType;
use tracing::{info, warn};

use super::firings::{FiringLog, FiringRecord};
use crate::devices::presence;
use crate::notify::notify_targets;

/// The storage namespace of rule chains: `{prefix}/documents/rulechains/{id}.json`.
pub const CHAINS: &str = "rulechains";

/// Registers every stored chain; a stored chain that no longer compiles is logged and skipped.
pub async fn restore_chains(storage: &Storage, engine: &Arc<Engine>) -> anyhow::Result<usize> {
    let mut specs = Vec::new();
    for doc in storage.documents(CHAINS).await? {
        match serde_json::from_value::<ChainSpec>(doc) {
            Ok(s) => specs.push(s),
            Err(e) => warn!(error = %e, "stored rule chain does not parse; skipped"),
        }
    }
    let engine = Arc::clone(engine);
    let restored = tokio::task::spawn_blocking(move || {
        let mut restored = 0;
        for spec in specs {
            let id = spec.id.clone();
            match engine.upsert(spec) {
                Ok(_) => restored += 1,
                Err(e) => warn!(%id, error = %e, "stored rule chain refused; skipped"),
            }
        }
        restored
    })
    .await?;
    Ok(restored)
}

/// Feeds readings from a blocking thread (a full feed channel blocks the caller).
async fn feed(engine: &Arc<Engine>, readings: Vec<Reading>) -> anyhow::Result<()> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || engine.feed(readings)).await??;
    Ok(())
}

type Columns = (
    StringArray,
    StringArray,
    Int64Array,
    Float64Array,
    StringArray,
);

fn columns(b: &RecordBatch) -> anyhow::Result<Columns> {
    let cast = |i: usize, t: &DataType| arrow::compute::cast(b.column(i), t);
    let s = cast(0, &DataType::Utf8)?;
    let v = cast(1, &DataType::Utf8)?;
    let t = cast(2, &DataType::Int64)?;
    let x = cast(3, &DataType::Float64)?;
    let d = cast(4, &DataType::Utf8)?;
    let get = |a: &dyn Array| a.to_data();
    Ok((
        StringArray::from(get(s.as_ref())),
        StringArray::from(get(v.as_ref())),
        Int64Array::from(get(t.as_ref())),
        Float64Array::from(get(x.as_ref())),
        StringArray::from(get(d.as_ref())),
    ))
}

/// Feeds the result of `sql` (sensor, variable, time, value, device) to the engine, 10,000 per
/// tick, and notes each device's newest time in `seen`.
async fn feed_query(
    queries: &QueryEngine,
    engine: &Arc<Engine>,
    sql: &str,
    seen: &mut HashMap<String, i64>,
) -> anyhow::Result<usize> {
    let (_, batches) = queries
        .sql(sql)
        .await
        .with_context(|| format!("rebuild query {sql}"))?;
    let mut readings = Vec::new();
    let mut total = 0;
    for b in &batches {
        let (s, v, t, x, d) = columns(b)?;
        for i in 0..b.num_rows() {
            match seen.get_mut(d.value(i)) {
                Some(newest) => *newest = (*newest).max(t.value(i)),
                None => {
                    seen.insert(d.value(i).to_owned(), t.value(i));
                }
            }
            if x.is_null(i) {
                continue;
            }
            readings.push(Reading::new(s.value(i), v.value(i), t.value(i), x.value(i)));
            if readings.len() == 10_000 {
                total += readings.len();
                feed(engine, std::mem::take(&mut readings)).await?;
            }
        }
    }
    total += readings.len();
    feed(engine, readings).await?;
    Ok(total)
}

/// Feeds the newest reading of each key older than `before` (the others come with the
/// windows' readings), 10,000 per tick, and notes each device's newest time in `seen`.
async fn feed_newest(
    engine: &Arc<Engine>,
    newest: aemos_storage::summary::NewestByKey,
    before: Option<i64>,
    seen: &mut HashMap<String, i64>,
) -> anyhow::Result<usize> {
    let mut readings = Vec::new();
    let mut total = 0;
    for ((device, sensor, variable), (time, value)) in newest {
        if before.is_none_or(|t| time < t) {
            readings.push(Reading::new(&sensor, &variable, time, value));
            if readings.len() == 10_000 {
                total += readings.len();
                feed(engine, std::mem::take(&mut readings)).await?;
            }
        }
        let newest_seen = seen.entry(device).or_insert(time);
        *newest_seen = (*newest_seen).max(time);
    }
    total += readings.len();
    feed(engine, readings).await?;
    Ok(total)
}

/// Rebuilds latest values and window contents from storage (buffer and Parquet), waits for the
/// engine to take them in, then reconciles the firing log with the engine's state.
///
/// The newest reading of each key comes from the files' summaries and the buffer
/// (`Storage::newest_per_key`), so a start costs the number of keys, not the history kept;
/// only the readings within the longest aggregate window are read row by row. Files written
/// before summaries kept the newest reading are read with a `GROUP BY` instead.
pub async fn rebuild(
    storage: &Storage,
    queries: &QueryEngine,
    engine: &Arc<Engine>,
    firings: &Arc<FiringLog>,
    now_ms: i64,
) -> anyhow::Result<()> {
    let chains = engine.chains();
    // A `no_data` window (`Recent`) needs only to know whether its sensor sent anything within
    // it: the newest reading of each key, which the first query feeds with its own time, says
    // so. Only aggregate windows need every reading within them. (Every device's presence is a
    // 10-minute `no_data`: counting it here made a start read the last 10 minutes of every
    // sensor into memory.)
    let longest = chains
        .iter()
        .flat_map(|c| c.inputs.iter())
        .filter_map(|i| match i {
            Input::Window { window_ms, .. } => Some(*window_ms),
            Input::Recent { .. } | Input::Latest { .. } => None,
        })
        .max();
    // Every reading within the longest window (they fill the windows, and the newest of each
    // key is its latest value), and for the other keys their newest reading: each reading once.
    let since = longest.map(|w| now_ms - w);
    let older = since.map_or(String::new(), |t| {
        format!(" HAVING max(time) < to_timestamp_millis({t})")
    });
    let mut seen = HashMap::new();
    let latest = match storage.newest_per_key().await? {
        Some(newest) => feed_newest(engine, newest, since, &mut seen).await?,
        None => {
            info!("files without the newest reading in their summary: reading their rows");
            let sql = format!(
                "SELECT sensor, variable, max(time) AS time, last_value(value ORDER BY time) \
                 AS value, device FROM readings GROUP BY sensor, variable, device{older}"
            );
            feed_query(queries, engine, &sql, &mut seen).await?
        }
    };
    let mut windowed = 0;
    if let Some(t) = since {
        let sql = format!(
            "SELECT sensor, variable, time, value, device FROM readings \
             WHERE time >= to_timestamp_millis({t}) ORDER BY time"
        );
        windowed = feed_query(queries, engine, &sql, &mut seen).await?;
    }
    // When each device was last seen, for presence (the feed's `$device:` readings).
    let seen: Vec<Reading> = seen
        .iter()
        .map(|(device, time)| {
            Reading::new(
                &presence::seen_sensor(device),
                presence::SEEN_VARIABLE,
                *time,
                1.0,
            )
        })
        .collect();
    feed(engine, seen).await?;
    let waiting = Arc::clone(engine);
    tokio::task::spawn_blocking(move || waiting.sync()).await??;
    let mut changes = Vec::new();
    for chain in &chains {
        let Some(status) = engine.status(chain.id()) else {
            continue;
        };
        if firings.last_active(chain.id()).unwrap_or(false) != status.active {
            let values = status
                .values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect();
            changes.push(FiringRecord {
                time: now_ms,
                chain: chain.id().to_owned(),
                device: chain.spec.device().to_owned(),
                kind: if status.active {
                    "restored-activated"
                } else {
                    "restored-cleared"
                }
                .to_owned(),
                active: status.active,
                values,
                fields: Default::default(),
                notify: notify_targets(&chain.spec, status.active, false),
                commands: crate::commands::rule::command_targets(&chain.spec, status.active),
            });
        }
    }
    for watched in engine.watched() {
        let chain = presence::chain_id(watched.device());
        let offline = !watched.online();
        if firings
            .last_active(&chain)
            .unwrap_or_else(|| presence::presumed_active(&chain))
            != offline
        {
            let kind = if offline {
                "restored-activated"
            } else {
                "restored-cleared"
            };
            changes.push(presence::record(watched.device(), kind, offline, now_ms));
        }
    }
    let reconciled = changes.len();
    let log = Arc::clone(firings);
    tokio::task::spawn_blocking(move || log.append(&changes)).await??;
    info!(latest, windowed, reconciled, "engine state rebuilt");
    Ok(())
}
