//! The Raft core's own cost: three replicas in one thread, messages delivered at once, journals
//! in memory that flush instantly. What is measured is pure CPU: proposing `n` entries of 1 KiB
//! on the leader and driving every replica until the leader has committed all `n`. Criterion reports
//! commits per second (elements) and the time per batch; divide by `n` for the CPU cost of one
//! commit across the three replicas.
//!
//! `cargo bench -p sluice-benches --bench raft`

use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_log::raft::{Entry, FlushReport, HardState, Message, Raft, RaftConfig, RaftLog, Role};

const REPLICAS: u64 = 3;
const PAYLOAD_BYTES: usize = 1024;
/// Proposals per measured batch: one at a time, and batched.
const BATCHES: &[u64] = &[1, 16, 256];
/// Journal entries kept per replica before the harness drops the oldest (memory bound).
const JOURNAL_KEEP: usize = 4096;

struct Replica {
    raft: Raft,
    journal: VecDeque<Entry>,
}

struct Cluster {
    replicas: Vec<Replica>,
    queue: VecDeque<Message>,
    now_ms: u64,
}

impl Cluster {
    fn new() -> Self {
        let ids: Vec<u64> = (1..=REPLICAS).collect();
        let replicas = ids
            .iter()
            .map(|&id| {
                let config = RaftConfig {
                    heartbeat_interval_ms: 10,
                    election_timeout_ms: 100,
                    inflight_appends_max: 64,
                    ..RaftConfig::new(id, &ids)
                };
                let log = RaftLog::recovered(0, 0, vec![], 0, 0, config.entry_cache_bytes_max);
                Replica {
                    raft: Raft::new(config, HardState::default(), log, 0, 7),
                    journal: VecDeque::new(),
                }
            })
            .collect();
        let mut cluster = Cluster {
            replicas,
            queue: VecDeque::new(),
            now_ms: 0,
        };
        while cluster.leader().is_none() {
            cluster.now_ms += 10;
            let now = cluster.now_ms;
            for r in &mut cluster.replicas {
                r.raft.handle_tick(now);
            }
            cluster.settle();
            assert!(cluster.now_ms < 10_000, "no leader elected");
        }
        cluster
    }

    fn leader(&self) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.raft.role() == Role::Leader)
    }

    /// Drives every replica until nothing moves: Ready, instant flush, delivery.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for r in &mut self.replicas {
                let ready = r.raft.ready();
                moved |= !ready.is_empty();
                if let Some(t) = ready.truncate_after {
                    while r.journal.back().is_some_and(|e| e.index > t) {
                        r.journal.pop_back();
                    }
                }
                r.journal.extend(ready.entries);
                while r.journal.len() > JOURNAL_KEEP {
                    r.journal.pop_front();
                }
                self.queue.extend(ready.messages);
                self.queue.extend(ready.messages_after_persist);
                for read in ready.reads {
                    let entries = r
                        .journal
                        .iter()
                        .filter(|e| e.index >= read.from_index)
                        .take(64)
                        .cloned()
                        .collect();
                    r.raft.handle_log_read(read.peer, entries);
                }
                r.raft.advance(ready.number);
                let last = r.raft.log().last_index();
                if r.raft.log().durable_index() < last {
                    // This journal applies every Ready at once, so it is always at Raft's epoch.
                    let epoch = r.raft.log().journal_epoch();
                    r.raft.handle_flushed(FlushReport {
                        epoch,
                        durable_index: last,
                    });
                    moved = true;
                }
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                let to = usize::try_from(m.to - 1).expect("small ids");
                self.replicas[to].raft.handle_message(m);
            }
            if !moved {
                return;
            }
        }
    }

    /// Proposes `n` entries and drives the cluster until the leader has committed them.
    fn commit_batch(&mut self, n: u64, payload: &Rc<[u8]>) {
        let leader = self.leader().expect("a leader");
        let mut last = 0;
        for _ in 0..n {
            last = self.replicas[leader]
                .raft
                .propose(payload.clone())
                .expect("the leader takes proposals");
        }
        self.settle();
        // The leader's commit is what acknowledges clients; followers learn it with the next
        // append.
        assert!(
            self.replicas[leader].raft.commit_index() >= last,
            "the batch is committed"
        );
    }
}

fn bench_commit(c: &mut Criterion) {
    let payload: Rc<[u8]> = Rc::from(vec![0x5A; PAYLOAD_BYTES]);
    let mut group = c.benchmark_group("raft_commit_3_replicas");
    for &n in BATCHES {
        group.throughput(Throughput::Elements(n));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.commit_batch(black_box(n), &payload));
        });
    }
    group.finish();
}

criterion_group!(benches, bench_commit);
criterion_main!(benches);
