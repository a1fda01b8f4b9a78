//! Keeps this server's registry in step with the other servers sharing the object store: every
//! `--registry-sync` it applies the device documents they changed ([`DeviceRegistry::sync`])
//! and (re)installs or removes the presence chains of the devices concerned. A rotation or a
//! removal made elsewhere stops the old token here within one period.

use std::sync::Arc;
use std::time::Duration;

use aemos_engine::Engine;
use tracing::warn;

use super::presence;
use super::registry::{DeviceRegistry, RegistryChange};

pub fn spawn(registry: Arc<DeviceRegistry>, engine: Arc<Engine>, every: Duration) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let changes = match registry.sync().await {
                Ok(changes) => changes,
                Err(e) => {
                    warn!(error = %e, "reading the device changes of other servers");
                    continue;
                }
            };
            if changes.is_empty() {
                continue;
            }
            let engine = Arc::clone(&engine);
            let applied = tokio::task::spawn_blocking(move || apply(&engine, changes)).await;
            if let Err(e) = applied {
                warn!(error = %e, "installing presence chains of devices changed elsewhere");
            }
        }
    });
}

fn apply(engine: &Engine, changes: Vec<RegistryChange>) {
    for change in changes {
        let done = match change {
            RegistryChange::Upserted {
                device,
                presence: true,
            } => engine.upsert(presence::presence_chain(&device)).map(|_| ()),
            RegistryChange::Upserted { .. } => Ok(()),
            RegistryChange::Removed(id) => match engine.remove(&presence::chain_id(&id)) {
                Err(aemos_engine::Error::UnknownChain(_)) | Ok(_) => Ok(()),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = done {
            warn!(error = %e, "presence chain of a device changed elsewhere");
        }
    }
}
