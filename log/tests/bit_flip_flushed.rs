//! Scenario: bit rot damages a batch that was flushed and acknowledged.
//!
//! In the last segment, valid batches appended after the damaged one was flushed record it as
//! durable (their `durable_index`): that proves the damage is not a torn tail, and opening must
//! fail with `CorruptFlushedData` naming the batch rather than silently drop acknowledged entries. In an older segment (scanned lazily), opening succeeds, and reading or iterating
//! through the damaged batch fails with `CorruptFlushedData`: never a panic, never wrong data.

mod common;

use common::{Model, batches_in, check_log, payload, segment_files, small};
use futures_lite::future::block_on;
use sluice_log::{Error, Journal, MemStorage};

/// A journal of 200 batches over several segments, each flushed (acknowledged) before the next
/// was appended, as a stream of acknowledged appends is.
async fn flushed_journal() -> (MemStorage, Model) {
    let disk = MemStorage::new();
    let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
    let mut model = Model::default();
    for _ in 0..200 {
        model.append_n(&j, 1, 1);
        j.flush().await.expect("flush");
    }
    assert!(j.segment_count() >= 4, "several segments");
    (disk, model)
}

/// Offsets inside a batch to damage: header fields, then first, middle and last payload byte.
fn spots(bytes: u64) -> [u64; 7] {
    [0, 6, 17, 45, 64, 64 + (bytes - 64) / 2, bytes - 1]
}

#[test]
fn damage_before_valid_batches_in_the_last_segment_refuses_to_open() {
    block_on(async {
        let (clean, _) = flushed_journal().await;
        let last_segment = segment_files(&clean).await.pop().expect("a segment");
        let placed = batches_in(&clean, &last_segment);
        assert!(placed.len() >= 3, "the last segment holds a few batches");
        // The first batch of the segment, one in the middle, and the one just before the last.
        let victims = [
            placed[0],
            placed[placed.len() / 2],
            placed[placed.len() - 2],
        ];
        for victim in victims {
            for spot in spots(victim.bytes) {
                let (disk, _) = flushed_journal().await;
                disk.corrupt(&last_segment, victim.offset + spot, 0x10);
                match Journal::open(disk.clone(), small()).await {
                    Err(Error::CorruptFlushedData {
                        path,
                        offset,
                        index,
                        reason,
                    }) => {
                        assert_eq!(index, victim.index, "spot {spot}");
                        assert_eq!(offset, victim.offset, "spot {spot}");
                        assert!(path.ends_with(&last_segment), "{}", path.display());
                        assert!(!reason.is_empty());
                    }
                    Err(e) => panic!("{victim:?} +{spot}: wrong error {e}"),
                    Ok((_, report)) => {
                        panic!("{victim:?} +{spot}: opened over damaged flushed data: {report:?}")
                    }
                }
                // Refusing is not repairing: the disk is left as it was for an operator.
                let content = disk.contents(&last_segment).expect("segment");
                let last = placed.last().expect("a batch");
                let end = usize::try_from(last.offset + last.bytes).expect("small");
                assert!(content[end - 1] != 0 || content[end - 2] != 0, "data kept");
            }
        }
    });
}

#[test]
fn damage_in_an_older_segment_fails_reads_through_it() {
    block_on(async {
        let (clean, _) = flushed_journal().await;
        let segments = segment_files(&clean).await;
        let older = &segments[1];
        let placed = batches_in(&clean, older);
        let victim = placed[placed.len() / 2];
        for spot in spots(victim.bytes) {
            let (disk, model) = flushed_journal().await;
            disk.corrupt(older, victim.offset + spot, 0x04);
            let (j, report) = Journal::open(disk.clone(), small())
                .await
                .expect("older segments are not scanned at open");
            assert_eq!(report.dropped_tail, None);
            assert_eq!(j.next_index(), 201);

            match j.read(victim.index).await {
                Err(Error::CorruptFlushedData { index, path, .. }) => {
                    assert!(path.ends_with(older), "{}", path.display());
                    assert!(index <= victim.index, "spot {spot}");
                }
                other => panic!("spot {spot}: reading the damaged batch gave {other:?}"),
            }
            // Iterating from the start yields correct batches and then the error, never a
            // damaged batch and never a panic.
            let mut reader = j.reader(1);
            let mut yielded = 0;
            loop {
                match reader.next(&j).await {
                    Ok(Some(batch)) => {
                        assert!(
                            batch.index < victim.index,
                            "spot {spot}: read past the damage"
                        );
                        assert_eq!(batch.payload, payload(batch.index, 1));
                        yielded += 1;
                    }
                    Ok(None) => panic!("spot {spot}: the reader ended without an error"),
                    Err(Error::CorruptFlushedData { .. }) => break,
                    Err(e) => panic!("spot {spot}: wrong error {e}"),
                }
            }
            assert!(yielded < victim.index);
            // Batches of the same segment before the damage read right or fail the same way.
            for index in placed[0].index..victim.index {
                match j.read(index).await {
                    Ok(batch) => assert_eq!(batch.payload, payload(index, 1)),
                    Err(Error::CorruptFlushedData { .. }) => {}
                    Err(e) => panic!("index {index}: wrong error {e}"),
                }
            }
            // Other segments are unaffected, and the journal still appends.
            for index in (1..placed[0].index).chain(placed.last().expect("b").index + 1..201) {
                let batch = j.read(index).await.expect("undamaged segment");
                assert_eq!(batch.payload, payload(index, 1), "index {index}");
            }
            let mut model = model;
            model.append(&j, 2);
            j.flush().await.expect("flush");
            assert_eq!(j.read(201).await.expect("new").payload, payload(201, 2));
        }
    });
}

#[test]
fn damage_under_an_open_journal_is_caught_on_read() {
    block_on(async {
        let disk = MemStorage::new();
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 200);
        j.flush().await.expect("flush");
        check_log(&j, &model).await;
        let first = segment_files(&disk).await.remove(0);
        let victim = batches_in(&disk, &first)[3];
        disk.corrupt(&first, victim.offset + 70, 0x01);
        assert!(matches!(
            j.read(victim.index).await,
            Err(Error::CorruptFlushedData { index, .. }) if index == victim.index
        ));
        assert_eq!(
            j.read(victim.index + 1).await.expect("next").index,
            victim.index + 1
        );
    });
}
