//! One CoAP datagram through the CoAP server's message path: parsed, routed, a telemetry
//! payload decoded, the answer encoded (`aemos_ingest::fuzzing::coap_message`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aemos_ingest::fuzzing::coap_message(data));
