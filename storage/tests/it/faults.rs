//! Storage under faults. The WAL fails closed. An fsync error (injected: the kernel's cannot be provoked without a
//! faulty device) refuses that write and every later one, health can see why, and a restart
//! replays exactly what was acknowledged. A full disk (a real 1 MiB tmpfs) refuses the write
//! that does not fit, and the log goes on where it ended once space comes back: the writes
//! acknowledged after it survive a restart. A panic in background maintenance is caught,
//! counted, and the next round persists.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aemos_storage::{Faults, ManualClock, Storage};

use crate::helpers::{args, batch, local_store, open, rows, T0};

/// Fails the `fail_at`-th sync (counting from 1) and no other.
#[derive(Debug)]
struct FailOneSync {
    syncs: AtomicUsize,
    fail_at: usize,
}

impl Faults for FailOneSync {
    fn before_sync(&self) -> std::io::Result<()> {
        if self.syncs.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
            Err(std::io::Error::from_raw_os_error(5)) // EIO
        } else {
            Ok(())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_fsync_error_refuses_every_later_write_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut a = args(
            dir.path(),
            local_store(dir.path()),
            Arc::new(ManualClock::new(T0)),
        );
        a.faults = Some(Arc::new(FailOneSync {
            syncs: AtomicUsize::new(0),
            fail_at: 3,
        }));
        let storage = Storage::open(a).await.unwrap();
        storage.write(batch(T0, 100, "a")).await.unwrap();
        storage.write(batch(T0 + 1000, 100, "b")).await.unwrap();
        assert_eq!(storage.wal_failure(), None);
        let failed = storage.write(batch(T0 + 2000, 100, "c")).await;
        assert!(failed.is_err(), "the write whose sync failed is refused");
        // The next sync would succeed: the writer refuses anyway.
        let after = storage.write(batch(T0 + 3000, 100, "d")).await;
        assert!(after.is_err(), "a write after the failed sync is refused");
        let why = storage.wal_failure().expect("the failure is reported");
        assert!(why.contains("fdatasync"), "{why}");
        assert_eq!(
            rows(&storage.read_snapshot().batches),
            200,
            "nothing unacknowledged is visible"
        );
    }
    let storage = open(dir.path()).await;
    assert_eq!(
        storage.replay_report().rows,
        200,
        "exactly what was acknowledged"
    );
    assert_eq!(
        storage.wal_failure(),
        None,
        "a restart starts a new segment"
    );
    storage.write(batch(T0 + 4000, 10, "e")).await.unwrap();
}

/// Mounts a 1 MiB tmpfs at `dir`; unmounted on drop.
struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path) -> Option<Self> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0).status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_the_write_and_the_log_goes_on_once_space_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_tmpfs) = Tmpfs::mount(dir.path()) else {
        assert!(!is_root(), "root could not mount a tmpfs");
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = dir.path().join("data");
    {
        let storage = open(&data).await;
        storage.write(batch(T0, 100, "a")).await.unwrap();
        // Fill the disk but for a few KiB.
        let filler = dir.path().join("filler");
        let free = fs_free(dir.path());
        std::fs::write(&filler, vec![0u8; free.saturating_sub(4096) as usize]).unwrap();
        let full = storage.write(batch(T0 + 1000, 5000, "b")).await;
        let full = full.expect_err("a write that does not fit is refused");
        assert!(
            matches!(full, aemos_storage::Error::DiskFull { .. }) && full.retry_later(),
            "a full disk is a refusal to retry later (503 with Retry-After): {full}"
        );
        assert_eq!(storage.wal_failure(), None, "a full disk is not final");
        std::fs::remove_file(&filler).unwrap();
        storage.write(batch(T0 + 2000, 100, "c")).await.unwrap();
        assert_eq!(rows(&storage.read_snapshot().batches), 200);
    }
    let storage = open(&data).await;
    assert_eq!(
        storage.replay_report().rows,
        200,
        "the write acknowledged after the refusal survives the restart"
    );
}

/// Bytes free on the file system holding `dir`.
fn fs_free(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap()
}

/// Panics in the first maintenance round, as a bug in persistence would.
#[derive(Debug, Default)]
struct PanicOnce(std::sync::atomic::AtomicBool);

