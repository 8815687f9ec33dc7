//! One partition's replicas under faults: the deterministic Raft simulation.
//!
//! Each replica is a real [`Raft`] core driven over a real [`Journal`] on its own [`MemStorage`]
//! disk, with its hard state in a small durable record. A [`SimNetwork`] carries messages. Time is
//! virtual (1 ms a step). One seed, split into independent streams, drives the network faults,
//! disk latencies and crash tears, the workload, and the fault schedule, so a seed replays a run
//! exactly.
//!
//! A run has a fault phase (message loss, duplication and delays, partitions symmetric and
//! one-way, crashes that lose unflushed writes and may tear the flush in progress, restarts,
//! slow disks) and then a calm phase: everything heals, every replica restarts, and the cluster
//! must elect a leader and commit new proposals within a bounded number of steps. The
//! [`Checker`] runs after every step, and once at the end over the healed cluster.
//!
//! **Flushes are asynchronous**, as the broker's flush task is to its driver. A flush takes a
//! few milliseconds of disk time (in the fault phase it sometimes stalls for up to a second,
//! drawn from the flush stream); when it completes, its [`FlushReport`] is read at once but
//! reaches Raft only up to `FLUSH_REPORT_DELAY_MS_MAX` later (drawn from its own stream), in a
//! single slot that a newer report overwrites, as the broker's inputs do. Meanwhile the replica
//! keeps taking messages and carrying out its `Ready`s: a cut waits for the flush in progress
//! (the journal's lock) and then truncates and appends before that flush's report arrives. The
//! checker's durability rule compares what Raft counts as durable with what the journal has
//! synced after every step.

use std::fmt;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Waker};

use futures_lite::future::block_on;

use super::check::{Checker, EntryView, ReplicaView};
use super::network::{NetworkFaults, SimNetwork};
use super::rng::{Rng, Streams};
use crate::raft::{
    Entry, HardState, InjectedBug, Message, Raft, RaftConfig, RaftLog, ReplicaId, Role,
    SnapshotChunk, SnapshotRead,
};
use crate::{BatchMeta, FlushReport, IoDelay, Journal, JournalConfig, MemStorage};

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub replicas: u64,
    /// Total steps (1 ms of virtual time each), fault phase and calm phase together.
    pub steps: u64,
    /// Steps at the end without faults, in which the cluster must make progress.
    pub calm_steps: u64,
    /// Chance per step, per mille, that the client proposes.
    pub propose_per_mille: u32,
    /// A deliberate bug in every replica (checker self-tests).
    pub bug: Option<InjectedBug>,
}

impl SimConfig {
    /// The default run for `seed`: three replicas, 4000 steps of which the last 1500 are calm.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        SimConfig {
            seed,
            replicas: 3,
            steps: 4000,
            calm_steps: 1500,
            propose_per_mille: 300,
            bug: None,
        }
    }

    /// The command that replays this run.
    #[must_use]
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p sluice-tools --bin sluice-sim -- --seed {} --steps {} --replicas {}",
            self.seed, self.steps, self.replicas
        );
        if let Some(bug) = self.bug {
            cmd = format!("{cmd} --bug {bug:?}");
        }
        cmd
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub proposals: u64,
    pub acknowledged: u64,
    pub commits: u64,
    pub crashes: u64,
    pub torn_flushes: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    /// Flush reports that reached Raft after a truncation they predate.
    pub stale_flush_reports: u64,
    /// Leadership transfers asked for.
    pub transfers: u64,
    pub elections: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
}

/// A failed run: the rule broken and how to replay it.
#[derive(Debug, Clone)]
pub struct SimFailure {
    pub seed: u64,
    pub step: u64,
    pub reason: String,
    pub replay: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} failed at step {}: {}\nreplay: {}",
            self.seed, self.step, self.reason, self.replay
        )
    }
}

/// The network of the fault phase: lossy, duplicating and reordering, with delays up to a
/// fraction of the election timeout (longer ones would make elections all but impossible).
const FAULTY_NETWORK: NetworkFaults = NetworkFaults {
    loss_per_mille: 30,
    duplicate_per_mille: 20,
    delay_min_ms: 1,
    delay_max_ms: 40,
};

