//! A deterministic simulation of whole partitions with the workflow engine: the broker's
//! partition loop, without glommio, sockets or disks.
//!
//! The cluster has `brokers` brokers (3) and `partitions` partitions (2); every broker holds one
//! replica of every partition. A replica is a real [`Raft`](sluice_log::raft::Raft) core over a
//! real [`Journal`](sluice_log::Journal) on its own in-memory crash disk, with the partition's
//! [`Engine`](sluice_engine::Engine) on top (see [`replica`] for the rules that tie them: how
//! followers apply, when a new leader starts processing, when side effects leave). One
//! [`SimNetwork`] between the brokers carries Raft messages and cross-partition commands (the
//! engine's `Send` side effects, which the engine re-sends until acknowledged). Time is virtual,
//! 1 ms a step, and one seed split into streams (network, disk, workload, faults, one per node)
//! replays a run exactly.
//!
//! A run:
//! 1. **Fault phase** (`fault_steps`): the [`workload`] deploys `one_task` and `wait_message`,
//!    creates instances round robin, activates, completes and fails jobs, publishes messages;
//!    meanwhile brokers crash (losing unflushed writes, sometimes tearing a flush) and restart,
//!    the network loses, duplicates, delays and partitions, leadership is transferred, disks turn
//!    slow. Replicas snapshot their engine every `snapshot_every_entries` and compact; followers
//!    behind get the snapshot through Raft and restore their engine from it.
//! 2. **Calm phase** (at most `calm_steps_max`): everything heals and restarts; no new
//!    instances; workers drain every job, waiting instances get their message, until every
//!    instance in every committed log has completed and all replicas agree.
//! 3. **Checks**: Raft's safety rules after every step (the `sluice_log::sim::check` checker,
//!    per partition); at the end, every answered request's record is in its partition's
//!    committed log (events exactly once); every answered create's instance was activated exactly
//!    once, every answered completion completed its job exactly once, every answered publish
//!    published exactly once; no element-instance key or job key is used twice; every replica's
//!    engine state equals the state replayed from the committed log. A failure prints the seed
//!    and the command that replays it.

mod bpmn;
mod check;
mod replica;
mod snapshot;
mod workload;

use std::fmt;

use sluice_engine::snapshot::encode_snapshot;
use sluice_engine::{Record, RecordType, RecordValue, SideEffect};
use sluice_log::raft::{Message, RaftConfig, ReplicaId, Role};
use sluice_log::sim::check::Checker;
use sluice_log::sim::network::{NetworkFaults, SimNetwork};
use sluice_log::sim::rng::{Rng, Streams};

use self::check::{CommittedLog, first_difference, state_digest};
use self::replica::{Processed, Replica, engine_config, replay_payload};
use self::workload::{Op, Workload};

/// A deliberate bug in the driver, to prove the checks catch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineSimBug {
    /// Side effects (replies, cross-partition commands) leave before their entry commits.
    RespondBeforeCommit,
    /// A new leader processes commands before it applied every entry of earlier terms.
    ProcessBeforeCaughtUp,
    /// A leader that loses leadership keeps its speculative engine state.
    KeepSpeculativeState,
}

impl EngineSimBug {
    /// Every bug, for self-tests and the command line.
    pub const ALL: [EngineSimBug; 3] = [
        EngineSimBug::RespondBeforeCommit,
        EngineSimBug::ProcessBeforeCaughtUp,
        EngineSimBug::KeepSpeculativeState,
    ];

    /// The bug named `name` (as `{:?}` prints it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| format!("{b:?}") == name)
    }
}

/// How an engine simulation runs.
#[derive(Debug, Clone)]
pub struct EngineSimConfig {
    pub seed: u64,
    pub partitions: u32,
    /// Brokers; each holds one replica of every partition.
    pub brokers: u64,
    /// Steps (1 ms of virtual time each) of the fault phase.
    pub fault_steps: u64,
    /// Most steps of the calm phase, in which the workload must drain and the replicas agree.
    pub calm_steps_max: u64,
    /// A replica snapshots its engine once this many entries were applied since its last one.
    pub snapshot_every_entries: u64,
    /// A deliberate bug in every replica (checker self-tests).
    pub bug: Option<EngineSimBug>,
}

