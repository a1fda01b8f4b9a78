//! Engine tests: compilation errors, scenarios through the real workers, the oracle, and keys
//! that names cannot forge.

mod compile;
mod fuzz_corpus;
mod health;
mod keys;
mod oracle;
mod presence;
mod scenarios;
mod support;
mod wall_clock;
