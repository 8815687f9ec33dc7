//! One partition replica on its shard: the journal, the Raft core, and the two tasks that drive
//! them.
//!
//! [`Partition::open`] recovers the journal and the Raft hard state from the partition's
//! directory and spawns, on the current glommio executor:
//! - the **Raft task**, which owns the [`Raft`] core: it feeds it the inputs queued on the
//!   [`Partition`] (messages from peers, appends from clients, flush completions, the clock),
//!   carries out each `Ready` (journal truncations and appends, the hard state, journal reads for
//!   laggards, messages to peers) and answers appends once their entry is committed;
//! - the **flush task**, which flushes the journal whenever it holds unflushed appends and tells
//!   Raft how far it is durable. Appends made while a flush runs ride on the next one.
//!
//! Everything else (the network, the command API, the management API) talks to the replica
//! through the [`Partition`] handle: [`Partition::deliver`], [`Partition::append`],
//! [`Partition::transfer_leadership`], [`Partition::status`]. None of them blocks.
//!
//! An append is answered only after its entry is committed: flushed on a quorum, the leader's
//! own flush counted like any follower's. If the leader loses its leadership, or its entry is
//! truncated, before that, the append is answered `Unavailable`: it may or may not end up
//! committed, and nothing was acknowledged.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use hdrhistogram::Histogram;
use sluice_log::raft::{
    Entry, HardState, Message, Raft, RaftConfig, RaftLog, ReplicaId, ReplicaPriority, Role,
    SnapshotRead,
};
use sluice_log::storage::DmaStorage;
use sluice_log::{BatchMeta, FlushReport, Journal, JournalConfig};

use crate::durable::{self, Backoff};
use crate::notify::Notify;
use crate::partitioning::{NodeId, PartitionId, Replica};
use crate::snapshots::{SnapshotStore, StoredSnapshot};

/// Messages from peers queued for one replica before new ones are dropped (Raft retransmits).
pub const INBOX_MESSAGES_MAX: usize = 65_536;
/// Appends queued or awaiting commit on one replica before new ones are refused as overload.
pub const APPENDS_PENDING_MAX: usize = 65_536;
/// Commands one round processes before it lets Raft and the network run.
const COMMANDS_PER_ROUND_MAX: usize = 256;
/// Pause before retrying a failed flush (a full disk, an I/O error).
const FLUSH_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Pauses before retrying after a snapshot could not be written (own or the leader's): doubling
/// from the first to the second. The journal keeps its entries meanwhile.
const SNAPSHOT_RETRY_PAUSE_MIN: Duration = Duration::from_secs(1);
const SNAPSHOT_RETRY_PAUSE_MAX: Duration = Duration::from_mins(1);
/// Pauses before retrying a failed write of the Raft hard state: doubling from the first to the
/// second. The replica's messages wait meanwhile, so the pauses stay short.
const HARD_STATE_RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);
const HARD_STATE_RETRY_PAUSE_MAX: Duration = Duration::from_secs(2);
/// A replica's journal and snapshot directories, inside its own.
const JOURNAL_DIR: &str = "journal";
const SNAPSHOTS_DIR: &str = "snapshots";
/// Commit latencies above this are recorded as this, in microseconds.
const LATENCY_US_MAX: u64 = 60_000_000;

/// The Raft replica id of a node: node ids start at 0, replica ids at 1.
#[must_use]
pub fn replica_id(node_id: NodeId) -> ReplicaId {
    ReplicaId::from(node_id) + 1
}

/// The node of a Raft replica id.
#[must_use]
pub fn node_id(replica_id: ReplicaId) -> NodeId {
    NodeId::try_from(replica_id - 1).expect("replica ids come from node ids")
}

/// What became of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Committed at this index.
    Committed {
        /// The entry's index in the partition's log.
        index: u64,
        /// For an engine command: its reply, one encoded record.
        response: Option<Vec<u8>>,
    },
    /// This replica does not lead; the leader it knows of, if any.
    NotLeader {
        /// The node believed to lead.
        leader: Option<NodeId>,
    },
    /// Not served: overloaded, leadership lost before commit, shutting down, or a disk error.
    /// Nothing was acknowledged.
    Unavailable {
        /// Why, for the client.
        message: String,
    },
    /// Backpressure: the partition has as many commands in flight as it accepts now. Nothing
    /// was processed; retry after a short pause.
    Overloaded {
        /// Why, for the client.
        message: String,
    },
    /// The request can never be served as sent (a malformed command): do not retry it.
    Invalid {
        /// Why, for the client.
        message: String,
    },
}

/// Called once with the outcome of an append.
pub type Responder = Box<dyn FnOnce(AppendOutcome)>;

/// Sends Raft messages to the replicas on other nodes. The shard batches them per node.
pub trait RaftOutbox {
    /// Queues `message` of `partition_id` for node `to`.
    fn send(&self, to: NodeId, partition_id: PartitionId, message: Message);
    /// Delivers an engine command (an append payload, see [`crate::apply`]) to the leader of
    /// `partition_id`, wherever it is. Best effort: the engine re-sends what is not answered.
    fn send_command(&self, partition_id: PartitionId, payload: Vec<u8>);
}

/// Told whenever a replica's role, term or leader changes.
pub type StatusListener = Rc<dyn Fn(&PartitionStatus)>;

/// How to open a replica.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// The partition.
    pub partition_id: PartitionId,
    /// How many partitions the cluster has (messages hash over them).
    pub partition_count: u32,
    /// This broker.
    pub node_id: NodeId,
    /// The partition's directory (journal and hard state).
    pub dir: PathBuf,
    /// Every replica with its priority, from the layout.
    pub replicas: Vec<Replica>,
    /// Whether priorities order elections; otherwise all are equal.
    pub priority_election: bool,
    /// Raft's heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Raft's election timeout.
    pub election_timeout_ms: u64,
    /// The journal's segment size.
    pub segment_bytes: u64,
    /// The size limits derived from `network.maxMessageSize`.
    pub limits: crate::limits::SizeLimits,
    /// Snapshot at least this often when something new was committed.
    pub snapshot_period_ms: u64,
    /// ... and after this many committed records.
    pub snapshot_records: u64,
    /// The leader's backpressure limiter (`backpressure.*`).
    pub backpressure: crate::backpressure::LimiterConfig,
    /// The engine's caps (`engine.*`).
    pub engine_caps: crate::config::EngineCaps,
}

