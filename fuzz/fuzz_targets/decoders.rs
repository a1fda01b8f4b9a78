//! Every body decoder on arbitrary bytes (`aemos_ingest::fuzzing`).
//!
//! arrow's IPC reader panics on many inconsistent streams (buffers past their body, bitmaps
//! shorter than their arrays, ...); `decode_arrow_ipc` contains that to the request with a
//! `catch_unwind` and answers 400. So a panic raised inside arrow is not a crash here: the
//! hook lets it unwind to that `catch_unwind`. Any other panic, or an arrow panic that
//! escapes it, aborts as libFuzzer's own hook would.
#![no_main]

use std::sync::Once;

static HOOK: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let in_arrow = info
                .location()
                .is_some_and(|l| l.file().contains("/arrow-"));
            if !in_arrow {
                eprintln!("{info}");
                std::process::abort();
            }
        }));
    });
    aemos_ingest::fuzzing::decode_selected(data)
});
