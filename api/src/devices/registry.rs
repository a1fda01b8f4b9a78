//! The device registry: one document per device on the object store
//! (`{prefix}/documents/devices/{id}.json`, beside the rule chains, so servers sharing a bucket
//! share it), loaded at start and cached in memory.
//!
//! A device owns its sensors (a sensor belongs to at most one device) and, implicitly, the
//! sensor named like itself (the MQTT shorthand `{"temperature": 25}` writes it). Its token is
//! shown once, when it is created or rotated; the document keeps only the token's SHA-256 and a
//! generation that rotation increments, so a session opened with an older token (an MQTT
//! connection) is refused at its next packet. Writes are serialized by one lock and stored
//! before the cache changes: what the cache says is on the object store.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aemos_ingest::validate::{check_device, check_sensor};
use aemos_storage::{DocumentChanges, DocumentWatch, Storage};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::auth::token::{self, TokenHash};
use crate::http::ApiError;

/// The document namespace of devices.
pub const DEVICES: &str = "devices";

/// The longest `inactivityTimeout`: the engine's longest window.
const MAX_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `inactivityTimeout` (seed 003 FR7).
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(600);

/// Most sensors one device may list (a gateway may front many).
const MAX_SENSORS: usize = 100_000;

/// What `POST /api/v1/devices` and `PUT /api/v1/devices/{id}` take.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSpec {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub sensors: Vec<String>,
    #[serde(default)]
    pub inactivity_timeout: Option<String>,
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
}

/// The stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeviceRecord {
    id: String,
    sensors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inactivity_timeout: Option<String>,
    #[serde(default)]
    attributes: Map<String, Value>,
    /// Hex SHA-256 of the current token.
    token_sha256: String,
    token_generation: u64,
    created_at: String,
    updated_at: String,
}

/// A registered device, as the cache holds it.
#[derive(Debug)]
pub struct Device {
    pub id: Arc<str>,
    /// Looked up once per run of one sensor in every write of this device: foldhash with a
    /// per-process seed (SipHash was 3% of a production batch-ingestion profile).
    pub sensors: HashSet<String, foldhash::fast::RandomState>,
    pub inactivity_timeout: Duration,
    pub token_generation: u64,
    token_hash: TokenHash,
    record: DeviceRecord,
}

impl Device {
    fn from_record(record: DeviceRecord) -> Result<Self, String> {
        let mut token_hash = [0u8; 32];
        hex::decode_to_slice(&record.token_sha256, &mut token_hash)
            .map_err(|e| format!("device {:?}: token hash: {e}", record.id))?;
        let inactivity_timeout = match &record.inactivity_timeout {
            Some(t) => crate::cli::parse_duration(t)?,
            None => DEFAULT_INACTIVITY_TIMEOUT,
        };
        Ok(Self {
            id: Arc::from(record.id.as_str()),
            sensors: record.sensors.iter().cloned().collect(),
            inactivity_timeout,
            token_generation: record.token_generation,
            token_hash,
            record,
        })
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
        let r = &self.record;
        json!({
            "id": r.id,
            "sensors": r.sensors,
            "inactivityTimeout": r.inactivity_timeout
                .clone()
                .unwrap_or_else(|| humantime::format_duration(DEFAULT_INACTIVITY_TIMEOUT).to_string()),
            "attributes": r.attributes,
            "tokenGeneration": r.token_generation,
            "createdAt": r.created_at,
            "updatedAt": r.updated_at,
        })
    }
}

#[derive(Debug, Default)]
struct Cache {
    devices: HashMap<Arc<str>, Arc<Device>>,
    by_token: HashMap<TokenHash, Arc<Device>>,
    /// Every sensor of every device, and every device's own name, to its device.
    owner: HashMap<String, Arc<str>>,
}

