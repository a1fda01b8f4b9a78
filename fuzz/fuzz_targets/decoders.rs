//! Every body decoder on arbitrary bytes (`aemos_ingest::fuzzing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aemos_ingest::fuzzing::decode_selected(data));
