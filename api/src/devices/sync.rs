//! Keeps this server's registry in step with the other servers sharing the object store: every
//! `--registry-sync` it applies the device documents they changed ([`DeviceRegistry::sync`])
//! and watches the presence of the devices concerned again, or no longer. A rotation or a
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
                warn!(error = %e, "watching devices changed elsewhere");
            }
        }
    });
}

fn apply(engine: &Engine, changes: Vec<RegistryChange>) {
    let (mut watch, mut unwatch) = (Vec::new(), Vec::new());
    for change in changes {
        match change {
            RegistryChange::Upserted {
                device,
                presence: true,
            } => watch.push(presence::watch_spec(&device)),
            RegistryChange::Upserted { .. } => {}
            RegistryChange::Removed(id) => unwatch.push(id),
        }
    }
    let unwatch: Vec<&str> = unwatch.iter().map(|id| &**id).collect();
    if let Err(e) = engine.unwatch(&unwatch).and_then(|()| engine.watch(watch)) {
        warn!(error = %e, "presence of devices changed elsewhere");
    }
}
