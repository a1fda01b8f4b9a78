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