impl EngineSimConfig {
    /// The default run for `seed`: two partitions on three brokers, 4000 fault steps.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        EngineSimConfig {
            seed,
            partitions: 2,
            brokers: 3,
            fault_steps: 4000,
            calm_steps_max: 30_000,
            snapshot_every_entries: 50,
            bug: None,
        }
    }

    /// The command that replays this run.
    #[must_use]
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p sluice-tools --bin sluice-sim -- engine --seed {} --steps {} --partitions {}",
            self.seed, self.fault_steps, self.partitions
        );
        if let Some(bug) = self.bug {
            cmd = format!("{cmd} --bug {bug:?}");
        }
        cmd
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineSimReport {
    pub seed: u64,
    /// Steps of the calm phase until the workload drained.
    pub calm_steps: u64,
    /// Committed entries, all partitions.
    pub entries_committed: u64,
    pub requests_sent: u64,
    pub requests_timed_out: u64,
    pub answers: u64,
    pub rejections: u64,
    /// Creates answered with an instance.
    pub instances_acknowledged: u64,
    /// Process instances in the committed logs (unanswered creates may have taken effect).
    pub instances_created: u64,
    pub instances_completed: u64,
    pub jobs_activated: u64,
    /// Job completions in the committed logs.
    pub jobs_completed: u64,
    pub jobs_failed: u64,
    pub messages_published: u64,
    pub messages_correlated: u64,
    pub crashes: u64,
    pub torn_flushes: u64,
    pub snapshots_taken: u64,
    pub snapshots_installed: u64,
    pub leader_changes: u64,
    pub transfers: u64,
    /// Engines rebuilt from the committed log after losing leadership.
    pub engine_rebuilds: u64,
    /// Side effects dropped with a leader's speculative state.
    pub side_effects_dropped: u64,
    /// Cross-partition commands sent (the engine's `Send` side effects).
    pub commands_sent: u64,
}

impl fmt::Display for EngineSimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: entries {} | instances answered {} created {} completed {} | jobs activated {} completed {} failed {} | messages published {} correlated {} | requests {} answered {} rejected {} timed out {} | crashes {} (torn {}) snapshots {}/{} installed | leader changes {} transfers {} rebuilds {} dropped effects {} sends {} | calm steps {}",
            self.seed,
            self.entries_committed,
            self.instances_acknowledged,
            self.instances_created,
            self.instances_completed,
            self.jobs_activated,
            self.jobs_completed,
            self.jobs_failed,
            self.messages_published,
            self.messages_correlated,
            self.requests_sent,
            self.answers,
            self.rejections,
            self.requests_timed_out,
            self.crashes,
            self.torn_flushes,
            self.snapshots_taken,
            self.snapshots_installed,
            self.leader_changes,
            self.transfers,
            self.engine_rebuilds,
            self.side_effects_dropped,
            self.commands_sent,
            self.calm_steps,
        )
    }
}

/// A failed run: the rule broken and how to replay it.
#[derive(Debug, Clone)]
pub struct EngineSimFailure {
    pub seed: u64,
    pub step: u64,
    pub reason: String,
    pub replay: String,
}

impl fmt::Display for EngineSimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "engine sim seed {} failed at step {}: {}\nreplay: {}",
            self.seed, self.step, self.reason, self.replay
        )
    }
}

/// What travels between brokers.
#[derive(Debug, Clone)]
enum Envelope {
    Raft {
        partition: u32,
        message: Message,
    },
    /// A command for the partition's leader (from another partition's `Send` side effect).
    Command {
        partition: u32,
        record: Box<Record>,
    },
}

/// The network of the fault phase (as the Raft simulation's).
const FAULTY_NETWORK: NetworkFaults = NetworkFaults {
    loss_per_mille: 30,
    duplicate_per_mille: 20,
    delay_min_ms: 1,
    delay_max_ms: 40,
};