/// A snapshot of a replica's state, for the management API, metrics and the topology.
#[derive(Debug, Clone)]
pub struct PartitionStatus {
    /// The partition.
    pub partition_id: PartitionId,
    /// Follower, candidate or leader.
    pub role: Role,
    /// The current term.
    pub term: u64,
    /// The leader this replica knows of.
    pub leader: Option<NodeId>,
    /// The highest committed index known here.
    pub commit_index: u64,
    /// The last index in this replica's log.
    pub last_index: u64,
    /// The last index flushed here.
    pub durable_index: u64,
    /// Snapshots taken here.
    pub snapshots_taken: u64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: u64,
    /// The highest index whose records are in this replica's engine (on a leader, ahead of
    /// the commit index by what is in flight).
    pub applied_index: u64,
    /// Engine commands processed here as leader.
    pub commands_processed: u64,
    /// Backpressure: commands accepted at once now, commands in flight, commands refused.
    pub backpressure_limit: u32,
    pub commands_in_flight: u32,
    pub commands_refused: u64,
    /// Job activation polls parked, waiting for jobs of their type.
    pub job_polls_parked: u64,
    /// Job activation polls refused because the parked ones were at their bound
    /// ([`crate::parked`]).
    pub job_polls_refused: u64,
    /// Times the engine was rebuilt from the committed log (leadership lost with records in
    /// flight).
    pub engine_rebuilds: u64,
    /// Appends answered committed.
    pub appends_committed: u64,
    /// Appends answered unavailable.
    pub appends_failed: u64,
    /// Messages dropped because the inbox was full.
    pub messages_dropped: u64,
    /// Journal flushes and the time they took, in microseconds.
    pub flush_latency_us: Histogram<u64>,
    /// Time from an append's arrival to its commit on this leader, in microseconds.
    pub commit_latency_us: Histogram<u64>,
    /// Time from an engine command's arrival on this leader to its reply's release (processed
    /// and committed), in microseconds.
    pub command_latency_us: Histogram<u64>,
    /// Time from an append's arrival on the leader to its entry being durable on the leader
    /// itself, in microseconds (the rest of the commit latency is waiting for a follower).
    pub local_durable_latency_us: Histogram<u64>,
    /// The last flush error, if the last flush failed.
    pub flush_error: Option<String>,
    /// Why this replica is down, while it is: it failed (a storage error) and is being reopened
    /// from disk. A down replica leads nothing, takes no part in replication and answers every
    /// request `Unavailable`.
    pub down: Option<String>,
    /// Times this replica went down since the broker started.
    pub failures: u64,
    /// The last snapshot write error (own or installed), until a snapshot is written again.
    pub snapshot_error: Option<String>,
    /// Snapshot writes that failed (each retried later).
    pub snapshot_failures: u64,
    /// The last error writing the Raft hard state, while it is being retried.
    pub hard_state_error: Option<String>,
    /// Writes of the Raft hard state that failed (each retried).
    pub hard_state_failures: u64,
}

impl PartitionStatus {
    /// The status of a replica that has not reported yet.
    #[must_use]
    pub fn new(partition_id: PartitionId) -> Self {
        let histogram =
            || Histogram::new_with_max(LATENCY_US_MAX, 3).expect("a valid histogram range");
        PartitionStatus {
            partition_id,
            role: Role::Follower,
            term: 0,
            leader: None,
            commit_index: 0,
            last_index: 0,
            durable_index: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
            applied_index: 0,
            commands_processed: 0,
            backpressure_limit: 0,
            commands_in_flight: 0,
            commands_refused: 0,
            job_polls_parked: 0,
            job_polls_refused: 0,
            engine_rebuilds: 0,
            appends_committed: 0,
            appends_failed: 0,
            messages_dropped: 0,
            flush_latency_us: histogram(),
            commit_latency_us: histogram(),
            command_latency_us: histogram(),
            local_durable_latency_us: histogram(),
            flush_error: None,
            down: None,
            failures: 0,
            snapshot_error: None,
            snapshot_failures: 0,
            hard_state_error: None,
            hard_state_failures: 0,
        }
    }
}

struct QueuedCommand {
    command: sluice_engine::Record,
    responder: Responder,
    /// For a job activation poll: how long it may be parked.
    poll_wait_ms: Option<u32>,
}

struct QueuedAppend {
    payload: Vec<u8>,
    responder: Responder,
    arrived: Instant,
}

#[derive(Default)]
struct Inputs {
    messages: VecDeque<Message>,
    appends: VecDeque<QueuedAppend>,
    commands: VecDeque<QueuedCommand>,
    /// The newest flush report not yet given to Raft. Newer replaces older: one flush runs at a
    /// time, so a later report covers at least what an earlier one still vouches for.
    flushed: Option<FlushReport>,
    /// A requested leadership transfer.
    transfer_to: Option<NodeId>,
    /// Fault injection: the next round fails as a storage error would, and this many attempts
    /// to reopen the replica fail after it.
    fail_storage: Option<u32>,
    closed: bool,
}

/// The handle to a running replica. See the module docs.
pub struct Partition {
    id: PartitionId,
    node_id: NodeId,
    inputs: RefCell<Inputs>,
    /// Appends queued plus appends proposed and awaiting commit.
    appends_pending: std::cell::Cell<usize>,
    notify: Notify,
    status: RefCell<PartitionStatus>,
    preferred_leader: NodeId,
    /// Backpressure on engine commands.
    limiter: Rc<crate::backpressure::AimdLimiter>,
    /// The largest entry (raw append) accepted.
    entry_bytes_max: usize,
    /// Why the replica is down (a storage error it is recovering from), while it is.
    down: RefCell<Option<String>>,
    /// Counts the journals opened: a flush task reports only for the journal it flushes, the
    /// current one (a report of a journal closed after a failure means nothing to the next).
    journal_generation: std::cell::Cell<u64>,
    /// Fault injection: attempts to reopen that fail before one succeeds.
    reopen_failures: std::cell::Cell<u32>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// Recovers the replica from `config.dir` and spawns its tasks on the current executor.
    pub async fn open(
        config: PartitionConfig,
        outbox: Rc<dyn RaftOutbox>,
        listener: StatusListener,
    ) -> anyhow::Result<Rc<Partition>> {
        let preferred_leader = config
            .replicas
            .iter()
            .max_by_key(|r| r.priority)
            .map_or(config.node_id, |r| r.node_id);
        let limiter = Rc::new(crate::backpressure::AimdLimiter::new(config.backpressure));
        let partition = Rc::new(Partition {
            id: config.partition_id,
            node_id: config.node_id,
            inputs: RefCell::default(),
            appends_pending: std::cell::Cell::new(0),
            notify: Notify::default(),
            status: RefCell::new(PartitionStatus::new(config.partition_id)),
            preferred_leader,
            limiter,
            entry_bytes_max: config.limits.entry_bytes,
            down: RefCell::new(None),
            journal_generation: std::cell::Cell::new(0),
            reopen_failures: std::cell::Cell::new(0),
        });
        // A replica that cannot open at start-up stops the broker: the operator sees why.
        let driver = open_driver(&partition, &config, &outbox, &listener).await?;
        glommio::spawn_local(replica_task(
            partition.clone(),
            config,
            outbox,
            listener,
            driver,
        ))
        .detach();
        Ok(partition)
    }

    /// The partition.
    #[must_use]
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// The node whose replica has the highest priority: where leadership belongs.
    #[must_use]
    pub fn preferred_leader(&self) -> NodeId {
        self.preferred_leader
    }

    /// Queues a message from a peer replica. Dropped (and counted) when the inbox is full or
    /// the replica is down (Raft retransmits).
    pub fn deliver(&self, message: Message) {
        if self.down.borrow().is_some() {
            return;
        }
        let mut inputs = self.inputs.borrow_mut();
        if inputs.messages.len() >= INBOX_MESSAGES_MAX {
            self.status.borrow_mut().messages_dropped += 1;
            return;
        }
        inputs.messages.push_back(message);
        drop(inputs);
        self.notify.notify();
    }

