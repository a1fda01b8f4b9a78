//! The HTTP API and the `aemos` binary.
//!
//! `aemos serve` wires the components in dependency order ([`serve::serve`]): the rule engine
//! (its firings held back), storage (WAL replay first; every durable batch then feeds the
//! engine), the query engine over it, the engine's state rebuilt from storage ([`rules`]), then
//! the HTTP router ([`http::router`]). Shutdown
//! runs in reverse: the HTTP server stops accepting and drains, then storage persists what it
//! buffers. Handlers decode and validate on the request's task, wait for the WAL's group
//! commit, and answer only once the readings are durable.

pub mod auth;
pub mod chains_command;
pub mod cli;
pub mod commands;
pub mod config_file;
pub mod devices;
pub mod http;
pub mod json_lines;
pub mod metrics;
pub mod notify;
pub mod rules;
pub mod serve;
pub mod simulate;
pub mod sql_command;
pub mod sql_shell;
pub mod tls;
