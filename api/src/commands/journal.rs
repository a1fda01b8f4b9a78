//! The command journal: `{data-dir}/commands/commands.log`, one checksummed JSON command record
//! per line (`json_lines`), appended and fsynced in groups by its own thread. Every change of a
//! command writes its whole record; on open the last record of each id is its state, a torn
//! tail (a crash mid-write) is cut off, a damaged record before readable ones skipped, and the
//! file is rewritten with only those states (minus the closed
//! commands past retention), so it never holds more than a restart's worth of history.
//! A running server compacts the same way once the log holds several times more lines than
//! commands.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::book::Command;
use crate::json_lines::{encode_line, LineFile};

/// Records folded into one write and fsync at most.
const MAX_GROUP: usize = 4096;

enum Job {
    Append(Vec<u8>, usize, oneshot::Sender<std::io::Result<()>>),
    /// Rewrite the file with these states only.
    Compact(Vec<Command>),
}

/// A handle on the journal's writer thread.
#[derive(Debug, Clone)]
pub struct Journal {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Append(_, n, _) => write!(f, "Append({n})"),
            Job::Compact(c) => write!(f, "Compact({})", c.len()),
        }
    }
}

/// Reads the log: each id's last state, in the order the ids first appeared.
fn replay(path: &Path) -> std::io::Result<Vec<Command>> {
    let mut order = Vec::new();
    let mut last: HashMap<String, Command> = HashMap::new();
    crate::json_lines::read_json_lines(path, |c: Command| {
        if !last.contains_key(&c.command_id) {
            order.push(c.command_id.clone());
        }
        last.insert(c.command_id.clone(), c);
    })?;
    let commands = order
        .into_iter()
        .filter_map(|id| last.remove(&id))
        .collect();
    Ok(commands)
}

/// Writes `commands` to a new file and renames it over `path`, durably.
fn rewrite(path: &Path, commands: &[Command]) -> std::io::Result<LineFile> {
    let tmp = path.with_extension("log.tmp");
    let bytes = encode(commands)?;
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    LineFile::open(path, bytes.len() as u64)
}

fn encode(commands: &[Command]) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(commands.len() * 210);
    for c in commands {
        encode_line(&mut bytes, c)?;
    }
    Ok(bytes)
}

impl Journal {
    /// Opens (and compacts) the journal; returns it with the commands it holds, oldest first,
    /// those closed before `retain_from` (epoch ms) left out.
    pub fn open(dir: &Path, retain_from: i64) -> std::io::Result<(Self, Vec<Command>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("commands.log");
        let mut commands = replay(&path)?;
        commands.retain(|c| c.status.is_open() || c.created_at >= retain_from);
        let file = rewrite(&path, &commands)?;
        let (jobs, rx) = mpsc::channel(1024);
        std::thread::Builder::new()
            .name("aemos-commands".into())
            .spawn(move || write_loop(path, file, rx))?;
        Ok((Self { jobs }, commands))
    }

    /// Appends the records and returns once they are on disk.
    pub async fn append(&self, records: &[Command]) -> std::io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let bytes = encode(records)?;
        let (done, wait) = oneshot::channel();
        let closed = || std::io::Error::other("the command journal stopped");
        self.jobs
            .send(Job::Append(bytes, records.len(), done))
            .await
            .map_err(|_| closed())?;
        wait.await.map_err(|_| closed())?
    }

    /// Replaces the file's content with these states, queued behind earlier appends and
    /// before later ones; `false` when the queue is full (nothing is done).
    pub fn try_compact(&self, commands: Vec<Command>) -> bool {
        self.jobs.try_send(Job::Compact(commands)).is_ok()
    }
}

fn write_loop(path: PathBuf, mut file: LineFile, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::new();
    while let Some(first) = jobs.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut bytes = Vec::new();
        let mut waiting = Vec::new();
        for job in group.drain(..) {
            match job {
                Job::Append(b, _, done) => {
                    bytes.extend_from_slice(&b);
                    waiting.push(done);
                }
                Job::Compact(commands) => {
                    // What is queued before the compaction is in `commands` already or is
                    // written first; what comes after is appended to the new file.
                    let flushed = flush(&mut file, &bytes);
                    bytes.clear();
                    answer(&mut waiting, &flushed);
                    match rewrite(&path, &commands) {
                        Ok(f) => file = f,
                        Err(e) => {
                            warn!(path = %path.display(), error = %e, "command journal: compaction failed")
                        }
                    }
                }
            }
        }
        let flushed = flush(&mut file, &bytes);
        answer(&mut waiting, &flushed);
    }
}

fn flush(file: &mut LineFile, bytes: &[u8]) -> std::io::Result<()> {
    file.append(bytes)
}

fn answer(waiting: &mut Vec<oneshot::Sender<std::io::Result<()>>>, outcome: &std::io::Result<()>) {
    for done in waiting.drain(..) {
        let _ = done.send(match outcome {
            Ok(()) => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::super::book::{Source, Status};
    use super::*;
    use std::fs::OpenOptions;

    fn command(id: &str, status: Status, created_at: i64) -> Command {
        Command {
            command_id: id.into(),
            device: "d".into(),
            action: "setPower".into(),
            value: serde_json::json!("on"),
            source: Source::Api,
            chain: None,
            status,
            attempts: 0,
            created_at,
            sent_at: None,
            acknowledged_at: None,
            response: None,
        }
    }

    #[tokio::test]
    async fn last_state_wins_torn_tail_cut_retention_applied() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (journal, none) = Journal::open(dir.path(), 0).unwrap();
            assert!(none.is_empty());
            journal
                .append(&[
                    command("a", Status::Pending, 100),
                    command("old", Status::Acknowledged, 1),
                ])
                .await
                .unwrap();
            journal
                .append(&[command("a", Status::Sent, 100)])
                .await
                .unwrap();
        }
        let path = dir.path().join("commands.log");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"commandId": "torn", "dev"#).unwrap();
        drop(f);
        let (journal, commands) = Journal::open(dir.path(), 50).unwrap();
        assert_eq!(commands, vec![command("a", Status::Sent, 100)]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1, "compacted at open: {text}");
        assert!(journal.try_compact(Vec::new()));
        journal
            .append(&[command("b", Status::Pending, 200)])
            .await
            .unwrap();
        let (_, commands) = Journal::open(dir.path(), 0).unwrap();
        assert_eq!(commands, vec![command("b", Status::Pending, 200)]);
    }
}