    /// Appends `payload` if this replica leads; `responder` hears the outcome exactly once.
    ///
    /// The payload's first byte says what it is ([`crate::apply`]): a raw entry
    /// ([`crate::apply::ENTRY_RAW`], appended as it is) or an engine command
    /// ([`crate::apply::PAYLOAD_COMMAND`], processed by the engine, answered with its reply).
    pub fn append(&self, payload: Vec<u8>, responder: Responder) {
        if let Some(answer) = self.down_answer() {
            responder(answer);
            return;
        }
        match payload.first() {
            Some(&crate::apply::ENTRY_RAW) => {}
            Some(&crate::apply::PAYLOAD_COMMAND) => {
                self.submit_command(&payload[1..], responder, None, true);
                return;
            }
            Some(&crate::apply::PAYLOAD_INTERNAL) => {
                self.submit_command(&payload[1..], responder, None, false);
                return;
            }
            Some(&crate::apply::PAYLOAD_POLL) if payload.len() >= 5 => {
                let wait_ms = u32::from_le_bytes([payload[1], payload[2], payload[3], payload[4]]);
                self.submit_command(&payload[5..], responder, Some(wait_ms), true);
                return;
            }
            _ => {
                responder(AppendOutcome::Invalid {
                    message: "an append payload starts with its kind: 0x00 for a raw entry, \
                              0x01 for a client's engine command, 0x02 and a wait for a job \
                              poll, 0x03 for a partition's command"
                        .to_owned(),
                });
                return;
            }
        }
        if payload.len() > self.entry_bytes_max {
            responder(AppendOutcome::Invalid {
                message: format!(
                    "the payload of {} bytes exceeds the largest entry, {} bytes",
                    payload.len(),
                    self.entry_bytes_max
                ),
            });
            return;
        }
        {
            let status = self.status.borrow();
            if status.role != Role::Leader {
                let leader = status.leader;
                drop(status);
                responder(AppendOutcome::NotLeader { leader });
                return;
            }
        }
        if self.appends_pending.get() >= APPENDS_PENDING_MAX {
            responder(AppendOutcome::Unavailable {
                message: format!(
                    "partition {} has {APPENDS_PENDING_MAX} appends pending; retry later",
                    self.id
                ),
            });
            return;
        }
        self.appends_pending.set(self.appends_pending.get() + 1);
        self.inputs.borrow_mut().appends.push_back(QueuedAppend {
            payload,
            responder,
            arrived: Instant::now(),
        });
        self.notify.notify();
    }

    fn submit_command(
        &self,
        bytes: &[u8],
        responder: Responder,
        poll_wait_ms: Option<u32>,
        from_client: bool,
    ) {
        let command = match crate::apply::decode_command(bytes) {
            Ok(command) => command,
            Err(error) => {
                responder(AppendOutcome::Invalid {
                    message: format!("malformed engine command: {error}"),
                });
                return;
            }
        };
        if from_client && !crate::apply::client_may_send(&command) {
            responder(AppendOutcome::Invalid {
                message: format!(
                    "a client may not send {:?} {:?}{}: it is a command between partitions",
                    command.value_type,
                    command.intent,
                    if command.key > 0 {
                        format!(" with key {}", command.key)
                    } else {
                        String::new()
                    }
                ),
            });
            return;
        }
        if !from_client
            && (command.request_id != 0
                || !sluice_engine::partition_may_send(command.value_type, command.intent))
        {
            // Only a gateway names client requests, and partitions send each other only their
            // own kinds of command.
            responder(AppendOutcome::Invalid {
                message: format!(
                    "a partition may not send {:?} {:?}{}",
                    command.value_type,
                    command.intent,
                    if command.request_id == 0 {
                        ""
                    } else {
                        " with a client request id"
                    }
                ),
            });
            return;
        }
        if poll_wait_ms.is_some()
            && !(command.value_type == sluice_engine::ValueType::JobBatch
                && command.intent == sluice_engine::Intent::Activate)
        {
            responder(AppendOutcome::Invalid {
                message: format!(
                    "only a job activation may be sent as a poll, not {:?} {:?}",
                    command.value_type, command.intent
                ),
            });
            return;
        }
        {
            let status = self.status.borrow();
            if status.role != Role::Leader {
                let leader = status.leader;
                drop(status);
                responder(AppendOutcome::NotLeader { leader });
                return;
            }
        }
        if !self.limiter.try_acquire(is_exempt(&command)) {
            responder(AppendOutcome::Overloaded {
                message: format!(
                    "partition {} is at its limit of {} commands in flight; retry shortly",
                    self.id,
                    self.limiter.limit()
                ),
            });
            return;
        }
        let mut inputs = self.inputs.borrow_mut();
        if inputs.commands.len() >= APPENDS_PENDING_MAX {
            self.limiter.release(None);
            drop(inputs);
            responder(AppendOutcome::Unavailable {
                message: format!(
                    "partition {} has {APPENDS_PENDING_MAX} commands queued; retry later",
                    self.id
                ),
            });
            return;
        }
        inputs.commands.push_back(QueuedCommand {
            command,
            responder,
            poll_wait_ms,
        });
        drop(inputs);
        self.notify.notify();
    }

    /// Fault injection (`management.faults.enabled`) into the replica's storage.
    pub fn inject_storage_fault(&self, fault: StorageFault) {
        match fault {
            StorageFault::Fail { reopen_failures } => {
                self.inputs.borrow_mut().fail_storage = Some(reopen_failures);
            }
            StorageFault::Heal => self.reopen_failures.set(0),
        }
        self.notify.notify();
    }

    /// Asks the leader to hand leadership to `to`. Ignored by followers.
    pub fn transfer_leadership(&self, to: NodeId) {
        self.inputs.borrow_mut().transfer_to = Some(to);
        self.notify.notify();
    }

    /// The replica's current state.
    #[must_use]
    pub fn status(&self) -> PartitionStatus {
        self.status.borrow().clone()
    }

    /// Stops the tasks; pending appends are answered `Unavailable`.
    pub fn close(&self) {
        self.inputs.borrow_mut().closed = true;
        self.notify.notify();
    }

    fn is_closed(&self) -> bool {
        self.inputs.borrow().closed
    }

    /// The answer while the replica is down, if it is.
    fn down_answer(&self) -> Option<AppendOutcome> {
        self.down
            .borrow()
            .as_ref()
            .map(|reason| AppendOutcome::Unavailable {
                message: format!(
                    "partition {} on node {} is down and being reopened ({reason}); retry shortly",
                    self.id, self.node_id
                ),
            })
    }

    /// Marks the replica down for `reason`: it reports itself so (role follower, no leader,
    /// `down` set; the listener tells the topology and gossip), drops queued messages and answers
    /// every queued request `Unavailable`.
    fn go_down(&self, reason: &str, listener: &StatusListener) {
        let first = self.down.replace(Some(reason.to_owned())).is_none();
        let inputs = {
            let mut inputs = self.inputs.borrow_mut();
            let closed = inputs.closed;
            std::mem::replace(
                &mut *inputs,
                Inputs {
                    closed,
                    ..Inputs::default()
                },
            )
        };
        let status = {
            let mut status = self.status.borrow_mut();
            status.role = Role::Follower;
            status.leader = None;
            status.down = Some(reason.to_owned());
            status.commands_in_flight = 0;
            status.job_polls_parked = 0;
            if first {
                status.failures += 1;
            }
            status.clone()
        };
        listener(&status);
        let answer = self.down_answer().expect("just marked down");
        for append in inputs.appends {
            let slots = &self.appends_pending;
            slots.set(slots.get().saturating_sub(1));
            (append.responder)(answer.clone());
        }
        for command in inputs.commands {
            self.limiter.release(None);
            (command.responder)(answer.clone());
        }
    }

    /// The replica was reopened: it takes requests and messages again.
    fn come_up(&self) {
        self.down.replace(None);
        self.status.borrow_mut().down = None;
    }
}

/// A fault injected into a replica's storage (`POST /actuator/faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// The replica's next round fails as a storage error would, so it goes down and is
    /// reopened from disk; the first `reopen_failures` attempts to reopen it fail too.
    Fail {
        /// Attempts to reopen that fail.
        reopen_failures: u32,
    },
    /// The attempts to reopen that were still to fail succeed: the next one reopens it.
    Heal,
}

