//! Storage tests: WAL durability and replay, persistence, catalog concurrency, compaction,
//! retention.

mod catalog;
mod documents;
mod faults;
mod helpers;
mod log_tables;
mod persist;
mod wal;
