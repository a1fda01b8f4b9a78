//! The embedded broker's MQTT 3.1.1 and 5 codecs on arbitrary bytes
//! (`aemos_ingest::fuzzing::mqtt_packets`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aemos_ingest::fuzzing::mqtt_packets(data));
