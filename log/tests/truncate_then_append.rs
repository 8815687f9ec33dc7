//! Scenario: Raft truncates an uncommitted suffix and appends a new one in a new term.
//!
//! Truncation points: the middle of the last segment, an older segment (later segments deleted
//! whole), exactly a segment boundary, and below everything (an empty journal). After the cut
//! the journal appends new batches in a new term; a crash and reopen find the new batches, never
//! the truncated ones (terms tell them apart). Waiters on truncated indexes get an error.

mod common;

use std::pin::pin;

use common::{FaultyStorage, Model, Rng, batches_in, check_log, segment_files, small};
use futures_lite::future::{block_on, poll_once};
use sluice_log::segment::{DATA_START, segment_name};
use sluice_log::{BLOCK_BYTES, Error, Journal, MemStorage};

#[derive(Debug, Clone, Copy)]
enum Cut {
    MiddleOfLast,
    OlderSegment,
    SegmentBoundary,
    Everything,
}

/// Where to cut (`truncate_after(x)`) in a journal whose segment first indexes are `firsts`.
fn cut_point(cut: Cut, firsts: &[u64], next: u64, rng: &mut Rng) -> u64 {
    let last_first = *firsts.last().expect("a segment");
    match cut {
        Cut::MiddleOfLast => rng.range(last_first, next - 1),
        Cut::OlderSegment => rng.range(firsts[0], firsts[firsts.len() - 2]),
        Cut::SegmentBoundary => {
            firsts[usize::try_from(rng.range(1, firsts.len() as u64)).expect("s")] - 1
        }
        Cut::Everything => firsts[0] - 1,
    }
}

fn scenario(cut: Cut, seed: u64, reopen_first: bool, crash_before_append: bool) {
    block_on(async {
        let mut rng = Rng(seed);
        let disk = MemStorage::new();
        let (mut j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, rng.range(120, 200));
        j.flush().await.expect("flush");
        if reopen_first {
            // Older segments are then unscanned when the cut reaches them.
            drop(j);
            j = Journal::open(disk.clone(), small())
                .await
                .expect("reopen")
                .0;
        }
        // Some appends stay unflushed: the cut must drop them from memory too.
        model.append_n(&j, 1, rng.range(0, 10));
        let firsts: Vec<u64> = segment_files(&disk)
            .await
            .iter()
            .map(|n| sluice_log::segment::parse_segment_name(n).expect("name"))
            .collect();
        assert!(firsts.len() >= 3, "several segments");
        let at = cut_point(cut, &firsts, j.next_index(), &mut rng);
        let label = format!("{cut:?} at {at} seed {seed} reopen {reopen_first}");

        let durable = j.durable_index();
        j.truncate_after(at).await.expect("truncate");
        model.truncate_after(at);
        assert_eq!(j.next_index(), at + 1, "{label}");
        assert_eq!(
            j.durable_index(),
            durable.min(at),
            "{label}: kept batches keep their state"
        );
        assert_eq!(j.pending_bytes() > 0, durable < at, "{label}");
        assert!(matches!(
            j.read(at + 1).await,
            Err(Error::IndexOutOfRange { .. })
        ));
        check_log(&j, &model).await;
        // Segments wholly after the cut are gone from disk.
        for first in &firsts {
            let kept = disk.contents(&segment_name(*first)).is_some();
            if *first > at + 1 || (*first == at + 1 && *first != firsts[0]) {
                assert!(!kept, "{label}: segment {first} deleted");
            } else {
                assert!(kept, "{label}: segment {first} kept");
            }
        }
        if crash_before_append {
            drop(j);
            disk.crash(seed);
            let (j2, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
            assert_eq!(
                report.dropped_tail, None,
                "{label}: the cut was zeroed, not torn"
            );
            let next = j2.next_index();
            assert!(
                next <= at + 1,
                "{label}: truncated batches stay gone ({next})"
            );
            assert!(
                next > durable.min(at),
                "{label}: durable batches stay ({next})"
            );
            model.truncate_after(next - 1);
            check_log(&j2, &model).await;
            j = j2;
        }

        model.append_n(&j, 2, rng.range(1, 60));
        let total = j.flush().await.expect("flush");
        drop(j);
        disk.crash(seed + 77);
        let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(report.dropped_tail, None, "{label}");
        assert_eq!(j.next_index(), total + 1, "{label}");
        check_log(&j, &model).await;
    });
}

#[test]
fn truncate_in_the_middle_of_the_last_segment() {
    for seed in 0..20 {
        scenario(Cut::MiddleOfLast, seed, seed % 2 == 0, seed % 3 == 0);
    }
}

#[test]
fn truncate_in_an_older_segment_deletes_later_segments() {
    for seed in 0..20 {
        scenario(Cut::OlderSegment, seed, seed % 2 == 0, seed % 3 == 0);
    }
}

#[test]
fn truncate_at_a_segment_boundary() {
    for seed in 0..20 {
        scenario(Cut::SegmentBoundary, seed, seed % 2 == 0, seed % 3 == 0);
    }
}

#[test]
fn truncate_everything() {
    for seed in 0..8 {
        scenario(Cut::Everything, seed, seed % 2 == 0, seed % 3 == 0);
    }
}

#[test]
fn truncate_below_first_index_is_rejected() {
    block_on(async {
        let disk = MemStorage::new();
        let config = sluice_log::JournalConfig {
            first_index: 10,
            ..small()
        };
        let (j, _) = Journal::open(disk.clone(), config).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 5);
        assert!(matches!(
            j.truncate_after(8).await,
            Err(Error::IndexOutOfRange { index: 8, .. })
        ));
        assert_eq!(j.next_index(), 15, "a rejected cut changes nothing");
        j.truncate_after(9).await.expect("to first_index - 1");
        assert_eq!(j.next_index(), 10);
        j.truncate_after(20)
            .await
            .expect("beyond the end is a no-op");
        assert_eq!(j.next_index(), 10);
    });
}

