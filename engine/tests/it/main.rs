//! Engine tests: compilation errors, scenarios through the real workers, and the oracle.

mod compile;
mod oracle;
mod scenarios;
mod support;
