//! Storage tests: WAL durability and replay, persistence, catalog concurrency, compaction,
//! retention.

mod catalog;
mod faults;
mod helpers;
mod persist;
mod wal;