/// Test timeouts: short, so a run covers many elections.
const HEARTBEAT_MS: u64 = 10;
const ELECTION_TIMEOUT_MS: u64 = 100;
/// A flush takes this long normally, and up to `SLOW_FLUSH_MS_MAX` on a slow disk.
const FLUSH_MS_MAX: u64 = 4;
const SLOW_FLUSH_MS_MAX: u64 = 60;
/// A completed flush's report reaches Raft up to this much later (the broker's driver picks it
/// up at its next round, which may first carry out a truncation and appends).
const FLUSH_REPORT_DELAY_MS_MAX: u64 = 3;
/// In the fault phase, a flush stalls with this chance per mille, for up to
/// `FLUSH_STALL_MS_MAX` more (an `fdatasync` stuck behind a busy device): long enough, over
/// several election timeouts, for a new leader to cut the entries it is flushing. Without
/// stalls a cut almost never meets a flush in progress: the entries it cuts were appended
/// at least an election timeout earlier.
const FLUSH_STALL_PER_MILLE: u32 = 30;
const FLUSH_STALL_MS_MAX: u64 = 1000;
/// Fault chances per step, per mille.
const CRASH_PER_MILLE: u32 = 2;
/// Of crashes, how many per mille take down two replicas at once, and all of them (a power cut).
const CRASH_TWO_PER_MILLE: u32 = 250;
const CRASH_ALL_PER_MILLE: u32 = 150;
const RESTART_PER_MILLE: u32 = 20;
const PARTITION_PER_MILLE: u32 = 3;
const ONE_WAY_PER_MILLE: u32 = 2;
const HEAL_PER_MILLE: u32 = 8;
/// Chance per step that the leader is asked to hand over to another replica (rebalancing).
const TRANSFER_PER_MILLE: u32 = 2;
/// Chance per step that a replica's disk turns slow (or fast again).
const SLOW_DISK_TOGGLE_PER_MILLE: u32 = 3;
/// In the calm phase, a leader and a newly acknowledged proposal must appear within this many
/// steps.
const LIVENESS_STEPS_MAX: u64 = 1000;
/// Bounds the entries a replica may hold, so a run's memory is bounded.
const ENTRIES_MAX: usize = 200_000;
/// A replica snapshots (and compacts its journal) once this many committed, flushed entries
/// have accumulated after its last snapshot.
const SNAPSHOT_EVERY_ENTRIES: u64 = 300;

fn journal_config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 256 << 10,
        batch_bytes_max: 8 << 10,
        flush_bytes_max: 32 << 10,
        index_interval_bytes: 4 << 10,
        ..JournalConfig::default()
    }
}

/// Odd seeds give the replicas distinct priorities (replica `i` has priority `i`), even seeds
/// equal ones.
fn raft_config(id: ReplicaId, replicas: u64, prioritized: bool) -> RaftConfig {
    let ids: Vec<ReplicaId> = (1..=replicas).collect();
    let mut config = RaftConfig {
        heartbeat_interval_ms: HEARTBEAT_MS,
        election_timeout_ms: ELECTION_TIMEOUT_MS,
        append_bytes_max: 16 << 10,
        inflight_appends_max: 4,
        entry_cache_bytes_max: 64 << 10,
        snapshot_chunk_bytes: 4 << 10,
        ..RaftConfig::new(id, &ids)
    };
    if prioritized {
        for r in &mut config.replicas {
            r.priority = u32::try_from(r.id).expect("small ids");
        }
    }
    config
}

/// A proposal's payload: its id, little-endian.
fn encode_proposal(id: u64) -> Rc<[u8]> {
    Rc::from(id.to_le_bytes().to_vec())
}

fn decode_proposal(payload: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(payload).ok().map(u64::from_le_bytes)
}

struct Live {
    raft: Raft,
    journal: Journal<MemStorage>,
    /// When the flush in progress completes, if one is.
    flush_done_ms: Option<u64>,
    /// A completed flush's report on its way to Raft (lost at a crash).
    report: Option<LateReport>,
}

/// A flush report and when it reaches Raft.
struct LateReport {
    due_ms: u64,
    report: FlushReport,
}

impl Live {
    /// Runs the flush in progress to its end and posts its report, read now, to reach Raft
    /// between now and `FLUSH_REPORT_DELAY_MS_MAX` later. A report still on its way is
    /// overwritten and arrives when it would have: the newer one covers at least as much.
    fn finish_flush(&mut self, now_ms: u64, rng: &mut Rng) -> crate::Result<()> {
        self.flush_done_ms = None;
        block_on(self.journal.flush())?;
        let report = self.journal.flush_report();
        if let Some(late) = &mut self.report {
            late.report = report;
        } else {
            let due_ms = now_ms + rng.below(FLUSH_REPORT_DELAY_MS_MAX + 1);
            self.report = Some(LateReport { due_ms, report });
        }
        Ok(())
    }
}

