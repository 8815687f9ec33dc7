//! Scenario: the real disk fills up.
//!
//! A small ext4 file system on a loop device (so the test needs root, `mkfs.ext4` and a free
//! loop device, as CI has) holds a journal with the production `DmaStorage`. Appends roll over
//! into new segments until one cannot be preallocated: the flush must fail with
//! [`Error::DiskFull`] naming the file, keep every appended batch pending, and keep what was
//! durable readable. After compaction frees a segment, the same flush succeeds and every batch
//! reads back, also after a reopen.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use sluice_log::{BatchMeta, DmaStorage, Error, Journal, JournalConfig};

const IMAGE_BYTES: u64 = 64 << 20;

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 16 << 20,
        batch_bytes_max: 128 << 10,
        pending_bytes_max: 32 << 20,
        flush_bytes_max: 1 << 20,
        ..JournalConfig::default()
    }
}

fn payload(index: u64) -> Vec<u8> {
    let len = usize::try_from(30_000 + index * 7919 % 60_000).expect("small");
    (0..len)
        .map(|i| u8::try_from((i as u64 * 31 + index * 17) % 251).expect("byte"))
        .collect()
}

fn meta(index: u64) -> BatchMeta {
    BatchMeta {
        term: 1,
        timestamp_ms: index,
        record_count: 1,
    }
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed (this test needs root, mkfs.ext4 and a loop device): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A loop-mounted ext4 file system, unmounted and removed on drop.
struct SmallDisk {
    base: PathBuf,
    mount: PathBuf,
}

impl SmallDisk {
    fn new() -> Self {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("sluice-disk-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let mount = base.join("mnt");
        std::fs::create_dir_all(&mount).expect("mount point");
        let image = base.join("fs.img");
        let file = std::fs::File::create(&image).expect("image");
        file.set_len(IMAGE_BYTES).expect("image size");
        drop(file);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        SmallDisk { base, mount }
    }

    fn journal_dir(&self) -> PathBuf {
        let dir = self.mount.join("journal");
        std::fs::create_dir_all(&dir).expect("journal dir");
        dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // glommio may still hold a file open until the process exits (a file dropped without
        // `close` is closed by its executor, which has stopped): detach lazily then.
        let unmounted = Command::new("umount")
            .arg(&self.mount)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

async fn check_all(journal: &Journal<DmaStorage>, last: u64) {
    let mut reader = journal.reader(journal.first_index());
    for index in journal.first_index()..=last {
        let batch = reader
            .next(journal)
            .await
            .unwrap_or_else(|e| panic!("reading {index}: {e}"))
            .unwrap_or_else(|| panic!("the log ends before {index}"));
        assert_eq!(batch.index, index);
        assert!(batch.payload == payload(index), "payload of {index}");
    }
}

async fn scenario(dir: &Path) {
    let storage = DmaStorage::open(dir).await.expect("storage");
    let (journal, _) = Journal::open(storage, config()).await.expect("open");
    let journal = Rc::new(journal);
    // Fill segment after segment, flushing as we go, until a flush fails.
    let mut next = 1u64;
    let error = loop {
        assert!(next < 10_000, "the disk never filled up");
        assert_eq!(
            journal.append(meta(next), &payload(next)).expect("append"),
            next
        );
        next += 1;
        if let Err(e) = journal.flush().await {
            break e;
        }
    };
    let appended = next - 1;
    match &error {
        Error::DiskFull { path, .. } => {
            assert!(path.starts_with(dir), "the error names the file: {error}");
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("disk full"), "readable: {message}");
    let durable = journal.durable_index();
    assert!(
        durable > 0 && durable < appended,
        "durable {durable}, appended {appended}"
    );
    assert!(journal.pending_bytes() > 0, "nothing appended was dropped");
    check_all(&journal, appended).await;
    // Still full: the same error, nothing lost.
    assert!(matches!(journal.flush().await, Err(Error::DiskFull { .. })));
    assert_eq!(journal.next_index(), appended + 1);

    // Free the oldest segment (as a snapshot would allow), then the flush goes through.
    let segments = journal.segment_count();
    journal
        .compact_before(durable)
        .await
        .expect("compact frees space");
    assert!(journal.segment_count() < segments, "a segment was removed");
    assert_eq!(
        journal.flush().await.expect("flush after freeing space"),
        appended
    );
    assert_eq!(journal.pending_bytes(), 0);
    check_all(&journal, appended).await;
    let first = journal.first_index();
    drop(journal);

    let storage = DmaStorage::open(dir).await.expect("storage");
    let (journal, report) = Journal::open(storage, config()).await.expect("reopen");
    assert_eq!(report.dropped_tail, None);
    assert_eq!(journal.first_index(), first);
    assert_eq!(journal.next_index(), appended + 1);
    check_all(&journal, appended).await;
}

#[test]
fn a_full_disk_fails_the_flush_loses_nothing_and_recovers() {
    let disk = SmallDisk::new();
    let dir = disk.journal_dir();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor")
        .run(async move { scenario(&dir).await });
}