impl Faults for PanicOnce {
    fn before_maintenance(&self) {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("injected maintenance panic");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_maintenance_is_counted_and_the_next_round_persists() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(
        dir.path(),
        local_store(dir.path()),
        Arc::new(ManualClock::new(T0)),
    );
    a.persist_interval = std::time::Duration::from_millis(50);
    a.faults = Some(Arc::new(PanicOnce::default()));
    let storage = Storage::open(a).await.unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(Arc::clone(&storage).run_background(stopped));
    storage.write(batch(T0, 100, "a")).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while storage.catalog().snapshot().files.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing persisted: {:?}",
            storage.maintenance_status()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = storage.maintenance_status();
    assert_eq!(status.panics, 1, "{status:?}");
    assert!(status
        .last_error
        .unwrap()
        .contains("injected maintenance panic"));
    let _ = stop.send(true);
    background.await.unwrap();
}

/// Fails the first catalog commit of persistence, before (`landed: false`) or after
/// (`landed: true`) it reached the store.
#[derive(Debug)]
struct FailFirstCommit {
    landed: bool,
    commits: AtomicUsize,
}

impl Faults for FailFirstCommit {
    fn before_commit(&self) -> std::io::Result<()> {
        if !self.landed && self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(std::io::Error::other("the store refused the write"));
        }
        Ok(())
    }

    fn after_commit(&self) -> std::io::Result<()> {
        if self.landed && self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(std::io::Error::other("the answer was lost"));
        }
        Ok(())
    }
}

/// Parquet files under the store's `readings/`.
fn parquet_files(dir: &Path) -> usize {
    let out = Command::new("find")
        .arg(dir.join("objects"))
        .args(["-path", "*readings/*", "-name", "*.parquet"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_catalog_commit_leaves_no_orphans_and_no_duplicates() {
    for landed in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(
            dir.path(),
            local_store(dir.path()),
            Arc::new(ManualClock::new(T0)),
        );
        a.faults = Some(Arc::new(FailFirstCommit {
            landed,
            commits: AtomicUsize::new(0),
        }));
        let storage = Storage::open(a).await.unwrap();
        storage.write(batch(T0, 100, "a")).await.unwrap();
        let first = storage.persist().await;
        if landed {
            // The commit landed: the generation is persisted, once.
            assert!(first.is_ok(), "{first:?}");
        } else {
            assert!(first.is_err(), "the failed commit is reported");
            assert_eq!(
                parquet_files(dir.path()),
                0,
                "the uploaded files were collected"
            );
            assert!(storage.maintenance_status().orphans_collected >= 1);
            storage.persist().await.unwrap();
        }
        // Nothing left to persist, and the catalog holds each row once.
        storage.persist().await.unwrap();
        let catalog = storage.catalog().snapshot();
        let persisted: u64 = catalog.files_of("readings").map(|f| f.rows).sum();
        assert_eq!(persisted, 100, "landed: {landed}");
        assert_eq!(storage.buffered_rows(), 0);
        assert_eq!(
            parquet_files(dir.path()),
            catalog.files_of("readings").count(),
            "every file on the store is in the catalog (landed: {landed})"
        );
    }
}

/// Fails the `n`-th catalog commit (counting from 0), before it reaches the store.
#[derive(Debug)]
struct FailCommitNumber {
    n: usize,
    commits: AtomicUsize,
}

impl Faults for FailCommitNumber {
    fn before_commit(&self) -> std::io::Result<()> {
        if self.commits.fetch_add(1, Ordering::SeqCst) == self.n {
            return Err(std::io::Error::other("the store refused the write"));
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_compaction_commit_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(
        dir.path(),
        local_store(dir.path()),
        Arc::new(ManualClock::new(T0)),
    );
    a.compaction_min_files = 2;
    // Three persists commit; the fourth commit is compaction's.
    a.faults = Some(Arc::new(FailCommitNumber {
        n: 3,
        commits: AtomicUsize::new(0),
    }));
    let storage = Storage::open(a).await.unwrap();
    for k in 0..3 {
        storage.write(batch(T0 + k * 1000, 100, "a")).await.unwrap();
        storage.persist().await.unwrap();
    }
    assert_eq!(parquet_files(dir.path()), 3);
    assert!(
        storage.compact().await.is_err(),
        "the failed commit is reported"
    );
    assert_eq!(
        parquet_files(dir.path()),
        3,
        "the merged file, in no catalog, was collected"
    );
    assert!(storage.maintenance_status().orphans_collected >= 1);
    assert_eq!(
        storage.compact().await.unwrap(),
        3,
        "the next round compacts"
    );
    let catalog = storage.catalog().snapshot();
    assert_eq!(catalog.files_of("readings").count(), 1);
    assert_eq!(
        catalog.files_of("readings").map(|f| f.rows).sum::<u64>(),
        300
    );
}
