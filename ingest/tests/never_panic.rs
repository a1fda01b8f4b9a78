//! Arbitrary and mutated payloads never panic a decoder: they decode, or fail with an error.

use aemos_ingest::{decode, DecodeArgs, Format, Precision};
use proptest::prelude::*;

const FORMATS: [Format; 4] = [
    Format::Json,
    Format::Ndjson,
    Format::LineProtocol(Precision::Nanoseconds),
    Format::ArrowIpc,
];

fn valid_ipc() -> Vec<u8> {
    use arrow::array::{Float64Array, RecordBatch, StringArray};
    use std::sync::Arc;
    let batch = RecordBatch::try_from_iter(vec![
        (
            "sensor",
            Arc::new(StringArray::from(vec!["s-1", "s-2"])) as _,
        ),
        ("variable", Arc::new(StringArray::from(vec!["t", "h"])) as _),
        ("value", Arc::new(Float64Array::from(vec![1.0, 2.0])) as _),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    drop(w);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        for format in FORMATS {
            let _ = decode(format, &body, &DecodeArgs::new(0));
        }
    }

    #[test]
    fn mutated_valid_payloads(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>()) {
        let json = br#"{"readings":[{"sensor":"s-1","variable":"t","value":1.5,"time":"2026-01-20T10:30:00Z"},{"sensor":"s-2","variable":"h","value":true,"time":1768905000000}]}"#.to_vec();
        let lp = b"air,sensor=s-1 t=1.5,h=2i,on=true 1768905000000000000\nair,device=d v=3u\n".to_vec();
        for (format, mut body) in [(Format::Json, json.clone()), (Format::Ndjson, json), (Format::LineProtocol(Precision::Nanoseconds), lp), (Format::ArrowIpc, valid_ipc())] {
            for (at, byte) in &flips {
                let i = at.index(body.len());
                body[i] = *byte;
            }
            let _ = decode(format, &body, &DecodeArgs::new(0));
            body.truncate(cut.index(body.len() + 1));
            let _ = decode(format, &body, &DecodeArgs::new(0));
        }
    }
}

/// The corpora the fuzzer (`fuzz/`) built for its `decoders`, `mqtt_packets` (with the inputs
/// that made the MQTT 5 codec panic) and `coap_messages` targets, replayed: each input decodes
/// or fails with an error.
#[test]
fn the_fuzz_corpus_replays() {
    let targets: [(&str, fn(&[u8])); 3] = [
        ("decoders", aemos_ingest::fuzzing::decode_selected),
        ("mqtt_packets", aemos_ingest::fuzzing::mqtt_packets),
        ("coap_messages", aemos_ingest::fuzzing::coap_message),
    ];
    for (target, harness) in targets {
        let dir = std::path::PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
        )
        .join("../fuzz/corpus")
        .join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).expect("fuzz/corpus") {
            harness(&std::fs::read(entry.unwrap().path()).unwrap());
            inputs += 1;
        }
        assert!(inputs > 100, "{inputs} inputs in {}", dir.display());
    }
}
