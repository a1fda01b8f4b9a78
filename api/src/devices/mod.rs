//! Devices: the registry of devices, their sensors and their tokens ([`registry`]), and the
//! write scopes it gives each credential ([`scope`]), and whether each is online
//! ([`presence`], computed by the rule engine).

pub mod presence;
pub mod registry;
pub mod scope;

pub use registry::{Device, DeviceRegistry, DeviceSpec, DEVICES};