const HEARTBEAT_MS: u64 = 10;
const ELECTION_TIMEOUT_MS: u64 = 100;
const FLUSH_MS_MAX: u64 = 4;
const SLOW_FLUSH_MS_MAX: u64 = 60;
/// Fault chances per step, per mille (a broker crash takes down its replica of every partition).
const CRASH_PER_MILLE: u32 = 2;
const CRASH_TWO_PER_MILLE: u32 = 250;
const CRASH_ALL_PER_MILLE: u32 = 100;
const RESTART_PER_MILLE: u32 = 20;
const PARTITION_PER_MILLE: u32 = 3;
const ONE_WAY_PER_MILLE: u32 = 2;
const HEAL_PER_MILLE: u32 = 8;
const TRANSFER_PER_MILLE: u32 = 2;
const SLOW_DISK_TOGGLE_PER_MILLE: u32 = 3;
/// In the calm phase, how often the drain condition is checked and waiting instances get their
/// message again.
const CALM_CHECK_EVERY_STEPS: u64 = 50;

/// Odd seeds give the brokers distinct priorities, even seeds equal ones.
fn raft_config(id: ReplicaId, brokers: u64, prioritized: bool) -> RaftConfig {
    let ids: Vec<ReplicaId> = (1..=brokers).collect();
    let mut config = RaftConfig {
        heartbeat_interval_ms: HEARTBEAT_MS,
        election_timeout_ms: ELECTION_TIMEOUT_MS,
        append_bytes_max: 64 << 10,
        inflight_appends_max: 4,
        entry_cache_bytes_max: 256 << 10,
        snapshot_chunk_bytes: 16 << 10,
        ..RaftConfig::new(id, &ids)
    };
    if prioritized {
        for r in &mut config.replicas {
            r.priority = u32::try_from(r.id).expect("small ids");
        }
    }
    config
}

/// The simulation of a cluster's partitions with their engines.
#[expect(
    missing_debug_implementations,
    reason = "its state is the replicas' journals and engines; EngineSimReport says what happened"
)]
pub struct EngineSimulation {
    config: EngineSimConfig,
    streams: Streams,
    /// Replica of broker `b` for partition `p` at `(p - 1) * brokers + (b - 1)`.
    replicas: Vec<Replica>,
    network: SimNetwork<Envelope>,
    /// Raft's safety rules, one checker per partition.
    checkers: Vec<Checker>,
    /// Each partition's committed log, as replicas report it.
    logs: Vec<CommittedLog>,
    disk_rng: Rng,
    faults_rng: Rng,
    workload: Workload,
    now_ms: u64,
    report: EngineSimReport,
    /// The highest leader term seen, per partition.
    leader_terms: Vec<u64>,
    outbox: Vec<Message>,
    effects: Vec<SideEffect>,
}

impl EngineSimulation {
    /// Sets up the brokers of `config` and starts them.
    ///
    /// # Panics
    /// If `config` has no partitions, fewer than one broker, or on a journal error in the
    /// in-memory disk (a simulator bug).
    #[must_use]
    pub fn new(config: EngineSimConfig) -> Self {
        assert!(config.partitions >= 1 && config.brokers >= 1);
        let streams = Streams::new(config.seed);
        let mut sim = EngineSimulation {
            replicas: Vec::new(),
            network: SimNetwork::new(streams.network(), FAULTY_NETWORK),
            checkers: (0..config.partitions).map(|_| Checker::new()).collect(),
            logs: (1..=config.partitions).map(CommittedLog::new).collect(),
            disk_rng: streams.disk(),
            faults_rng: streams.faults(),
            workload: Workload::new(streams.workload(), config.partitions),
            now_ms: 0,
            report: EngineSimReport {
                seed: config.seed,
                ..EngineSimReport::default()
            },
            leader_terms: vec![0; config.partitions as usize],
            outbox: Vec::new(),
            effects: Vec::new(),
            streams,
            config,
        };
        for partition in 1..=sim.config.partitions {
            for broker in 1..=sim.config.brokers {
                sim.replicas.push(Replica::new(
                    broker,
                    partition,
                    sim.config.partitions,
                    sim.config.bug,
                ));
            }
        }
        for broker in 1..=sim.config.brokers {
            sim.start(broker);
        }
        sim
    }

