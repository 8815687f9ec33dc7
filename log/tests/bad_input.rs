//! Scenario: bad input and a hostile disk. Foreign files, out-of-range reads, oversized batches,
//! a full disk during a roll-over, failing writes and a full append buffer all become typed
//! errors that leave the journal consistent, and the journal recovers once the cause is gone.

mod common;

use std::pin::pin;

use common::{Model, check_log, meta, small};
use futures_lite::future::{block_on, poll_once};
use sluice_log::segment::{SegmentHeader, segment_name};
use sluice_log::{Error, Journal, JournalConfig, MemStorage};

fn open_fails_with_not_a_segment(disk: &MemStorage, name: &str) {
    match block_on(Journal::open(disk.clone(), small())) {
        Err(Error::NotASegment { path, reason }) => {
            assert!(path.ends_with(name), "{}", path.display());
            assert!(!reason.is_empty());
        }
        Err(e) => panic!("{name}: wrong error {e}"),
        Ok(_) => panic!("{name}: opened a journal over a foreign file"),
    }
    assert!(
        disk.contents(name).is_some(),
        "a foreign file is never deleted"
    );
}

#[test]
fn foreign_files_are_refused_or_ignored() {
    // A .seg name that is not 20 digits.
    let disk = MemStorage::new();
    disk.put_file("garbage.seg", &[0xEE; 8192]);
    open_fails_with_not_a_segment(&disk, "garbage.seg");

    // A valid name over garbage, over a short file, over an empty one.
    for content in [vec![0x5Au8; 64 << 10], b"SLSG".to_vec(), Vec::new()] {
        let disk = MemStorage::new();
        disk.put_file(&segment_name(1), &content);
        open_fails_with_not_a_segment(&disk, &segment_name(1));
    }

    // A valid header whose first index disagrees with the name, or whose size is wrong.
    let config = small();
    let header = |first_index, segment_bytes| {
        let mut block = SegmentHeader {
            first_index,
            generation: 0,
            segment_bytes,
        }
        .encode();
        block.resize(usize::try_from(config.segment_bytes).expect("small"), 0);
        block
    };
    let disk = MemStorage::new();
    disk.put_file(&segment_name(1), &header(2, config.segment_bytes));
    open_fails_with_not_a_segment(&disk, &segment_name(1));
    let disk = MemStorage::new();
    disk.put_file(&segment_name(1), &header(1, config.segment_bytes * 2));
    open_fails_with_not_a_segment(&disk, &segment_name(1));

    // A damaged header byte in a real segment.
    let disk = MemStorage::new();
    block_on(async {
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        Model::default().append_n(&j, 1, 3);
        j.flush().await.expect("flush");
    });
    disk.corrupt(&segment_name(1), 20, 0x01);
    open_fails_with_not_a_segment(&disk, &segment_name(1));

    // Files that are not segments at all are left alone.
    let disk = MemStorage::new();
    disk.put_file("README", b"operator notes");
    disk.put_file("00000000000000000001.snapshot", &[1; 100]);
    block_on(async {
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("open");
        assert!(report.removed_files.is_empty());
        assert_eq!(j.next_index(), 1);
    });
    assert!(disk.contents("README").is_some());
}

#[test]
fn reads_outside_the_journal_are_out_of_range() {
    block_on(async {
        let disk = MemStorage::new();
        let config = JournalConfig {
            first_index: 5,
            ..small()
        };
        let (j, _) = Journal::open(disk.clone(), config).await.expect("open");
        assert!(matches!(
            j.read(5).await,
            Err(Error::IndexOutOfRange {
                index: 5,
                first: 5,
                next: 5
            })
        ));
        Model::default().append_n(&j, 1, 3);
        for index in [0, 4, 8, 9, u64::MAX] {
            assert!(
                matches!(j.read(index).await, Err(Error::IndexOutOfRange { index: i, .. }) if i == index),
                "index {index}"
            );
        }
        assert!(j.reader(8).next(&j).await.expect("end").is_none());
        assert_eq!(j.read(7).await.expect("pending read").index, 7);
    });
}

