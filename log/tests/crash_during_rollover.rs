//! Scenario: a crash while the journal rolls over to a new segment.
//!
//! Creating a segment is: temp file, header, sync, rename, directory sync; then the flush writes
//! and syncs its data. Syncs are made to fail at seeded points of that sequence and the disk
//! crashes, leaving any of: a `.seg.tmp` leftover, a renamed segment holding no batches, a torn
//! first write into the new segment, or a rename that never became durable. (`MemStorage` loses a directory entry not covered by a
//! directory sync, so `.seg.tmp` leftovers, which a real file system may keep, are planted.) Recovery must remove
//! leftovers (and report them), keep every acknowledged batch, yield a contiguous log, and go on
//! appending across further roll-overs and crashes.

mod common;

use common::{FaultyStorage, ListNames, Model, Rng, batches_in, check_log, segment_files, small};
use futures_lite::future::block_on;
use sluice_log::segment::{SegmentHeader, segment_name, temp_name};
use sluice_log::{Journal, MemStorage};

const SEEDS: u64 = 150;

/// Appends until the in-memory log has rolled over into `extra` new segments past the durable
/// ones.
fn append_across_boundaries<S: sluice_log::Storage>(
    j: &Journal<S>,
    model: &mut Model,
    term: u64,
    extra: usize,
) {
    let target = j.segment_count() + extra;
    while j.segment_count() < target {
        model.append(j, term);
    }
    // A few more into the newest segment.
    model.append_n(j, term, 3);
}

#[derive(Debug, Default)]
struct Coverage {
    tmp_left_by_crash: u64,
    empty_last_segment: u64,
    torn_new_segment: u64,
}

fn run_seed(seed: u64, coverage: &mut Coverage) {
    block_on(async {
        let mut rng = Rng(seed ^ 0xA5A5);
        let disk = MemStorage::new();
        let faulty = FaultyStorage::new(disk.clone());
        let (j, _) = Journal::open(faulty.clone(), small()).await.expect("open");
        let mut model = Model::default();
        append_across_boundaries(
            &j,
            &mut model,
            1,
            usize::try_from(rng.range(0, 3)).expect("s"),
        );
        j.flush().await.expect("flush");
        let acked_before = j.durable_index();

        // Cross one or two boundaries, then flush with syncs failing somewhere in the roll-over.
        append_across_boundaries(
            &j,
            &mut model,
            1,
            usize::try_from(rng.range(1, 3)).expect("s"),
        );
        let appended = j.next_index() - 1;
        faulty.fail_file_syncs_after(rng.range(0, 12));
        faulty.fail_dir_syncs_after(rng.range(0, 3));
        let flush = j.flush().await;
        let acked = j.durable_index();
        assert!(acked >= acked_before);
        if flush.is_ok() {
            assert_eq!(acked, appended);
        }
        drop(j);
        disk.crash(seed);

        let names = disk.list_names();
        let tmp_by_crash: Vec<String> = names
            .iter()
            .filter(|n| common::is_temp(n))
            .cloned()
            .collect();
        if !tmp_by_crash.is_empty() {
            coverage.tmp_left_by_crash += 1;
        }
        // Plant a leftover of an interrupted creation, as a crash mid-create leaves.
        let planted = temp_name(rng.range(1, 10_000));
        if rng.chance(70) {
            let mut junk = vec![0u8; 64 << 10];
            junk[..16].copy_from_slice(b"half-made segmnt");
            disk.put_file(&planted, &junk);
        }
        let planted_present = disk.contents(&planted).is_some();
        let segments = segment_files(&disk).await;
        let last_on_disk = segments.last().expect("a segment").clone();
        let last_batches = batches_in(&disk, &last_on_disk);
        if segments.len() > 1 && last_batches.is_empty() {
            coverage.empty_last_segment += 1;
        }

        let (j, report) = Journal::open(disk.clone(), small())
            .await
            .unwrap_or_else(|e| panic!("seed {seed}: reopen failed: {e}"));
        for tmp in tmp_by_crash
            .iter()
            .chain(planted_present.then_some(&planted))
        {
            assert!(
                report.removed_files.contains(tmp),
                "seed {seed}: {tmp} not reported removed: {report:?}"
            );
        }
        assert!(
            !disk.list_names().iter().any(|n| common::is_temp(n)),
            "seed {seed}: leftovers removed"
        );
        let last = j.next_index() - 1;
        assert!(
            last >= acked,
            "seed {seed}: lost acked {acked}, have {last}"
        );
        assert!(last <= appended, "seed {seed}");
        assert_eq!(report.segments, j.segment_count());
        assert_eq!(report.segments, segment_files(&disk).await.len());
        if report
            .dropped_tail
            .as_ref()
            .is_some_and(|d| d.index > acked_before.max(1))
        {
            coverage.torn_new_segment += u64::from(report.segments > 1);
        }
        model.truncate_after(last);
        check_log(&j, &model).await;

        // Appending goes on over more roll-overs, through another crash.
        append_across_boundaries(&j, &mut model, 2, 2);
        let total = j.flush().await.expect("flush after recovery");
        drop(j);
        disk.crash(seed + 1_000_000);
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(report.dropped_tail, None);
        assert!(report.removed_files.is_empty(), "{report:?}");
        assert_eq!(j.next_index(), total + 1);
        check_log(&j, &model).await;
    });
}

#[test]
fn crashes_during_roll_over_recover_a_contiguous_log() {
    let mut coverage = Coverage::default();
    for seed in 0..SEEDS {
        run_seed(seed, &mut coverage);
    }
    eprintln!("coverage over {SEEDS} seeds: {coverage:?}");
    assert!(coverage.torn_new_segment > 0, "{coverage:?}");
    assert!(coverage.empty_last_segment > 0, "{coverage:?}");
}

#[test]
fn an_empty_last_segment_is_a_valid_end() {
    block_on(async {
        let disk = MemStorage::new();
        let config = small();
        let (j, _) = Journal::open(disk.clone(), config.clone())
            .await
            .expect("open");
        let mut model = Model::default();
        append_across_boundaries(&j, &mut model, 1, 1);
        j.flush().await.expect("flush");
        let next = j.next_index();
        let segments = j.segment_count();
        drop(j);

        // A segment whose creation completed but whose first write never landed.
        let mut file = SegmentHeader {
            first_index: next,
            generation: 0,
            segment_bytes: config.segment_bytes,
        }
        .encode();
        file.resize(usize::try_from(config.segment_bytes).expect("small"), 0);
        disk.put_file(&segment_name(next), &file);
        disk.put_file(&temp_name(next + 1), b"torn");

        let (j, report) = Journal::open(disk.clone(), config.clone())
            .await
            .expect("open");
        assert_eq!(report.segments, segments + 1);
        assert_eq!(report.removed_files, vec![temp_name(next + 1)]);
        assert_eq!(report.dropped_tail, None);
        assert_eq!(j.next_index(), next);
        assert_eq!(j.durable_index(), next - 1);
        check_log(&j, &model).await;

        // The empty segment takes the next batches.
        model.append_n(&j, 2, 5);
        j.flush().await.expect("flush");
        assert_eq!(batches_in(&disk, &segment_name(next)).len(), 5);
        drop(j);
        disk.crash(3);
        let (j, _) = Journal::open(disk.clone(), config).await.expect("reopen");
        assert_eq!(j.next_index(), next + 5);
        check_log(&j, &model).await;
    });
}