    /// Runs the fault phase, the calm phase and the final checks.
    ///
    /// # Errors
    /// [`EngineSimFailure`] with the seed, the step, the broken rule and the replay command.
    pub fn run(mut self) -> Result<EngineSimReport, EngineSimFailure> {
        for step in 0..self.config.fault_steps {
            self.inject_faults();
            self.step(false)
                .map_err(|reason| self.failure(step, &reason))?;
            if step % 1000 == 999 {
                self.workload.compact();
            }
        }
        self.calm_down();
        let mut calm_steps = 0;
        loop {
            let step = self.config.fault_steps + calm_steps;
            if calm_steps >= self.config.calm_steps_max {
                // A lost acknowledgement explains a stuck workload better than liveness does.
                self.check_answers()
                    .map_err(|reason| self.failure(step, &reason))?;
                let reason = format!(
                    "liveness: the workload did not drain within {} calm steps; {}",
                    self.config.calm_steps_max,
                    self.describe_drain()
                );
                return Err(self.failure(step, &reason));
            }
            if calm_steps % CALM_CHECK_EVERY_STEPS == 0 {
                self.republish_waiting();
            }
            self.step(true)
                .map_err(|reason| self.failure(step, &reason))?;
            calm_steps += 1;
            if calm_steps % CALM_CHECK_EVERY_STEPS == 0 && self.is_drained() {
                break;
            }
        }
        self.report.calm_steps = calm_steps;
        let end = self.config.fault_steps + calm_steps;
        self.check_final()
            .map_err(|reason| self.failure(end, &reason))?;
        Ok(self.report)
    }

    fn failure(&self, step: u64, reason: &str) -> EngineSimFailure {
        EngineSimFailure {
            seed: self.config.seed,
            step,
            reason: format!("{reason}\n{}", self.describe()),
            replay: self.config.replay_command(),
        }
    }

    /// Each replica's state, for failure messages.
    fn describe(&self) -> String {
        let lines: Vec<String> = self
            .replicas
            .iter()
            .map(|r| match &r.live {
                None => format!("  {}: down", r.name()),
                Some(l) => format!(
                    "  {}: {:?} term {} commit {} applied {} last {} durable {} snapshot {} processing {:?}",
                    r.name(),
                    l.raft.role(),
                    l.raft.term(),
                    l.raft.commit_index(),
                    l.applied_index,
                    l.raft.log().last_index(),
                    l.raft.log().durable_index(),
                    r.base(),
                    l.processing_term,
                ),
            })
            .collect();
        format!("at {} ms:\n{}", self.now_ms, lines.join("\n"))
    }

    // ------------------------------------------------------------ brokers

    fn position(&self, broker: ReplicaId, partition: u32) -> usize {
        let brokers = usize::try_from(self.config.brokers).expect("small");
        (partition as usize - 1) * brokers + usize::try_from(broker - 1).expect("small")
    }

    fn broker_is_up(&self, broker: ReplicaId) -> bool {
        self.replicas[self.position(broker, 1)].live.is_some()
    }

    /// (Re)starts every replica of `broker` from its disk.
    fn start(&mut self, broker: ReplicaId) {
        let prioritized = self.config.seed % 2 == 1;
        for partition in 1..=self.config.partitions {
            let node = broker * 1000 + u64::from(partition);
            let seed = self.streams.node(node).next_u64() ^ self.now_ms;
            let config = raft_config(broker, self.config.brokers, prioritized);
            let position = self.position(broker, partition);
            self.replicas[position].start(self.now_ms, seed, config);
        }
    }

    /// Power loss on `broker`: every replica it holds loses its unflushed writes.
    fn crash(&mut self, broker: ReplicaId) {
        if !self.broker_is_up(broker) {
            return;
        }
        for partition in 1..=self.config.partitions {
            let tear = self.disk_rng.chance(500);
            let polls = self.disk_rng.below(12);
            let crash_seed = self.disk_rng.next_u64();
            let position = self.position(broker, partition);
            if self.replicas[position].crash(tear.then_some(polls), crash_seed) {
                self.report.torn_flushes += 1;
            }
            self.checkers[partition as usize - 1].note_restart(broker);
        }
        self.network.clear_node(broker);
        self.report.crashes += 1;
    }