struct Replica {
    id: ReplicaId,
    disk: MemStorage,
    /// The durable hard-state record (a small file with its own fsync, in a real driver).
    hard: HardState,
    live: Option<Live>,
    /// What the journal holds after the snapshot, mirrored for the checkers: entry `i` has
    /// index `base() + 1 + i`.
    shadow: Vec<EntryView>,
    /// The latest snapshot (durable): the committed entries up to its index, as the "state".
    snapshot: Option<SimSnapshot>,
    /// Chunks of a snapshot arriving from the leader (lost at a crash).
    incoming: Vec<u8>,
    /// Flushes take up to `SLOW_FLUSH_MS_MAX` while set.
    slow_disk: bool,
}

impl Replica {
    /// The index the shadow starts after: the snapshot's.
    fn base(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// The entry at `index`, from the snapshot or the journal.
    fn entry(&self, index: u64) -> Option<EntryView> {
        let base = self.base();
        if index == 0 {
            return None;
        }
        if index <= base {
            let snapshot = self.snapshot.as_ref().expect("base > 0");
            return snapshot
                .entries
                .get(usize::try_from(index - 1).ok()?)
                .copied();
        }
        self.shadow
            .get(usize::try_from(index - base - 1).ok()?)
            .copied()
    }

    /// Reads chunks of this replica's snapshot for the leader's Raft to send.
    fn serve_snapshot_reads(&mut self, reads: &[SnapshotRead]) -> Result<(), String> {
        let id = self.id;
        let live = self.live.as_mut().expect("live");
        for read in reads {
            let snapshot = self
                .snapshot
                .as_ref()
                .ok_or_else(|| format!("replica {id}: asked to send a snapshot it lacks"))?;
            if snapshot.index != read.snapshot_index {
                return Err(format!(
                    "replica {id}: asked for snapshot {} but holds {}",
                    read.snapshot_index, snapshot.index
                ));
            }
            let len = snapshot.bytes.len();
            let from = usize::try_from(read.offset).expect("small").min(len);
            let to = (from + usize::try_from(read.bytes_max).expect("small")).min(len);
            let chunk: Rc<[u8]> = Rc::from(&snapshot.bytes[from..to]);
            live.raft.handle_snapshot_chunk(
                read.peer,
                snapshot.index,
                read.offset,
                chunk,
                to == len,
            );
        }
        Ok(())
    }

    /// Stores incoming snapshot chunks, and installs the snapshot when told: it becomes the
    /// state, the journal restarts after it. True when one was installed.
    fn store_snapshot(
        &mut self,
        chunks: &[SnapshotChunk],
        install: Option<(u64, u64)>,
    ) -> Result<bool, String> {
        let id = self.id;
        for chunk in chunks {
            if chunk.offset == 0 {
                self.incoming.clear();
            }
            if chunk.offset != self.incoming.len() as u64 {
                return Err(format!(
                    "replica {id}: snapshot chunk at {} but {} bytes held",
                    chunk.offset,
                    self.incoming.len()
                ));
            }
            self.incoming.extend_from_slice(&chunk.data);
        }
        let Some((index, term)) = install else {
            return Ok(false);
        };
        let snapshot = SimSnapshot::decode(&self.incoming, index, term).ok_or_else(|| {
            format!("replica {id}: the snapshot received for {index} is not entries 1..={index}")
        })?;
        self.snapshot = Some(snapshot);
        self.incoming.clear();
        let live = self.live.as_mut().expect("live");
        block_on(live.journal.reset(index + 1))
            .map_err(|e| format!("replica {id}: journal reset: {e}"))?;
        self.shadow.clear();
        live.raft.handle_snapshot_installed(index, term);
        Ok(true)
    }

    /// Takes a snapshot up to what is committed and flushed, once enough has accumulated, and
    /// compacts the journal below it.
    fn maybe_snapshot(&mut self) -> Result<bool, String> {
        let id = self.id;
        let base = self.base();
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        let upto = live
            .raft
            .commit_index()
            .min(live.raft.log().durable_index());
        if upto < base + SNAPSHOT_EVERY_ENTRIES {
            return Ok(false);
        }
        let take = usize::try_from(upto - base).expect("small");
        let mut entries = self.snapshot.take().map(|s| s.entries).unwrap_or_default();
        entries.extend(self.shadow.drain(..take));
        let snapshot = SimSnapshot::new(entries);
        let term = snapshot.term;
        self.snapshot = Some(snapshot);
        block_on(live.journal.compact_before(upto + 1))
            .map_err(|e| format!("replica {id}: compact_before({}): {e}", upto + 1))?;
        live.raft.handle_compacted(upto, term);
        Ok(true)
    }
}

/// A replica's snapshot: the state machine here is the committed log itself, so a snapshot is the
/// list of entries up to its index, encoded for transfer (24 bytes an entry).
struct SimSnapshot {
    index: u64,
    term: u64,
    entries: Vec<EntryView>,
    bytes: Rc<[u8]>,
}

impl SimSnapshot {
    fn new(entries: Vec<EntryView>) -> Self {
        let last = entries.last().expect("a snapshot holds entries");
        let (index, term) = (last.index, last.term);
        let mut bytes = Vec::with_capacity(entries.len() * 24);
        for e in &entries {
            bytes.extend_from_slice(&e.index.to_le_bytes());
            bytes.extend_from_slice(&e.term.to_le_bytes());
            bytes.extend_from_slice(&e.proposal.unwrap_or(u64::MAX).to_le_bytes());
        }
        SimSnapshot {
            index,
            term,
            entries,
            bytes: Rc::from(bytes),
        }
    }

