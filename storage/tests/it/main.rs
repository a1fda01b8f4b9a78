//! Storage tests: WAL durability and replay, persistence, catalog concurrency, compaction,
//! retention.

mod catalog;
mod helpers;
mod persist;
mod wal;
mod wal_faults;
