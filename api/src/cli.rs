//! Command-line flags; every `serve` flag has an `AEMOS_*` environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "aemos",
    version,
    about = "IoT telemetry backend: durable ingestion, Parquet on object storage, SQL"
)]
pub struct Cli {
    /// Log lines as `text` (for people) or `json` (one object per line: timestamp, level,
    /// target, message and the event's fields, for log shippers).
    #[arg(long, global = true, env = "AEMOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Run one SQL query against a data directory or object store, without a server.
    Sql(SqlArgs),
    /// Manage the rule chains of a running server.
    #[command(subcommand)]
    Chains(ChainsCommand),
    /// Simulated air purifiers over MQTT: readings, commands obeyed and acknowledged.
    Simulate(SimulateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// How many purifiers, named PREFIX00000, PREFIX00001, ...
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    #[arg(long, default_value = "purifier-")]
    pub prefix: String,
    /// Time between two readings of one device (`1s` for demos).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub interval: Duration,
    /// The broker, `host:port`.
    #[arg(long, env = "AEMOS_MQTT", default_value = "127.0.0.1:1883")]
    pub mqtt: String,
    /// Share of the devices (0 to 1) that go silent after their first reading.
    #[arg(long, default_value_t = 0.0)]
    pub offline_share: f64,
    /// Share of the devices (0 to 1) that never acknowledge a command.
    #[arg(long, default_value_t = 0.0)]
    pub drop_commands_share: f64,
    /// A JSON array of `{"id", "token"}` (the answers of `POST /api/v1/devices`).
    #[arg(long, conflicts_with = "register")]
    pub tokens: Option<PathBuf>,
    /// Register the devices (or rotate their tokens) through the HTTP API first.
    #[arg(long)]
    pub register: bool,
    /// The server's HTTP address, for `--register`.
    #[arg(long, env = "AEMOS_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// An admin JWT, for `--register` in production mode.
    #[arg(long, env = "AEMOS_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// Stop after this long (and print the counts); default: until interrupted.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
}

#[derive(Debug, Subcommand)]
pub enum ChainsCommand {
    /// Registers or replaces the chains in FILE (one chain object, or an array of them).
    Apply(ChainsApplyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ChainsApplyArgs {
    /// A JSON file: a rule chain, or an array of rule chains.
    pub file: PathBuf,
    /// The server's HTTP address.
    #[arg(long, env = "AEMOS_URL", default_value = "http://127.0.0.1:3000")]
    pub url: String,
}

/// Durations written `500ms`, `10s`, `5m`, `1h`, `7d`.
/// An address, or `off`.
#[derive(Debug, Clone, Copy)]
pub struct OptionalAddr(pub Option<SocketAddr>);

fn parse_optional_addr(text: &str) -> Result<OptionalAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(OptionalAddr(None));
    }
    text.parse()
        .map(|a| OptionalAddr(Some(a)))
        .map_err(|e| format!("{text:?}: {e} (an address such as 127.0.0.1:1884, or `off`)"))
}

/// A fraction in `(0, 1]`, as `0.9`.
pub fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{text:?} is not a fraction in (0, 1], as 0.9")),
    }
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 500ms, 10s, 5m, 1h, 7d: {e}"))
}

/// Where the data lives: shared by `serve` and `sql`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// WAL and writer id; also the object store when none is given.
    #[arg(long, env = "AEMOS_DATA_DIR", default_value = "./aemos-data")]
    pub data_dir: PathBuf,
    /// Object store URL: `file:///dir`, `s3://bucket/prefix` (AWS_* variables, AWS_ENDPOINT for
    /// S3-compatible servers). Default: `file://{data-dir}/objects`.
    #[arg(long, env = "AEMOS_OBJECT_STORE")]
    pub object_store: Option<String>,
}