#[test]
fn an_oversized_batch_is_refused_and_changes_nothing() {
    block_on(async {
        let disk = MemStorage::new();
        let config = small();
        let (j, _) = Journal::open(disk.clone(), config.clone())
            .await
            .expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 4);
        let (next, pending, appends) = (j.next_index(), j.pending_bytes(), j.stats().appends);
        let max_payload = usize::try_from(config.batch_bytes_max).expect("small") - 64;
        match j.append(meta(1), &vec![7; max_payload + 1]) {
            Err(Error::BatchTooLarge { bytes, max }) => {
                assert_eq!(
                    (bytes, max),
                    (config.batch_bytes_max + 1, config.batch_bytes_max)
                );
            }
            other => panic!("expected BatchTooLarge, got {other:?}"),
        }
        assert_eq!(
            (j.next_index(), j.pending_bytes(), j.stats().appends),
            (next, pending, appends)
        );
        // The largest allowed batch fits.
        let index = j.append(meta(1), &vec![7; max_payload]).expect("max batch");
        assert_eq!(index, next);
        j.flush().await.expect("flush");
        assert_eq!(
            j.read(index).await.expect("read").payload.len(),
            max_payload
        );
        j.truncate_after(index - 1).await.expect("truncate");
        check_log(&j, &model).await;
    });
}

#[test]
fn a_full_disk_at_roll_over_keeps_appends_pending_until_space_returns() {
    block_on(async {
        let disk = MemStorage::new();
        let config = small();
        let (j, _) = Journal::open(disk.clone(), config.clone())
            .await
            .expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 10);
        j.flush().await.expect("flush");
        let durable = j.durable_index();
        // Room for two segments: the roll-over into a third cannot create it.
        disk.set_capacity(Some(2 * config.segment_bytes));
        while j.segment_count() < 3 {
            model.append(&j, 1);
        }
        let appended = j.next_index() - 1;
        match j.flush().await {
            Err(Error::DiskFull { .. }) => {}
            other => panic!("expected DiskFull, got {other:?}"),
        }
        assert!(j.durable_index() >= durable && j.durable_index() < appended);
        assert!(j.pending_bytes() > 0, "nothing was lost");
        assert_eq!(j.next_index(), appended + 1);
        check_log(&j, &model).await;
        // Still full: still an error, still nothing lost.
        assert!(matches!(j.flush().await, Err(Error::DiskFull { .. })));
        check_log(&j, &model).await;

        disk.set_capacity(None);
        assert_eq!(j.flush().await.expect("retry"), appended);
        assert_eq!(j.pending_bytes(), 0);
        check_log(&j, &model).await;
        drop(j);
        disk.crash(4);
        let (j, report) = Journal::open(disk.clone(), config).await.expect("reopen");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(j.next_index(), appended + 1);
        check_log(&j, &model).await;
    });
}

#[test]
fn failing_writes_leave_the_journal_consistent() {
    block_on(async {
        let disk = MemStorage::new();
        let config = small();
        let (j, _) = Journal::open(disk.clone(), config.clone())
            .await
            .expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 10);
        j.flush().await.expect("flush");
        model.append_n(&j, 1, 40);
        let mut waiter = pin!(j.wait_durable(50));
        assert!(poll_once(&mut waiter).await.is_none());

        disk.set_fail_writes(true);
        match j.flush().await {
            Err(Error::Io { source, .. }) => assert_eq!(source.raw_os_error(), Some(libc::EIO)),
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(matches!(
            poll_once(&mut waiter).await,
            Some(Err(Error::FlushFailed { .. }))
        ));
        assert_eq!(j.durable_index(), 10);
        assert_eq!(j.next_index(), 51);
        check_log(&j, &model).await;
        // Appends still work while the disk fails.
        model.append_n(&j, 1, 5);
        assert!(j.flush().await.is_err());

        disk.set_fail_writes(false);
        assert_eq!(j.flush().await.expect("flush"), 55);
        check_log(&j, &model).await;
        // (`j` stays borrowed by the pinned waiter; the crash invalidates its files.)
        disk.crash(8);
        let (j, report) = Journal::open(disk.clone(), config).await.expect("reopen");
        assert_eq!(report.dropped_tail, None);
        assert_eq!(j.next_index(), 56);
        check_log(&j, &model).await;
    });
}

#[test]
fn a_full_append_buffer_refuses_appends_until_a_flush() {
    block_on(async {
        let disk = MemStorage::new();
        let config = JournalConfig {
            pending_bytes_max: 16 << 10,
            ..small()
        };
        let (j, _) = Journal::open(disk.clone(), config).await.expect("open");
        let payload = vec![1u8; 4000];
        let mut appended = 0;
        let error = loop {
            match j.append(meta(1), &payload) {
                Ok(_) => appended += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(appended, 4, "4 x 4064 bytes fit in 16 KiB, 5 do not");
        match error {
            Error::PendingFull { pending_bytes, max } => {
                assert_eq!((pending_bytes, max), (4 * 4064, 16 << 10));
            }
            e => panic!("expected PendingFull, got {e}"),
        }
        assert_eq!(j.next_index(), 5, "the refused append took no index");
        j.flush().await.expect("flush");
        assert_eq!(j.pending_bytes(), 0);
        assert_eq!(j.append(meta(1), &payload).expect("room again"), 5);
    });
}
