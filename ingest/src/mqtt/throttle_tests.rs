//! The throttle against a backlog that fills while the circuit breaker stays closed: the WAL's
//! syncs are held (a disk that stalls), so the ingest link's writes wait, it stops reading, and
//! the router's log of telemetry grows. The heavy publisher must be cut off (MQTT 5 DISCONNECT
//! 0x97) before the log drops any publish it acknowledged, and every one of them is stored
//! once the disk comes back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aemos_storage::{CircuitState, ObjectStoreConfig, Storage, StorageArgs, SystemClock};
use prometheus::Registry;
use rumqttc::v5::mqttbytes::v5::{DisconnectReasonCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};

use super::{MqttArgs, MqttBroker, MqttMetrics, MqttMode};

/// Readings per publish (variables `v0`.. of one device): about 16 KB of JSON.
const READINGS_PER_PUBLISH: usize = 1000;
/// Publishes sent at most: about 8 MB, twice what the link reads ahead of its held writes
/// (4 writes of 65,536 readings, about 2.6 MB) and the backlog (1 MiB) hold.
const MAX_PUBLISHES: usize = 800;

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
async fn a_filling_backlog_cuts_off_the_heavy_publisher_before_anything_is_dropped() {
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
    args.backlog_bytes = 1024 * 1024;
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
    let events = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
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
            break;
        }
    }
    let (acked, disconnect) = tokio::time::timeout(Duration::from_secs(10), events)
        .await
        .expect("the heavy publisher was never cut off")
        .unwrap();
    let (reason_code, reason) = disconnect.expect("cut off with a DISCONNECT and its reason");
    assert_eq!(reason_code, DisconnectReasonCode::QuotaExceeded);
    assert!(
        reason.as_deref().unwrap_or("").contains("backlog filling"),
        "{reason:?}"
    );
    assert_eq!(
        storage.admission_status().circuit_state,
        CircuitState::Closed,
        "the breaker stayed closed: the backlog alone cut the publisher off"
    );
    assert!(metrics.throttled.get() >= 1);
    eprintln!(
        "acked {acked}, reason {reason:?}, health {}",
        edge.mode.health()
    );
    assert!(acked > 0);

    // The disk comes back: every acknowledged publish is written, none was dropped.
    disk.held.store(false, Ordering::Relaxed);
    let want = acked * READINGS_PER_PUBLISH as u64;
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
