//! The identity layer as the device edge sees it: [`EdgeAuthorizer`] over [`Auth`].
//!
//! MQTT, `production` mode: a device connects with its id as client id and username and its
//! token as password. The token's generation is remembered per client id; a packet from a
//! session whose token has since been rotated (or whose device was removed) closes it. A device
//! publishes to its own `telemetry` and `acks` topics and subscribes to its own `commands`,
//! `notifications` and `errors` topics, without wildcards. In both modes nobody but aemos
//! publishes to `notifications` or `commands`, and publishes count against the device's rate
//! limit. CoAP: a device token in `?token=`; a user JWT may observe in place of a device.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aemos_ingest::edge_auth::{device_topic, is_server_topic};
use aemos_ingest::{EdgeAuthorizer, EdgeDevice, EdgeRefusal, SensorScope};

use super::token::{self, TokenHash};
use super::{Access, Auth, AuthError, Principal};
use crate::devices::scope::{DeviceScope, RegistryScope};
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct EdgeAuth {
    auth: Arc<Auth>,
    metrics: Metrics,
    /// MQTT client id -> the hash of the token it connected with (not a generation: a device
    /// removed and registered again starts at generation 1 with another token).
    sessions: Mutex<HashMap<String, TokenHash>>,
}

impl EdgeAuth {
    pub fn new(auth: Arc<Auth>, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            auth,
            metrics,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn refuse(&self, protocol: &str, e: AuthError) -> EdgeRefusal {
        let (reason, refusal) = match e {
            AuthError::Missing => ("missing", EdgeRefusal::Unauthorized(e.to_string())),
            AuthError::Invalid(r) => ("invalid", EdgeRefusal::Unauthorized(r)),
            AuthError::Forbidden(r) => ("forbidden", EdgeRefusal::Forbidden(r)),
            AuthError::RateLimited { retry_after_ms } => (
                "rate_limited",
                EdgeRefusal::RateLimited(std::time::Duration::from_millis(retry_after_ms)),
            ),
        };
        self.metrics
            .auth_refusals
            .with_label_values(&[protocol, reason])
            .inc();
        refusal
    }

    /// The session's device, if its token is still the one it connected with.
    fn session_device(&self, client_id: &str) -> Result<(), AuthError> {
        let connected = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client_id)
            .copied();
        let current = self.auth.registry.get(client_id).map(|d| d.token_hash());
        match (connected, current) {
            (Some(a), Some(b)) if token::same_hash(&a, &b) => Ok(()),
            (_, None) => Err(AuthError::Invalid(format!(
                "device {client_id:?} is no longer registered"
            ))),
            _ => Err(AuthError::Invalid(
                "the device's token was rotated; connect again with the new one".into(),
            )),
        }
    }

    fn limit(&self, key: String, protocol: &str) -> Result<(), AuthError> {
        if !self.auth.limits.limits_keys() {
            return Ok(());
        }
        self.auth
            .limits
            .check_key(key, protocol)
            .map_err(|wait| AuthError::RateLimited {
                retry_after_ms: wait.as_millis() as u64,
            })
    }

    /// The rate limit of a publish, without building its key when limits are off.
    fn limit_mqtt(&self, prefix: &str, client_id: &str) -> Result<(), AuthError> {
        if !self.auth.limits.limits_keys() {
            return Ok(());
        }
        self.limit(format!("{prefix}{client_id}"), "mqtt")
    }

    fn dev_scope(&self) -> Option<Arc<dyn SensorScope>> {
        (!self.auth.registry.is_empty()).then(|| {
            Arc::new(RegistryScope {
                registry: Arc::clone(&self.auth.registry),
                production: false,
            }) as Arc<dyn SensorScope>
        })
    }
}

impl EdgeAuthorizer for EdgeAuth {
    fn mqtt_requires_login(&self) -> bool {
        self.auth.production()
    }