impl Cache {
    fn insert(&mut self, device: Arc<Device>) {
        self.owner
            .insert(device.id.to_string(), Arc::clone(&device.id));
        for s in &device.sensors {
            self.owner.insert(s.clone(), Arc::clone(&device.id));
        }
        self.by_token.insert(device.token_hash, Arc::clone(&device));
        self.devices.insert(Arc::clone(&device.id), device);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Device>> {
        let device = self.devices.remove(id)?;
        self.by_token.remove(&device.token_hash);
        self.owner.remove(id);
        for s in &device.sensors {
            self.owner.remove(s);
        }
        Some(device)
    }
}

/// A change another server made, as [`DeviceRegistry::sync`] applied it.
#[derive(Debug)]
pub enum RegistryChange {
    /// Registered or changed; `presence` when its sensors or timeout moved (or it is new), so
    /// its presence chain is (re)installed.
    Upserted {
        device: Arc<Device>,
        presence: bool,
    },
    Removed(Arc<str>),
}

#[derive(Debug)]
pub struct DeviceRegistry {
    storage: Arc<Storage>,
    cache: RwLock<Cache>,
    /// Where this server is in the log of device documents changed by any server.
    watch: tokio::sync::Mutex<DocumentWatch>,
    writes: tokio::sync::Mutex<()>,
    /// Counts the rotations and removals: sessions that outlive a request (Socket.IO sockets)
    /// recheck their credential when it moves.
    revocations: tokio::sync::watch::Sender<u64>,
}

fn parse_document(doc: Value) -> Option<Device> {
    match serde_json::from_value::<DeviceRecord>(doc)
        .map_err(|e| e.to_string())
        .and_then(Device::from_record)
    {
        Ok(device) => Some(device),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable device document skipped");
            None
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl DeviceRegistry {
    /// Loads every stored device; an unreadable document is skipped with a warning.
    pub async fn load(storage: Arc<Storage>) -> anyhow::Result<Arc<Self>> {
        let watch = storage.watch_documents(DEVICES);
        let mut cache = Cache::default();
        for doc in storage.documents(DEVICES).await? {
            if let Some(device) = parse_document(doc) {
                cache.insert(Arc::new(device));
            }
        }
        Ok(Arc::new(Self {
            storage,
            cache: RwLock::new(cache),
            watch: tokio::sync::Mutex::new(watch),
            writes: tokio::sync::Mutex::new(()),
            revocations: tokio::sync::watch::Sender::new(0),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_cache(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.read().devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().devices.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<Arc<Device>> {
        self.read().devices.get(id).cloned()
    }

    /// Every device, by id.
    pub fn list(&self) -> Vec<Arc<Device>> {
        let mut all: Vec<_> = self.read().devices.values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The device a token belongs to (its current token only).
    pub fn by_token(&self, token: &str) -> Option<Arc<Device>> {
        let hash = token::hash(token);
        let device = self.read().by_token.get(&hash).cloned()?;
        token::same_hash(&device.token_hash, &hash).then_some(device)
    }

    /// The device that owns `sensor`, if any.
    pub fn owner(&self, sensor: &str) -> Option<Arc<str>> {
        self.read().owner.get(sensor).cloned()
    }

    /// Checks a spec against the contract and the other devices; returns the sensors.
    fn check(&self, id: &str, spec: &DeviceSpec) -> Result<Vec<String>, ApiError> {
        check_device(id).map_err(|e| ApiError::BadRequest(format!("`id`: {e}")))?;
        if spec.sensors.len() > MAX_SENSORS {
            return Err(ApiError::BadRequest(format!(
                "`sensors` lists {} sensors; at most {MAX_SENSORS}",
                spec.sensors.len()
            )));
        }
        let mut seen = HashSet::new();
        for (i, s) in spec.sensors.iter().enumerate() {
            check_sensor(s).map_err(|e| ApiError::BadRequest(format!("`sensors[{i}]`: {e}")))?;
            if !seen.insert(s.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "`sensors[{i}]`: {s:?} is listed twice"
                )));
            }
        }
        if let Some(t) = &spec.inactivity_timeout {
            let d = crate::cli::parse_duration(t)
                .map_err(|e| ApiError::BadRequest(format!("`inactivityTimeout`: {e}")))?;
            if d.is_zero() {
                return Err(ApiError::BadRequest(
                    "`inactivityTimeout` must be above zero".into(),
                ));
            }
            if d > MAX_INACTIVITY_TIMEOUT {
                return Err(ApiError::BadRequest(
                    "`inactivityTimeout` must be at most 7d (the longest window the engine \
                     keeps)"
                        .into(),
                ));
            }
        }
        let cache = self.read();
        if let Some(owner) = cache.owner.get(id).filter(|o| &***o != id) {
            return Err(ApiError::Conflict(format!(
                "`id` {id:?} is a sensor of device {owner:?}"
            )));
        }
        for s in &spec.sensors {
            if let Some(owner) = cache.owner.get(s).filter(|o| &***o != id) {
                return Err(ApiError::Conflict(format!(
                    "sensor {s:?} belongs to device {owner:?}"
                )));
            }
        }
        Ok(spec.sensors.iter().filter(|s| *s != id).cloned().collect())
    }

    async fn store(&self, record: &DeviceRecord) -> Result<Arc<Device>, ApiError> {
        let device = Arc::new(Device::from_record(record.clone()).map_err(ApiError::internal)?);
        let doc = serde_json::to_value(record).map_err(ApiError::internal)?;
        self.storage
            .put_document(DEVICES, &record.id, &doc)
            .await
            .map_err(ApiError::internal)?;
        Ok(device)
    }

    /// Registers a device; returns it and its token (shown once).
    pub async fn create(&self, spec: DeviceSpec) -> Result<(Arc<Device>, String), ApiError> {
        let id = spec
            .id
            .clone()
            .ok_or_else(|| ApiError::BadRequest("missing field `id`".into()))?;
        let _writes = self.writes.lock().await;
        if self.get(&id).is_some() {
            return Err(ApiError::Conflict(format!("device {id:?} already exists")));
        }
        let sensors = self.check(&id, &spec)?;
        let token = token::generate();
        let now = now_rfc3339();
        let record = DeviceRecord {
            id,
            sensors,
            inactivity_timeout: spec.inactivity_timeout,
            attributes: spec.attributes.unwrap_or_default(),
            token_sha256: hex::encode(token::hash(&token)),
            token_generation: 1,
            created_at: now.clone(),
            updated_at: now,
        };
        let device = self.store(&record).await?;
        self.write_cache().insert(Arc::clone(&device));
        Ok((device, token))
    }

    /// Replaces a device's sensors, timeout and attributes; its token stays.
    pub async fn update(&self, id: &str, spec: DeviceSpec) -> Result<Arc<Device>, ApiError> {
        if let Some(body_id) = spec.id.as_deref().filter(|b| *b != id) {
            return Err(ApiError::BadRequest(format!(
                "the body's id {body_id:?} is not the path's {id:?}"
            )));
        }
        let _writes = self.writes.lock().await;
        let old = self
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))?;
        let sensors = self.check(id, &spec)?;
        let mut record = old.record.clone();
        record.sensors = sensors;
        record.inactivity_timeout = spec.inactivity_timeout;
        record.attributes = spec.attributes.unwrap_or_default();
        record.updated_at = now_rfc3339();
        let device = self.store(&record).await?;
        let mut cache = self.write_cache();
        cache.remove(id);
        cache.insert(Arc::clone(&device));
        Ok(device)
    }

    /// Moves at each rotation and removal.
    pub fn revocations(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revocations.subscribe()
    }

    /// A new token for the device; the old one stops working at once.
    pub async fn rotate(&self, id: &str) -> Result<(Arc<Device>, String), ApiError> {
        let _writes = self.writes.lock().await;
        let old = self
            .get(id)
            .ok_or_else(|| ApiError::NotFound(format!("no device {id:?}")))?;
        let token = token::generate();
        let mut record = old.record.clone();
        record.token_sha256 = hex::encode(token::hash(&token));
        record.token_generation += 1;
        record.updated_at = now_rfc3339();
        let device = self.store(&record).await?;
        let mut cache = self.write_cache();
        cache.remove(id);
        cache.insert(Arc::clone(&device));
        drop(cache);
        self.revocations.send_modify(|n| *n += 1);
        Ok((device, token))
    }

    pub async fn delete(&self, id: &str) -> Result<(), ApiError> {
        let _writes = self.writes.lock().await;
        if self.get(id).is_none() {
            return Err(ApiError::NotFound(format!("no device {id:?}")));
        }
        self.storage
            .remove_document(DEVICES, id)
            .await
            .map_err(ApiError::internal)?;
        self.write_cache().remove(id);
        self.revocations.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Applies what other servers sharing the object store changed since the last call: the
    /// devices whose documents moved are read again (a rotation or removal elsewhere ends the
    /// old token here too). Serialized with this server's own writes.
    pub async fn sync(&self) -> anyhow::Result<Vec<RegistryChange>> {
        let mut watch = self.watch.lock().await;
        let changes = self.storage.document_changes(&mut watch).await?;
        drop(watch);
        let _writes = self.writes.lock().await;
        let mut found: Vec<(String, Option<Device>)> = Vec::new();
        match changes {
            DocumentChanges::Changed(names) => {
                for name in names {
                    let doc = self.storage.document(DEVICES, &name).await?;
                    found.push((name, doc.and_then(parse_document)));
                }
            }
            DocumentChanges::Reload => {
                tracing::warn!("device changes may have been missed: reloading every device");
                let mut stored: HashMap<String, Device> = HashMap::new();
                for doc in self.storage.documents(DEVICES).await? {
                    if let Some(device) = parse_document(doc) {
                        stored.insert(device.id.to_string(), device);
                    }
                }
                for id in self.read().devices.keys() {
                    if !stored.contains_key(&**id) {
                        found.push((id.to_string(), None));
                    }
                }
                found.extend(stored.into_iter().map(|(id, d)| (id, Some(d))));
            }
        }
        let mut applied = Vec::new();
        let mut revoked = false;
        let mut cache = self.write_cache();
        for (id, stored) in found {
            let old = cache.devices.get(id.as_str()).cloned();
            match (old, stored) {
                (None, None) => {}
                (Some(old), None) => {
                    cache.remove(&id);
                    revoked = true;
                    applied.push(RegistryChange::Removed(Arc::clone(&old.id)));
                }
                (old, Some(new)) => {
                    if old.as_ref().is_some_and(|o| o.record == new.record) {
                        continue; // this server's own change, or one already applied
                    }
                    let presence = old.as_ref().is_none_or(|o| {
                        o.sensors != new.sensors || o.inactivity_timeout != new.inactivity_timeout
                    });
                    revoked |= old.as_ref().is_some_and(|o| o.token_hash != new.token_hash);
                    let device = Arc::new(new);
                    cache.remove(&id);
                    cache.insert(Arc::clone(&device));
                    applied.push(RegistryChange::Upserted { device, presence });
                }
            }
        }
        drop(cache);
        if revoked {
            self.revocations.send_modify(|n| *n += 1);
        }
        Ok(applied)
    }
}