    /// Decodes transferred bytes; `None` unless they hold entries `1..=index` exactly.
    fn decode(bytes: &[u8], index: u64, term: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(24) {
            return None;
        }
        let word = |c: &[u8], i: usize| {
            u64::from_le_bytes(c[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        };
        let entries: Vec<EntryView> = bytes
            .chunks_exact(24)
            .map(|c| EntryView {
                index: word(c, 0),
                term: word(c, 1),
                proposal: Some(word(c, 2)).filter(|p| *p != u64::MAX),
            })
            .collect();
        let contiguous = entries.iter().zip(1..).all(|(e, i)| e.index == i);
        let last = entries.last()?;
        (contiguous && last.index == index && last.term == term).then(|| SimSnapshot::new(entries))
    }
}

/// A client proposal waiting for its acknowledgement.
struct Pending {
    id: u64,
    replica: ReplicaId,
    index: u64,
    term: u64,
}

/// The simulation of one partition.
#[expect(
    missing_debug_implementations,
    reason = "its state is the replicas' journals; SimReport says what happened"
)]
pub struct Simulation {
    config: SimConfig,
    streams: Streams,
    replicas: Vec<Replica>,
    network: SimNetwork<Message>,
    checker: Checker,
    disk_rng: Rng,
    faults_rng: Rng,
    workload_rng: Rng,
    flush_rng: Rng,
    /// Flushes may stall (the fault phase).
    stalls: bool,
    now_ms: u64,
    next_proposal: u64,
    pending: Vec<Pending>,
    report: SimReport,
    last_leader_term: u64,
}

impl Simulation {
    /// Sets up the replicas of `config`.
    ///
    /// # Panics
    /// On a journal error in the in-memory disk (a simulator bug).
    #[must_use]
    pub fn new(config: SimConfig) -> Self {
        let streams = Streams::new(config.seed);
        let network = SimNetwork::new(streams.network(), FAULTY_NETWORK);
        let mut sim = Simulation {
            replicas: Vec::new(),
            network,
            checker: Checker::new(),
            disk_rng: streams.disk(),
            faults_rng: streams.faults(),
            workload_rng: streams.workload(),
            flush_rng: streams.flushes(),
            stalls: true,
            now_ms: 0,
            next_proposal: 1,
            pending: Vec::new(),
            report: SimReport {
                seed: config.seed,
                ..SimReport::default()
            },
            last_leader_term: 0,
            streams,
            config,
        };
        for id in 1..=sim.config.replicas {
            let disk = MemStorage::new();
            sim.replicas.push(Replica {
                id,
                disk,
                hard: HardState::default(),
                live: None,
                shadow: Vec::new(),
                snapshot: None,
                incoming: Vec::new(),
                slow_disk: false,
            });
            sim.start(id);
        }
        sim
    }

    /// Runs every step; the report, or the first violation.
    ///
    /// # Errors
    /// [`SimFailure`] with the seed, the step, the broken rule and the replay command.
    pub fn run(mut self) -> Result<SimReport, SimFailure> {
        let calm_from = self.config.steps.saturating_sub(self.config.calm_steps);
        let mut calm_acked_at: Option<u64> = None;
        let mut acked_before_calm = 0;
        for step in 0..self.config.steps {
            if step == calm_from {
                self.calm_down();
                acked_before_calm = self.report.acknowledged;
            }
            if step < calm_from {
                self.inject_faults();
            }
            self.step()
                .map_err(|reason| self.failure(step, format!("{reason}; {}", self.describe())))?;
            if step >= calm_from
                && calm_acked_at.is_none()
                && self.report.acknowledged > acked_before_calm
            {
                calm_acked_at = Some(step);
            }
            if step >= calm_from + LIVENESS_STEPS_MAX && calm_acked_at.is_none() {
                return Err(self.failure(
                    step,
                    format!(
                        "liveness: no proposal acknowledged within {LIVENESS_STEPS_MAX} steps after faults stopped; {}",
                        self.describe()
                    ),
                ));
            }
        }
        if self.report.acknowledged == 0 {
            return Err(self.failure(self.config.steps, "the run committed nothing".into()));
        }
        self.settle_and_check_final()
            .map_err(|reason| self.failure(self.config.steps, reason))?;
        let stats = self.network.stats();
        self.report.messages_delivered = stats.delivered;
        self.report.messages_dropped = stats.dropped();
        Ok(self.report)
    }

