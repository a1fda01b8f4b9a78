//! The write scopes the registry gives each credential (see [`aemos_ingest::SensorScope`]).

use std::sync::Arc;

use aemos_ingest::{Owner, SensorScope};

use super::{Device, DeviceRegistry};

/// A device token: the device's own sensors, nothing else.
#[derive(Debug)]
pub struct DeviceScope(pub Arc<Device>);

impl SensorScope for DeviceScope {
    fn device_of(&self, sensor: &str) -> Result<Owner<'_>, String> {
        if self.0.owns(sensor) {
            Ok(Owner::Device(&self.0.id))
        } else {
            Err(format!(
                "sensor {sensor:?} is not a sensor of device {:?}",
                self.0.id
            ))
        }
    }

    fn is_device(&self) -> bool {
        true
    }
}

/// A user (or, in `dev` mode, anyone): registered sensors carry their device; an unregistered
/// sensor is refused in `production` mode and belongs to no device in `dev` mode.
#[derive(Debug)]
pub struct RegistryScope {
    pub registry: Arc<DeviceRegistry>,
    pub production: bool,
}

impl SensorScope for RegistryScope {
    fn device_of(&self, sensor: &str) -> Result<Owner<'_>, String> {
        match self.registry.owner(sensor) {
            Some(owner) => Ok(Owner::Shared(owner)),
            None if self.production => Err(format!(
                "sensor {sensor:?} is not registered (production mode accepts only the sensors of registered devices)"
            )),
            None => Ok(Owner::Unowned),
        }
    }
}
