//! Scenario: large flushes on the real disk, read back after a reopen.
//!
//! A flush larger than one write chunk is written as several `O_DIRECT` writes kept in flight
//! together, in a pipeline of plans. Every byte acknowledged as durable must be on the disk: the
//! journal is dropped (nothing cached survives), reopened with the production `DmaStorage`, and
//! every batch is read back from disk and compared with what was appended, so a write reported
//! done but never issued shows up as a missing or damaged batch.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::{LocalExecutorBuilder, Placement};
use sluice_log::{
    BatchMeta, DmaStorage, FlushPolicy, Journal, JournalConfig, WRITE_CHUNK_BYTES, spawn_flusher,
};

const BATCHES: u64 = 600;

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 16 << 20,
        batch_bytes_max: 256 << 10,
        pending_bytes_max: 32 << 20,
        flush_bytes_max: 8 << 20,
        ..JournalConfig::default()
    }
}

/// The payload of batch `index`: 40..=200 KiB, every byte derived from the index.
fn payload(index: u64) -> Vec<u8> {
    let len = usize::try_from(40_000 + index * 7919 % 160_000).expect("small");
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn meta(index: u64) -> BatchMeta {
    BatchMeta {
        term: 1,
        timestamp_ms: index,
        record_count: 1,
    }
}

#[test]
fn large_flushes_reach_the_disk_and_read_back() {
    large_flushes_read_back(false);
}

#[test]
fn large_flushes_written_through_reach_the_disk_and_read_back() {
    large_flushes_read_back(true);
}

async fn open_storage(dir: &std::path::Path, write_through: bool) -> DmaStorage {
    if write_through {
        DmaStorage::open_write_through(dir).await.expect("storage")
    } else {
        DmaStorage::open(dir).await.expect("storage")
    }
}

fn large_flushes_read_back(write_through: bool) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "dma-large-flush-{}-{write_through}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test directory");
    let run_dir = dir.clone();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("executor")
        .run(async move {
            let dir = run_dir;
            let storage = open_storage(&dir, write_through).await;
            let (journal, _) = Journal::open(storage, config()).await.expect("open");
            let journal = Rc::new(journal);
            let flusher = spawn_flusher(journal.clone(), FlushPolicy::Immediate);
            let mut appended = 0u64;
            for index in 1..=BATCHES {
                loop {
                    match journal.append(meta(index), &payload(index)) {
                        Ok(got) => {
                            assert_eq!(got, index);
                            appended += payload(index).len() as u64;
                            break;
                        }
                        Err(sluice_log::Error::PendingFull { .. }) => {
                            let next = journal.durable_index() + 1;
                            journal.wait_durable(next).await.expect("durable");
                        }
                        Err(e) => panic!("append {index}: {e}"),
                    }
                }
                if index % 8 == 0 {
                    glommio::executor().yield_task_queue_now().await;
                }
            }
            journal.wait_durable(BATCHES).await.expect("durable");
            let stats = journal.stats();
            assert!(
                stats.bytes_written >= appended,
                "written {} < appended {appended}",
                stats.bytes_written
            );
            assert!(
                appended > 4 * WRITE_CHUNK_BYTES as u64,
                "flushes span several chunks"
            );
            journal.close();
            flusher.await;
            drop(journal);

            let storage = open_storage(&dir, write_through).await;
            let (journal, report) = Journal::open(storage, config()).await.expect("reopen");
            assert_eq!(
                report.dropped_tail, None,
                "a synced journal has no torn tail"
            );
            assert_eq!(journal.next_index(), BATCHES + 1, "every batch is back");
            let mut reader = journal.reader(1);
            for index in 1..=BATCHES {
                let batch = reader
                    .next(&journal)
                    .await
                    .unwrap_or_else(|e| panic!("reading {index}: {e}"))
                    .unwrap_or_else(|| panic!("the log ends before {index}"));
                assert_eq!(batch.index, index);
                assert!(batch.payload == payload(index), "payload of {index}");
            }
        });
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
