//! Devices: the registry of devices, their sensors and their tokens ([`registry`]), and the
//! write scopes it gives each credential ([`scope`]), and whether each is online
//! ([`presence`], computed by the rule engine); [`sync`] applies what other servers sharing
//! the object store changed.

mod device;
pub mod presence;
pub mod registry;
pub mod scope;
pub mod sync;

pub use registry::{Device, DeviceRegistry, DeviceSpec, DEVICES};
