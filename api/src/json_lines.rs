//! Append-only logs of one JSON object per line (the firing log, the command journal): read
//! back up to the first line that is torn or unreadable, which a crash mid-write leaves last.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::de::DeserializeOwned;
use tracing::warn;

/// Hands each readable record of the file at `path` to `each`, in order, and returns the length
/// in bytes of that readable prefix (the caller cuts the rest off). A missing file is empty.
pub fn read_json_lines<T: DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(T),
) -> std::io::Result<u64> {
    let Ok(file) = File::open(path) else {
        return Ok(0);
    };
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    let mut good_len = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line)?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        match serde_json::from_str::<T>(&line) {
            Ok(record) => {
                each(record);
                good_len += n as u64;
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cutting off an unreadable tail");
                break;
            }
        }
    }
    Ok(good_len)
}
