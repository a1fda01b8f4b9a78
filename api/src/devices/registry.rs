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
use serde::Deserialize;
use serde_json::{Map, Value};

use super::device::DeviceRecord;
pub use super::device::{Device, Sensors, DEFAULT_INACTIVITY_TIMEOUT};
use crate::auth::token::{self, TokenHash};
use crate::http::ApiError;

/// The document namespace of devices.
pub const DEVICES: &str = "devices";

/// The longest `inactivityTimeout`: the engine's longest window.
const MAX_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

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

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Cache {
    devices: FastMap<Arc<str>, Arc<Device>>,
    by_token: FastMap<TokenHash, Arc<Device>>,
    /// Every sensor of every device to its device (the names are the devices' own
    /// allocations). A device's own name is not here: [`Cache::owner`] finds it in `devices`.
    owner: FastMap<Arc<str>, Arc<str>>,
}

impl Cache {
    fn insert(&mut self, device: Arc<Device>) {
        for s in device.sensors.iter() {
            self.owner.insert(Arc::clone(s), Arc::clone(&device.id));
        }
        self.by_token.insert(device.token_hash, Arc::clone(&device));
        self.devices.insert(Arc::clone(&device.id), device);
    }

    fn remove(&mut self, id: &str) -> Option<Arc<Device>> {
        let device = self.devices.remove(id)?;
        self.by_token.remove(&device.token_hash);
        for s in device.sensors.iter() {
            if self.owner.get(s).is_some_and(|o| **o == *id) {
                self.owner.remove(s);
            }
        }
        Some(device)
    }

    /// The device that owns `sensor`: the one listing it, or the one named like it.
    fn owner(&self, sensor: &str) -> Option<&Arc<str>> {
        self.owner
            .get(sensor)
            .or_else(|| self.devices.get(sensor).map(|d| &d.id))
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

fn parse_record(record: DeviceRecord) -> Option<Device> {
    match Device::from_record(record) {
        Ok(device) => Some(device),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable device document skipped");
            None
        }
    }
}

impl DeviceRegistry {
    /// Loads every stored device; an unreadable document is skipped with a warning.
    pub async fn load(storage: Arc<Storage>) -> anyhow::Result<Arc<Self>> {
        let watch = storage.watch_documents(DEVICES);
        let mut cache = Cache::default();
        for record in storage.documents_as::<DeviceRecord>(DEVICES).await? {
            if let Some(device) = parse_record(record) {
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
        self.read().owner(sensor).cloned()
    }

    /// Checks a spec against the contract and the other devices; returns the sensors.
    fn check(&self, id: &str, spec: &DeviceSpec) -> Result<Sensors, ApiError> {
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
            if let Some(owner) = cache.owner(s).filter(|o| &***o != id) {
                return Err(ApiError::Conflict(format!(
                    "sensor {s:?} belongs to device {owner:?}"
                )));
            }
        }
        let sensors = spec.sensors.iter().filter(|s| *s != id);
        Ok(Sensors::new(
            sensors.map(|s| Arc::from(s.as_str())).collect(),
        ))
    }

    /// Stores the device's document; the caller then puts it in the cache.
    async fn store(&self, device: Device) -> Result<Arc<Device>, ApiError> {
        let doc = serde_json::to_value(device.to_record()).map_err(ApiError::internal)?;
        self.storage
            .put_document(DEVICES, &device.id, &doc)
            .await
            .map_err(ApiError::internal)?;
        Ok(Arc::new(device))
    }

    /// What a spec says of the timeout: the duration (checked by [`Self::check`]) and the text.
    fn timeout_of(spec: &mut DeviceSpec) -> (Duration, Option<Box<str>>) {
        let text = spec.inactivity_timeout.take().map(String::into_boxed_str);
        let timeout = text
            .as_deref()
            .and_then(|t| crate::cli::parse_duration(t).ok())
            .unwrap_or(DEFAULT_INACTIVITY_TIMEOUT);
        (timeout, text)
    }

    /// Registers a device; returns it and its token (shown once).
    pub async fn create(&self, mut spec: DeviceSpec) -> Result<(Arc<Device>, String), ApiError> {
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
        let now = self.storage.now_ms();
        let (inactivity_timeout, inactivity_text) = Self::timeout_of(&mut spec);
        let device = Device {
            id: Arc::from(id),
            sensors,
            inactivity_timeout,
            token_generation: 1,
            token_hash: token::hash(&token),
            inactivity_text,
            attributes: spec.attributes.filter(|a| !a.is_empty()).map(Box::new),
            created_at_ms: now,
            updated_at_ms: now,
        };
        let device = self.store(device).await?;
        self.write_cache().insert(Arc::clone(&device));
        Ok((device, token))
    }

    /// Replaces a device's sensors, timeout and attributes; its token stays.
    pub async fn update(&self, id: &str, mut spec: DeviceSpec) -> Result<Arc<Device>, ApiError> {
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
        let (inactivity_timeout, inactivity_text) = Self::timeout_of(&mut spec);
        let device = Device {
            id: Arc::clone(&old.id),
            sensors,
            inactivity_timeout,
            token_generation: old.token_generation,
            token_hash: old.token_hash,
            inactivity_text,
            attributes: spec.attributes.filter(|a| !a.is_empty()).map(Box::new),
            created_at_ms: old.created_at_ms,
            updated_at_ms: self.storage.now_ms(),
        };
        let device = self.store(device).await?;
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
        let device = Device {
            id: Arc::clone(&old.id),
            sensors: old.sensors.clone(),
            inactivity_timeout: old.inactivity_timeout,
            token_generation: old.token_generation + 1,
            token_hash: token::hash(&token),
            inactivity_text: old.inactivity_text.clone(),
            attributes: old.attributes.clone(),
            created_at_ms: old.created_at_ms,
            updated_at_ms: self.storage.now_ms(),
        };
        let device = self.store(device).await?;
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
                    let record = self.storage.document_as(DEVICES, &name).await?;
                    found.push((name, record.and_then(parse_record)));
                }
            }
            DocumentChanges::Reload => {
                tracing::warn!("device changes may have been missed: reloading every device");
                let mut stored: HashMap<String, Device> = HashMap::new();
                for record in self.storage.documents_as::<DeviceRecord>(DEVICES).await? {
                    if let Some(device) = parse_record(record) {
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
                    if old.as_ref().is_some_and(|o| **o == new) {
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
