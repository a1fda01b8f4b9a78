//! `aemos serve`: components started in dependency order, stopped in reverse.

use crate::commands::{commands_snapshot, CommandMetrics, Commands, CommandsArgs, Timing};
use std::sync::Arc;

use crate::commands::preclean::Precleans;
use crate::commands::scheduler::Schedules;
use crate::devices::presence::watch_spec;
use aemos_clock::{Clock, SystemClock};
use aemos_queries::{
    FlightServer, FlightServerArgs, FlightTls, PgServer, PgServerArgs, QueryEngine,
    QueryEngineArgs, QueryLimits,
};
use aemos_storage::{ObjectStoreConfig, Storage, StorageArgs};
use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use aemos_ingest::coap::{CoapArgs, CoapServer};
use aemos_ingest::mqtt::external::{self, ExternalArgs};
use aemos_ingest::mqtt::{MqttArgs, MqttBroker, MqttMetrics, MqttMode};
use aemos_storage::DurableObserver;
use arrow::array::RecordBatch;

use crate::auth::edge::EdgeAuth;
use crate::auth::limits::Rate;
use crate::auth::sql::SqlAuth;
use crate::auth::{Auth, JwtVerifier, Mode, RateLimits};
use crate::cli::ServeArgs;
use crate::devices::DeviceRegistry;
use crate::http::{router, AppState, AppStateParts, Edge, RouterArgs, StartGate};
use crate::metrics::Metrics;
use crate::notify::channels::SocketIoChannel;
use crate::notify::datastream::Datastream;
use crate::notify::socketio::{serve_namespace, socket_io, Subscriptions};
use crate::notify::{Notifier, REPLAY_PER_DEVICE, REPLAY_TOTAL};
use crate::rules::{FiringLogArgs, Rules, RulesArgs, MAX_RECENT};

/// Events a Socket.IO socket may have waiting before it misses some.
const SOCKET_BUFFER: usize = 1024;
/// Items a channel's queue holds before dropping the oldest.
const CHANNEL_QUEUE: usize = 65_536;

/// Every durable group of readings goes to each of these, in order.
struct Observers(Vec<Arc<dyn DurableObserver>>);

impl DurableObserver for Observers {
    fn durable(&self, batches: &[RecordBatch]) {
        for o in &self.0 {
            o.durable(batches);
        }
    }
}

/// `production` refuses to start without a way to check user tokens, or listening beyond
/// loopback without TLS (CoAP has no DTLS here, so it stays on loopback).
fn check_production(args: &ServeArgs) -> anyhow::Result<()> {
    let sec = &args.security;
    if sec.mode != Mode::Production {
        tracing::warn!(
            "dev mode: every endpoint, topic and room is open to anyone who can reach it; use --mode production with --jwt-secret and TLS on a network"
        );
        return Ok(());
    }
    anyhow::ensure!(
        sec.jwt_secret.is_some() || sec.jwt_public_key.is_some(),
        "--mode production needs --jwt-secret or --jwt-public-key (user tokens cannot be checked without one)"
    );
    let tls = sec.tls_cert.is_some();
    let mut exposed: Vec<String> = Vec::new();
    let mut tcp = vec![("--http-addr", args.http_addr)];
    match &args.mqtt_broker {
        // The embedded broker's listeners stay closed; the external one gets aemos's
        // credentials, so not in clear beyond this machine.
        Some(url) => anyhow::ensure!(
            url.starts_with("mqtts://") || url.starts_with("ssl://") || broker_is_local(url),
            "--mode production sends aemos's broker credentials only over TLS beyond loopback (--mqtt-broker {}): use mqtts://",
            aemos_ingest::mqtt::external::redacted(url)
        ),
        None => {
            tcp.push(("--mqtt-addr", args.mqtt_addr));
            if let Some(a) = args.mqtt5_addr.0 {
                tcp.push(("--mqtt5-addr", a));
            }
        }
    }
    if let Some(a) = args.pg_addr.0 {
        tcp.push(("--pg-addr", a));
    }
    if let Some(a) = args.flight_addr.0 {
        tcp.push(("--flight-addr", a));
    }
    for (flag, addr) in tcp {
        if !tls && !addr.ip().is_loopback() {
            exposed.push(format!("{flag} {addr}"));
        }
    }
    anyhow::ensure!(
        exposed.is_empty(),
        "--mode production refuses to listen beyond loopback without TLS ({}): give --tls-cert and --tls-key",
        exposed.join(", ")
    );
    anyhow::ensure!(
        args.coap_addr.ip().is_loopback(),
        "--mode production keeps CoAP on loopback (--coap-addr {}): there is no DTLS, and device tokens would cross the network in clear",
        args.coap_addr
    );
    Ok(())
}

