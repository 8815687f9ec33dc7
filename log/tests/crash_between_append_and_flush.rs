//! Scenario: a crash between appends and their flush.
//!
//! Appended batches are readable at once but durable only once a flush covers them. A crash may
//! keep or lose appended-but-unacknowledged batches (a partial flush writes the block they share
//! with flushed ones; a flush whose sync fails leaves its writes to chance), but it never loses a
//! batch a flush acknowledged, and never brings back a batch that was not appended: not one from
//! an older round at the same index, not one never written.

mod common;

use std::pin::pin;

use common::{FaultyStorage, Model, Rng, check_log, payload, small};
use futures_lite::future::{block_on, poll_once};
use sluice_log::{Error, Journal, MemStorage};

const SEEDS: u64 = 60;
const ROUNDS: u64 = 6;

#[test]
fn flushed_batches_survive_and_unflushed_ones_never_come_back_wrong() {
    let (mut kept_unacked, mut lost_unacked) = (0u64, 0u64);
    for seed in 0..SEEDS {
        block_on(async {
            let mut rng = Rng(seed.wrapping_mul(7919));
            let disk = MemStorage::new();
            let mut model = Model::default();
            for round in 1..=ROUNDS {
                let faulty = FaultyStorage::new(disk.clone());
                let (j, _) = Journal::open(faulty.clone(), small())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} round {round}: open: {e}"));
                model.truncate_after(j.next_index() - 1);
                check_log(&j, &model).await;

                // Appends interleaved with flushes up to a random target (partial flushes).
                for _ in 0..rng.range(1, 6) {
                    model.append_n(&j, round, rng.range(1, 15));
                    if rng.chance(60) {
                        let target = rng.range(j.durable_index(), j.next_index()).max(1);
                        let durable = j.flush_to(target).await.expect("flush_to");
                        assert!(durable >= target.min(j.next_index() - 1));
                    }
                }
                // Sometimes a last flush whose sync fails.
                if rng.chance(40) {
                    model.append_n(&j, round, rng.range(1, 10));
                    faulty.fail_file_syncs_after(rng.range(0, 2));
                    let _ = j.flush().await;
                }
                // Everything appended reads back before the crash, flushed or not.
                check_log(&j, &model).await;
                let acked = j.durable_index();
                let appended = j.next_index() - 1;
                drop(j);
                disk.crash(seed * 100 + round);

                let (j, _) = Journal::open(disk.clone(), small())
                    .await
                    .unwrap_or_else(|e| panic!("seed {seed} round {round}: reopen: {e}"));
                let last = j.next_index() - 1;
                assert!(
                    last >= acked,
                    "seed {seed} round {round}: lost acked {acked} ({last})"
                );
                assert!(
                    last <= appended,
                    "seed {seed} round {round}: {last} > {appended}"
                );
                if last > acked {
                    kept_unacked += 1;
                } else if appended > acked {
                    lost_unacked += 1;
                }
                model.truncate_after(last);
                // Terms tell rounds apart: a stale batch of an older round fails this check.
                check_log(&j, &model).await;
            }
        });
    }
    eprintln!("unacknowledged tails kept {kept_unacked} times, lost {lost_unacked} times");
    assert!(kept_unacked > 0 && lost_unacked > 0, "both outcomes occur");
}

#[test]
fn wait_durable_resolves_only_when_a_flush_covers_the_index() {
    block_on(async {
        let disk = MemStorage::new();
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 5);
        let syncs = disk.sync_count();

        let mut wait3 = pin!(j.wait_durable(3));
        assert!(poll_once(&mut wait3).await.is_none(), "not durable yet");
        assert_eq!(disk.sync_count(), syncs, "waiting does not flush");
        assert!(
            matches!(
                j.wait_durable(6).await,
                Err(Error::IndexOutOfRange { index: 6, .. })
            ),
            "an index never appended"
        );

        assert_eq!(j.flush_to(2).await.expect("flush_to"), 2);
        assert!(poll_once(&mut wait3).await.is_none(), "2 does not cover 3");
        j.wait_durable(2).await.expect("2 is durable");

        j.flush().await.expect("flush");
        poll_once(&mut wait3)
            .await
            .expect("woken by the flush")
            .expect("durable");
        j.wait_durable(5).await.expect("all durable");

        // A failed flush wakes its waiters with the error; a later flush makes them durable.
        model.append_n(&j, 1, 2);
        let mut wait7 = pin!(j.wait_durable(7));
        assert!(poll_once(&mut wait7).await.is_none());
        disk.set_fail_writes(true);
        assert!(j.flush().await.is_err());
        assert!(matches!(
            poll_once(&mut wait7).await,
            Some(Err(Error::FlushFailed { .. }))
        ));
        assert_eq!(j.durable_index(), 5);
        disk.set_fail_writes(false);
        let mut wait7 = pin!(j.wait_durable(7));
        assert!(poll_once(&mut wait7).await.is_none());
        j.flush().await.expect("retry");
        poll_once(&mut wait7)
            .await
            .expect("ready")
            .expect("durable");

        // The old handle stays borrowed by the pinned waiters; the crash invalidates it anyway.
        disk.crash(9);
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("reopen");
        assert_eq!(j.next_index(), 8);
        check_log(&j, &model).await;
        assert_eq!(j.read(7).await.expect("7").payload, payload(7, 1));
    });
}

#[test]
fn unflushed_appends_never_reach_the_disk_without_a_flush() {
    block_on(async {
        let disk = MemStorage::new();
        let (j, _) = Journal::open(disk.clone(), small()).await.expect("open");
        let mut model = Model::default();
        model.append_n(&j, 1, 10);
        j.flush().await.expect("flush");
        model.append_n(&j, 1, 30);
        check_log(&j, &model).await;
        assert!(j.pending_bytes() > 0);
        drop(j);
        for seed in 0..20 {
            disk.crash(seed);
            let (j, report) = Journal::open(disk.clone(), small()).await.expect("reopen");
            assert_eq!(
                j.next_index(),
                11,
                "seed {seed}: no flush, no batch after 10"
            );
            assert_eq!(report.dropped_tail, None);
            model.truncate_after(10);
            check_log(&j, &model).await;
        }
    });
}
