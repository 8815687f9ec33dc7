//! Scenario: a crash during a flush large enough to be written as several chunks at once.
//!
//! A device with a volatile cache may persist any subset of the chunks it acknowledged, each
//! possibly torn, so the batches of the unfinished flush can come back with holes. Recovery must
//! always open (no batch of that flush can prove another of its batches flushed), keep every
//! acknowledged batch, cut the rest, and zero any remnants past the cut, so that a later crash
//! cannot splice a stale batch back behind new ones.

mod common;

use common::{FaultyStorage, Rng, assert_zeros_after_end};
use futures_lite::future::block_on;
use sluice_log::{BatchMeta, Journal, JournalConfig, MemStorage, WRITE_CHUNK_BYTES};

fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 16 << 20,
        batch_bytes_max: 128 << 10,
        flush_bytes_max: 8 << 20,
        ..JournalConfig::default()
    }
}

fn body(index: u64, term: u64) -> Vec<u8> {
    let len = 20_000 + usize::try_from(index * 7919 % 40_000).expect("small");
    (0..len)
        .map(|i| u8::try_from((i as u64 + index * 31 + term * 17) % 251).expect("byte"))
        .collect()
}

fn meta(term: u64) -> BatchMeta {
    BatchMeta {
        term,
        timestamp_ms: 1_700_000_000_000,
        record_count: 1,
    }
}

/// Checks the whole log: contiguous from 1, each batch with the term and payload it was
/// appended with. Returns the next index.
async fn check(j: &Journal<MemStorage>, terms: &[u64]) -> u64 {
    let mut reader = j.reader(1);
    let mut expected = 1;
    while let Some(b) = reader.next(j).await.expect("read") {
        assert_eq!(b.index, expected);
        let term = terms[usize::try_from(b.index).expect("small")];
        assert_eq!(b.term, term, "index {}", b.index);
        assert_eq!(b.payload, body(b.index, term), "index {}", b.index);
        expected += 1;
    }
    assert_eq!(expected, j.next_index());
    expected
}

#[test]
fn a_torn_multi_chunk_flush_always_recovers() {
    let mut remnants_zeroed = 0;
    let mut cuts = 0;
    for seed in 0..80u64 {
        block_on(async {
            let mut rng = Rng(seed);
            let disk = MemStorage::new();
            let faulty = FaultyStorage::new(disk.clone());
            let (j, _) = Journal::open(faulty.clone(), config()).await.expect("open");
            // terms[i] is the term batch i was appended with (index 0 unused).
            let mut terms = vec![0u64];
            let acked = 1 + rng.range(0, 60);
            for _ in 0..acked {
                terms.push(1);
                j.append(meta(1), &body(terms.len() as u64 - 1, 1))
                    .expect("append");
            }
            j.flush().await.expect("flush");
            // A flush of several chunks whose sync fails: its writes land unsynced.
            let unacked = 60 + rng.range(0, 120);
            for index in acked + 1..=acked + unacked {
                terms.extend([1]);
                j.append(meta(1), &body(index, 1)).expect("append");
            }
            assert!(
                j.pending_bytes() > 2 * WRITE_CHUNK_BYTES as u64,
                "several chunks"
            );
            faulty.fail_file_syncs_after(0);
            assert!(j.flush().await.is_err());
            drop(j);
            disk.crash(seed);

            let (j, report) = Journal::open(disk.clone(), config())
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: a plain crash must recover: {e}"));
            assert!(
                j.next_index() > acked,
                "seed {seed}: acknowledged batches are kept"
            );
            if let Some(cut) = &report.dropped_tail {
                cuts += 1;
                if cut.reason.contains("unfinished flush") {
                    remnants_zeroed += 1;
                }
            }
            let next = check(&j, &terms).await;
            assert_zeros_after_end(&disk, &format!("seed {seed}")).await;
            // New batches in a new term over the cut, then another crash: no stale batch of the
            // torn flush may reappear behind them.
            terms.truncate(usize::try_from(next).expect("small"));
            for _ in 0..(20 + rng.range(0, 40)) {
                let index = terms.len() as u64;
                terms.extend([2]);
                j.append(meta(2), &body(index, 2)).expect("append");
                if rng.chance(10) {
                    j.flush().await.expect("flush");
                }
            }
            j.flush().await.expect("flush");
            drop(j);
            disk.crash(seed + 1000);
            let (j, report) = Journal::open(disk.clone(), config()).await.expect("reopen");
            assert_eq!(
                report.dropped_tail, None,
                "seed {seed}: a synced log has no tail to cut"
            );
            assert_eq!(check(&j, &terms).await, terms.len() as u64);
        });
    }
    assert!(cuts > 20, "torn flushes were cut ({cuts})");
    assert!(
        remnants_zeroed > 0,
        "some crashes left data after a zeroed gap ({remnants_zeroed})"
    );
}