/// Whether an external broker's URL names this machine.
fn broker_is_local(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    check_production(&args)?;
    crate::tls::install_provider();
    let jwt = match (&args.security.jwt_secret, &args.security.jwt_public_key) {
        (_, Some(path)) => Some(JwtVerifier::public_key(path)?),
        (Some(secret), None) => Some(JwtVerifier::hs256(secret)?),
        (None, None) => None,
    }
    .map(|j| j.with_audience(args.security.jwt_audience.as_deref()));
    let tls = match (&args.security.tls_cert, &args.security.tls_key) {
        (Some(cert), Some(key)) => Some((
            crate::tls::server_config(cert, key)?,
            cert.display().to_string(),
            key.display().to_string(),
        )),
        _ => None,
    };
    // 0. HTTP first: liveness at once, 503 for the rest until the start is done (6).
    let gate = StartGate::default();
    gate.phase("starting the rule engine");
    let listener = TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding {}", args.http_addr))?;
    let http_addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let served = gate.router();
    let http = match tls.as_ref().map(|(config, _, _)| Arc::clone(config)) {
        Some(config) => {
            let app = served.into_make_service_with_connect_info::<crate::tls::ClientAddr>();
            let tls_listener = crate::tls::TlsListener::new(listener, config)?;
            tokio::spawn(async move {
                axum::serve(tls_listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            })
        }
        None => {
            // Small writes (Socket.IO events, acknowledgements) go out at once, not after the
            // peer's delayed ACK (Nagle's algorithm): it took Socket.IO's p99 from 36 ms to
            // single digits.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let app = served.into_make_service_with_connect_info::<std::net::SocketAddr>();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown_signal())
                    .await
            })
        }
    };
    info!(addr = %http_addr, "http open; 503 until ready");

    // 1. The rule engine, its firings held back until its state is rebuilt (4).
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // One clock for storage, the engine and device control.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let metrics = Metrics::new();
    let mut engine_args = aemos_engine::EngineArgs::new(workers);
    engine_args.clock = Arc::clone(&clock);
    engine_args.tick = args.engine_tick;
    engine_args.feed_latency = Some(metrics.engine_feed_seconds.clone());
    let notifier = Notifier::new(REPLAY_PER_DEVICE, REPLAY_TOTAL);
    let rules = Rules::start(RulesArgs {
        firings: FiringLogArgs {
            seal_after: args.firings_seal_after,
            ..FiringLogArgs::new(args.store.data_dir.join("firings"), Arc::clone(&notifier))
        },
        engine: engine_args,
    })?;
    notifier.observe_latency(metrics.notification_seconds.clone(), Arc::clone(&clock));

    // Socket.IO: its rooms watch devices; durable readings of watched devices become
    // throttled `datastream` events.
    let subscriptions = Arc::new(Subscriptions::default());
    let (socket_io_layer, io) = socket_io(SOCKET_BUFFER);
    let socket_io_handle = io.clone();
    let datastream = Datastream::start(io.clone(), Arc::clone(&subscriptions), CHANNEL_QUEUE);
    let socketio = Arc::new(SocketIoChannel::start(io, CHANNEL_QUEUE));
    notifier.add_channel(Arc::clone(&socketio) as _);

    // 2. Storage: WAL replay completes before anything but liveness is served; durable batches
    // feed the engine from here on.
    gate.phase("replaying the write-ahead log");
    let url = args.store.object_store_url()?;
    let object_store = ObjectStoreConfig::from_url(&url)?;
    let mut storage_args = StorageArgs::new(
        args.store.data_dir.clone(),
        object_store,
        Arc::clone(&clock),
    );
    storage_args.persist_interval = args.persist_interval;
    storage_args.persist_rows = args.persist_rows;
    storage_args.retention = args.retention;
    storage_args.max_future = args.max_future;
    storage_args.compaction_min_files = args.compaction_min_files;
    storage_args.wal_queue = args.wal_queue;
    storage_args.max_buffered_rows = args.max_buffered_rows;
    if args.breaker_recover_at >= args.breaker_open_at {
        anyhow::bail!(
            "--breaker-recover-at ({}) must be below --breaker-open-at ({})",
            args.breaker_recover_at,
            args.breaker_open_at
        );
    }
    storage_args.breaker = aemos_storage::BreakerArgs {
        open_at: args.breaker_open_at,
        recover_at: args.breaker_recover_at,
        low_until: args.breaker_low_until,
        stable: args.breaker_stable,
    };
    storage_args.observer = Some(Arc::new(Observers(vec![rules.observer(), datastream])));
    storage_args.histograms = aemos_storage::StorageHistograms {
        wal_sync_seconds: Some(metrics.wal_sync_seconds.clone()),
        persist_seconds: Some(metrics.persist_seconds.clone()),
    };
    let storage = Storage::open(storage_args)
        .await
        .context("opening storage")?;
    let (stop_storage, storage_stopped) = watch::channel(false);
    let background = tokio::spawn(Arc::clone(&storage).run_background(storage_stopped));
    // Health's view of the object store: a HEAD every 5 s, each given 2 s.
    tokio::spawn(Arc::clone(&storage).run_probe(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(2),
        stop_storage.subscribe(),
    ));

    // 3. Queries over storage.
    let queries = QueryEngine::new(QueryEngineArgs {
        source: Arc::clone(&storage) as _,
        object_store: Arc::clone(&storage.object_store().store),
        target_partitions: args.query_partitions,
        limits: QueryLimits {
            timeout: args.query_timeout,
            concurrency: args.query_concurrency as usize,
            memory_bytes: (args.query_memory_mb > 0).then_some(args.query_memory_mb << 20),
        },
    })?
    .with_latency(metrics.query_seconds.clone());
    rules.register_tables(&queries, &storage, stop_storage.subscribe())?;
    notifier.register_table(&queries)?;

    // Identity: the device registry from the object store, the checks every protocol calls.
    let registry = DeviceRegistry::load(Arc::clone(&storage))
        .await
        .context("loading the device registry")?;
    let sec = &args.security;
    let auth = Arc::new(Auth {
        mode: sec.mode,
        jwt,
        registry,
        limits: RateLimits::new(
            Rate {
                per_second: sec.device_rate_limit,
                burst: sec.device_rate_burst,
            },
            Rate {
                per_second: sec.client_rate_limit,
                burst: sec.client_rate_burst,
            },
            metrics.rate_limited.clone(),
        ),
    });
    info!(mode = ?sec.mode, devices = auth.registry.len(), "identity ready");
    let sweep = Arc::clone(&auth);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            sweep.limits.sweep();
        }
    });
    serve_namespace(
        &socket_io_handle,
        Arc::clone(&subscriptions),
        Arc::clone(&auth),
    );
    let edge_auth = EdgeAuth::new(Arc::clone(&auth), metrics.clone());

    // Device commands: the journal replayed; the firing log hands over the rules' commands.
    let commands = Commands::open(CommandsArgs {
        dir: &args.store.data_dir.join("commands"),
        timing: Timing {
            ack_timeout_ms: args.command_ack_timeout.as_millis() as i64,
            max_attempts: args.command_max_attempts,
        },
        clock: Arc::clone(&clock),
        metrics: CommandMetrics::register(&metrics.registry)?,
    })
    .context("opening the command journal")?;
    commands_snapshot(&commands, &queries)?;
    let precleans = Precleans::open(
        &args.store.data_dir.join("commands").join("precleans"),
        Arc::clone(&commands),
    )
    .await
    .context("opening the pre-cleans")?;
    tokio::spawn(Arc::clone(&precleans).run(stop_storage.subscribe()));
    let schedules = Schedules::load(Arc::clone(&storage), Arc::clone(&commands))
        .await
        .context("loading the schedules")?;
    tokio::spawn(Arc::clone(&schedules).run(stop_storage.subscribe()));
    let (rule_commands, mut from_firings) = tokio::sync::mpsc::channel(65_536);
    rules.firings.set_command_outlet(rule_commands);
    let maker = Arc::clone(&commands);
    tokio::spawn(async move {
        while let Some(record) = from_firings.recv().await {
            maker.create_from_firing(&record).await;
        }
    });

    gate.phase("rebuilding the rule engine");
    // 4. Chains from the catalog and each device's presence, engine state from storage, the
    // firing log reconciled.
    let presence = auth.registry.list().iter().map(|d| watch_spec(d)).collect();
    let chains = rules
        .restore(&storage, &queries, presence)
        .await
        .context("rebuilding the rule engine")?;
    info!(chains, workers, "rule engine ready");
    // Devices changed through other servers sharing the object store, from now on.
    crate::devices::sync::spawn(
        Arc::clone(&auth.registry),
        Arc::clone(&rules.engine),
        args.registry_sync,
    );
    let made = commands.reconcile(&rules.firings.recent(MAX_RECENT)).await;
    info!(commands = commands.count(), made, "commands ready");

    gate.phase("starting the device edge");
    // 5. The device edge: MQTT broker and CoAP server, both ways.
    let mqtt_metrics = MqttMetrics::new(&metrics.registry, metrics.readings_rejected.clone())?;
    let mqtt_readings = mqtt_metrics.readings.clone();
    let mqtt = match &args.mqtt_broker {
        Some(url) => external::start(
            ExternalArgs {
                url: url.clone(),
                client_id: args.mqtt_client_id.clone(),
                share_group: Some(args.mqtt_share_group.clone()).filter(|g| !g.is_empty()),
                username: args.mqtt_broker_username.clone(),
                password: args.mqtt_broker_password.clone(),
                ca_file: args.mqtt_broker_ca.clone(),
                state_dir: args.store.data_dir.clone(),
                keep_alive: std::time::Duration::from_secs(30),
                max_payload_bytes: args.mqtt_max_payload_bytes,
                notify_queue: 65_536,
                authorizer: Some(Arc::clone(&edge_auth) as _),
            },
            Arc::clone(&storage),
            mqtt_metrics,
        )
        .context("connecting to the external MQTT broker")?,
        None => {
            let mut mqtt_args = MqttArgs::new(args.mqtt_addr);
            mqtt_args.v5_addr = args.mqtt5_addr.0;
            mqtt_args.max_payload_bytes = args.mqtt_max_payload_bytes;
            mqtt_args.max_connections = args.mqtt_max_connections as usize;
            mqtt_args.backlog_bytes = args.mqtt_backlog_bytes;
            mqtt_args.authorizer = Some(Arc::clone(&edge_auth) as _);
            mqtt_args.tls = tls
                .as_ref()
                .map(|(_, cert, key)| (cert.clone(), key.clone()));
            let mqtt = MqttBroker::start(mqtt_args, Arc::clone(&storage), mqtt_metrics)
                .await
                .context("starting the MQTT broker")?;
            if let MqttMode::Embedded {
                v4_addr, v5_addr, ..
            } = &mqtt.mode
            {
                info!(mqtt_addr = %v4_addr, mqtt5_addr = ?v5_addr, "mqtt listening");
            }
            mqtt
        }
    };
    // The broker keeps nothing across restarts: retain each device's last state again.
    let retained = notifier.add_channel_with_latest(Arc::new(mqtt.publisher.clone()));
    let mut coap_args = CoapArgs::new(args.coap_addr);
    coap_args.authorizer = Some(edge_auth as _);
    coap_args.ack_timeout = args.coap_ack_timeout;
    let coap = CoapServer::start(coap_args, Arc::clone(&storage))
        .await
        .context("starting the CoAP server")?;
    info!(coap_addr = %coap.addr, retained, "coap listening");
    notifier.add_channel_with_latest(Arc::new(coap.clone()));

    // The dispatcher on the broker's command link.
    let acks = mqtt
        .acks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .context("the broker's acks were taken")?;
    tokio::spawn(Arc::clone(&commands).run(mqtt.commands.clone(), acks, stop_storage.subscribe()));

    // 6. The full router behind the listener opened first.
    let (queries_for_sql, login) = (queries.clone(), Arc::new(SqlAuth(Arc::clone(&auth))));
    let state = AppState::new(AppStateParts {
        auth,
        storage: Arc::clone(&storage),
        queries,
        metrics,
        rules: rules.clone(),
        notifier,
        commands,
        precleans,
        schedules,
        edge: Edge {
            mqtt: Some(mqtt.publisher.clone()),
            mqtt_mode: Some(mqtt.mode.clone()),
            coap: Some(coap),
            socketio: Some(socketio),
            subscriptions: Some(subscriptions),
            mqtt_readings: Some(mqtt_readings),
        },
    });
    let app = router(RouterArgs {
        state,
        max_body_bytes: args.max_body_bytes,
        socket_io: Some(socket_io_layer),
    });
    // 7. SQL over the Postgres wire protocol, on the same engine and limits.
    if let Some(addr) = args.pg_addr.0 {
        let pg = PgServer::start(PgServerArgs {
            addr,
            engine: queries_for_sql.clone(),
            login: Arc::clone(&login) as _,
            tls: tls.as_ref().map(|(config, _, _)| Arc::clone(config)),
            max_connections: args.pg_max_connections as usize,
        })
        .await
        .with_context(|| format!("binding --pg-addr {addr}"))?;
        info!(pg_addr = %pg.addr, "postgres listening");
    }
    // 8. Arrow Flight SQL, on the same engine, limits and logins.
    if let Some(addr) = args.flight_addr.0 {
        let tls = match (&args.security.tls_cert, &args.security.tls_key) {
            (Some(cert), Some(key)) => Some(FlightTls {
                cert_pem: std::fs::read(cert)
                    .with_context(|| format!("reading --tls-cert {}", cert.display()))?,
                key_pem: std::fs::read(key)
                    .with_context(|| format!("reading --tls-key {}", key.display()))?,
            }),
            _ => None,
        };
        let flight = FlightServer::start(FlightServerArgs {
            addr,
            engine: queries_for_sql,
            login,
            tls,
        })
        .await
        .with_context(|| format!("binding --flight-addr {addr}"))?;
        info!(flight_addr = %flight.addr, "flight sql listening");
    }
    gate.open(app);
    info!(%http_addr, %scheme, object_store = %url, data_dir = %args.store.data_dir.display(), "aemos listening and ready");
    http.await??;

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
