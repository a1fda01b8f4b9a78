//! Append-only logs of JSON records (the firing log, the command journal), one checksummed
//! record per line: `{crc32 of the JSON, 8 hex digits} {JSON}\n`.
//!
//! Reading keeps every record whose checksum holds. A line that fails its checksum or does not
//! parse is skipped and counted when readable records follow it (damage in the middle of the
//! file: the records after it are kept), and cut off when none follows (the torn tail of a
//! crash mid-write). Lines written before checksums existed (`{JSON}` alone) are read as they
//! are.
//!
//! Appending ([`LineFile`]) cuts a failed write back off the file, so no later record follows a
//! partial line; after a failed fsync the file refuses every later append until a restart
//! reads it again (the kernel may have dropped the dirty pages and cleared the error, so the
//! page cache cannot be trusted), as the WAL does.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::warn;

/// What reading a log found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    /// Bytes up to the end of the last readable record (the rest is a torn tail).
    pub good_len: u64,
    /// Records read.
    pub records: u64,
    /// Unreadable lines with readable records after them (skipped, not cut).
    pub skipped: u64,
}

/// Appends `record` to `out` as one checksummed line.
pub fn encode_line<T: Serialize>(out: &mut Vec<u8>, record: &T) -> std::io::Result<()> {
    let start = out.len();
    out.extend_from_slice(b"00000000 ");
    serde_json::to_writer(&mut *out, record).map_err(std::io::Error::other)?;
    let crc = crc32fast::hash(&out[start + 9..]);
    out[start..start + 8].copy_from_slice(format!("{crc:08x}").as_bytes());
    out.push(b'\n');
    Ok(())
}

/// One line without its newline.
fn decode_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, String> {
    if line.first() == Some(&b'{') {
        return serde_json::from_slice(line).map_err(|e| e.to_string());
    }
    let (Some(hex), Some(b' ')) = (line.get(..8), line.get(8)) else {
        return Err("no checksum".into());
    };
    let want = std::str::from_utf8(hex)
        .ok()
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("the checksum is not 8 hex digits")?;
    let json = &line[9..];
    if crc32fast::hash(json) != want {
        return Err("checksum mismatch".into());
    }
    serde_json::from_slice(json).map_err(|e| e.to_string())
}

/// Hands each readable record of the file at `path` to `each`, in order. A missing file is
/// empty.
pub fn read_json_lines<T: DeserializeOwned>(
    path: &Path,
    mut each: impl FnMut(T),
) -> std::io::Result<ReadReport> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ReadReport::default()),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut report = ReadReport::default();
    // Unreadable lines since the last readable record: skipped if one follows, else cut.
    let mut unreadable = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let start = offset;
        offset += n as u64;
        match decode_line::<T>(&line[..n - 1]) {
            Ok(record) => {
                each(record);
                report.records += 1;
                report.skipped += unreadable;
                unreadable = 0;
                report.good_len = offset;
            }
            Err(reason) => {
                warn!(path = %path.display(), offset = start, %reason, "unreadable record");
                unreadable += 1;
            }
        }
    }
    if report.skipped > 0 {
        warn!(path = %path.display(), skipped = report.skipped, "unreadable records skipped; the records after them are kept");
    }
    Ok(report)
}

/// The file a log appends to (see the module docs).
#[derive(Debug)]
pub struct LineFile {
    file: File,
    /// The length of what was written and synced.
    len: u64,
    /// Why appends are refused (a failed fsync, or a failed write that could not be cut off).
    failed: Option<String>,
}

impl LineFile {
    /// Opens `path` for appending after its first `good_len` bytes (what reading it found
    /// readable), cutting off the rest.
    pub fn open(path: &Path, good_len: u64) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        if file.metadata()?.len() > good_len {
            file.set_len(good_len)?;
            file.sync_all()?;
        }
        Ok(Self {
            file,
            len: good_len,
            failed: None,
        })
    }

    /// Writes and syncs `bytes` (whole lines); on error nothing of them stays in the file.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(reason) = &self.failed {
            return Err(std::io::Error::other(format!(
                "the log refuses writes until a restart after an earlier failure: {reason}"
            )));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.file.write_all(bytes) {
            if let Err(cut) = self.file.set_len(self.len) {
                self.failed = Some(format!("{e}; cutting the partial write off failed: {cut}"));
            }
            return Err(e);
        }
        if let Err(e) = self.file.sync_data() {
            self.failed = Some(format!("fsync failed: {e}"));
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Why appends are refused, if they are.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn lines(records: &[Value]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            encode_line(&mut out, r).unwrap();
        }
        out
    }

    fn read(path: &Path) -> (Vec<Value>, ReadReport) {
        let mut got = Vec::new();
        let report = read_json_lines(path, |v: Value| got.push(v)).unwrap();
        (got, report)
    }

    #[test]
    fn damage_in_the_middle_skips_one_record_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = lines(&[json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);
        // A flipped bit inside the second record's JSON: still JSON, wrong checksum.
        let second = bytes.iter().position(|&b| b == b'2').unwrap();
        bytes[second] = b'7';
        std::fs::write(&path, &bytes).unwrap();
        let (got, report) = read(&path);
        assert_eq!(got, vec![json!({"n": 1}), json!({"n": 3})]);
        assert_eq!(report.skipped, 1);
        assert_eq!(report.good_len, bytes.len() as u64, "nothing is cut");
    }

    #[test]
    fn a_torn_or_unreadable_tail_is_cut_and_old_lines_without_checksums_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = b"{\"n\": 0}\n".to_vec();
        bytes.extend(lines(&[json!({"n": 1})]));
        let good = bytes.len() as u64;
        bytes.extend_from_slice(b"garbage\n");
        bytes.extend_from_slice(b"1234abcd {\"n\": 2");
        std::fs::write(&path, &bytes).unwrap();
        let (got, report) = read(&path);
        assert_eq!(got, vec![json!({"n": 0}), json!({"n": 1})]);
        assert_eq!(
            (report.good_len, report.skipped, report.records),
            (good, 0, 2)
        );
        // Opening for appends cuts the tail; a new record follows the last good one.
        let mut file = LineFile::open(&path, report.good_len).unwrap();
        file.append(&lines(&[json!({"n": 3})])).unwrap();
        let (got, report) = read(&path);
        assert_eq!(got.last(), Some(&json!({"n": 3})));
        assert_eq!(report.skipped, 0);
    }

    /// A 64 KiB tmpfs fills up: the failed write is cut off, the next one that fits follows
    /// the last whole record, and reading finds every record that was acknowledged.
    #[test]
    fn a_failed_write_leaves_no_partial_line() {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            assert!(!is_root(), "root could not mount a tmpfs");
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        }
        let path = dir.path().join("log");
        let mut file = LineFile::open(&path, 0).unwrap();
        let small = lines(&[json!({"n": 1})]);
        file.append(&small).unwrap();
        let big = lines(&[json!({"pad": "x".repeat(200_000)})]);
        let err = file.append(&big).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::StorageFull, "{err}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), small.len() as u64);
        file.append(&lines(&[json!({"n": 2})])).unwrap();
        assert!(file.failure().is_none());
        let (got, report) = read(&path);
        let _ = std::process::Command::new("umount")
            .arg(dir.path())
            .status();
        assert_eq!(got, vec![json!({"n": 1}), json!({"n": 2})]);
        assert_eq!(report.skipped, 0);
    }

    fn is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"))
    }
}