/// First pause before a failed replica is reopened from disk; it doubles after each failure.
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
/// Longest pause between two attempts to reopen a failed replica.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A replica that ran this long since it was reopened starts its back-off afresh.
const REOPEN_BACKOFF_RESET: Duration = Duration::from_mins(1);

/// How a driver's run ended.
enum Stopped {
    /// The broker is shutting down.
    Closed,
    /// The journal, the snapshot store or the hard state failed: the replica cannot go on with
    /// what it holds in memory.
    Failed(anyhow::Error),
}

/// Runs the replica: its driver until it stops; after a storage error the replica is down
/// (it says so, answers everything `Unavailable`, takes no part in replication) and is reopened
/// from disk with a growing pause until that succeeds, without restarting the broker.
async fn replica_task(
    partition: Rc<Partition>,
    config: PartitionConfig,
    outbox: Rc<dyn RaftOutbox>,
    listener: StatusListener,
    mut driver: Driver,
) {
    let mut backoff = REOPEN_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let error = match driver.run().await {
            Stopped::Closed => return,
            Stopped::Failed(error) => error,
        };
        if started.elapsed() >= REOPEN_BACKOFF_RESET {
            backoff = REOPEN_BACKOFF_MIN;
        }
        partition.go_down(&format!("storage error: {error:#}"), &listener);
        eprintln!(
            "partition {}: this replica stopped after a storage error and will be reopened from \
             disk: {error:#}",
            partition.id
        );
        loop {
            future::or(
                async {
                    while !partition.is_closed() {
                        partition.notify.notified().await;
                    }
                },
                glommio::timer::sleep(backoff),
            )
            .await;
            if partition.is_closed() {
                return;
            }
            match open_driver(&partition, &config, &outbox, &listener).await {
                Ok(reopened) => {
                    eprintln!(
                        "partition {}: reopened this replica from disk",
                        partition.id
                    );
                    partition.come_up();
                    driver = reopened;
                    break;
                }
                Err(error) => {
                    backoff = (backoff * 2).min(REOPEN_BACKOFF_MAX);
                    let reason = format!(
                        "storage error, reopening failed (next attempt in {backoff:?}): {error:#}"
                    );
                    eprintln!("partition {}: {reason}", partition.id);
                    partition.go_down(&reason, &listener);
                }
            }
        }
    }
}

/// Opens the replica's journal, hard state and snapshots from its directory and makes the
/// driver that runs them, with its flush task.
async fn open_driver(
    partition: &Rc<Partition>,
    config: &PartitionConfig,
    outbox: &Rc<dyn RaftOutbox>,
    listener: &StatusListener,
) -> anyhow::Result<Driver> {
    let started = Instant::now();
    let injected = partition.reopen_failures.get();
    if injected > 0 {
        partition.reopen_failures.set(injected - 1);
        anyhow::bail!(
            "an injected failure to reopen ({} more to come)",
            injected - 1
        );
    }
    let journal_dir = config.dir.join(JOURNAL_DIR);
    let store = prepare_dir(&config.dir).await?;
    // Write-through: a flush is one `O_DSYNC` write instead of a write and an fdatasync,
    // one io_uring round trip less on every commit (measured in the README).
    let storage = DmaStorage::open_write_through(&journal_dir).await?;
    let journal_config = JournalConfig {
        segment_bytes: config.segment_bytes,
        batch_bytes_max: config.limits.journal_batch_bytes,
        ..JournalConfig::default()
    };
    let (journal, report) = Journal::open(storage, journal_config).await?;
    let hard_path = config.dir.join(HARD_STATE_FILE);
    let hard = load_hard_state(&hard_path)?;
    let raft_config = raft_config(config);
    let latest = store.load_latest()?;
    let base = latest
        .as_ref()
        .map(|(snapshot, _)| (snapshot.index, snapshot.term));
    if let Some((index, _)) = base
        && journal.next_index() <= index
    {
        // Crashed after installing a snapshot but before the journal was reset.
        journal.reset(index + 1).await?;
    }
    let log = recover_log(&journal, base, raft_config.entry_cache_bytes_max).await?;
    let last_index = log.last_index();
    let seed = u64::from(config.partition_id) << 32
        ^ u64::from(config.node_id)
        ^ u64::from(started.elapsed().subsec_nanos());
    let raft = Raft::new(raft_config, hard, log, 0, seed);
    eprintln!(
        "partition {}: recovered {} entries (last index {last_index}, term {}), journal: {report:?}",
        config.partition_id, last_index, hard.term
    );
    let journal = Rc::new(journal);
    let generation = partition.journal_generation.get() + 1;
    partition.journal_generation.set(generation);
    glommio::spawn_local(flush_task(
        Rc::clone(partition),
        Rc::clone(&journal),
        generation,
    ))
    .detach();
    let mut runner = crate::apply::EngineRunner::new(
        config.partition_id,
        config.partition_count,
        Rc::clone(&partition.limiter),
        config.limits,
        config.engine_caps,
    );
    let snapshot = latest.map(|(snapshot, state)| {
        runner.restore(snapshot.clone(), state);
        snapshot
    });
    if let Some(snapshot) = &snapshot {
        eprintln!(
            "partition {}: restored the engine from the snapshot at index {} (term {})",
            config.partition_id, snapshot.index, snapshot.term
        );
    }
    Ok(Driver {
        partition: Rc::clone(partition),
        raft,
        journal,
        hard_path,
        hard,
        outbox: Rc::clone(outbox),
        listener: Rc::clone(listener),
        pending: BTreeMap::new(),
        runner,
        store,
        snapshot,
        snapshot_write: None,
        snapshot_backoff: Backoff::new(SNAPSHOT_RETRY_PAUSE_MIN, SNAPSHOT_RETRY_PAUSE_MAX),
        incoming_snapshot: Vec::new(),
        last_snapshot_at: Instant::now(),
        snapshot_period: Duration::from_millis(config.snapshot_period_ms),
        snapshot_records: config.snapshot_records,
        clock: started,
        reported: (Role::Follower, 0, None),
    })
}

fn raft_config(config: &PartitionConfig) -> RaftConfig {
    let ids: Vec<ReplicaId> = config
        .replicas
        .iter()
        .map(|r| replica_id(r.node_id))
        .collect();
    let mut raft = RaftConfig {
        heartbeat_interval_ms: config.heartbeat_interval_ms,
        election_timeout_ms: config.election_timeout_ms,
        append_bytes_max: 4 << 20,
        inflight_appends_max: 16,
        entry_cache_bytes_max: 64 << 20,
        ..RaftConfig::new(replica_id(config.node_id), &ids)
    };
    if config.priority_election {
        raft.replicas = config
            .replicas
            .iter()
            .map(|r| ReplicaPriority {
                id: replica_id(r.node_id),
                priority: r.priority,
            })
            .collect();
    }
    raft
}

/// Commands backpressure never refuses: job completions and failures finish work already in
/// the system, and commands between partitions (distribution, subscriptions) are re-sent until
/// answered anyway.
fn is_exempt(command: &sluice_engine::Record) -> bool {
    use sluice_engine::{Intent, ValueType};
    match command.value_type {
        ValueType::Job => matches!(command.intent, Intent::Complete | Intent::Fail),
        ValueType::MessageSubscription
        | ValueType::ProcessMessageSubscription
        | ValueType::CommandDistribution => true,
        ValueType::Deployment => command.key > 0,
        _ => false,
    }
}

