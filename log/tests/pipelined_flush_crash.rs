//! Scenario: a crash while appends, writes and syncs run concurrently.
//!
//! The flush pipeline writes plan after plan without waiting for syncs, and one sync completes
//! every plan whose writes had finished when it started. The in-memory disk yields a seeded
//! number of times inside every operation, so appends, writes and syncs interleave in many
//! orders, and the run stops (a power loss) at a seeded point with several plans in flight.
//! Recovery must keep every batch that was durable when the power went, hold only batches that
//! were appended (a contiguous prefix), and leave only zeros past the end.

mod common;

use std::cell::{Cell, RefCell};

use common::{Model, Rng, assert_zeros_after_end, check_log};
use futures_lite::future::{block_on, or, yield_now};
use sluice_log::{IoDelay, Journal, JournalConfig, MemStorage};

/// Plans of 64 KiB: a burst of appends past a write chunk (1 MiB) puts the pipeline in streaming
/// mode, with several plans written ahead of the sync.
fn config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 4 << 20,
        batch_bytes_max: 8 << 10,
        flush_bytes_max: 64 << 10,
        index_interval_bytes: 16 << 10,
        ..JournalConfig::default()
    }
}

#[test]
fn a_crash_with_several_plans_in_flight_keeps_every_durable_batch() {
    let mut shared_syncs = 0;
    let mut cuts = 0;
    for seed in 0..100u64 {
        block_on(async {
            let mut rng = Rng(seed);
            let disk = MemStorage::new();
            let (j, _) = Journal::open(disk.clone(), config()).await.expect("open");
            // Syncs slower than writes: the pipeline writes several plans ahead of them.
            disk.set_io_delay(
                seed,
                Some(IoDelay {
                    write_yields_max: 3,
                    sync_yields_max: 3 + seed % 40,
                }),
            );
            let model = RefCell::new(Model::default());
            // The highest index seen durable: acknowledged to someone, so it must survive.
            let acked = Cell::new(0u64);
            let steps = rng.range(20, 300);
            let appender = async {
                for _ in 0..steps {
                    // Mostly a few batches; now and then a burst of about 1.5 MiB.
                    let count = if rng.chance(3) {
                        rng.range(800, 1200)
                    } else {
                        rng.range(1, 5)
                    };
                    for _ in 0..count {
                        model.borrow_mut().append(&j, 1);
                    }
                    for _ in 0..rng.range(0, 6) {
                        yield_now().await;
                    }
                    acked.set(acked.get().max(j.durable_index()));
                }
            };
            let flusher = async {
                loop {
                    j.wait_pending().await;
                    j.flush().await.expect("flush");
                    acked.set(acked.get().max(j.durable_index()));
                }
            };
            or(appender, flusher).await;
            shared_syncs += j.stats().shared_syncs;
            let acked = acked.get();
            drop(j);
            disk.crash(seed);
            disk.set_io_delay(0, None);

            let (j, report) = Journal::open(disk.clone(), config())
                .await
                .unwrap_or_else(|e| panic!("seed {seed}: a plain crash must recover: {e}"));
            assert!(
                j.next_index() > acked,
                "seed {seed}: durable index {acked} lost (next {})",
                j.next_index()
            );
            if report.dropped_tail.is_some() {
                cuts += 1;
            }
            let model = model.into_inner();
            check_log(&j, &model).await;
            assert_zeros_after_end(&disk, &format!("seed {seed}")).await;
        });
    }
    assert!(
        shared_syncs > 0,
        "no sync ever covered two plans: the pipeline was not exercised"
    );
    eprintln!("{shared_syncs} plans completed by a shared sync; {cuts} torn tails cut");
    assert!(cuts > 10, "crashes tore unfinished flushes ({cuts})");
}
