//! The fuzz harness of the chain parser and compiler, here so that the fuzz target (`fuzz/`)
//! and the suite's replay of its corpus (`tests/it/fuzz_corpus.rs`) run the same code.

use crate::{ChainSpec, CompiledChain};

/// Parses `data` as a chain document and compiles it, and compiles it as the condition of a
/// filter (the expression parser, lowering, normal form). Errors are values; panics only on
/// a bug.
pub fn compile_any(data: &[u8]) {
    if let Ok(spec) = serde_json::from_slice::<ChainSpec>(data) {
        let _ = CompiledChain::compile(spec);
    }
    if let Ok(condition) = std::str::from_utf8(data) {
        let spec = serde_json::json!({
            "id": "fuzz",
            "nodes": [{"type": "filter", "sensor": "s", "condition": condition}]
        });
        if let Ok(spec) = serde_json::from_value::<ChainSpec>(spec) {
            let _ = CompiledChain::compile(spec);
        }
    }
}