    /// The replica that processes commands for `partition` now: a caught-up leader, the one
    /// with the newest term if several think they lead.
    fn leader_of(&self, partition: u32) -> Option<usize> {
        (1..=self.config.brokers)
            .map(|b| self.position(b, partition))
            .filter(|&p| self.replicas[p].is_processing_leader())
            .max_by_key(|&p| self.replicas[p].live.as_ref().map_or(0, |l| l.raft.term()))
    }

    // ------------------------------------------------------------ faults

    fn inject_faults(&mut self) {
        let n = self.config.brokers;
        if self.faults_rng.chance(CRASH_PER_MILLE) {
            let mut ids: Vec<u64> = (1..=n).collect();
            self.faults_rng.shuffle(&mut ids);
            let roll = self.faults_rng.below(1000);
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
        for broker in 1..=n {
            if !self.broker_is_up(broker) && self.faults_rng.chance(RESTART_PER_MILLE) {
                self.start(broker);
            }
        }
        if n < 2 {
            return;
        }
        if self.faults_rng.chance(PARTITION_PER_MILLE) {
            let mut ids: Vec<u64> = (1..=n).collect();
            self.faults_rng.shuffle(&mut ids);
            let cut = usize::try_from(1 + self.faults_rng.below(n - 1)).expect("small");
            let (a, b) = ids.split_at(cut);
            self.network.partition(a, b);
        }
        if self.faults_rng.chance(ONE_WAY_PER_MILLE) {
            let from = 1 + self.faults_rng.below(n);
            let to = 1 + self.faults_rng.below(n);
            if from != to {
                self.network.block_one_way(from, to);
            }
        }
        if self.faults_rng.chance(HEAL_PER_MILLE) {
            self.network.heal();
        }
        if self.faults_rng.chance(TRANSFER_PER_MILLE) {
            let to = 1 + self.faults_rng.below(n);
            let partition =
                1 + u32::try_from(self.faults_rng.below(u64::from(self.config.partitions)))
                    .expect("small");
            for broker in 1..=n {
                let position = self.position(broker, partition);
                if let Some(live) = self.replicas[position].live.as_mut()
                    && live.raft.role() == Role::Leader
                    && broker != to
                    && live.raft.transfer_leadership(to).is_ok()
                {
                    self.report.transfers += 1;
                }
            }
        }
    }

    /// Ends the fault phase: heal and calm the network, fast disks, every broker up.
    fn calm_down(&mut self) {
        self.network.heal();
        self.network.set_faults(NetworkFaults::calm());
        for replica in &mut self.replicas {
            replica.slow_disk = false;
        }
        for broker in 1..=self.config.brokers {
            if !self.broker_is_up(broker) {
                self.start(broker);
            }
        }
    }

    // ------------------------------------------------------------ one step

    fn step(&mut self, calm: bool) -> Result<(), String> {
        // Snapshots first: only entries recorded as committed at the end of the last step may
        // leave the logs.
        let every = self.config.snapshot_every_entries;
        for replica in &mut self.replicas {
            if replica.maybe_snapshot(every)? {
                self.report.snapshots_taken += 1;
            }
        }
        self.now_ms += 1;
        let now = self.now_ms;
        for replica in &mut self.replicas {
            if let Some(live) = replica.live.as_mut() {
                live.raft.handle_tick(now);
            }
        }
        for delivery in self.network.deliver_due(now) {
            match delivery.msg {
                Envelope::Raft { partition, message } => {
                    let position = self.position(delivery.to, partition);
                    if let Some(live) = self.replicas[position].live.as_mut() {
                        live.raft.handle_message(message);
                    }
                }
                Envelope::Command { partition, record } => {
                    let position = self.position(delivery.to, partition);
                    if self.replicas[position].live.is_some() {
                        let result = self.replicas[position].process(*record, None, now)?;
                        self.account(result);
                    }
                }
            }
        }
        for replica in &mut self.replicas {
            replica.complete_flush(now)?;
        }
        self.workload.generate(now, calm);
        for request in self.workload.due(now) {
            let taken = match self.leader_of(request.partition) {
                Some(position) => {
                    let result =
                        self.replicas[position].process(request.command, Some(request.id), now)?;
                    self.account(result);
                    result.0 != Processed::NotLeader
                }
                None => false,
            };
            if !taken {
                self.workload.not_taken(request.id, now);
            }
        }
        for position in 0..self.replicas.len() {
            if self.replicas[position].is_processing_leader() {
                let result = self.replicas[position].tick(now)?;
                self.account(result);
            }
        }
        self.drive_all()?;
        for replica in &mut self.replicas {
            let rng = &mut self.disk_rng;
            replica.start_flush(now, |slow| {
                rng.below(if slow {
                    SLOW_FLUSH_MS_MAX
                } else {
                    FLUSH_MS_MAX
                })
            });
        }
        self.release_side_effects();
        self.record_committed();
        self.check_step()
    }

    fn account(&mut self, (processed, dropped): (Processed, u64)) {
        self.report.side_effects_dropped += dropped;
        if dropped > 0 {
            self.report.engine_rebuilds += 1;
        }
        if let Processed::Refused { dropped } = processed {
            self.report.side_effects_dropped += dropped;
            self.report.engine_rebuilds += 1;
        }
    }

    fn drive_all(&mut self) -> Result<(), String> {
        let now = self.now_ms;
        for position in 0..self.replicas.len() {
            if self.replicas[position].live.is_none() {
                continue;
            }
            let partition = self.replicas[position].partition;
            let driven = self.replicas[position].drive(now, &mut self.outbox)?;
            if driven.snapshot_installed {
                self.report.snapshots_installed += 1;
            }
            if driven.rebuilt {
                self.report.engine_rebuilds += 1;
            }
            self.report.side_effects_dropped += driven.dropped_side_effects;
            for message in self.outbox.drain(..) {
                let (from, to) = (message.from, message.to);
                self.network
                    .send(now, from, to, Envelope::Raft { partition, message });
            }
        }
        Ok(())
    }

    /// Carries out the side effects whose entries committed: replies to clients, commands to
    /// other partitions' leaders (through the network, so they may be lost: the engine
    /// re-sends).
    fn release_side_effects(&mut self) {
        let now = self.now_ms;
        for position in 0..self.replicas.len() {
            self.replicas[position].release(&mut self.effects);
            let (broker, partition) = {
                let r = &self.replicas[position];
                (r.broker, r.partition)
            };
            let effects = std::mem::take(&mut self.effects);
            for effect in effects {
                match effect {
                    SideEffect::Respond { request, record } => {
                        self.workload.on_response(partition, request, record, now);
                    }
                    SideEffect::Send {
                        partition_id,
                        record,
                    } => {
                        self.report.commands_sent += 1;
                        if let Some(target) = self.leader_of(partition_id) {
                            let to = self.replicas[target].broker;
                            self.network.send(
                                now,
                                broker,
                                to,
                                Envelope::Command {
                                    partition: partition_id,
                                    record: Box::new(record),
                                },
                            );
                        }
                    }
                    SideEffect::JobsAvailable { .. } => {}
                }
            }
        }
    }

    /// Records newly committed entries in the partitions' committed logs.
    fn record_committed(&mut self) {
        for replica in &self.replicas {
            let Some(live) = replica.live.as_ref() else {
                continue;
            };
            let log = &mut self.logs[replica.partition as usize - 1];
            while log.len() < live.raft.commit_index() {
                let Some(payload) = replica.payload(log.len() + 1) else {
                    break; // in this replica's snapshot: another replica recorded it
                };
                log.push(payload.clone());
            }
        }
    }

    fn check_step(&mut self) -> Result<(), String> {
        for partition in 1..=self.config.partitions {
            let index = partition as usize - 1;
            let views: Vec<_> = self
                .replicas
                .iter()
                .filter(|r| r.partition == partition)
                .filter_map(Replica::view)
                .collect();
            self.checkers[index]
                .check_step(&views)
                .map_err(|v| format!("partition {partition}: {v}"))?;
            let term = views
                .iter()
                .filter(|v| v.is_leader)
                .map(|v| v.term)
                .max()
                .unwrap_or(0);
            if term > self.leader_terms[index] {
                self.leader_terms[index] = term;
                self.report.leader_changes += 1;
            }
            if let Some(problem) = &self.logs[index].problem {
                return Err(problem.clone());
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------ the end

    /// Waiting message instances in the committed logs get their message (again).
    fn republish_waiting(&mut self) {
        let now = self.now_ms;
        let mut keys = Vec::new();
        for log in &self.logs {
            for (_, facts) in log.incomplete() {
                if facts.bpmn_process_id == bpmn::WAIT_MESSAGE_ID
                    && let Some(key) = &facts.correlation_key
                {
                    keys.push(key.clone());
                }
            }
        }
        for key in keys {
            self.workload.republish(&key, now);
        }
    }

    /// Every instance completed, every operation answered, every replica up, settled and at the
    /// same commit index, which the committed log has reached.
    fn is_drained(&self) -> bool {
        if !self.workload.is_drained() || self.logs.iter().any(|l| l.incomplete().next().is_some())
        {
            return false;
        }
        (1..=self.config.partitions).all(|partition| {
            let log_len = self.logs[partition as usize - 1].len();
            (1..=self.config.brokers).all(|b| {
                let r = &self.replicas[self.position(b, partition)];
                r.is_settled()
                    && r.live
                        .as_ref()
                        .is_some_and(|l| l.raft.commit_index() == log_len)
            })
        })
    }

    fn describe_drain(&self) -> String {
        let incomplete: Vec<String> = self
            .logs
            .iter()
            .flat_map(|l| {
                l.incomplete()
                    .take(5)
                    .map(move |(k, f)| format!("p{} {k} {}", l.partition, f.bpmn_process_id))
            })
            .collect();
        // The records about the first incomplete instance, on every partition.
        let mut trail = Vec::new();
        if let Some((key, facts)) = self.logs.iter().find_map(|l| l.incomplete().next()) {
            let text = facts
                .correlation_key
                .as_ref()
                .map_or(String::new(), |k| format!("\"{k}\""));
            for log in &self.logs {
                trail.extend(log.records_mentioning(*key, &text, 40));
            }
            if let Some(k) = &facts.correlation_key {
                trail.extend(self.workload.answers_about(k));
            }
        }
        format!(
            "incomplete instances: [{}]; {}\nrecords of the first:\n{}",
            incomplete.join(", "),
            self.workload.describe_open(),
            trail.join("\n")
        )
    }

    fn check_final(&mut self) -> Result<(), String> {
        self.check_answers()?;
        self.check_states()?;
        let stats = self.workload.stats;
        let report = &mut self.report;
        report.requests_sent = stats.requests_sent;
        report.requests_timed_out = stats.requests_timed_out;
        report.answers = stats.answers;
        report.rejections = stats.rejections;
        report.instances_acknowledged = stats.creates_acknowledged;
        report.jobs_activated = stats.jobs_activated;
        report.jobs_failed = stats.fails_acknowledged;
        for log in &self.logs {
            report.entries_committed += log.len();
            report.instances_created +=
                log.instances.values().filter(|f| f.activating > 0).count() as u64;
            report.instances_completed +=
                log.instances.values().filter(|f| f.completed).count() as u64;
            report.jobs_completed += log
                .jobs_completed
                .values()
                .map(|&c| u64::from(c))
                .sum::<u64>();
            report.messages_published += log
                .messages_published
                .values()
                .map(|&c| u64::from(c))
                .sum::<u64>();
            report.messages_correlated += log.messages_correlated;
        }
        if report.instances_acknowledged == 0 || report.instances_completed == 0 {
            return Err(format!(
                "the run completed nothing: {} instances answered, {} completed",
                report.instances_acknowledged, report.instances_completed
            ));
        }
        Ok(())
    }

    /// Every answer a client got is in its partition's committed log, and took effect once.
    fn check_answers(&self) -> Result<(), String> {
        for answer in &self.workload.answers {
            let log = &self.logs[answer.partition as usize - 1];
            let record = &answer.record;
            let rejected = record.record_type == RecordType::CommandRejection;
            if let RecordValue::JobBatch(batch) = &record.value
                && batch.job_keys.is_empty()
                && !rejected
            {
                continue; // an empty activation is answered without writing anything
            }
            let count = log.count(record);
            let expected_once = record.record_type == RecordType::Event;
            if count == 0 || (expected_once && count != 1) {
                return Err(format!(
                    "answered {:?} on partition {}: its record is {count} times in the committed log: {}",
                    answer.op,
                    answer.partition,
                    record.to_json_line()
                ));
            }
            if rejected {
                continue;
            }
            match (&answer.op, &record.value) {
                (
                    Op::Create {
                        bpmn_process_id, ..
                    },
                    RecordValue::ProcessInstanceCreation(v),
                ) => {
                    let facts = log.instances.get(&v.process_instance_key);
                    if facts
                        .is_none_or(|f| f.activating != 1 || f.bpmn_process_id != *bpmn_process_id)
                    {
                        return Err(format!(
                            "answered create of {bpmn_process_id}: instance {} is in the committed log as {facts:?}",
                            v.process_instance_key
                        ));
                    }
                }
                (Op::Complete { job }, _) => {
                    let completed = log.jobs_completed.get(job).copied().unwrap_or(0);
                    if completed != 1 {
                        return Err(format!(
                            "answered completion of job {job}: {completed} COMPLETED events in the committed log"
                        ));
                    }
                }
                (Op::Publish { .. }, _) => {
                    let published = log
                        .messages_published
                        .get(&record.key)
                        .copied()
                        .unwrap_or(0);
                    if published != 1 {
                        return Err(format!(
                            "answered publish of message {}: {published} PUBLISHED events in the committed log",
                            record.key
                        ));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every replica's engine state equals the state replayed from the committed log: the
    /// snapshot bytes are identical (the encoding is canonical), and so is a digest of every
    /// field replay determines, which also covers the indexes a snapshot rebuilds on decode.
    fn check_states(&self) -> Result<(), String> {
        for partition in 1..=self.config.partitions {
            let log = &self.logs[partition as usize - 1];
            let config = engine_config(partition, self.config.partitions);
            let mut engine = sluice_engine::Engine::new(config.clone());
            for (i, payload) in log.payloads().iter().enumerate() {
                replay_payload(&mut engine, payload)
                    .map_err(|e| format!("partition {partition} entry {}: {e}", i + 1))?;
            }
            let expected_bytes = encode_snapshot(engine.state());
            let expected = state_digest(engine.state());
            let restored = snapshot::restore(config, &expected_bytes)?;
            let restored_digest = state_digest(restored.state());
            if restored_digest != expected {
                return Err(format!(
                    "partition {partition}: the state restored from a snapshot differs from the replayed one:{}",
                    first_difference(&restored_digest, &expected)
                ));
            }
            for broker in 1..=self.config.brokers {
                let replica = &self.replicas[self.position(broker, partition)];
                let live = replica.live.as_ref().expect("all up after the calm phase");
                let digest = state_digest(live.engine.state());
                if digest != expected {
                    return Err(format!(
                        "{}: engine state differs from the committed log's ({} entries):{}",
                        replica.name(),
                        log.len(),
                        first_difference(&digest, &expected)
                    ));
                }
                if encode_snapshot(live.engine.state()) != expected_bytes {
                    return Err(format!(
                        "{}: snapshot bytes differ from those of the state replayed from the committed log ({} entries), though every field compared is equal",
                        replica.name(),
                        log.len()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Runs one configuration. A panic inside the run (an engine or Raft assertion) becomes a
/// failure with the seed and the replay command, like a broken check.
///
/// # Errors
/// As [`EngineSimulation::run`], and for a panic.
pub fn run_config(config: EngineSimConfig) -> Result<EngineSimReport, EngineSimFailure> {
    let replay = config.replay_command();
    let seed = config.seed;
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        EngineSimulation::new(config).run()
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        Err(EngineSimFailure {
            seed,
            step: 0,
            reason: format!("panicked: {message}"),
            replay,
        })
    })
}

/// Runs one seed with the default configuration and `fault_steps` steps of faults.
///
/// # Errors
/// As [`run_config`].
pub fn run_seed(seed: u64, fault_steps: u64) -> Result<EngineSimReport, EngineSimFailure> {
    let mut config = EngineSimConfig::new(seed);
    config.fault_steps = fault_steps;
    run_config(config)
}
