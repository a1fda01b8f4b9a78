//! Backpressure against a backlog that fills while the circuit breaker stays closed: the WAL's
//! syncs are held (a disk that stalls), so the ingest link's writes wait, it stops reading, and
//! the router's log of telemetry grows. At an eighth of the backlog the listener stops reading
//! from devices: the heavy publisher is slowed down (its PUBACKs stop), not cut off, the log
//! stays below the line where publishers are disconnected, nothing it acknowledged is dropped,
//! and every one of its publishes is stored once the disk comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aemos_storage::{CircuitState, ObjectStoreConfig, Storage, StorageArgs, SystemClock};
use prometheus::Registry;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};

use super::{MqttArgs, MqttBroker, MqttMetrics, MqttMode};

/// Readings per publish (variables `v0`.. of one device): about 16 KB of JSON.
const READINGS_PER_PUBLISH: usize = 1000;
/// Publishes sent at most: about 15 MB, several times what the link reads ahead of its held
/// writes (4 writes of 65,536 readings, about 2.6 MB), the backlog (1 MiB) and the client's
/// window and queue (200 publishes) hold: slowed down, the publisher stalls before the end
/// (measured: at 660-700).
const MAX_PUBLISHES: usize = 1500;

/// Holds every WAL sync while `held` is set.
#[derive(Debug)]
struct StalledDisk {
    held: AtomicBool,
}

impl aemos_storage::Faults for StalledDisk {
    fn before_sync(&self) -> std::io::Result<()> {
        while self.held.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_backlog_slows_the_publisher_down_and_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Arc::new(StalledDisk {
        held: AtomicBool::new(true),
    });
    let store = ObjectStoreConfig::from_url(&ObjectStoreConfig::default_url(dir.path())).unwrap();
    let mut storage_args = StorageArgs::new(dir.path().to_path_buf(), store, Arc::new(SystemClock));
    storage_args.faults = Some(Arc::clone(&disk) as _);
    let storage = Storage::open(storage_args).await.unwrap();

    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut args = MqttArgs::new(local);
    args.v5_addr = Some(local);
    let args_backlog = 1024 * 1024;
    args.backlog_bytes = args_backlog;
    let rejected = prometheus::IntCounterVec::new(
        prometheus::Opts::new("readings_rejected_total", "refused"),
        &["protocol", "reason"],
    )
    .unwrap();
    let metrics = MqttMetrics::new(&Registry::new(), rejected).unwrap();
    let edge = MqttBroker::start(args, Arc::clone(&storage), metrics.clone())
        .await
        .unwrap();
    let MqttMode::Embedded { v5_addr, .. } = edge.mode.clone() else {
        unreachable!("embedded")
    };
    let v5 = v5_addr.unwrap();

    let mut options = MqttOptions::new("heavy", v5.ip().to_string(), v5.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(Some(1 << 20));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let acks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = Arc::clone(&acks);
    let events = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    acked += 1;
                    counting.store(acked, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(ConnectionError::MqttState(StateError::ServerDisconnect {
                    reason_code,
                    reason_string,
                })) => return (acked, Ok((reason_code, reason_string))),
                Err(e) => return (acked, Err(e.to_string())),
            }
        }
    });
    let body = |n: usize| {
        let fields: Vec<String> = (0..READINGS_PER_PUBLISH)
            .map(|v| format!("\"v{v}\":{n}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    };
    // Publishes until one waits 2 s for room: the broker stopped reading (no PUBACKs, so the
    // client's window and its queue filled).
    let mut stalled_at = MAX_PUBLISHES;
    for n in 0..MAX_PUBLISHES {
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            client.publish(
                "aemos/devices/heavy/telemetry",
                QoS::AtLeastOnce,
                false,
                body(n),
            ),
        )
        .await;
        if events.is_finished() || !matches!(sent, Ok(Ok(()))) {
            stalled_at = n;
            break;
        }
    }
    let health = edge.mode.health();
    assert!(
        !events.is_finished(),
        "the publisher was cut off: {:?}",
        events.await.unwrap()
    );
    assert!(
        stalled_at < MAX_PUBLISHES,
        "the publisher was never slowed down: {health}"
    );
    let backlog = health["backlogBytes"].as_u64().unwrap();
    assert!(
        backlog * 4 < args_backlog as u64,
        "the backlog reached the cut-off line: {health}"
    );
    assert_eq!(metrics.throttled.get(), 0);
    assert_eq!(
        storage.admission_status().circuit_state,
        CircuitState::Closed
    );
    eprintln!("slowed at publish {stalled_at}, {health}");

    // The disk comes back: every acknowledged publish is written, none was dropped.
    disk.held.store(false, Ordering::Relaxed);
    let want = acks.load(Ordering::Relaxed) * READINGS_PER_PUBLISH as u64;
    assert!(want > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.readings.get() < want || edge.mode.health()["backlogBytes"] != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {want} acknowledged readings written; {} publishes dropped",
            metrics.readings.get(),
            metrics.dropped_publishes.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.dropped_publishes.get(), 0);
    assert_eq!(edge.mode.health()["droppedPublishes"], 0);
}