impl StoreArgs {
    pub fn object_store_url(&self) -> anyhow::Result<String> {
        if let Some(url) = &self.object_store {
            return Ok(url.clone());
        }
        std::fs::create_dir_all(&self.data_dir)?;
        let dir = std::fs::canonicalize(&self.data_dir)?;
        Ok(aemos_storage::ObjectStoreConfig::default_url(&dir))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// A TOML file of these flags (keys without `--`, e.g. `http-addr = "0.0.0.0:3000"`);
    /// flags and environment variables override it. `deploy/aemos.toml` lists them all.
    #[arg(long, env = "AEMOS_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP API address (port 0 picks a free port).
    #[arg(long, env = "AEMOS_HTTP_ADDR", default_value = "127.0.0.1:3000")]
    pub http_addr: SocketAddr,
    /// MQTT 3.1.1 listener of the embedded broker (port 0 picks a free port).
    #[arg(long, env = "AEMOS_MQTT_ADDR", default_value = "127.0.0.1:1883")]
    pub mqtt_addr: SocketAddr,
    /// MQTT 5 listener of the embedded broker, or `off`.
    #[arg(long, env = "AEMOS_MQTT5_ADDR", default_value = "127.0.0.1:1884", value_parser = parse_optional_addr)]
    pub mqtt5_addr: OptionalAddr,
    /// Postgres wire protocol (psql, Grafana, psycopg, JDBC), or `off`. Not 5432, which a
    /// local PostgreSQL may hold.
    #[arg(long, env = "AEMOS_PG_ADDR", default_value = "127.0.0.1:5433", value_parser = parse_optional_addr)]
    pub pg_addr: OptionalAddr,
    /// Arrow Flight SQL over gRPC (ADBC, the Flight SQL JDBC driver, pyarrow), or `off`.
    #[arg(long, env = "AEMOS_FLIGHT_ADDR", default_value = "127.0.0.1:8082", value_parser = parse_optional_addr)]
    pub flight_addr: OptionalAddr,
    /// Postgres connections open at once; one more is refused (`too many clients`).
    #[arg(long, env = "AEMOS_PG_MAX_CONNECTIONS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub pg_max_connections: u32,
    /// Largest MQTT publish; a larger one closes the publisher's connection.
    #[arg(long, env = "AEMOS_MQTT_MAX_PAYLOAD_BYTES", default_value_t = 256 * 1024)]
    pub mqtt_max_payload_bytes: usize,
    /// MQTT connections held at once (both listeners together); one more is refused. Each
    /// needs a file descriptor: raise the process's limit (`ulimit -n`, `LimitNOFILE`) to match.
    #[arg(long, env = "AEMOS_MQTT_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub mqtt_max_connections: u32,
    /// Telemetry the broker holds for aemos (bytes); beyond it the oldest publishes are
    /// dropped and counted (they were acknowledged on receipt).
    #[arg(long, env = "AEMOS_MQTT_BACKLOG_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub mqtt_backlog_bytes: usize,
    /// An external broker in place of the embedded one: `mqtt://[user[:password]@]host[:port]`
    /// or `mqtts://...`. aemos subscribes to the telemetry with a persistent session and
    /// acknowledges each publish once it is durable; notifications and commands go to it too.
    #[arg(long, env = "AEMOS_MQTT_BROKER")]
    pub mqtt_broker: Option<String>,
    /// Username at the external broker (overrides the URL's).
    #[arg(long, env = "AEMOS_MQTT_BROKER_USERNAME")]
    pub mqtt_broker_username: Option<String>,
    /// Password at the external broker (overrides the URL's); never logged.
    #[arg(long, env = "AEMOS_MQTT_BROKER_PASSWORD", hide_env_values = true)]
    pub mqtt_broker_password: Option<String>,
    /// PEM file of the CA that signed the external broker's certificate (`mqtts://`); the
    /// system's roots otherwise.
    #[arg(long, env = "AEMOS_MQTT_BROKER_CA")]
    pub mqtt_broker_ca: Option<PathBuf>,
    /// Client id at the external broker (its session); give each aemos process its own.
    #[arg(long, env = "AEMOS_MQTT_CLIENT_ID", default_value = "aemos")]
    pub mqtt_client_id: String,
    /// Shared-subscription group for telemetry at the external broker (`$share/{group}/...`),
    /// so that several aemos processes split it; empty: a plain subscription.
    #[arg(long, env = "AEMOS_MQTT_SHARE_GROUP", default_value = "aemos")]
    pub mqtt_share_group: String,
    /// How long a sent command waits for its ack before it is sent again.
    #[arg(long, env = "AEMOS_COMMAND_ACK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub command_ack_timeout: Duration,
    /// Sends of one command at most (the first included); then its status is `timeout`.
    #[arg(long, env = "AEMOS_COMMAND_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub command_max_attempts: u32,
    /// CoAP (UDP) address (port 0 picks a free port).
    #[arg(long, env = "AEMOS_COAP_ADDR", default_value = "127.0.0.1:5683")]
    pub coap_addr: SocketAddr,
    /// CoAP's ACK_TIMEOUT (RFC 7252 §4.8): the first wait for the ACK of a confirmable
    /// notification, then doubling; after four retransmissions the observer is removed.
    #[arg(long, env = "AEMOS_COAP_ACK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub coap_ack_timeout: Duration,
    #[command(flatten)]
    pub store: StoreArgs,
    /// How often the buffer is persisted to Parquet.
    #[arg(long, env = "AEMOS_PERSIST_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub persist_interval: Duration,
    /// Persist early when the buffer holds this many readings.
    #[arg(long, env = "AEMOS_PERSIST_ROWS", default_value_t = 10_000_000)]
    pub persist_rows: usize,
    /// Readings older than this are deleted.
    #[arg(long, env = "AEMOS_RETENTION", default_value = "90d", value_parser = parse_duration)]
    pub retention: Duration,
    /// Readings stamped further ahead of the server's clock than this are refused.
    #[arg(long, env = "AEMOS_MAX_FUTURE", default_value = "1h", value_parser = parse_duration)]
    pub max_future: Duration,
    /// A partition (hour) with this many files is compacted.
    #[arg(long, env = "AEMOS_COMPACTION_MIN_FILES", default_value_t = 8)]
    pub compaction_min_files: usize,
    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, env = "AEMOS_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Bound of the WAL queue: writes beyond it get 503 with Retry-After.
    #[arg(long, env = "AEMOS_WAL_QUEUE", default_value_t = 1024)]
    pub wal_queue: usize,
    /// Writes get 503 while this many readings wait in memory for persistence.
    #[arg(long, env = "AEMOS_MAX_BUFFERED_ROWS", default_value_t = 30_000_000)]
    pub max_buffered_rows: usize,
    /// The circuit breaker opens (telemetry gets 503) when the fuller of the WAL queue and the
    /// buffer reaches this fraction of its bound.
    #[arg(long, env = "AEMOS_BREAKER_OPEN_AT", default_value_t = 0.9, value_parser = parse_fraction)]
    pub breaker_open_at: f64,
    /// An open breaker half-opens at this load, and closes once it has stayed there for
    /// `--breaker-stable`.
    #[arg(long, env = "AEMOS_BREAKER_RECOVER_AT", default_value_t = 0.5, value_parser = parse_fraction)]
    pub breaker_recover_at: f64,
    /// Low-priority writes (`?priority=low`) are shed from this load on.
    #[arg(long, env = "AEMOS_BREAKER_LOW_UNTIL", default_value_t = 0.7, value_parser = parse_fraction)]
    pub breaker_low_until: f64,
    #[arg(long, env = "AEMOS_BREAKER_STABLE", default_value = "5s", value_parser = parse_duration)]
    pub breaker_stable: Duration,
    /// Query parallelism (default: the number of cores).
    #[arg(long, env = "AEMOS_QUERY_PARTITIONS")]
    pub query_partitions: Option<usize>,
    /// A user's SQL query running longer than this is stopped (400 naming the flag).
    #[arg(long, env = "AEMOS_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub query_timeout: Duration,
    /// SQL queries running at once; one more gets 503 with Retry-After.
    #[arg(long, env = "AEMOS_QUERY_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub query_concurrency: u32,
    /// Memory all SQL queries together may hold, in MiB (hash tables, sorts); a query that
    /// needs more fails with 400 "resources exhausted". 0: unbounded.
    #[arg(long, env = "AEMOS_QUERY_MEMORY_MB", default_value_t = 4096)]
    pub query_memory_mb: usize,
    /// Rule engine worker threads (default: the number of cores).
    #[arg(long, env = "AEMOS_WORKERS")]
    pub workers: Option<usize>,
    /// How often the rule engine's time moves without readings (windows, no_data, schedules).
    #[arg(long, env = "AEMOS_ENGINE_TICK", default_value = "100ms", value_parser = parse_duration)]
    pub engine_tick: Duration,
    /// How long firings wait in the local firing log before their segment is sealed and
    /// persisted to Parquet (`rule_firings` over all history); a segment is also sealed at
    /// 65,536 firings.
    #[arg(long, env = "AEMOS_FIRINGS_SEAL_AFTER", default_value = "10m", value_parser = parse_duration)]
    pub firings_seal_after: Duration,
    /// How often devices registered, changed, rotated or removed through other servers sharing
    /// the object store are picked up (one LIST of the change log per poll).
    #[arg(long, env = "AEMOS_REGISTRY_SYNC", default_value = "5s", value_parser = parse_duration)]
    pub registry_sync: Duration,
    #[command(flatten)]
    pub security: SecurityArgs,
}

/// Identity, access and TLS.
#[derive(Clone, Args)]
pub struct SecurityArgs {
    /// `dev`: everything open unless a credential is presented; `production`: every request
    /// needs a user JWT or a device token, and TLS beyond loopback.
    #[arg(long, env = "AEMOS_MODE", value_enum, default_value = "dev")]
    pub mode: crate::auth::Mode,
    /// HS256 secret of user JWTs (at least 32 bytes).
    #[arg(long, env = "AEMOS_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA: RS256, EC P-256: ES256) of an identity provider signing user JWTs.
    #[arg(long, env = "AEMOS_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// The `aud` user JWTs must carry (checked only when given).
    #[arg(long, env = "AEMOS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// PEM certificate chain: TLS for HTTP (and Socket.IO) and both MQTT listeners.
    #[arg(long, env = "AEMOS_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, env = "AEMOS_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Messages per second each device (or user) may send on any protocol; 0: no limit.
    #[arg(long, env = "AEMOS_DEVICE_RATE_LIMIT", default_value_t = 0)]
    pub device_rate_limit: u32,
    /// Burst above `--device-rate-limit` (default: one second's worth).
    #[arg(long, env = "AEMOS_DEVICE_RATE_BURST", default_value_t = 0)]
    pub device_rate_burst: u32,
    /// Requests per second from one address without a credential (dev mode); 0: no limit.
    #[arg(long, env = "AEMOS_CLIENT_RATE_LIMIT", default_value_t = 0)]
    pub client_rate_limit: u32,
    /// Burst above `--client-rate-limit` (default: one second's worth).
    #[arg(long, env = "AEMOS_CLIENT_RATE_BURST", default_value_t = 0)]
    pub client_rate_burst: u32,
}

/// Secrets never reach a log, not even through `Debug`.
impl std::fmt::Debug for SecurityArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityArgs")
            .field("mode", &self.mode)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_public_key", &self.jwt_public_key)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("device_rate_limit", &self.device_rate_limit)
            .field("client_rate_limit", &self.client_rate_limit)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Args)]
pub struct SqlArgs {
    /// The query; without one, an interactive shell (`\?` in it for help).
    pub sql: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// json, ndjson, csv, arrow, parquet, or table (aligned text, the default).
    #[arg(long, default_value = "table")]
    pub format: String,
}
