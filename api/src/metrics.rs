//! Prometheus metrics of the write and query paths.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every (protocol, format) a reading is made durable in.
const INGESTED: [(&str, &str); 7] = [
    ("http", "json"),
    ("http", "ndjson"),
    ("http", "line-protocol"),
    ("http", "arrow-ipc"),
    ("http", "datastream"),
    ("mqtt", "json"),
    ("coap", "json"),
];

/// The metrics, shared: cloned into every request's state, so a clone is one reference count.
#[derive(Debug, Clone)]
pub struct Metrics(std::sync::Arc<MetricSet>);

impl std::ops::Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

#[derive(Debug)]
pub struct MetricSet {
    pub registry: Registry,
    pub readings_accepted: IntCounter,
    /// `readings_rejected_total{protocol, reason}`: readings refused before the WAL, by
    /// protocol (http, mqtt, coap) and [`aemos_ingest::RejectReason`].
    pub readings_rejected: IntCounterVec,
    /// `ingested_readings_total{protocol, format}`: the counter of every (protocol, format)
    /// aemos writes, made once, so a write finds its own without hashing labels.
    ingested_by: Vec<(&'static str, &'static str, IntCounter)>,
    pub write_requests: IntCounterVec,
    pub query_requests: IntCounterVec,
    pub overload_rejections: IntCounter,
    pub wal_queue_depth: IntGauge,
    pub buffered_rows: IntGauge,
    pub parquet_files: IntGauge,
    pub rule_chains: IntGauge,
    pub watched_devices: IntGauge,
    pub engine_readings: IntCounter,
    pub engine_presence_marks: IntCounter,
    pub engine_ticks: IntCounter,
    pub engine_firings: IntCounter,
    pub engine_eval_errors: IntCounter,
    pub engine_key_collisions: IntCounter,
    pub notifications: IntCounter,
    pub notifications_dropped: IntCounterVec,
    pub socketio_missed: IntCounter,
    pub socketio_subscriptions: IntGauge,
    pub coap_observers: IntGauge,
    pub coap_readings: IntCounter,
    pub coap_malformed: IntCounter,
    pub coap_requests: IntCounter,
    pub coap_refused: IntCounter,
    pub coap_socket_errors: IntCounter,
    pub coap_notifications: IntCounter,
    pub coap_retransmissions: IntCounter,
    pub coap_observers_timed_out: IntCounter,
    pub coap_amplification_refused: IntCounter,
    /// Credentials refused, by protocol and reason (missing, invalid, forbidden).
    pub auth_refusals: IntCounterVec,
    /// Messages refused by a rate limit, by protocol.
    pub rate_limited: IntCounterVec,
    /// Writes refused at admission, by priority and reason (`shed` by the circuit breaker,
    /// `full` at a queue's hard bound), every protocol together.
    pub admission_refusals: IntCounterVec,
    /// 0 closed, 1 half-open, 2 open (seed 004's `circuit_state`).
    pub circuit_state: IntGauge,
    /// Latencies: the WAL's `fdatasync` per group commit, a persistence round, a user's SQL
    /// query (admission to the end of its stream, every front-end), and a notification (its
    /// firing's time, i.e. the readings' wall-clock time, to its hand-off to the channels).
    pub wal_sync_seconds: Histogram,
    pub persist_seconds: Histogram,
    pub query_seconds: Histogram,
    pub notification_seconds: Histogram,
    pub engine_feed_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("aemos".into()), None).expect("valid prefix");
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let by_status = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["status"]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let fast = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
        ];
        let slow = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let labelled = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let auth_refusals = labelled(
            "auth_refusals_total",
            "Credentials refused, by protocol and reason",
            &["protocol", "reason"],
        );
        let rate_limited = labelled(
            "rate_limited_total",
            "Messages refused by a rate limit, by protocol",
            &["protocol"],
        );
        let admission_refusals = labelled(
            "admission_refusals_total",
            "Writes refused at admission, by priority and reason (shed, full)",
            &["priority", "reason"],
        );
        let ingested = labelled(
            "ingested_readings_total",
            "Readings made durable, by protocol (http, mqtt, coap) and format (json, ndjson, line-protocol, arrow-ipc, datastream)",
            &["protocol", "format"],
        );
        let ingested_by = INGESTED
            .iter()
            .map(|&(p, f)| (p, f, ingested.with_label_values(&[p, f])))
            .collect();
        Self(std::sync::Arc::new(MetricSet {
            ingested_by,
            auth_refusals,
            rate_limited,
            admission_refusals,
            circuit_state: gauge(
                "circuit_state",
                "The write circuit breaker: 0 closed, 1 half-open, 2 open",
            ),
            readings_accepted: counter("readings_accepted_total", "Readings made durable"),
            readings_rejected: labelled(
                "readings_rejected_total",
                "Readings refused, by protocol (http, mqtt, coap) and reason (malformed, invalid, retention, future, forbidden)",
                &["protocol", "reason"],
            ),
            write_requests: by_status("write_requests_total", "Write requests by HTTP status"),
            query_requests: by_status("query_requests_total", "Query requests by HTTP status"),
            overload_rejections: counter(
                "overload_rejections_total",
                "Writes refused with 503 (WAL queue full or too many readings waiting for persistence)",
            ),
            wal_queue_depth: gauge(
                "wal_queue_depth",
                "Write requests waiting for the WAL writer",
            ),
            buffered_rows: gauge("buffered_rows", "Readings in memory, not yet in Parquet"),
            parquet_files: gauge("parquet_files", "Parquet files in the catalog"),
            rule_chains: gauge("rule_chains", "Registered rule chains"),
            watched_devices: gauge(
                "engine_watched_devices",
                "Devices whose presence the engine watches",
            ),
            engine_readings: counter(
                "engine_readings_total",
                "Readings taken in by the rule engine, device-seen marks included",
            ),
            engine_presence_marks: counter(
                "engine_presence_marks_total",
                "Device-seen marks fed to the rule engine beside the readings (one per run of a device's readings in a group commit)",
            ),
            engine_ticks: counter("engine_ticks_total", "Rule engine ticks"),
            engine_firings: counter("engine_firings_total", "Rule chain firings"),
            engine_eval_errors: counter(
                "engine_eval_errors_total",
                "Runtime evaluation errors of rule chains (division by zero on a value, NaN)",
            ),
            engine_key_collisions: counter(
                "engine_key_collisions_total",
                "Readings left out and chains quarantined because two names shared a 64-bit key",
            ),
            notifications: counter("notifications_total", "Notifications handed to the channels"),
            notifications_dropped: labelled(
                "notifications_dropped_total",
                "Notifications dropped (oldest first) because a channel's queue was full",
                &["channel"],
            ),
            socketio_missed: counter(
                "socketio_missed_total",
                "Socket.IO events a socket missed because its buffer was full",
            ),
            socketio_subscriptions: gauge(
                "socketio_subscriptions",
                "Subscriptions of Socket.IO sockets to device rooms",
            ),
            coap_observers: gauge("coap_observers", "Registered CoAP observers"),
            coap_readings: counter("coap_readings_total", "Readings from CoAP made durable"),
            coap_malformed: counter("coap_malformed_total", "CoAP datagrams that were not CoAP messages"),
            coap_requests: counter("coap_datagrams_total", "CoAP datagrams received"),
            coap_refused: counter(
                "coap_refused_total",
                "CoAP requests answered 5.03 because too many were in flight",
            ),
            coap_socket_errors: counter(
                "coap_socket_errors_total",
                "Errors receiving from the CoAP socket (ICMP port-unreachable of gone observers among them)",
            ),
            coap_notifications: counter("coap_notifications_total", "Observe notifications sent"),
            coap_retransmissions: counter(
                "coap_retransmissions_total",
                "Confirmable notifications sent again for want of an ACK",
            ),
            coap_observers_timed_out: counter(
                "coap_observers_timed_out_total",
                "Observers removed after a notification went unacknowledged through every retransmission",
            ),
            coap_amplification_refused: counter(
                "coap_amplification_refused_total",
                "CoAP datagrams not sent to a source that has not shown it receives, over its bound",
            ),
            wal_sync_seconds: histogram(
                "wal_sync_seconds",
                "Time of the WAL's fdatasync, per group commit",
                &fast,
            ),
            persist_seconds: histogram(
                "persist_seconds",
                "Time of a persistence round that wrote readings (Parquet, upload, catalog commit)",
                &slow,
            ),
            query_seconds: histogram(
                "query_seconds",
                "Time of a user's SQL query, admission to the end of its results (HTTP, Postgres, Flight SQL)",
                &slow,
            ),
            notification_seconds: histogram(
                "notification_seconds",
                "From a firing's time (its readings' wall-clock time) to its notification's hand-off to the channels",
                &fast,
            ),
            engine_feed_seconds: histogram(
                "engine_feed_seconds",
                "From a WAL group commit handed to the engine (waiting for room included) to the firings of its tick handed to the firing log",
                &fast,
            ),
            registry,
        }))
    }
}

impl MetricSet {
    /// The counter of readings made durable over `protocol` in `format` (one of `INGESTED`).
    pub fn ingested(&self, protocol: &str, format: &str) -> &IntCounter {
        self.ingested_by
            .iter()
            .find(|(p, f, _)| *p == protocol && *f == format)
            .map(|(_, _, c)| c)
            .unwrap_or_else(|| panic!("no ingested counter for {protocol}/{format}"))
    }

    /// Counts the rejections of a decode over `protocol`, by reason.
    pub fn count_rejections(&self, protocol: &str, counts: &aemos_ingest::RejectionCounts) {
        for (reason, n) in counts.iter() {
            self.readings_rejected
                .with_label_values(&[protocol, reason.name()])
                .inc_by(n);
        }
    }

    /// Brings a counter up to `total`, a monotonic count kept elsewhere (an atomic of the
    /// engine or an edge server), read at scrape time; scrapes run one at a time.
    pub fn count_up_to(counter: &IntCounter, total: u64) {
        let have = counter.get();
        if total > have {
            counter.inc_by(total - have);
        }
    }

    /// Prometheus text format.
    pub fn render(&self) -> String {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to a Vec");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
