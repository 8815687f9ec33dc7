//! Scenario: a crash in the middle of a flush tears the tail of the last segment.
//!
//! Each seed appends and flushes a prefix, appends more, and flushes it with file syncs made to
//! fail after a seeded number of successes, so the written-but-unsynced blocks are at the mercy of
//! `MemStorage::crash`, which keeps a random prefix of them and may tear the last at a sector.
//! After the crash the journal must reopen with every durable batch intact, nothing but a
//! contiguous prefix of what was appended, a reported and zeroed cut where a tail was torn, and
//! must keep appending from `next_index()` across one more crash.

mod common;

use common::{FaultyStorage, Model, Rng, check_log, small};
use futures_lite::future::block_on;
use sluice_log::{Journal, MemStorage};

const SEEDS: u64 = 200;

#[derive(Debug, Default)]
struct Coverage {
    cut_tails: u64,
    unsynced_survivors: u64,
    unsynced_lost: u64,
}

fn run_seed(seed: u64, coverage: &mut Coverage) {
    block_on(async {
        let mut rng = Rng(seed);
        let disk = MemStorage::new();
        let faulty = FaultyStorage::new(disk.clone());
        let (j, _) = Journal::open(faulty.clone(), small()).await.expect("open");
        let mut model = Model::default();

        model.append_n(&j, 1, rng.range(1, 40));
        let flushed = j.flush().await.expect("flush");
        assert_eq!(flushed, j.next_index() - 1);

        // More appends, flushed by a flush whose syncs fail part-way (or not at all).
        model.append_n(&j, 1, rng.range(1, 40));
        let appended = j.next_index() - 1;
        faulty.fail_file_syncs_after(rng.range(0, 3));
        let result = j.flush().await;
        if result.is_ok() {
            assert_eq!(
                j.durable_index(),
                appended,
                "seed {seed}: a flush that succeeds covers all"
            );
        }
        if rng.chance(30) {
            // A retry that fails again rewrites the same blocks: two unsynced writes overlap.
            model.append_n(&j, 1, rng.range(1, 5));
            faulty.fail_file_syncs_after(0);
            assert!(j.flush().await.is_err(), "seed {seed}: syncs fail");
        }
        let appended = appended.max(j.next_index() - 1);
        let durable = j.durable_index();
        assert!(
            durable >= flushed,
            "seed {seed}: durability never goes back"
        );
        drop(j);

        disk.crash(seed);
        let before: Vec<(String, Vec<u8>)> = common::segment_files(&disk)
            .await
            .into_iter()
            .map(|n| {
                let c = disk.contents(&n).expect("listed");
                (n, c)
            })
            .collect();

        let (j, report) = Journal::open(disk.clone(), small())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reopen after a torn flush failed: {e}"));
        let last = j.next_index() - 1;
        assert!(
            last >= durable,
            "seed {seed}: durable index {durable} lost, recovered up to {last} ({report:?})"
        );
        assert!(
            last <= appended,
            "seed {seed}: recovered {last} but only {appended} were appended"
        );
        assert_eq!(report.next_index, j.next_index());
        assert_eq!(report.first_index, 1);
        assert_eq!(
            j.durable_index(),
            last,
            "seed {seed}: all recovered is durable"
        );
        model.truncate_after(last);
        check_log(&j, &model).await;
        if last > durable {
            coverage.unsynced_survivors += 1;
        } else if appended > durable {
            coverage.unsynced_lost += 1;
        }

        if let Some(cut) = &report.dropped_tail {
            coverage.cut_tails += 1;
            check_cut(seed, cut, report.next_index, &before, &disk);
        }

        // Appends continue at next_index and survive another crash once flushed.
        let resumed_at = j.next_index();
        model.append_n(&j, 2, rng.range(1, 30));
        assert_eq!(
            model.terms.range(resumed_at..).next().map(|(i, _)| *i),
            Some(resumed_at)
        );
        let total = j.flush().await.expect("flush after reopen");
        drop(j);
        disk.crash(seed ^ 0x5EED);
        let (j, report) = Journal::open(disk.clone(), small())
            .await
            .expect("second reopen");
        assert_eq!(
            report.dropped_tail, None,
            "seed {seed}: nothing unsynced to tear"
        );
        assert_eq!(j.next_index(), total + 1, "seed {seed}");
        check_log(&j, &model).await;
    });
}

/// Checks a reported cut against the segment contents from before the reopen: it is in the last
/// segment, at the recovered end, covered torn bytes, and is zeroed now.
fn check_cut(
    seed: u64,
    cut: &sluice_log::DroppedTail,
    next_index: u64,
    before: &[(String, Vec<u8>)],
    disk: &MemStorage,
) {
    assert_eq!(cut.index, next_index, "seed {seed}: {cut:?}");
    assert!(cut.bytes > 0, "seed {seed}: a cut drops bytes: {cut:?}");
    assert!(
        cut.offset >= sluice_log::BLOCK_BYTES,
        "seed {seed}: {cut:?}"
    );
    let (_, old) = before
        .iter()
        .find(|(n, _)| *n == cut.segment)
        .unwrap_or_else(|| panic!("seed {seed}: cut names an unknown segment {cut:?}"));
    assert_eq!(
        cut.segment,
        before.last().expect("a segment").0,
        "seed {seed}: only the last segment is cut"
    );
    let range = usize::try_from(cut.offset).expect("small")
        ..usize::try_from(cut.offset + cut.bytes).expect("small");
    assert!(
        old[range.clone()].iter().any(|b| *b != 0),
        "seed {seed}: the cut range held the torn bytes"
    );
    let now = disk.contents(&cut.segment).expect("segment");
    assert!(
        now[range.start..].iter().all(|b| *b == 0),
        "seed {seed}: recovery zeroes everything after the cut"
    );
}

#[test]
fn torn_flush_recovers_a_consistent_prefix_over_many_seeds() {
    let mut coverage = Coverage::default();
    for seed in 0..SEEDS {
        run_seed(seed, &mut coverage);
    }
    eprintln!("coverage over {SEEDS} seeds: {coverage:?}");
    // The scenario must actually happen, or the test proves nothing.
    assert!(coverage.cut_tails >= 10, "{coverage:?}");
    assert!(coverage.unsynced_survivors >= 10, "{coverage:?}");
    assert!(coverage.unsynced_lost >= 10, "{coverage:?}");
}
