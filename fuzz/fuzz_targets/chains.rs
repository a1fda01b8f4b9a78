//! The chain parser and compiler on arbitrary input (`aemos_engine::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aemos_engine::fuzzing::compile_any(data));
