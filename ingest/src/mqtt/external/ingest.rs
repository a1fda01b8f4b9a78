//! The ingest connection's writer: gathers what the broker delivered, writes it through the
//! WAL with the packet ids as the record's tag, acknowledges in the order received, and hands
//! the packet ids to the slot recorder.

use std::sync::Arc;
use std::time::Instant;

use aemos_storage::Storage;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use rumqttc::{AsyncClient, MqttOptions, Publish, QoS};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{error, warn};

use super::slots::{self, content_id, DeliverySlots, Taken};
use super::{LinkStatus, RECEIVED, REQUESTS};
use crate::mqtt::ingest::{write, Gathering, Taken as Decoded, MAX_BATCH_ROWS, MAX_IN_FLIGHT};
use crate::mqtt::MqttMetrics;
use crate::EdgeAuthorizer;

pub(super) struct IngestArgs {
    pub(super) options: MqttOptions,
    pub(super) filter: String,
    pub(super) max_payload_bytes: usize,
    pub(super) authorizer: Option<Arc<dyn EdgeAuthorizer>>,
    pub(super) slots: Arc<DeliverySlots>,
    /// The WAL tag key of this connection's writes.
    pub(super) tag_key: String,
    pub(super) status: Arc<LinkStatus>,
}

/// One write's worth of publishes.
#[derive(Default)]
struct Gathered {
    readings: Gathering,
    /// Slots taken by the publishes in `readings`.
    taken: Vec<Taken>,
    /// Every QoS 1 publish of the write, in the order received: acknowledged after it.
    acks: Vec<(QoS, u16)>,
}

pub(super) fn start(
    args: IngestArgs,
    storage: Arc<Storage>,
    metrics: MqttMetrics,
) -> std::io::Result<()> {
    let recorder = args.slots.start_recorder()?;
    let mut options = args.options;
    options.set_manual_acks(true);
    let (client, eventloop) = AsyncClient::new(options, REQUESTS);
    let (publishes, received) = mpsc::channel(RECEIVED);
    tokio::spawn(super::drive(
        eventloop,
        client.clone(),
        args.filter,
        args.status,
        publishes,
    ));
    let writer = Writer {
        client,
        storage,
        metrics,
        authorizer: args.authorizer,
        slots: args.slots,
        recorder,
        tag_key: args.tag_key,
        max_payload_bytes: args.max_payload_bytes,
    };
    tokio::spawn(writer.run(received));
    Ok(())
}

/// What a write comes to: the acks to send and the slots to record.
#[derive(Default)]
struct Committed {
    acks: Vec<(QoS, u16)>,
    stored: Vec<Taken>,
}

struct Writer {
    client: AsyncClient,
    storage: Arc<Storage>,
    metrics: MqttMetrics,
    authorizer: Option<Arc<dyn EdgeAuthorizer>>,
    slots: Arc<DeliverySlots>,
    recorder: mpsc::Sender<Vec<Taken>>,
    tag_key: String,
    max_payload_bytes: usize,
}

impl Writer {
    async fn run(self, mut received: mpsc::Receiver<Publish>) {
        let mut in_flight = FuturesOrdered::new();
        loop {
            tokio::select! {
                first = received.recv(), if in_flight.len() < MAX_IN_FLIGHT => {
                    let Some(first) = first else { break };
                    let started = Instant::now();
                    let mut gathered = Gathered::default();
                    self.gather(first, &mut gathered);
                    while gathered.readings.rows() < MAX_BATCH_ROWS {
                        match received.try_recv() {
                            Ok(publish) => self.gather(publish, &mut gathered),
                            Err(_) => break,
                        }
                    }
                    in_flight.push_back(self.commit(gathered, started));
                }
                Some(committed) = in_flight.next(), if !in_flight.is_empty() => self.ack(committed).await,
            }
        }
        while let Some(committed) = in_flight.next().await {
            self.ack(committed).await;
        }
    }

    /// Decodes one publish into `gathered`, or recognises it as a redelivery of one stored.
    fn gather(&self, publish: Publish, gathered: &mut Gathered) {
        let Gathered {
            readings,
            taken,
            acks,
        } = gathered;
        let acknowledged = publish.qos != QoS::AtMostOnce;
        if acknowledged {
            acks.push((publish.qos, publish.pkid));
        }
        let id = content_id(&publish.topic, &publish.payload);
        if acknowledged && publish.dup && self.slots.is_redelivery(publish.pkid, id) {
            self.metrics.redeliveries.inc();
            return;
        }
        let decoded = if publish.payload.len() > self.max_payload_bytes {
            self.metrics.publishes.inc();
            self.metrics.rejected_publishes.inc();
            match crate::mqtt::device_of_telemetry(&publish.topic) {
                Some(device) => Decoded::Refused {
                    topic: crate::mqtt::errors_topic(device),
                    body: json!({
                        "topic": publish.topic,
                        "error": format!("payload of {} bytes exceeds the limit of {} bytes", publish.payload.len(), self.max_payload_bytes),
                    }),
                },
                None => Decoded::Ignored,
            }
        } else {
            readings.decode(
                &self.storage,
                &self.metrics,
                self.authorizer.as_deref(),
                publish.topic.as_bytes(),
                &publish.payload,
            )
        };
        match decoded {
            Decoded::Readings(rows) => {
                if rows > 0 && acknowledged {
                    taken.push(self.slots.take(publish.pkid, id));
                }
            }
            Decoded::Refused { topic, body } => {
                // Refused for good: acknowledged, so that the broker does not send it again.
                let _ = self
                    .client
                    .try_publish(topic, QoS::AtMostOnce, false, body.to_string());
            }
            Decoded::Ignored => {}
        }
    }

    /// Writes the readings with their packet ids as the WAL record's tag; what to acknowledge
    /// and record, or nothing when the write failed (the broker keeps those publishes and
    /// delivers them again after the next reconnection or restart).
    fn commit(
        &self,
        gathered: Gathered,
        started: Instant,
    ) -> impl std::future::Future<Output = Committed> {
        let storage = Arc::clone(&self.storage);
        let (metrics, slots) = (self.metrics.clone(), Arc::clone(&self.slots));
        let tag_key = self.tag_key.clone();
        async move {
            let Gathered {
                mut readings,
                taken,
                acks,
            } = gathered;
            // Only QoS 1 publishes take slots; a write of QoS 0 ones alone carries no tag.
            let tagged = (!taken.is_empty()).then(|| (tag_key, slots::tag(&taken)));
            let written = match readings.take() {
                Some(batch) => write(storage, batch, started, metrics.clone(), tagged).await,
                None => true,
            };
            if !written {
                slots.give_back(&taken);
                metrics.unacknowledged.inc_by(acks.len() as u64);
                return Committed::default();
            }
            Committed {
                acks,
                stored: taken,
            }
        }
    }

    /// Acknowledges a stored write's publishes, then queues its slots for the file (the WAL
    /// holds them until then). Writes complete in the order gathered, so a packet id reused
    /// by a later write is recorded after the earlier one.
    async fn ack(&self, committed: Committed) {
        let Committed { acks, stored } = committed;
        for (qos, pkid) in acks {
            let mut publish = Publish::new("", qos, Vec::<u8>::new());
            publish.pkid = pkid;
            if let Err(e) = self.client.try_ack(&publish) {
                warn!(error = %e, pkid, "mqtt: acknowledging a publish to the external broker failed");
            }
        }
        if !stored.is_empty() && self.recorder.send(stored).await.is_err() {
            error!("mqtt: the delivery slot recorder stopped; a restart recovers from the WAL");
        }
    }
}