#[test]
fn waiters_on_truncated_indexes_get_an_error() {
    block_on(async {
        let disk = MemStorage::new();
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 10);
        j.flush_to(3).await.expect("flush_to");
        let mut kept = pin!(j.wait_durable(6));
        let mut cut = pin!(j.wait_durable(8));
        assert!(poll_once(&mut kept).await.is_none());
        assert!(poll_once(&mut cut).await.is_none());

        j.truncate_after(6).await.expect("truncate");
        assert!(matches!(
            poll_once(&mut cut).await,
            Some(Err(Error::IndexOutOfRange { index: 8, .. }))
        ));
        // A kept index stays pending until a flush covers it.
        assert!(poll_once(&mut kept).await.is_none());
        assert_eq!(j.durable_index(), 3);
        j.flush().await.expect("flush");
        poll_once(&mut kept).await.expect("ready").expect("durable");

        // A waiter on an index re-appended after the cut waits for the new batch's flush.
        model.truncate_after(6);
        model.append_n(&j, 2, 3);
        let mut again = pin!(j.wait_durable(8));
        assert!(poll_once(&mut again).await.is_none());
        j.flush().await.expect("flush");
        poll_once(&mut again)
            .await
            .expect("ready")
            .expect("durable");
        check_log(&j, &model).await;
    });
}

/// A flush whose sync fails has still written its blocks. A cut below them, then shorter new
/// batches, must not leave those stale blocks behind the new end: recovery would read them as
/// damage after the end (refusing to open) or, at a matching offset, revive a truncated batch.
#[test]
fn truncate_after_a_failed_flush_leaves_no_stale_blocks() {
    block_on(async {
        let disk = MemStorage::new();
        let faulty = FaultyStorage::new(disk.clone());
        let (j, _) = Journal::open(faulty.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 3);
        let durable = j.flush().await.expect("flush");
        let name = segment_name(1);
        let end_of_durable = batches_in(&disk, &name)
            .last()
            .map(|b| b.offset + b.bytes)
            .expect("batches");

        // Batches 4..=10 are written, but their sync fails.
        model.append_n(&j, 1, 7);
        faulty.fail_file_syncs_after(0);
        assert!(j.flush().await.is_err());
        faulty.heal();
        j.truncate_after(durable).await.expect("truncate");
        model.truncate_after(durable);

        // One new batch ending 32 bytes before a block boundary that the failed flush wrote:
        // its successor's header position then straddles into that block.
        let mut boundary = end_of_durable.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        if boundary - end_of_durable < 96 + 64 {
            boundary += BLOCK_BYTES;
        }
        let payload_len = boundary - 32 - end_of_durable - 64;
        let index = j
            .append(
                common::meta(2),
                &vec![0xAB; usize::try_from(payload_len).expect("s")],
            )
            .expect("append");
        j.flush().await.expect("flush");
        assert!(boundary < DATA_START + 16 * BLOCK_BYTES);
        drop(j);
        disk.crash(5);

        let (j, report) = Journal::open(disk.clone(), small())
            .await
            .expect("reopen: stale blocks of the failed flush were left behind the new end");
        assert_eq!(report.dropped_tail, None, "nothing was torn");
        assert_eq!(j.next_index(), index + 1, "no truncated batch revived");
        let batch = j.read(index).await.expect("new");
        assert_eq!((batch.term, batch.payload.len() as u64), (2, payload_len));
        for i in 1..index {
            assert_eq!(j.read(i).await.expect("old").payload, common::payload(i, 1));
        }
    });
}
