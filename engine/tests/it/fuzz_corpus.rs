//! The corpus the fuzzer (`fuzz/`, target `chains`) built, replayed: each input parses and
//! compiles, or fails with an error, as it did under the fuzzer.

#[test]
fn the_fuzz_corpus_replays() {
    let dir = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../fuzz/corpus/chains");
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/chains") {
        let path = entry.unwrap().path();
        aemos_engine::fuzzing::compile_any(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs > 100, "{inputs} inputs in {}", dir.display());
}

/// A condition with subscripts is refused before sqlparser reads it, with its column: the
/// fuzzer found conditions of about 200 bytes with nested `[` that sqlparser backtracks over
/// in exponential time (over 10 s each; kept in the corpus above).
#[test]
fn a_condition_with_subscripts_is_refused_before_it_is_parsed() {
    let compile = |condition: &str| {
        let spec = serde_json::json!({
            "id": "sub",
            "nodes": [{"type": "filter", "sensor": "s", "condition": condition}]
        });
        let spec: aemos_engine::ChainSpec = serde_json::from_value(spec).unwrap();
        aemos_engine::CompiledChain::compile(spec).map(|_| ())
    };
    let e = compile("t > 1 AND a[[[1]]] > 2").unwrap_err().to_string();
    assert!(e.contains("no subscripts"), "{e}");
    // A bracket inside a string literal is no subscript.
    let e = compile("t > 1 AND 'x[' = 'x['").map_err(|e| e.to_string());
    assert!(
        e.as_ref()
            .err()
            .is_none_or(|m| !m.contains("no subscripts")),
        "{e:?}"
    );
}