    fn mqtt_connect(&self, client_id: &str, username: &str, password: &str) -> bool {
        if !self.auth.production() {
            return true;
        }
        let outcome = match self.auth.registry.by_token(password) {
            Some(device) if &*device.id == username && username == client_id => {
                self.sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(client_id.to_owned(), device.token_hash());
                Ok(())
            }
            Some(_) => Err(AuthError::Invalid(
                "username and client id must be the token's device id".into(),
            )),
            None => Err(AuthError::Invalid("device token is not valid".into())),
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(client_id, reason = %e, "mqtt: connection refused");
                self.refuse("mqtt", e);
                false
            }
        }
    }

    fn mqtt_session(&self, client_id: &str) -> Result<(), EdgeRefusal> {
        if !self.auth.production() {
            return Ok(());
        }
        self.session_device(client_id)
            .map_err(|e| self.refuse("mqtt", e))
    }

    fn mqtt_publish(&self, client_id: &str, topic: &str) -> Result<(), EdgeRefusal> {
        let check = || {
            if is_server_topic(topic) {
                return Err(AuthError::Forbidden(format!(
                    "only aemos publishes to {topic:?}"
                )));
            }
            if self.auth.production() {
                self.session_device(client_id)?;
                match device_topic(topic) {
                    Some((device, "telemetry" | "acks")) if device == client_id => {}
                    _ => {
                        return Err(AuthError::Forbidden(format!(
                            "device {client_id:?} may publish only to aemos/devices/{client_id}/telemetry and .../acks, not {topic:?}"
                        )))
                    }
                }
                self.limit_mqtt("device:", client_id)
            } else {
                self.limit_mqtt("mqtt:", client_id)
            }
        };
        check().map_err(|e| self.refuse("mqtt", e))
    }

    fn mqtt_subscribe(&self, client_id: &str, filter: &str) -> Result<(), EdgeRefusal> {
        if !self.auth.production() {
            return Ok(());
        }
        let check = || {
            self.session_device(client_id)?;
            match device_topic(filter) {
                Some((device, "commands" | "notifications" | "errors")) if device == client_id => {
                    Ok(())
                }
                _ => Err(AuthError::Forbidden(format!(
                    "device {client_id:?} may subscribe only to its own commands, notifications and errors topics, not {filter:?}"
                ))),
            }
        };
        check().map_err(|e| self.refuse("mqtt", e))
    }

    fn mqtt_scope(&self, device: &str) -> Option<Arc<dyn SensorScope>> {
        match self.auth.registry.get(device) {
            Some(d) => Some(Arc::new(DeviceScope(d))),
            None if self.auth.production() => Some(Arc::new(RegistryScope {
                registry: Arc::clone(&self.auth.registry),
                production: true,
            })),
            None => self.dev_scope(),
        }
    }

    fn coap_write(
        &self,
        token: Option<&str>,
        device: Option<&str>,
        source: SocketAddr,
    ) -> Result<EdgeDevice, EdgeRefusal> {
        let check =
            || {
                let principal = self.auth.authorize(token, &Access::WriteReadings)?;
                match principal {
                    Principal::Device(d) => {
                        if let Some(named) = device.filter(|named| *named != &*d.id) {
                            return Err(AuthError::Forbidden(format!(
                                "the token is device {:?}'s, not {named:?}'s",
                                d.id
                            )));
                        }
                        self.limit(format!("device:{}", d.id), "coap")?;
                        Ok(EdgeDevice {
                            id: d.id.to_string(),
                            scope: Some(Arc::new(DeviceScope(d)) as Arc<dyn SensorScope>),
                        })
                    }
                    Principal::User(_) | Principal::Anonymous => {
                        let Some(device) = device else {
                            return Err(AuthError::Invalid(
                                "POST /telemetry needs a device token (?token=T)".into(),
                            ));
                        };
                        match principal.limit_key() {
                            Some(key) => self.limit(key, "coap")?,
                            None => self.auth.limits.check_addr(source.ip(), "coap").map_err(
                                |wait| AuthError::RateLimited {
                                    retry_after_ms: wait.as_millis() as u64,
                                },
                            )?,
                        }
                        let scope = match self.auth.registry.get(device) {
                            Some(d) => Some(Arc::new(DeviceScope(d)) as Arc<dyn SensorScope>),
                            None if self.auth.production() => {
                                return Err(AuthError::Forbidden(format!(
                                    "device {device:?} is not registered"
                                )))
                            }
                            None => self.dev_scope(),
                        };
                        Ok(EdgeDevice {
                            id: device.to_owned(),
                            scope,
                        })
                    }
                }
            };
        check().map_err(|e| self.refuse("coap", e))
    }

    fn coap_read(
        &self,
        token: Option<&str>,
        device: &str,
        _source: SocketAddr,
    ) -> Result<(), EdgeRefusal> {
        self.auth
            .authorize(token, &Access::ReadDevice(device))
            .map(|_| ())
            .map_err(|e| self.refuse("coap", e))
    }
}
