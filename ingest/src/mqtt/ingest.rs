//! The ingest link: drains the router, decodes, writes, reports refusals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aemos_storage::schema::ReadingsBuilder;
use aemos_storage::{Priority, Storage};
use arrow::array::RecordBatch;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rumqttd::local::{LinkRx, LinkTx};
use rumqttd::Notification;
use serde_json::json;
use tracing::{error, warn};

use super::{device_of_telemetry, errors_topic, EmbeddedStatus, MqttMetrics, TELEMETRY_FILTER};
use crate::validate::check_device;
use crate::{
    stage_device_payload, DecodeArgs, EdgeAuthorizer, RejectReason, RejectionCounts, StagedReadings,
};

/// Writes in flight at once: enough for publishes to share group commits.
pub(super) const MAX_IN_FLIGHT: usize = 4;
/// Readings gathered into one write at most.
pub(super) const MAX_BATCH_ROWS: usize = 65_536;

pub(super) async fn run(
    mut tx: LinkTx,
    mut rx: LinkRx,
    storage: Arc<Storage>,
    metrics: MqttMetrics,
    authorizer: Option<Arc<dyn EdgeAuthorizer>>,
    status: Arc<EmbeddedStatus>,
) {
    if let Err(e) = tx.subscribe(TELEMETRY_FILTER) {
        error!(error = %e, "mqtt: subscribing the ingest link failed");
        return;
    }
    let mut in_flight = FuturesUnordered::new();
    let mut gathering = Gathering::default();
    // Offsets in the router's log of the telemetry filter are consecutive; a gap is what the
    // router dropped because this link fell too far behind.
    let mut last_offset: Option<u64> = None;
    loop {
        tokio::select! {
            next = rx.next(), if in_flight.len() < MAX_IN_FLIGHT => {
                let first = match next {
                    Ok(n) => n,
                    Err(e) => {
                        error!(error = %e, "mqtt: the ingest link closed");
                        break;
                    }
                };
                let received = Instant::now();
                let mut woken = false;
                let mut notification = first;
                loop {
                    match notification {
                        Some(Notification::Forward(forward)) => {
                            if let Some((_, offset)) = forward.cursor {
                                if let Some(prev) = last_offset {
                                    if offset > prev + 1 {
                                        metrics.dropped_publishes.inc_by(offset - prev - 1);
                                        status.dropped(offset - prev - 1);
                                    }
                                }
                                last_offset = Some(offset);
                                status.read_through(offset);
                            }
                            let publish = forward.publish;
                            let taken = gathering.decode(&storage, &metrics, authorizer.as_deref(), &publish.topic, &publish.payload);
                            if let Taken::Refused { topic, body } = taken {
                                let _ = tx.try_publish(topic, body.to_string());
                            }
                        }
                        Some(Notification::Unschedule) if !woken => {
                            woken = true;
                        }
                        _ => {}
                    }
                    if gathering.rows() >= MAX_BATCH_ROWS {
                        break;
                    }
                    match rx.next().now_or_never() {
                        Some(Ok(n @ Some(_))) => notification = n,
                        _ => break,
                    }
                }
                if woken {
                    // The router paused this link when its buffer filled; ask for more.
                    if let Err(e) = rx.wake().await {
                        error!(error = %e, "mqtt: waking the router failed");
                        break;
                    }
                }
                if let Some(batch) = gathering.take() {
                    let lost = metrics.lost_readings.clone();
                    let rows = batch.num_rows();
                    in_flight.push(write(Arc::clone(&storage), batch, received, metrics.clone(), None).map(move |written| {
                        // The broker acknowledged them already.
                        if !written {
                            lost.inc_by(rows as u64);
                        }
                    }));
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    while in_flight.next().await.is_some() {}
}

/// The readings of the publishes gathered for one write, appended to one builder as each
/// publish is taken whole (a builder and a batch per publish, then concatenated, cost about a
/// dozen allocations per reading).
#[derive(Debug, Default)]
pub(super) struct Gathering {
    builder: Option<ReadingsBuilder>,
    /// The publish being decoded.
    staged: StagedReadings,
    /// Rows of the previous write: the next builder's capacity.
    capacity: usize,
}

impl Gathering {
    /// Readings gathered since the last [`Gathering::take`].
    pub(super) fn rows(&self) -> usize {
        self.builder.as_ref().map_or(0, ReadingsBuilder::len)
    }

    /// Decodes one publish on a telemetry topic (counted in `metrics`) and gathers its
    /// readings if it is taken whole.
    pub(super) fn decode(
        &mut self,
        storage: &Storage,
        metrics: &MqttMetrics,
        authorizer: Option<&dyn EdgeAuthorizer>,
        topic: &[u8],
        payload: &[u8],
    ) -> Taken {
        let taken = decode_publish(
            storage,
            metrics,
            authorizer,
            topic,
            payload,
            &mut self.staged,
        );
        if matches!(taken, Taken::Readings(n) if n > 0) {
            let capacity = self.capacity.max(self.staged.len());
            let builder = self
                .builder
                .get_or_insert_with(|| ReadingsBuilder::with_capacity(capacity));
            self.staged.append_to(builder);
        }
        taken
    }

    /// The gathered readings as one batch, if there are any; gathering starts over.
    pub(super) fn take(&mut self) -> Option<RecordBatch> {
        let batch = self.builder.take()?.finish();
        self.capacity = batch.num_rows().min(MAX_BATCH_ROWS);
        Some(batch)
    }
}

/// What one telemetry publish comes to.
#[derive(Debug)]
pub(super) enum Taken {
    /// Its valid readings (possibly none), gathered.
    Readings(usize),
    /// Refused whole: the errors topic to tell and what to tell it.
    Refused {
        topic: String,
        body: serde_json::Value,
    },
    /// Not a telemetry topic, or a device id that cannot be answered.
    Ignored,
}

/// Decodes one publish into `staged`, counted in `metrics`.
fn decode_publish(
    storage: &Storage,
    metrics: &MqttMetrics,
    authorizer: Option<&dyn EdgeAuthorizer>,
    topic: &[u8],
    payload: &[u8],
    staged: &mut StagedReadings,
) -> Taken {
    metrics.publishes.inc();
    let topic = String::from_utf8_lossy(topic);
    let Some(device) = device_of_telemetry(&topic) else {
        // The links only subscribe to telemetry; anything else is the router's business.
        return Taken::Ignored;
    };
    if let Err(reason) = check_device(device) {
        metrics.rejected_publishes.inc();
        warn!(%topic, %reason, "mqtt: refused a publish");
        return Taken::Ignored;
    }
    let refuse = |body: serde_json::Value| {
        metrics.rejected_publishes.inc();
        Taken::Refused {
            topic: errors_topic(device),
            body,
        }
    };
    let scope = authorizer.and_then(|a| a.mqtt_scope(device));
    let args = DecodeArgs::for_storage(storage).with_scope(scope);
    let decoded = stage_device_payload(device, payload, &args, staged);
    let rejected = match &decoded {
        Ok(decoded) => decoded.rejected_by,
        Err(_) => RejectionCounts::one(RejectReason::Malformed),
    };
    for (reason, n) in rejected.iter() {
        metrics
            .rejected_readings
            .with_label_values(&["mqtt", reason.name()])
            .inc_by(n);
    }
    match decoded {
        Ok(decoded) if decoded.rejected_count == 0 => Taken::Readings(decoded.accepted()),
        Ok(decoded) => refuse(json!({
            "topic": topic,
            "error": format!("{} of {} readings rejected; nothing was stored", decoded.rejected_count, decoded.rejected_count + decoded.accepted()),
            "rejected": decoded.rejected,
        })),
        Err(e) => refuse(json!({"topic": topic, "error": e.to_string()})),
    }
}

/// Writes the gathered readings, waiting out overload: the broker has acknowledged them (or,
/// with an external broker, will once this returns `true`). `tag` (key, value) goes into the
/// WAL record with them.
pub(super) async fn write(
    storage: Arc<Storage>,
    batch: RecordBatch,
    received: Instant,
    metrics: MqttMetrics,
    tag: Option<(String, String)>,
) -> bool {
    let rows = batch.num_rows();
    let mut backoff = Duration::from_millis(5);
    loop {
        let written = match &tag {
            Some((key, value)) => {
                storage
                    .write_tagged(batch.clone(), Priority::Normal, (key, value))
                    .await
            }
            None => storage.write(batch.clone()).await,
        };
        match written {
            Ok(()) => {
                metrics.readings.inc_by(rows as u64);
                metrics
                    .durable_window
                    .observe(received.elapsed().as_secs_f64());
                return true;
            }
            Err(e) if e.retry_later() => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(200));
            }
            Err(e) => {
                error!(error = %e, rows, "mqtt: readings could not be written");
                return false;
            }
        }
    }
}