/// Rebuilds the term runs of the log from the recovered journal, after the snapshot `base`
/// (index, term) if there is one.
async fn recover_log(
    journal: &Journal<DmaStorage>,
    base: Option<(u64, u64)>,
    cache_bytes_max: u64,
) -> anyhow::Result<RaftLog> {
    let (base_index, base_term) = base.unwrap_or((0, 0));
    anyhow::ensure!(
        journal.first_index() <= base_index + 1,
        "the journal starts at index {} but the newest usable snapshot covers only up to {}: \
         entries are missing (a damaged snapshot?); remove this replica's partition directory \
         to let it catch up from the leader",
        journal.first_index(),
        base_index
    );
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut reader = journal.reader(journal.first_index().max(base_index + 1));
    while let Some(batch) = reader.next(journal).await? {
        if runs.last().is_none_or(|run| run.1 != batch.term) {
            anyhow::ensure!(
                runs.last().is_none_or(|run| run.1 < batch.term),
                "the journal holds term {} after term {} at index {}: it is corrupt; \
                 remove this replica's directory to let it catch up from the leader",
                batch.term,
                runs.last().map_or(0, |run| run.1),
                batch.index
            );
            runs.push((batch.index, batch.term));
        }
    }
    let last_index = journal.next_index() - 1;
    // The epoch counts the journal's cuts so far (a reset at open included), so flush reports
    // and Raft's cuts stay in step.
    Ok(RaftLog::recovered(
        base_index,
        base_term,
        runs,
        last_index,
        journal.truncation_epoch(),
        cache_bytes_max,
    ))
}

struct Pending {
    term: u64,
    responder: Responder,
    arrived: Instant,
    /// When the leader's own flush covered the entry.
    local_durable_at: Option<Instant>,
}

/// A snapshot being written off the shard, and the task writing it (it returns the index of the
/// oldest snapshot kept).
struct SnapshotWrite {
    snapshot: StoredSnapshot,
    /// The records since the previous snapshot when this one was taken.
    records_covered: u64,
    task: glommio::Task<durable::Result<Option<u64>>>,
}

struct Driver {
    partition: Rc<Partition>,
    raft: Raft,
    journal: Rc<Journal<DmaStorage>>,
    hard_path: PathBuf,
    hard: HardState,
    outbox: Rc<dyn RaftOutbox>,
    listener: StatusListener,
    /// Proposed appends by index, awaiting commit.
    pending: BTreeMap<u64, Pending>,
    /// The engine and its commands.
    runner: crate::apply::EngineRunner,
    store: SnapshotStore,
    /// The latest snapshot, served to followers that need it.
    snapshot: Option<StoredSnapshot>,
    /// A snapshot being written off the shard; it takes effect once durable.
    snapshot_write: Option<SnapshotWrite>,
    /// Paces snapshot attempts after a failed write.
    snapshot_backoff: Backoff,
    /// Chunks of a snapshot arriving from the leader.
    incoming_snapshot: Vec<u8>,
    last_snapshot_at: Instant,
    snapshot_period: Duration,
    snapshot_records: u64,
    clock: Instant,
    /// Role, term and leader last reported to the listener.
    reported: (Role, u64, Option<NodeId>),
}

impl Driver {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    async fn run(mut self) -> Stopped {
        loop {
            if self.partition.is_closed() {
                self.fail_all("the broker is shutting down");
                self.runner.fail_all("the broker is shutting down");
                self.journal.close();
                return Stopped::Closed;
            }
            // The core reads time only from ticks: tick before every round so that the
            // messages below reset its timers from the current time, not from the last tick.
            let now = self.now_ms();
            self.raft.handle_tick(now);
            self.take_inputs();
            if let Err(error) = self.round().await {
                // A journal that refuses a truncation or an append cannot go on safely with
                // what this replica holds in memory: everything waiting is answered, and the
                // replica is reopened from disk (see `replica_task`); the others keep the
                // partition available meanwhile.
                let message = format!(
                    "partition {} on this broker stopped after a storage error; it is being \
                     reopened, retry shortly ({error})",
                    self.partition.id
                );
                self.fail_all(&message);
                self.runner.fail_all(&message);
                self.journal.close();
                return Stopped::Failed(error);
            }
            self.publish_status();
            let mut wait_ms = self.raft.poll_timeout_ms().saturating_sub(self.now_ms());
            if self.runner.leader_ready(&self.raft) {
                if self.runner.has_commands() {
                    wait_ms = 0;
                } else if let Some(deadline) = self.runner.next_deadline_ms() {
                    let until =
                        deadline.saturating_sub(crate::apply::EngineRunner::wall_clock_ms());
                    wait_ms = wait_ms.min(u64::try_from(until.max(0)).unwrap_or(0));
                }
            }
            if wait_ms > 0 && !self.has_inputs() {
                future::or(
                    self.partition.notify.notified(),
                    glommio::timer::sleep(Duration::from_millis(wait_ms)),
                )
                .await;
            } else {
                // Let the network and the flush task run between two rounds.
                glommio::executor().yield_task_queue_now().await;
            }
        }
    }

