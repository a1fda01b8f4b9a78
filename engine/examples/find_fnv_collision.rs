//! The search that found the colliding sensor names of `tests/it/keys.rs`: the function `x -> fnv(name(x))`, `name` spelling the
//! 64 bits of `x` as `s-` and 11 characters of `[A-Za-z0-9_-]`, is iterated from random starts
//! until a state whose low 18 bits are zero (a distinguished point); two walks reaching the same
//! point merged somewhere, and walking them again in step finds two names with one state.
//! About 2^32 steps. Run it with
//! `cargo run -p aemos-engine --release --example find_fnv_collision`.

#[path = "../benches/old_key.rs"]
mod old_key;
use old_key::{fnv, old_key_of, FNV_BASIS};
use std::sync::atomic::Ordering;

fn main() {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const DISTINGUISHED: u64 = (1 << 18) - 1;
    let name = |x: u64| -> String {
        let tail = (0..11).map(|i| ALPHABET[((x >> (6 * i)) & 63) as usize] as char);
        "s-".chars().chain(tail).collect()
    };
    let base = fnv(FNV_BASIS, b"s-");
    let step = |x: u64| {
        (0..11).fold(base, |h, i| {
            fnv(h, &[ALPHABET[((x >> (6 * i)) & 63) as usize]])
        })
    };
    let points: Mutex<HashMap<u64, (u64, u64)>> = Mutex::default();
    let found: Mutex<Option<(String, String)>> = Mutex::default();
    let done = AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (points, found, done) = (&points, &found, &done);
            scope.spawn(move || {
                let mut start = thread << 48;
                while !done.load(Ordering::Relaxed) {
                    start += 1;
                    let first = step(start.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                    let (mut x, mut len) = (first, 0u64);
                    while x & DISTINGUISHED != 0 && len < 20 << 18 {
                        x = step(x);
                        len += 1;
                    }
                    if x & DISTINGUISHED != 0 {
                        continue; // a cycle without a distinguished point
                    }
                    let Some((other, other_len)) = points.lock().unwrap().insert(x, (first, len))
                    else {
                        continue;
                    };
                    // Walk the longer one ahead, then both in step until they meet.
                    let (mut a, mut la, mut b, mut lb) = (first, len, other, other_len);
                    if la < lb {
                        (a, la, b, lb) = (b, lb, a, la);
                    }
                    for _ in lb..la {
                        a = step(a);
                    }
                    if a == b {
                        continue; // one walk started on the other
                    }
                    while step(a) != step(b) {
                        (a, b) = (step(a), step(b));
                    }
                    *found.lock().unwrap() = Some((name(a), name(b)));
                    done.store(true, Ordering::Relaxed);
                }
            });
        }
    });
    let (a, b) = found.into_inner().unwrap().unwrap();
    println!("{a} {b}");
    assert_ne!(a, b);
    assert_eq!(old_key_of(&a, "temperature"), old_key_of(&b, "temperature"));
}
