//! Scenario: a snapshot lets the journal drop its prefix (`compact_before`) or start over at a
//! later index (`reset`), and the node crashes afterwards.
//!
//! Compaction deletes whole older segments only: `first_index()` moves to the first kept
//! segment's first index, reads below it are `IndexOutOfRange`, and a reopen after a crash sees
//! the same. A reset leaves only the new generation, even when the crash undid the removal of
//! old segments (recovery removes and reports them) or interrupted the reset itself (then the
//! old journal or the new one is found, whole).

mod common;

use common::{FaultyStorage, ListNames, Model, check_log, segment_files, small};
use futures_lite::future::block_on;
use sluice_log::segment::{parse_segment_name, segment_name};
use sluice_log::{Error, Journal, MemStorage};

async fn journal_of(n: u64) -> (MemStorage, Journal<MemStorage>, Model, Vec<u64>) {
    let disk = MemStorage::new();
    let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
    let mut model = Model::default();
    model.append_n(&j, 1, n);
    j.flush().await.expect("flush");
    let firsts = segment_files(&disk)
        .await
        .iter()
        .map(|n| parse_segment_name(n).expect("name"))
        .collect::<Vec<_>>();
    assert!(firsts.len() >= 4, "several segments");
    (disk, j, model, firsts)
}

#[test]
fn compaction_drops_whole_segments_and_survives_a_crash() {
    block_on(async {
        let (disk, j, mut model, firsts) = journal_of(250).await;
        // Mid-segment: the segment holding the index stays whole.
        let index = firsts[2] + 3;
        j.compact_before(index).await.expect("compact");
        assert_eq!(j.first_index(), firsts[2]);
        assert_eq!(j.segment_count(), firsts.len() - 2);
        for gone in &firsts[..2] {
            assert!(
                disk.contents(&segment_name(*gone)).is_none(),
                "{gone} deleted"
            );
        }
        assert!(matches!(
            j.read(firsts[2] - 1).await,
            Err(Error::IndexOutOfRange { index: i, first: f, .. }) if i == firsts[2] - 1 && f == firsts[2]
        ));
        assert!(matches!(
            j.read(1).await,
            Err(Error::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            j.reader(1).next(&j).await,
            Err(Error::IndexOutOfRange { .. })
        ));
        assert_eq!(j.read(firsts[2]).await.expect("kept").index, firsts[2]);
        check_log(&j, &model).await;

        // Exactly at a segment's first index: that segment is kept, the ones before go.
        j.compact_before(firsts[3]).await.expect("compact");
        assert_eq!(j.first_index(), firsts[3]);
        // Compacting below the first index changes nothing.
        j.compact_before(5).await.expect("noop");
        assert_eq!(j.first_index(), firsts[3]);

        // Appends go on; a crash and reopen keep the compacted start.
        model.append_n(&j, 2, 20);
        let last = j.flush().await.expect("flush");
        drop(j);
        disk.crash(11);
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(report.first_index, firsts[3]);
        assert_eq!(j.first_index(), firsts[3]);
        assert_eq!(j.next_index(), last + 1);
        assert!(report.removed_files.is_empty());
        assert!(matches!(
            j.read(firsts[3] - 1).await,
            Err(Error::IndexOutOfRange { .. })
        ));
        check_log(&j, &model).await;

        // Compacting past everything keeps the last segment, which holds the newest batches.
        j.compact_before(u64::MAX).await.expect("compact all");
        assert_eq!(j.segment_count(), 1);
        assert_eq!(j.next_index(), last + 1);
        let first = j.first_index();
        assert!(first <= last);
        drop(j);
        disk.crash(12);
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!((j.first_index(), j.next_index()), (first, last + 1));
        check_log(&j, &model).await;
    });
}

#[test]
fn reset_leaves_only_the_new_generation() {
    block_on(async {
        let (disk, j, _, firsts) = journal_of(150).await;
        let old_first = segment_name(firsts[1]);
        let old_content = disk.contents(&old_first).expect("old segment");
        // Some unflushed appends are discarded by the reset too.
        j.append(common::meta(1), b"pending").expect("append");

        j.reset(500).await.expect("reset");
        assert_eq!(
            (j.first_index(), j.next_index(), j.durable_index()),
            (500, 500, 499)
        );
        assert_eq!(j.pending_bytes(), 0);
        assert_eq!(segment_files(&disk).await, vec![segment_name(500)]);
        assert!(matches!(
            j.read(150).await,
            Err(Error::IndexOutOfRange { .. })
        ));

        let mut model = Model::default();
        model.append_n(&j, 3, 40);
        j.flush().await.expect("flush");
        drop(j);
        // A crash that undid the removal of an old segment: put it back.
        disk.crash(1);
        disk.put_file(&old_first, &old_content);

        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(report.removed_files, vec![old_first.clone()], "{report:?}");
        assert_eq!((j.first_index(), j.next_index()), (500, 540));
        assert!(disk.contents(&old_first).is_none());
        check_log(&j, &model).await;
    });
}

#[test]
fn reset_to_an_index_whose_segment_exists_replaces_it() {
    block_on(async {
        let (disk, j, _, _) = journal_of(150).await;
        j.reset(1).await.expect("reset to 1");
        let mut model = Model::default();
        model.append_n(&j, 4, 10);
        j.flush().await.expect("flush");
        drop(j);
        disk.crash(2);
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!((j.first_index(), j.next_index()), (1, 11));
        assert_eq!(report.dropped_tail, None);
        check_log(&j, &model).await;
    });
}

#[test]
fn a_crash_during_reset_leaves_the_old_or_the_new_journal() {
    for dir_syncs_ok in 0..3 {
        for seed in 0..10 {
            block_on(async {
                let (disk, j, old_model, firsts) = journal_of(150).await;
                drop(j);
                let faulty = FaultyStorage::new(disk.clone());
                let (j, _) = Journal::open(faulty.clone(), small()).await.expect("open");
                faulty.fail_dir_syncs_after(dir_syncs_ok);
                let result = j.reset(400).await;
                drop(j);
                disk.crash(seed);

                let (j, report) = Journal::open(disk.clone(), small())
                    .await
                    .unwrap_or_else(|e| panic!("{dir_syncs_ok}/{seed}: reopen: {e}"));
                assert!(!disk.list_names().iter().any(|n| common::is_temp(n)));
                if j.first_index() == 400 {
                    // The new generation won: old segments are gone, and reported if the crash
                    // had kept them.
                    assert_eq!(j.next_index(), 400);
                    assert_eq!(segment_files(&disk).await, vec![segment_name(400)]);
                    for name in &report.removed_files {
                        assert!(parse_segment_name(name).is_some(), "{name}");
                    }
                } else {
                    assert!(
                        result.is_err(),
                        "{dir_syncs_ok}/{seed}: a finished reset is durable"
                    );
                    assert_eq!((j.first_index(), j.next_index()), (1, 151));
                    assert_eq!(segment_files(&disk).await.len(), firsts.len());
                    check_log(&j, &old_model).await;
                }
                if dir_syncs_ok == 1 {
                    // The new segment's creation was durable, the removals were not.
                    assert_eq!(j.first_index(), 400);
                    assert_eq!(report.removed_files.len(), firsts.len(), "{report:?}");
                }
            });
        }
    }
}
