//! API tests: the router called with `oneshot`, and end to end against the real binary
//! (durability across SIGKILL, `aemos sql`, S3 through a real S3-compatible server).

mod access;
mod backpressure;
mod commands;
mod crash;
mod deploy;
mod device_state;
mod devices_api;
mod durability;
mod edge;
mod edge_abuse;
mod external_broker;
mod firings_history;
mod flight;
mod influx_clients;
mod logs;
mod mqtt_device;
mod overload;
mod postgres;
mod preclean;
mod python;
mod refusals;
mod revocation;
mod router;
mod rules;
mod s3;
mod schedules;
mod secure_edge;
mod server;