    /// Each replica's state, for failure messages.
    fn describe(&self) -> String {
        let replicas: Vec<String> = self
            .replicas
            .iter()
            .map(|r| match &r.live {
                None => format!("{}: down", r.id),
                Some(l) => format!(
                    "{}: {:?} term {} leader {:?} commit {} last {} durable {}",
                    r.id,
                    l.raft.role(),
                    l.raft.term(),
                    l.raft.leader(),
                    l.raft.commit_index(),
                    l.raft.log().last_index(),
                    l.raft.log().durable_index()
                ),
            })
            .collect();
        format!("replicas [{}]", replicas.join("; "))
    }

    fn failure(&self, step: u64, reason: String) -> SimFailure {
        SimFailure {
            seed: self.config.seed,
            step,
            reason,
            replay: self.config.replay_command(),
        }
    }

    // ------------------------------------------------------------ replicas

    fn position(id: ReplicaId) -> usize {
        usize::try_from(id - 1).expect("small ids")
    }

    /// (Re)starts replica `id` from its disk: recovery, then a Raft core over what survived.
    fn start(&mut self, id: ReplicaId) {
        let now = self.now_ms;
        let seed = self.streams.node(id).next_u64() ^ now;
        let (replicas, bug) = (self.config.replicas, self.config.bug);
        let prioritized = self.config.seed % 2 == 1;
        let position = Self::position(id);
        let replica = &mut self.replicas[position];
        let (journal, _) = block_on(Journal::open(replica.disk.clone(), journal_config()))
            .unwrap_or_else(|e| panic!("replica {id}: the journal must recover: {e}"));
        replica.disk.set_io_delay(
            seed,
            Some(IoDelay {
                write_yields_max: 2,
                sync_yields_max: 4,
            }),
        );
        // Rebuild the term runs and the shadow from the recovered journal, after the snapshot.
        let (base, base_term) = replica
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.index, s.term));
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut shadow = Vec::new();
        let mut reader = journal.reader(journal.first_index().max(base + 1));
        while let Some(batch) =
            block_on(reader.next(&journal)).unwrap_or_else(|e| panic!("replica {id}: read: {e}"))
        {
            if runs.last().is_none_or(|r| r.1 != batch.term) {
                runs.push((batch.index, batch.term));
            }
            shadow.push(EntryView {
                index: batch.index,
                term: batch.term,
                proposal: decode_proposal(&batch.payload),
            });
        }
        let last = journal.next_index() - 1;
        assert!(
            last >= base,
            "replica {id}: the journal ends before its snapshot"
        );
        let log = RaftLog::recovered(
            base,
            base_term,
            runs,
            last,
            journal.truncation_epoch(),
            raft_config(id, replicas, prioritized).entry_cache_bytes_max,
        );
        let config = raft_config(id, replicas, prioritized);
        let mut raft = Raft::new(config, replica.hard, log, now, seed);
        if let Some(bug) = bug {
            raft.inject_bug(bug);
        }
        replica.shadow = shadow;
        replica.live = Some(Live {
            raft,
            journal,
            flush_done_ms: None,
            report: None,
        });
    }

    /// Power loss on replica `id`: unflushed appends are lost, and a flush of them may be caught
    /// part-way, its writes torn.
    fn crash(&mut self, id: ReplicaId) {
        let tear = self.disk_rng.chance(500);
        let polls = self.disk_rng.below(12);
        let crash_seed = self.disk_rng.next_u64();
        let position = Self::position(id);
        let replica = &mut self.replicas[position];
        let Some(live) = replica.live.take() else {
            return;
        };
        if tear && live.journal.pending_bytes() > 0 {
            // Part of the flush reaches the disk: poll it a few times, then pull the plug.
            {
                let mut flush = pin!(live.journal.flush());
                let mut cx = Context::from_waker(Waker::noop());
                for _ in 0..polls {
                    if flush.as_mut().poll(&mut cx).is_ready() {
                        break;
                    }
                }
            }
            self.report.torn_flushes += 1;
        }
        drop(live);
        replica.disk.crash(crash_seed);
        replica.shadow.clear();
        replica.incoming.clear();
        self.network.clear_node(id);
        self.checker.note_restart(id);
        self.report.crashes += 1;
    }

    fn live_ids(&self) -> Vec<ReplicaId> {
        self.replicas
            .iter()
            .filter(|r| r.live.is_some())
            .map(|r| r.id)
            .collect()
    }

    // ------------------------------------------------------------ faults

    fn inject_faults(&mut self) {
        let rng = &mut self.faults_rng;
        let n = self.config.replicas;
        if rng.chance(CRASH_PER_MILLE) {
            let mut ids: Vec<u64> = (1..=n).collect();
            rng.shuffle(&mut ids);
            let roll = rng.below(1000);
            let count = if roll < u64::from(CRASH_ALL_PER_MILLE) {
                ids.len()
            } else if roll < u64::from(CRASH_ALL_PER_MILLE + CRASH_TWO_PER_MILLE) {
                2.min(ids.len())
            } else {
                1
            };
            for id in ids.into_iter().take(count) {
                self.crash(id);
            }
        }
        for replica in &mut self.replicas {
            if self.faults_rng.chance(SLOW_DISK_TOGGLE_PER_MILLE) {
                replica.slow_disk = !replica.slow_disk;
            }
        }
        let down: Vec<ReplicaId> = self
            .replicas
            .iter()
            .filter(|r| r.live.is_none())
            .map(|r| r.id)
            .collect();
        for id in down {
            if self.faults_rng.chance(RESTART_PER_MILLE) {
                self.start(id);
            }
        }
        if n < 2 {
            return; // no links to cut
        }
        let rng = &mut self.faults_rng;
        if rng.chance(PARTITION_PER_MILLE) {
            let mut ids: Vec<u64> = (1..=n).collect();
            rng.shuffle(&mut ids);
            let cut = usize::try_from(1 + rng.below(n - 1)).expect("small");
            let (a, b) = ids.split_at(cut);
            self.network.partition(a, b);
        }
        let rng = &mut self.faults_rng;
        if rng.chance(ONE_WAY_PER_MILLE) {
            let from = 1 + rng.below(n);
            let to = 1 + rng.below(n);
            if from != to {
                self.network.block_one_way(from, to);
            }
        }
        if self.faults_rng.chance(HEAL_PER_MILLE) {
            self.network.heal();
        }
        if self.faults_rng.chance(TRANSFER_PER_MILLE) {
            let to = 1 + self.faults_rng.below(n);
            for replica in &mut self.replicas {
                if let Some(live) = replica.live.as_mut()
                    && live.raft.role() == Role::Leader
                    && replica.id != to
                    && live.raft.transfer_leadership(to).is_ok()
                {
                    self.report.transfers += 1;
                }
            }
        }
    }

    /// Ends the fault phase: heal the network, calm it, restart every replica.
    fn calm_down(&mut self) {
        self.network.heal();
        self.network.set_faults(NetworkFaults::calm());
        let recovered_ms = self.now_ms + 1 + FLUSH_MS_MAX;
        for replica in &mut self.replicas {
            replica.slow_disk = false;
            // A stalled flush ends too: a stall as long as the calm phase would fail liveness.
            if let Some(live) = replica.live.as_mut() {
                live.flush_done_ms = live.flush_done_ms.map(|at| at.min(recovered_ms));
            }
        }
        self.stalls = false;
        for id in 1..=self.config.replicas {
            if self.replicas[Self::position(id)].live.is_none() {
                self.start(id);
            }
        }
    }

    // ------------------------------------------------------------ one step

    fn step(&mut self) -> Result<(), String> {
        // Snapshots first: only entries the checkers saw committed at the end of the last step
        // may leave the logs they see.
        for position in 0..self.replicas.len() {
            if self.replicas[position].maybe_snapshot()? {
                self.report.snapshots_taken += 1;
            }
        }
        self.now_ms += 1;
        let now = self.now_ms;
        for id in self.live_ids() {
            self.with_raft(id, |raft| raft.handle_tick(now));
        }
        for delivery in self.network.deliver_due(now) {
            let id = delivery.to;
            if self.replicas[Self::position(id)].live.is_some() {
                self.with_raft(id, |raft| raft.handle_message(delivery.msg));
            }
        }
        self.complete_flushes()?;
        self.propose();
        for id in self.live_ids() {
            self.drive(id)?;
        }
        self.start_flushes();
        self.acknowledge();
        self.check()
    }

    fn with_raft(&mut self, id: ReplicaId, f: impl FnOnce(&mut Raft)) {
        let position = Self::position(id);
        if let Some(live) = self.replicas[position].live.as_mut() {
            f(&mut live.raft);
        }
    }

    /// Carries out replica `id`'s `Ready` against its journal, hard state and the network.
    fn drive(&mut self, id: ReplicaId) -> Result<(), String> {
        let now = self.now_ms;
        let position = Self::position(id);
        let replica = &mut self.replicas[position];
        let live = replica.live.as_mut().expect("live");
        let ready = live.raft.ready();
        if (ready.truncate_after.is_some() || ready.install_snapshot.is_some())
            && live.flush_done_ms.is_some()
        {
            // The flush in progress holds the journal's lock: the cut or reset waits for it,
            // and its report, read before the cut, reaches Raft only after it.
            live.finish_flush(now, &mut self.flush_rng)
                .map_err(|e| format!("replica {id}: flush: {e}"))?;
        }
        if let Some(index) = ready.truncate_after {
            block_on(live.journal.truncate_after(index))
                .map_err(|e| format!("replica {id}: truncate_after({index}): {e}"))?;
            let base = replica.snapshot.as_ref().map_or(0, |s| s.index);
            replica
                .shadow
                .truncate(usize::try_from(index - base).expect("small"));
        }
        for entry in &ready.entries {
            let meta = BatchMeta {
                term: entry.term,
                timestamp_ms: now,
                record_count: 1,
            };
            let index = live
                .journal
                .append(meta, &entry.payload)
                .map_err(|e| format!("replica {id}: append {}: {e}", entry.index))?;
            if index != entry.index {
                return Err(format!(
                    "replica {id}: Raft entry {} landed at journal index {index}",
                    entry.index
                ));
            }
            replica.shadow.push(EntryView {
                index: entry.index,
                term: entry.term,
                proposal: decode_proposal(&entry.payload),
            });
        }
        replica.serve_snapshot_reads(&ready.snapshot_reads)?;
        if replica.store_snapshot(&ready.snapshot_chunks, ready.install_snapshot)? {
            self.report.snapshots_installed += 1;
        }
        let live = replica.live.as_mut().expect("live");
        if replica.shadow.len() > ENTRIES_MAX {
            return Err(format!(
                "replica {id} holds more than {ENTRIES_MAX} entries"
            ));
        }
        if let Some(hard) = ready.hard_state {
            replica.hard = hard;
        }
        for read in &ready.reads {
            let mut entries = Vec::new();
            let mut bytes = 0;
            let mut reader = live.journal.reader(read.from_index);
            while bytes < read.bytes_max {
                match block_on(reader.next(&live.journal)) {
                    Ok(Some(batch)) => {
                        bytes += batch.payload.len() as u64 + 64;
                        entries.push(Entry {
                            index: batch.index,
                            term: batch.term,
                            payload: Rc::from(batch.payload),
                        });
                    }
                    Ok(None) => break,
                    Err(e) => return Err(format!("replica {id}: read for {}: {e}", read.peer)),
                }
            }
            live.raft.handle_log_read(read.peer, entries);
        }
        if let Some(commit) = ready.commit_index {
            self.report.commits += 1;
            let _ = commit;
        }
        live.raft.advance(ready.number);
        // Hard state is durable at once here, so both kinds of messages leave now.
        for msg in ready
            .messages
            .into_iter()
            .chain(ready.messages_after_persist)
        {
            self.network.send(now, msg.from, msg.to, msg);
        }
        Ok(())
    }

    /// Schedules a flush on every replica with unflushed appends and none in progress.
    fn start_flushes(&mut self) {
        let now = self.now_ms;
        for replica in &mut self.replicas {
            let Some(live) = replica.live.as_mut() else {
                continue;
            };
            if live.flush_done_ms.is_none() && live.journal.pending_bytes() > 0 {
                let max = if replica.slow_disk {
                    SLOW_FLUSH_MS_MAX
                } else {
                    FLUSH_MS_MAX
                };
                let mut done_ms = now + 1 + self.disk_rng.below(max);
                if self.stalls && self.flush_rng.chance(FLUSH_STALL_PER_MILLE) {
                    done_ms += self.flush_rng.range(1, FLUSH_STALL_MS_MAX);
                }
                live.flush_done_ms = Some(done_ms);
            }
        }
    }

    /// Completes the flushes that are due, and hands Raft the flush reports that are due.
    fn complete_flushes(&mut self) -> Result<(), String> {
        let now = self.now_ms;
        for replica in &mut self.replicas {
            let id = replica.id;
            let Some(live) = replica.live.as_mut() else {
                continue;
            };
            if live.flush_done_ms.is_some_and(|at| at <= now) {
                live.finish_flush(now, &mut self.flush_rng)
                    .map_err(|e| format!("replica {id}: flush: {e}"))?;
            }
            if let Some(late) = live.report.take_if(|late| late.due_ms <= now) {
                if late.report.epoch < live.raft.log().journal_epoch() {
                    self.report.stale_flush_reports += 1;
                }
                live.raft.handle_flushed(late.report);
            }
        }
        Ok(())
    }

    fn propose(&mut self) {
        if !self.workload_rng.chance(self.config.propose_per_mille) {
            return;
        }
        // The client sends to whoever says it leads (the newest term, if several do).
        let leader = self
            .replicas
            .iter()
            .filter_map(|r| r.live.as_ref().map(|l| (r.id, &l.raft)))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, raft)| (id, raft.term()));
        let Some((leader, term)) = leader else {
            return;
        };
        let id = self.next_proposal;
        let position = Self::position(leader);
        let live = self.replicas[position].live.as_mut().expect("live");
        if let Ok(index) = live.raft.propose(encode_proposal(id)) {
            self.next_proposal += 1;
            self.report.proposals += 1;
            self.checker.note_proposed(id);
            self.pending.push(Pending {
                id,
                replica: leader,
                index,
                term,
            });
        }
    }

    /// Acknowledges proposals whose entry the replica that took them knows is committed.
    fn acknowledge(&mut self) {
        let mut still = Vec::with_capacity(self.pending.len());
        for p in std::mem::take(&mut self.pending) {
            let replica = &self.replicas[Self::position(p.replica)];
            let Some(live) = replica.live.as_ref() else {
                continue; // crashed: the client never hears back
            };
            let entry = replica.entry(p.index);
            if entry.is_none_or(|e| e.term != p.term || e.proposal != Some(p.id)) {
                continue; // replaced: lost, never acknowledged
            }
            if live.raft.commit_index() >= p.index {
                self.checker.note_acknowledged(p.id);
                self.report.acknowledged += 1;
            } else {
                still.push(p);
            }
        }
        self.pending = still;
        let term = self
            .replicas
            .iter()
            .filter_map(|r| r.live.as_ref())
            .filter(|l| l.raft.role() == Role::Leader)
            .map(|l| l.raft.term())
            .max()
            .unwrap_or(0);
        if term > self.last_leader_term {
            self.last_leader_term = term;
            self.report.elections += 1;
        }
    }

    fn check(&mut self) -> Result<(), String> {
        self.checker
            .check_step(&views(&self.replicas))
            .map_err(|v| v.to_string())
    }

    /// After the run: with the network calm, give the cluster time to replicate everything,
    /// then check the acknowledged proposals against the committed log.
    fn settle_and_check_final(&mut self) -> Result<(), String> {
        for _ in 0..LIVENESS_STEPS_MAX {
            self.step()?;
            let commits: Vec<u64> = self
                .replicas
                .iter()
                .filter_map(|r| r.live.as_ref().map(|l| l.raft.commit_index()))
                .collect();
            let lasts: Vec<u64> = self
                .replicas
                .iter()
                .map(|r| r.base() + r.shadow.len() as u64)
                .collect();
            if commits.iter().all(|c| Some(c) == commits.first())
                && lasts.iter().all(|l| commits.first() == Some(l))
                && self.pending.is_empty()
            {
                break;
            }
        }
        self.checker
            .check_final(&views(&self.replicas))
            .map_err(|v| v.to_string())
    }
}

/// What the checkers see of the live replicas.
fn views(replicas: &[Replica]) -> Vec<ReplicaView<'_>> {
    replicas
        .iter()
        .filter_map(|r| {
            r.live.as_ref().map(|l| ReplicaView {
                id: r.id,
                term: l.raft.term(),
                is_leader: l.raft.role() == Role::Leader,
                commit_index: l.raft.commit_index(),
                first_index: r.base() + 1,
                entries: &r.shadow,
                durable_index: l.raft.log().durable_index(),
                synced_index: l.journal.durable_index(),
            })
        })
        .collect()
}

/// Runs one seed with the default configuration.
///
/// # Errors
/// As [`Simulation::run`].
pub fn run_seed(seed: u64, steps: u64) -> Result<SimReport, SimFailure> {
    let mut config = SimConfig::new(seed);
    config.steps = steps.max(config.calm_steps + LIVENESS_STEPS_MAX);
    Simulation::new(config).run()
}
