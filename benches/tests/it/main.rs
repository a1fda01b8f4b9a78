//! `aemos-loadgen` against the real `aemos` binary: every subcommand runs a short load the way
//! a user runs it, and what it reports is checked against what the server stored.

mod loadgen;
mod server;
