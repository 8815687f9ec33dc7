//! Group commit: one flush covers every append made before it with one sync per segment and
//! wakes every waiter it covers; the flush policies group (or do not group) as documented.

use std::cell::Cell;
use std::rc::Rc;

use futures_lite::future::{block_on, poll_once};
use sluice_log::{
    BatchMeta, DmaStorage, FlushPolicy, Journal, JournalConfig, MemStorage, spawn_flusher,
};

fn meta() -> BatchMeta {
    BatchMeta {
        term: 1,
        timestamp_ms: 0,
        record_count: 1,
    }
}

#[test]
fn one_flush_one_sync_wakes_every_covered_waiter() {
    block_on(async {
        let disk = MemStorage::new();
        let (journal, _) = Journal::open(disk.clone(), JournalConfig::default())
            .await
            .expect("open");
        let indexes: Vec<u64> = (0..50)
            .map(|i| journal.append(meta(), &[i; 1000]).expect("append"))
            .collect();
        let mut waiters: Vec<_> = indexes
            .iter()
            .map(|i| Box::pin(journal.wait_durable(*i)))
            .collect();
        for w in &mut waiters {
            assert!(
                poll_once(w.as_mut()).await.is_none(),
                "nothing is durable before a flush"
            );
        }
        let syncs_before = disk.sync_count();
        assert_eq!(journal.flush().await.expect("flush"), 50);
        assert_eq!(
            disk.sync_count() - syncs_before,
            1,
            "fifty appends, one fdatasync"
        );
        for w in &mut waiters {
            assert!(matches!(poll_once(w.as_mut()).await, Some(Ok(()))));
        }
        // A flush with nothing pending does no I/O.
        journal.flush().await.expect("flush");
        assert_eq!(disk.sync_count() - syncs_before, 1);
        // A later append is not covered by the earlier flush.
        let late = journal.append(meta(), b"late").expect("append");
        let mut w = Box::pin(journal.wait_durable(late));
        assert!(poll_once(w.as_mut()).await.is_none());
    });
}

fn run_appenders(policy: FlushPolicy, appenders: u64, appends_each: u64) -> (u64, u64) {
    let dir = std::env::temp_dir().join(format!(
        "sluice-group-commit-{}-{policy:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            let storage = DmaStorage::open(&dir).await.expect("storage");
            let config = JournalConfig {
                segment_bytes: 8 << 20,
                ..JournalConfig::default()
            };
            let (journal, _) = Journal::open(storage, config).await.expect("open");
            let journal = Rc::new(journal);
            let flusher = spawn_flusher(journal.clone(), policy);
            let done = Rc::new(Cell::new(0u64));
            let tasks: Vec<_> = (0..appenders)
                .map(|_| {
                    let journal = journal.clone();
                    let done = done.clone();
                    glommio::spawn_local(async move {
                        for _ in 0..appends_each {
                            let index = journal.append(meta(), &[7; 1024]).expect("append");
                            journal.wait_durable(index).await.expect("durable");
                            assert!(journal.durable_index() >= index);
                            done.set(done.get() + 1);
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await;
            }
            journal.close();
            flusher.await;
            let stats = journal.stats();
            let _ = std::fs::remove_dir_all(&dir);
            assert_eq!(done.get(), appenders * appends_each);
            (stats.appends, stats.syncs)
        })
        .expect("executor")
        .join()
        .expect("join")
}

#[test]
fn immediate_policy_groups_concurrent_appends() {
    let (appends, syncs) = run_appenders(FlushPolicy::Immediate, 64, 10);
    assert_eq!(appends, 640);
    assert!(
        syncs * 4 <= appends,
        "64 concurrent appenders should share syncs: {syncs} syncs for {appends} appends"
    );
}

#[test]
fn every_batch_policy_syncs_once_per_batch() {
    let (appends, syncs) = run_appenders(FlushPolicy::EveryBatch, 8, 10);
    assert_eq!(appends, 80);
    assert!(
        syncs >= appends,
        "EveryBatch must not group: {syncs} syncs for {appends} appends"
    );
}

#[test]
fn delayed_policy_flushes_by_bytes_threshold() {
    let policy = FlushPolicy::Delayed {
        delay: std::time::Duration::from_millis(2),
        bytes: 16 << 10,
    };
    let (appends, syncs) = run_appenders(policy, 32, 10);
    assert_eq!(appends, 320);
    assert!(syncs * 4 <= appends, "{syncs} syncs for {appends} appends");
}
