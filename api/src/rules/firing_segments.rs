//! The firing log on the local disk: numbered segments and the states beside them.
//!
//! ```text
//! {data-dir}/firings/{segment:020}.log   checksummed JSON lines (json_lines.rs); the highest is open
//! {data-dir}/firings/states.json         the states as of the start of segment `before`
//! ```
//!
//! A segment is sealed when it holds `segment_records` records or its first record is
//! `seal_after` old: the next segment is created, and `states.json` is replaced (written,
//! synced, renamed) by the states at the start of the segment just sealed, which is therefore
//! kept: on start it is read again with the open segment, so the notifications' replay buffer
//! comes back with the notifications of up to two segments. Sealed segments are persisted to
//! Parquet by `firings_table.rs`; a segment is deleted once it is persisted and older than
//! `before`. A log written before segments existed (`firings.log`) becomes segment 1.

use std::collections::HashMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const STATES: &str = "states.json";
const LEGACY_LOG: &str = "firings.log";

/// What the records before segment `before` leave behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct States {
    /// The first segment the states do not cover (0: none written yet, every segment counts).
    pub before: u64,
    /// Each chain's last recorded state.
    pub chains: HashMap<String, bool>,
    /// Each device's newest notification seq.
    pub seqs: HashMap<String, u64>,
}

pub(super) fn segment_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:020}.log"))
}

/// The segments in `dir`, oldest first; a log from before segments becomes segment 1.
pub(super) fn list_segments(dir: &Path) -> std::io::Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let parsed = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        segments.extend(parsed);
    }
    let legacy = dir.join(LEGACY_LOG);
    if segments.is_empty() && legacy.exists() {
        std::fs::rename(&legacy, segment_path(dir, 1))?;
        sync_dir(dir)?;
        segments.push(1);
    }
    segments.sort_unstable();
    Ok(segments)
}

/// The states last written (none: the defaults, covering nothing).
pub(super) fn read_states(dir: &Path) -> std::io::Result<States> {
    match std::fs::read(dir.join(STATES)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            std::io::Error::new(
                ErrorKind::InvalidData,
                format!("{}: {e}", dir.join(STATES).display()),
            )
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(States::default()),
        Err(e) => Err(e),
    }
}

/// Replaces `states.json` atomically: written and synced under another name, renamed, the
/// directory synced.
pub(super) fn write_states(dir: &Path, states: &States) -> std::io::Result<()> {
    let tmp = dir.join("states.json.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(states).map_err(std::io::Error::other)?)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(STATES))?;
    sync_dir(dir)
}

/// Makes a file's creation, rename or removal in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_sort_by_number_and_a_legacy_log_becomes_segment_one() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEGACY_LOG), b"").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1]);
        assert!(!dir.path().join(LEGACY_LOG).exists());
        std::fs::write(segment_path(dir.path(), 10), b"").unwrap();
        std::fs::write(segment_path(dir.path(), 2), b"").unwrap();
        std::fs::write(dir.path().join("states.json"), b"{}").unwrap();
        assert_eq!(list_segments(dir.path()).unwrap(), vec![1, 2, 10]);
    }

    #[test]
    fn states_round_trip_and_default_when_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_states(dir.path()).unwrap(), States::default());
        let states = States {
            before: 3,
            chains: HashMap::from([("c".into(), true)]),
            seqs: HashMap::from([("d".into(), 7)]),
        };
        write_states(dir.path(), &states).unwrap();
        assert_eq!(read_states(dir.path()).unwrap(), states);
    }
}