    /// Hands the leader's Raft the snapshot chunks it asked for.
    fn serve_snapshot_reads(&mut self, reads: &[SnapshotRead]) -> anyhow::Result<()> {
        for read in reads {
            let snapshot = self.snapshot.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "Raft asked for snapshot {} but none is held",
                    read.snapshot_index
                )
            })?;
            anyhow::ensure!(
                snapshot.index == read.snapshot_index,
                "Raft asked for snapshot {} but the one held is {}",
                read.snapshot_index,
                snapshot.index
            );
            let len = snapshot.bytes.len();
            let from = usize::try_from(read.offset).unwrap_or(len).min(len);
            let to = from
                .saturating_add(usize::try_from(read.bytes_max).unwrap_or(usize::MAX))
                .min(len);
            let chunk: Rc<[u8]> = Rc::from(&snapshot.bytes[from..to]);
            self.raft.handle_snapshot_chunk(
                read.peer,
                snapshot.index,
                read.offset,
                chunk,
                to == len,
            );
        }
        Ok(())
    }

    /// Makes the snapshot received from the leader this replica's state: written durably (off
    /// the shard), then the journal restarted after it, the engine restored from it. If it cannot
    /// be written (a full disk), nothing changes: it is dropped, the error reported, and Raft
    /// receives it again after a back-off.
    async fn install_snapshot(&mut self, index: u64, term: u64) -> anyhow::Result<()> {
        let bytes = std::mem::take(&mut self.incoming_snapshot);
        let state = sluice_engine::snapshot::decode_snapshot(&bytes).map_err(|error| {
            anyhow::anyhow!(
                "the snapshot received from the leader for index {index} is invalid: {error}"
            )
        })?;
        // One writer in the snapshot directory at a time: an own snapshot still being written
        // finishes first. It is older than this one, which supersedes it.
        if let Some(write) = self.snapshot_write.take() {
            let _ = write.task.await;
        }
        let snapshot = StoredSnapshot {
            index,
            term,
            bytes: Arc::from(bytes),
        };
        let (store, written) = (self.store.clone(), snapshot.clone());
        if let Err(error) = durable::off_shard(move || store.save(&written)).await {
            let pause = self.snapshot_failed(
                &format!("the leader's snapshot at index {index} (term {term})"),
                &error,
            );
            let retry_at_ms = self
                .now_ms()
                .saturating_add(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX));
            self.raft
                .handle_snapshot_install_failed(index, term, retry_at_ms);
            return Ok(());
        }
        self.journal.reset(index + 1).await?;
        let store = self.store.clone();
        if let Err(error) = durable::off_shard(move || store.remove_older_than(index)).await {
            eprintln!(
                "partition {}: {error:#}; the older snapshots stay until the next one",
                self.partition.id
            );
        }
        self.runner.restore(snapshot.clone(), state);
        self.snapshot = Some(snapshot);
        self.last_snapshot_at = Instant::now();
        self.snapshot_backoff.succeeded();
        self.raft.handle_snapshot_installed(index, term);
        {
            let mut status = self.partition.status.borrow_mut();
            status.snapshots_installed += 1;
            status.snapshot_error = None;
        }
        eprintln!(
            "partition {}: installed the leader's snapshot at index {index} (term {term})",
            self.partition.id
        );
        Ok(())
    }

    /// Reports a snapshot that could not be written (`what`) and schedules the next attempt;
    /// the pause until then.
    fn snapshot_failed(&mut self, what: &str, error: &durable::DurableError) -> Duration {
        let pause = self.snapshot_backoff.failed(Instant::now());
        let mut status = self.partition.status.borrow_mut();
        status.snapshot_failures += 1;
        status.snapshot_error = Some(format!("{what}: {error}"));
        eprintln!(
            "partition {}: {what} was not written: {error}; the journal keeps its entries, the \
             replica goes on, and a snapshot is tried again in {pause:?}",
            self.partition.id
        );
        pause
    }

    /// Snapshots the engine when enough was committed since the last one (or long enough has
    /// passed) and nothing speculative is applied. The snapshot is written off the shard while
    /// the replica goes on; once it is durable ([`Driver::snapshot_written`]) it replaces the
    /// previous one, Raft is told, and the journal is compacted below the older of the two
    /// snapshots kept. After a failed write the next attempt waits for the back-off.
    async fn maybe_snapshot(&mut self) -> anyhow::Result<()> {
        if let Some(write) = self.snapshot_write.as_mut() {
            let Some(written) = future::poll_once(&mut write.task).await else {
                return Ok(());
            };
            let write = self.snapshot_write.take().expect("the write just polled");
            return self
                .snapshot_written(write.snapshot, write.records_covered, written)
                .await;
        }
        if !self.snapshot_backoff.ready(Instant::now()) {
            return Ok(());
        }
        let due = self.runner.records_since_snapshot >= self.snapshot_records
            || (self.runner.records_since_snapshot > 0
                && self.last_snapshot_at.elapsed() >= self.snapshot_period);
        if !due {
            return Ok(());
        }
        let Some((index, bytes)) = self.runner.snapshot_now(self.raft.commit_index()) else {
            return Ok(());
        };
        // Raft compacts only what is durable here (a follower may apply committed entries
        // before its own flush covers them).
        if self.snapshot.as_ref().is_some_and(|s| s.index >= index)
            || index > self.raft.log().durable_index()
        {
            return Ok(());
        }
        let Some(term) = self.raft.log().term_at(index) else {
            return Ok(());
        };
        let snapshot = StoredSnapshot {
            index,
            term,
            bytes: Arc::from(bytes),
        };
        let (store, written) = (self.store.clone(), snapshot.clone());
        let partition = Rc::clone(&self.partition);
        let task = glommio::spawn_local(async move {
            let result = durable::off_shard(move || store.save(&written)).await;
            // The driver finishes it (or schedules the retry) in its next round.
            partition.notify.notify();
            result
        });
        self.snapshot_write = Some(SnapshotWrite {
            snapshot,
            records_covered: self.runner.records_since_snapshot,
            task,
        });
        Ok(())
    }

    /// A snapshot write ended: once durable, the snapshot becomes the engine's base and the one
    /// served to laggards, Raft's log starts after it, and the journal is compacted below the
    /// oldest one kept. A failed write changes nothing (it is reported and retried later).
    async fn snapshot_written(
        &mut self,
        snapshot: StoredSnapshot,
        records_covered: u64,
        written: durable::Result<Option<u64>>,
    ) -> anyhow::Result<()> {
        let oldest_kept = match written {
            Ok(oldest_kept) => oldest_kept,
            Err(error) => {
                self.snapshot_failed(&format!("the snapshot at index {}", snapshot.index), &error);
                return Ok(());
            }
        };
        self.snapshot_backoff.succeeded();
        {
            let mut status = self.partition.status.borrow_mut();
            status.snapshots_taken += 1;
            if status.snapshot_error.take().is_some() {
                eprintln!(
                    "partition {}: a snapshot is written again (index {})",
                    self.partition.id, snapshot.index
                );
            }
        }
        let (index, term) = (snapshot.index, snapshot.term);
        self.runner
            .snapshot_taken(snapshot.clone(), records_covered);
        self.snapshot = Some(snapshot);
        self.last_snapshot_at = Instant::now();
        // Raft's log starts after the newest snapshot (the one it sends to laggards); the
        // journal keeps what follows the older kept one, so a damaged newest snapshot can fall
        // back to it.
        self.raft.handle_compacted(index, term);
        if let Some(oldest) = oldest_kept
            && oldest > 0
        {
            self.journal.compact_before(oldest + 1).await?;
        }
        Ok(())
    }

    /// Writes the hard state off the shard and returns once it is durable. A failed write is
    /// reported and retried after a back-off (bounded pauses): the replica's messages wait
    /// meanwhile, since Raft must not act on a term or vote that is not on disk. Only a
    /// shutdown ends the retries.
    async fn persist_hard_state(&mut self, hard: HardState) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(HARD_STATE_RETRY_PAUSE_MIN, HARD_STATE_RETRY_PAUSE_MAX);
        loop {
            let path = self.hard_path.clone();
            let error = match durable::off_shard(move || store_hard_state(&path, hard)).await {
                Ok(()) => {
                    if self
                        .partition
                        .status
                        .borrow_mut()
                        .hard_state_error
                        .take()
                        .is_some()
                    {
                        eprintln!(
                            "partition {}: the Raft state (term {}) is written after all",
                            self.partition.id, hard.term
                        );
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            let pause = backoff.failed(Instant::now());
            let message = error.to_string();
            {
                let mut status = self.partition.status.borrow_mut();
                status.hard_state_failures += 1;
                if status.hard_state_error.as_deref() != Some(message.as_str()) {
                    eprintln!(
                        "partition {}: the Raft state (term {}) was not written: {message}; \
                         this replica sends nothing until it is, and retries (next in \
                         {pause:?})",
                        self.partition.id, hard.term
                    );
                }
                status.hard_state_error = Some(message);
            }
            anyhow::ensure!(
                !self.partition.is_closed(),
                "the broker is shutting down before the Raft state (term {}) was written: {error}",
                hard.term
            );
            glommio::timer::sleep(pause).await;
        }
    }

    /// One round after the inputs are taken: carry out Raft's `Ready`, follow a change of role,
    /// replay committed entries into the engine, process commands if this replica may, and
    /// propose and release what that produced.
    async fn round(&mut self) -> anyhow::Result<()> {
        let injected = self.partition.inputs.borrow_mut().fail_storage.take();
        if let Some(reopen_failures) = injected {
            self.partition.reopen_failures.set(reopen_failures);
            anyhow::bail!("a storage failure injected through /actuator/faults");
        }
        self.drive().await?;
        self.runner.on_role(&self.raft);
        self.runner
            .apply_committed(&self.raft, &self.journal)
            .await?;
        self.maybe_snapshot().await?;
        if self.runner.leader_ready(&self.raft) {
            self.runner.process(&mut self.raft, COMMANDS_PER_ROUND_MAX);
            self.drive().await?;
        }
        let commit = self.raft.commit_index();
        // Releasing only queues (replies go to their connections, commands to the outbox),
        // so nothing reaches back into this status while it is borrowed.
        let mut status = self.partition.status.borrow_mut();
        self.runner
            .release(commit, &*self.outbox, &mut status.command_latency_us);
        Ok(())
    }

    fn has_inputs(&self) -> bool {
        let inputs = self.partition.inputs.borrow();
        !inputs.messages.is_empty()
            || !inputs.appends.is_empty()
            || !inputs.commands.is_empty()
            || inputs.flushed.is_some()
            || inputs.transfer_to.is_some()
            || inputs.fail_storage.is_some()
            || inputs.closed
    }

    fn take_inputs(&mut self) {
        let (messages, appends, commands, flushed, transfer_to) = {
            let mut inputs = self.partition.inputs.borrow_mut();
            (
                std::mem::take(&mut inputs.messages),
                std::mem::take(&mut inputs.appends),
                std::mem::take(&mut inputs.commands),
                inputs.flushed.take(),
                inputs.transfer_to.take(),
            )
        };
        for queued in commands {
            self.runner
                .queue(queued.command, Some(queued.responder), queued.poll_wait_ms);
        }
        if let Some(report) = flushed {
            self.raft.handle_flushed(report);
            // What Raft accepted, not what the report said: a report a cut overtook vouches
            // only for the entries below the cut.
            let durable = self.raft.log().durable_index();
            let now = Instant::now();
            for pending in self.pending.range_mut(..=durable).map(|(_, p)| p) {
                pending.local_durable_at.get_or_insert(now);
            }
        }
        for message in messages {
            self.raft.handle_message(message);
        }
        for append in appends {
            self.propose(append);
        }
        if let Some(to) = transfer_to
            && self.raft.role() == Role::Leader
            && to != self.partition.node_id
            && let Err(error) = self.raft.transfer_leadership(replica_id(to))
        {
            eprintln!(
                "partition {}: leadership transfer to node {to} refused: {error}",
                self.partition.id
            );
        }
    }

    fn propose(&mut self, append: QueuedAppend) {
        let QueuedAppend {
            payload,
            responder,
            arrived,
        } = append;
        let term = self.raft.term();
        match self.raft.propose(Rc::from(payload)) {
            Ok(index) => {
                self.pending.insert(
                    index,
                    Pending {
                        term,
                        responder,
                        arrived,
                        local_durable_at: None,
                    },
                );
            }
            Err(error) => {
                self.release_slot();
                let outcome = match error {
                    sluice_log::raft::ProposeError::NotLeader { leader } => {
                        AppendOutcome::NotLeader {
                            leader: leader.map(node_id),
                        }
                    }
                    sluice_log::raft::ProposeError::Transferring => AppendOutcome::Unavailable {
                        message: "leadership is being transferred; retry on the new leader"
                            .to_owned(),
                    },
                };
                responder(outcome);
            }
        }
    }

    fn release_slot(&self) {
        let slots = &self.partition.appends_pending;
        slots.set(slots.get().saturating_sub(1));
    }

    /// Carries out one `Ready`.
    async fn drive(&mut self) -> anyhow::Result<()> {
        let ready = self.raft.ready();
        if ready.is_empty() {
            self.raft.advance(ready.number);
            return Ok(());
        }
        if let Some(index) = ready.truncate_after {
            self.journal.truncate_after(index).await?;
            self.runner.on_truncated(index);
            let lost: Vec<u64> = self.pending.range(index + 1..).map(|(i, _)| *i).collect();
            for index in lost {
                self.fail(index, "the entry was replaced by a new leader's log");
            }
        }
        let now_ms = u64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(0);
        for entry in &ready.entries {
            let meta = BatchMeta {
                term: entry.term,
                timestamp_ms: now_ms,
                record_count: 1,
            };
            let index = loop {
                match self.journal.append(meta, &entry.payload) {
                    Err(sluice_log::Error::PendingFull { .. }) => self.wait_for_flush().await?,
                    appended => break appended?,
                }
            };
            anyhow::ensure!(
                index == entry.index,
                "Raft entry {} landed at journal index {index}",
                entry.index
            );
        }
        if let Some(hard) = ready.hard_state
            && hard != self.hard
        {
            // Durable before any message leaves (those below, and those of later rounds carry
            // this term): awaited, off the shard.
            self.persist_hard_state(hard).await?;
            self.hard = hard;
        }
        for read in &ready.reads {
            let mut entries = Vec::new();
            let mut bytes = 0;
            let mut reader = self.journal.reader(read.from_index);
            while bytes < read.bytes_max {
                let Some(batch) = reader.next(&self.journal).await? else {
                    break;
                };
                bytes += batch.payload.len() as u64 + 64;
                entries.push(Entry {
                    index: batch.index,
                    term: batch.term,
                    payload: Rc::from(batch.payload),
                });
            }
            self.raft.handle_log_read(read.peer, entries);
        }
        self.serve_snapshot_reads(&ready.snapshot_reads)?;
        for chunk in &ready.snapshot_chunks {
            if chunk.offset == 0 {
                self.incoming_snapshot.clear();
            }
            anyhow::ensure!(
                chunk.offset == self.incoming_snapshot.len() as u64,
                "snapshot chunk at offset {} but {} bytes are held",
                chunk.offset,
                self.incoming_snapshot.len()
            );
            self.incoming_snapshot.extend_from_slice(&chunk.data);
        }
        if let Some((index, term)) = ready.install_snapshot {
            self.install_snapshot(index, term).await?;
        }
        if let Some(commit) = ready.commit_index {
            self.release_committed(commit);
        }
        self.raft.advance(ready.number);
        // The hard state is durable (awaited above), so both kinds leave now.
        let partition_id = self.partition.id;
        for message in ready
            .messages
            .into_iter()
            .chain(ready.messages_after_persist)
        {
            self.outbox.send(node_id(message.to), partition_id, message);
        }
        Ok(())
    }

    /// The journal holds as many unflushed bytes as it may: back-pressure, not a failure. Waits
    /// until the flush task has made room (everything pending durable); while a flush keeps
    /// failing (a full disk) this replica waits with it, its peers elect another leader if it
    /// led, and it goes on once the disk takes writes again.
    async fn wait_for_flush(&self) -> anyhow::Result<()> {
        let last = self.journal.next_index() - 1;
        loop {
            if self.partition.is_closed() {
                anyhow::bail!("the broker is shutting down");
            }
            match self.journal.wait_durable(last).await {
                Ok(()) => return Ok(()),
                Err(sluice_log::Error::FlushFailed { .. }) => {
                    glommio::timer::sleep(FLUSH_RETRY_PAUSE).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    fn release_committed(&mut self, commit: u64) {
        let still = self.pending.split_off(&(commit + 1));
        let done = std::mem::replace(&mut self.pending, still);
        let mut status = self.partition.status.borrow_mut();
        for (index, pending) in done {
            self.release_slot();
            // The entry at `index` is the one proposed only if its term is unchanged.
            if self.raft.log().term_at(index) == Some(pending.term) {
                let micros = u64::try_from(pending.arrived.elapsed().as_micros())
                    .unwrap_or(LATENCY_US_MAX)
                    .min(LATENCY_US_MAX);
                let _ = status.commit_latency_us.record(micros);
                let local = pending
                    .local_durable_at
                    .map_or(LATENCY_US_MAX, |at| micros_between(pending.arrived, at));
                let _ = status.local_durable_latency_us.record(local);
                status.appends_committed += 1;
                (pending.responder)(AppendOutcome::Committed {
                    index,
                    response: None,
                });
            } else {
                status.appends_failed += 1;
                (pending.responder)(AppendOutcome::Unavailable {
                    message: "the entry was replaced by a new leader's log".to_owned(),
                });
            }
        }
    }

    fn fail(&mut self, index: u64, message: &str) {
        if let Some(pending) = self.pending.remove(&index) {
            self.release_slot();
            self.partition.status.borrow_mut().appends_failed += 1;
            (pending.responder)(AppendOutcome::Unavailable {
                message: message.to_owned(),
            });
        }
    }

    fn fail_all(&mut self, message: &str) {
        let indexes: Vec<u64> = self.pending.keys().copied().collect();
        for index in indexes {
            self.fail(index, message);
        }
        let queued = std::mem::take(&mut self.partition.inputs.borrow_mut().appends);
        for append in queued {
            self.release_slot();
            (append.responder)(AppendOutcome::Unavailable {
                message: message.to_owned(),
            });
        }
    }

    fn publish_status(&mut self) {
        let role = self.raft.role();
        let term = self.raft.term();
        let leader = self.raft.leader().map(node_id);
        if role != Role::Leader && !self.pending.is_empty() {
            // Leadership lost: whatever was proposed may or may not commit under the next
            // leader; answer now rather than leave clients waiting.
            self.fail_all(
                "leadership was lost before the entry committed; it may or may not be committed",
            );
        }
        {
            let mut status = self.partition.status.borrow_mut();
            status.role = role;
            status.term = term;
            status.leader = leader;
            status.commit_index = self.raft.commit_index();
            status.last_index = self.raft.log().last_index();
            status.durable_index = self.raft.log().durable_index();
            status.applied_index = self.runner.applied_index();
            status.commands_processed = self.runner.commands_processed;
            status.backpressure_limit = self.partition.limiter.limit();
            status.commands_in_flight = self.partition.limiter.in_flight();
            status.commands_refused = self.partition.limiter.refused();
            status.job_polls_parked = self.runner.parked_polls() as u64;
            status.job_polls_refused = self.runner.polls_refused;
            status.engine_rebuilds = self.runner.rebuilds;
        }
        if self.reported != (role, term, leader) {
            self.reported = (role, term, leader);
            let status = self.partition.status.borrow().clone();
            (self.listener)(&status);
        }
    }
}

async fn flush_task(partition: Rc<Partition>, journal: Rc<Journal<DmaStorage>>, generation: u64) {
    loop {
        journal.wait_pending().await;
        if journal.is_closed() || partition.is_closed() {
            let _ = journal.flush().await;
            return;
        }
        let started = Instant::now();
        match journal.flush().await {
            Ok(_) => {
                // Stamped now: a truncation the driver makes before handing this to Raft (it
                // may be waiting for this very flush) shows in the epoch.
                let report = journal.flush_report();
                {
                    let mut status = partition.status.borrow_mut();
                    let micros = u64::try_from(started.elapsed().as_micros())
                        .unwrap_or(LATENCY_US_MAX)
                        .min(LATENCY_US_MAX);
                    let _ = status.flush_latency_us.record(micros);
                    status.flush_error = None;
                }
                if partition.journal_generation.get() != generation {
                    // The replica failed and reopened its journal meanwhile.
                    return;
                }
                partition.inputs.borrow_mut().flushed = Some(report);
                partition.notify.notify();
            }
            Err(error) => {
                // Nothing is acknowledged until a flush succeeds; keep trying (a full disk may
                // be freed by the operator).
                partition.status.borrow_mut().flush_error = Some(error.to_string());
                glommio::timer::sleep(FLUSH_RETRY_PAUSE).await;
            }
        }
    }
}

fn micros_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_micros())
        .unwrap_or(LATENCY_US_MAX)
        .min(LATENCY_US_MAX)
}

// ------------------------------------------------------------------------------- hard state

const HARD_STATE_FILE: &str = "raft-state.bin";
const HARD_STATE_MAGIC: [u8; 4] = *b"SLHS";
const HARD_STATE_VERSION: u32 = 1;
const HARD_STATE_BYTES: usize = 28;
const NO_VOTE: u64 = u64::MAX;

fn encode_hard_state(hard: HardState) -> [u8; HARD_STATE_BYTES] {
    let mut bytes = [0u8; HARD_STATE_BYTES];
    bytes[0..4].copy_from_slice(&HARD_STATE_MAGIC);
    bytes[4..8].copy_from_slice(&HARD_STATE_VERSION.to_le_bytes());
    bytes[8..16].copy_from_slice(&hard.term.to_le_bytes());
    bytes[16..24].copy_from_slice(&hard.vote.unwrap_or(NO_VOTE).to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..24]);
    bytes[24..28].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn decode_hard_state(bytes: &[u8], path: &Path) -> anyhow::Result<HardState> {
    let field = |range: std::ops::Range<usize>| -> &[u8] { &bytes[range] };
    anyhow::ensure!(
        bytes.len() == HARD_STATE_BYTES,
        "{}: {} bytes, expected {HARD_STATE_BYTES}; the file is damaged — restore it or remove \
         this replica's directory so it catches up from the leader",
        path.display(),
        bytes.len()
    );
    anyhow::ensure!(
        field(0..4) == HARD_STATE_MAGIC,
        "{}: not a Raft state file (bad magic)",
        path.display()
    );
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    anyhow::ensure!(
        u32_at(4) == HARD_STATE_VERSION,
        "{}: version {} is not supported (expected {HARD_STATE_VERSION})",
        path.display(),
        u32_at(4)
    );
    let expected = u32_at(24);
    let actual = crc32c::crc32c(&bytes[..24]);
    anyhow::ensure!(
        expected == actual,
        "{}: checksum mismatch (stored {expected:#010x}, computed {actual:#010x}); the file is \
         damaged — remove this replica's directory so it catches up from the leader",
        path.display()
    );
    let vote = u64_at(16);
    Ok(HardState {
        term: u64_at(8),
        vote: (vote != NO_VOTE).then_some(vote),
    })
}

fn load_hard_state(path: &Path) -> anyhow::Result<HardState> {
    match std::fs::read(path) {
        Ok(bytes) => decode_hard_state(&bytes, path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(HardState::default()),
        Err(error) => Err(anyhow::anyhow!("reading {}: {error}", path.display())),
    }
}

/// Prepares a replica's directory, off the shard: its journal and snapshot directories exist
/// (new ones synced in their parents, so they survive a crash) and the temporary files of writes
/// a crash interrupted are gone. Returns the snapshot store.
async fn prepare_dir(dir: &Path) -> anyhow::Result<SnapshotStore> {
    let dir = dir.to_owned();
    durable::off_shard(move || {
        durable::create_dir_all(&dir.join(JOURNAL_DIR))?;
        durable::remove_stale_temps(&dir)?;
        SnapshotStore::open(&dir.join(SNAPSHOTS_DIR))
    })
    .await
}

/// Writes the hard state durably ([`durable::replace_file`]). Blocks: the driver runs it off
/// the shard.
fn store_hard_state(path: &Path, hard: HardState) -> durable::Result<()> {
    durable::replace_file(path, &[&encode_hard_state(hard)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_state_roundtrips_and_detects_damage() {
        let path = Path::new("raft-state.bin");
        for hard in [
            HardState::default(),
            HardState {
                term: 7,
                vote: Some(3),
            },
        ] {
            let bytes = encode_hard_state(hard);
            assert_eq!(decode_hard_state(&bytes, path).expect("valid"), hard);
            for at in 0..bytes.len() {
                let mut damaged = bytes;
                damaged[at] ^= 0x10;
                assert!(decode_hard_state(&damaged, path).is_err(), "flip at {at}");
            }
            assert!(decode_hard_state(&bytes[..20], path).is_err());
        }
    }

    #[test]
    fn replica_ids_map_to_node_ids() {
        for node in [0, 1, 2, 41] {
            assert_eq!(node_id(replica_id(node)), node);
        }
    }
}
