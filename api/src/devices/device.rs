//! One registered device as the registry's cache holds it ([`Device`]), and as its document
//! stores it ([`DeviceRecord`]).
//!
//! The cache holds every device of the deployment, most of them idle, so a device is kept small
//! (issue 11's budget is 2 KiB of engine and registry state per idle device): its sensors are one
//! boxed slice of shared names (the registry's owner map points at the same allocations), with a
//! hash index only for a gateway's long list; its times are integers, its attributes absent when
//! empty, its token only the SHA-256 (no hex copy); the document is rebuilt when it is stored.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::token::TokenHash;

/// Default `inactivityTimeout` (seed 003 FR7).
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// Up to this many sensors, a lookup scans the list; past it, a hash set answers.
const SCAN_LIMIT: usize = 8;

type FastSet = HashSet<Arc<str>, foldhash::fast::RandomState>;

/// A device's sensors, in the order its registration listed them (never its own name, which
/// it owns implicitly).
#[derive(Debug, Default, Clone)]
pub struct Sensors {
    list: Box<[Arc<str>]>,
    /// Looked up once per run of one sensor in every write of this device: foldhash with a
    /// per-process seed (SipHash was 3% of a production batch-ingestion profile).
    index: Option<Box<FastSet>>,
}

impl Sensors {
    pub fn new(list: Vec<Arc<str>>) -> Self {
        let index = (list.len() > SCAN_LIMIT).then(|| Box::new(list.iter().cloned().collect()));
        Self {
            list: list.into_boxed_slice(),
            index,
        }
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.list.iter()
    }

    pub fn contains(&self, sensor: &str) -> bool {
        match &self.index {
            Some(index) => index.contains(sensor),
            None => self.list.iter().any(|s| &**s == sensor),
        }
    }
}

impl PartialEq for Sensors {
    fn eq(&self, other: &Self) -> bool {
        self.list == other.list
    }
}

/// The stored document (`{prefix}/documents/devices/{id}.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeviceRecord {
    pub id: String,
    pub sensors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactivity_timeout: Option<String>,
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Hex SHA-256 of the current token.
    pub token_sha256: String,
    pub token_generation: u64,
    pub created_at: String,
    pub updated_at: String,
}

/// A registered device.
#[derive(Debug, PartialEq)]
pub struct Device {
    pub id: Arc<str>,
    pub sensors: Sensors,
    pub inactivity_timeout: Duration,
    pub token_generation: u64,
    pub(super) token_hash: TokenHash,
    /// `inactivityTimeout` as the user wrote it (shown back verbatim); `None`: the default.
    pub(super) inactivity_text: Option<Box<str>>,
    /// `None` when there are none.
    pub(super) attributes: Option<Box<Map<String, Value>>>,
    pub(super) created_at_ms: i64,
    pub(super) updated_at_ms: i64,
}

fn parse_time(id: &str, field: &str, text: &str) -> Result<i64, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("device {id:?}: `{field}` {text:?}: {e}"))
}

/// Milliseconds since the epoch as RFC 3339 (UTC, milliseconds), as the API shows times.
pub(super) fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Device {
    pub(super) fn from_record(record: DeviceRecord) -> Result<Self, String> {
        let id = record.id;
        let mut token_hash = [0u8; 32];
        hex::decode_to_slice(&record.token_sha256, &mut token_hash)
            .map_err(|e| format!("device {id:?}: token hash: {e}"))?;
        let inactivity_timeout = match &record.inactivity_timeout {
            Some(t) => crate::cli::parse_duration(t).map_err(|e| format!("device {id:?}: {e}"))?,
            None => DEFAULT_INACTIVITY_TIMEOUT,
        };
        let created_at_ms = parse_time(&id, "createdAt", &record.created_at)?;
        let updated_at_ms = parse_time(&id, "updatedAt", &record.updated_at)?;
        let sensors = record.sensors.into_iter().map(Arc::from).collect();
        Ok(Self {
            id: Arc::from(id),
            sensors: Sensors::new(sensors),
            inactivity_timeout,
            token_generation: record.token_generation,
            token_hash,
            inactivity_text: record.inactivity_timeout.map(String::into_boxed_str),
            attributes: (!record.attributes.is_empty()).then(|| Box::new(record.attributes)),
            created_at_ms,
            updated_at_ms,
        })
    }

    pub(super) fn to_record(&self) -> DeviceRecord {
        DeviceRecord {
            id: self.id.to_string(),
            sensors: self.sensors.iter().map(|s| s.to_string()).collect(),
            inactivity_timeout: self.inactivity_text.as_deref().map(str::to_string),
            attributes: self.attributes.as_deref().cloned().unwrap_or_default(),
            token_sha256: hex::encode(self.token_hash),
            token_generation: self.token_generation,
            created_at: format_time(self.created_at_ms),
            updated_at: format_time(self.updated_at_ms),
        }
    }

    /// The SHA-256 of the device's current token (what an MQTT session remembers).
    pub fn token_hash(&self) -> TokenHash {
        self.token_hash
    }

    /// Whether this device may write `sensor`: one of its sensors, or its own name.
    pub fn owns(&self, sensor: &str) -> bool {
        sensor == &*self.id || self.sensors.contains(sensor)
    }

    /// The device as the API shows it (never its token or the token's hash).
    pub fn to_json(&self) -> Value {
        let sensors: Vec<&str> = self.sensors.iter().map(|s| &**s).collect();
        json!({
            "id": &*self.id,
            "sensors": sensors,
            "inactivityTimeout": self.inactivity_text.as_deref().map_or_else(
                || humantime::format_duration(DEFAULT_INACTIVITY_TIMEOUT).to_string(),
                str::to_string,
            ),
            "attributes": self.attributes.as_deref().cloned().unwrap_or_default(),
            "tokenGeneration": self.token_generation,
            "createdAt": format_time(self.created_at_ms),
            "updatedAt": format_time(self.updated_at_ms),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sensors: usize) -> DeviceRecord {
        DeviceRecord {
            id: "purifier-1".into(),
            sensors: (0..sensors).map(|i| format!("s{i}")).collect(),
            inactivity_timeout: Some("90s".into()),
            attributes: Map::new(),
            token_sha256: hex::encode([7u8; 32]),
            token_generation: 3,
            created_at: "2026-12-04T10:00:00.125Z".into(),
            updated_at: "2026-12-04T11:00:00.000Z".into(),
        }
    }

    #[test]
    fn a_record_survives_the_round_trip() {
        for n in [0, 1, SCAN_LIMIT, SCAN_LIMIT + 1, 50] {
            let r = record(n);
            let device = Device::from_record(r.clone()).unwrap();
            assert_eq!(device.to_record(), r);
            assert_eq!(device.inactivity_timeout, Duration::from_secs(90));
            assert!(device.owns("purifier-1"));
            assert_eq!(device.owns(&format!("s{}", n.saturating_sub(1))), n > 0);
            assert!(!device.owns(&format!("s{n}")));
        }
    }

    #[test]
    fn an_unreadable_time_names_its_field() {
        let mut r = record(1);
        r.updated_at = "yesterday".into();
        let err = Device::from_record(r).unwrap_err();
        assert!(err.contains("`updatedAt`"), "{err}");
    }
}
