//! The Raft replication core of one partition: a sans-IO state machine.
//!
//! [`Raft`] reads no clock, does no I/O and draws randomness only from the seed it is given. The
//! driver feeds it inputs and carries out what it returns:
//!
//! ```text
//! loop {
//!     raft.handle_tick(now_ms);                  // or handle_message / propose / handle_flushed
//!     let ready = raft.ready();
//!     // 1. journal.truncate_after(ready.truncate_after), journal.append(ready.entries)
//!     // 2. persist ready.hard_state (durably)
//!     // 3. send ready.messages now; ready.messages_after_persist once step 2 is durable
//!     // 4. serve ready.reads (handle_log_read), apply up to ready.commit_index
//!     raft.advance(ready.number);
//!     // whenever a journal flush completes: raft.handle_flushed(journal.flush_report())
//!     // sleep until raft.poll_timeout_ms() or the next input
//! }
//! ```
//!
//! Flushes may run in a task of their own and their reports reach Raft late: after the driver
//! has cut the journal and appended other entries at the same indexes. So a report carries the
//! journal's truncation epoch ([`FlushReport`], read by [`Journal::flush_report`]) and Raft keeps
//! only what no cut since then took away. For the epochs to agree, carry out each
//! `ready.truncate_after` with exactly one `journal.truncate_after` and each installed snapshot
//! with one `journal.reset`, and build the [`RaftLog`] with the journal's epoch.
//!
//! [`Journal::flush_report`]: crate::Journal::flush_report
//!
//! What it implements:
//! - **Elections** with randomized timeouts, **pre-vote** (a replica returning from a partition
//!   asks first and changes nothing unless a quorum would elect it, so it cannot disrupt a healthy
//!   leader) and **check-quorum** (a leader that has not heard from a quorum within an election
//!   timeout steps down, so a minority leader stops accepting work). Followers that heard from a
//!   leader within an election timeout refuse pre-votes and votes (except for a leadership
//!   transfer).
//! - **Priority election**: replicas with lower priority wait longer before standing, so when
//!   several could win, the highest-priority live one stands first. **Leadership transfer** to a
//!   named replica once it has caught up.
//! - **Replication** with batching (`append_bytes_max` per message) and a bounded pipeline per
//!   follower (`inflight_appends_max`); conflicts truncate only uncommitted entries (asserted).
//! - **Commit** by counting durable indexes: followers acknowledge only what they flushed, the
//!   leader's own durable index counts like a follower's (so it flushes in parallel with
//!   replication), and only entries of the current term are committed by counting.
//! - **Persistence order**: whenever term or vote change, every message of that `Ready` waits
//!   until the hard state is durable.
//!
//! - **Snapshots**: the driver takes them (their content is opaque to Raft) and reports each
//!   with [`Raft::handle_compacted`]. A follower whose next entry is compacted receives the
//!   snapshot in chunks of `snapshot_chunk_bytes`, one in flight at a time, read through
//!   [`SnapshotRead`]s; it stores them ([`SnapshotChunk`]), installs the snapshot and resets its
//!   journal when told (`Ready::install_snapshot`), and reports back with
//!   [`Raft::handle_snapshot_installed`].

mod log;
mod message;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

pub use self::log::RaftLog;
pub use self::message::{
    ENTRY_OVERHEAD_BYTES, Entry, HardState, LogRead, Message, MessageBody, Ready, RejectHint,
    ReplicaId, SnapshotChunk, SnapshotRead,
};
pub use crate::journal::FlushReport;

/// Named limits and timeouts of a Raft group. Defaults as Zeebe's (heartbeat 250 ms, election
/// timeout 2500 ms); tests use much shorter ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// This replica.
    pub id: ReplicaId,
    /// Every replica of the partition, this one included, with its priority (higher stands
    /// first).
    pub replicas: Vec<ReplicaPriority>,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    /// Largest `Append` the leader sends (at least one entry).
    pub append_bytes_max: u64,
    /// Appends in flight to one follower before the leader waits for an answer.
    pub inflight_appends_max: usize,
    /// Recent entries kept in memory to replicate without reading the journal.
    pub entry_cache_bytes_max: u64,
    /// Largest snapshot chunk sent in one message.
    pub snapshot_chunk_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPriority {
    pub id: ReplicaId,
    pub priority: u32,
}

/// Most replicas a partition may have.
pub const REPLICAS_MAX: usize = 15;

impl RaftConfig {
    /// A configuration with Zeebe's timeouts and equal priorities.
    #[must_use]
    pub fn new(id: ReplicaId, replicas: &[ReplicaId]) -> Self {
        RaftConfig {
            id,
            replicas: replicas
                .iter()
                .map(|&id| ReplicaPriority { id, priority: 1 })
                .collect(),
            heartbeat_interval_ms: 250,
            election_timeout_ms: 2500,
            append_bytes_max: 1 << 20,
            inflight_appends_max: 8,
            entry_cache_bytes_max: 64 << 20,
            snapshot_chunk_bytes: 1 << 20,
        }
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// A message naming the broken rule.
    pub fn validate(&self) -> Result<(), String> {
        let mut ids: Vec<ReplicaId> = self.replicas.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.replicas.len() {
            return Err("replica ids must be unique".into());
        }
        if !ids.contains(&self.id) {
            return Err(format!(
                "replica {} is not among the replicas {ids:?}",
                self.id
            ));
        }
        if self.replicas.len() > REPLICAS_MAX {
            return Err(format!("at most {REPLICAS_MAX} replicas"));
        }
        if self.heartbeat_interval_ms == 0 || self.election_timeout_ms <= self.heartbeat_interval_ms
        {
            return Err("the election timeout must exceed a positive heartbeat interval".into());
        }
        if self.append_bytes_max == 0
            || self.inflight_appends_max == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err(
                "append_bytes_max, inflight_appends_max and snapshot_chunk_bytes must be positive"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a proposal was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?}); send the proposal there")]
    NotLeader { leader: Option<ReplicaId> },
    #[error("leadership is being transferred; retry on the new leader")]
    Transferring,
}

/// A deliberate bug, to prove the simulator's checkers catch it. Only [`Raft::inject_bug`] sets
/// one; production code never does.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedBug {
    /// Followers acknowledge entries as durable before they are flushed.
    AckUnflushed,
    /// Votes are granted without checking that the candidate's log is up to date.
    VoteIgnoresLog,
    /// Flush reports are taken at face value, whatever their truncation epoch: a report read
    /// before a cut then vouches for the entries appended after it (the behaviour before
    /// flush reports carried epochs).
    StaleFlushReport,
}

/// The leader's view of one follower.
#[derive(Debug, Clone)]
struct Progress {
    /// The next index to send.
    next_index: u64,
    /// Known to match the leader's log (flushed or not).
    match_index: u64,
    /// Known to match and be flushed: what counts towards commit.
    durable_index: u64,
    /// Probing: one append at a time until the follower's position is known.
    probing: bool,
    /// Last index of each append in flight, oldest first.
    inflight: VecDeque<u64>,
    /// When the follower last answered (check-quorum) and last made progress (lost appends).
    heard_ms: u64,
    progressed_ms: u64,
    /// A journal read for this follower is outstanding.
    reading: bool,
    /// The snapshot being sent, when its next entry is compacted.
    snapshot: Option<SnapshotSend>,
}

/// A snapshot on its way to one follower.
#[derive(Debug, Clone, Copy)]
struct SnapshotSend {
    index: u64,
    term: u64,
    /// Bytes the follower confirmed: the next chunk starts here.
    acked_bytes: u64,
    /// A chunk is being read or is on its way.
    busy: bool,
}

/// A snapshot arriving from the leader.
#[derive(Debug, Clone, Copy)]
struct SnapshotReceive {
    index: u64,
    term: u64,
    received_bytes: u64,
    /// Every chunk is stored; the driver is installing it.
    installing: bool,
}

impl Progress {
    fn new(last_index: u64, now_ms: u64) -> Self {
        Progress {
            next_index: last_index + 1,
            match_index: 0,
            durable_index: 0,
            probing: true,
            inflight: VecDeque::new(),
            heard_ms: now_ms,
            progressed_ms: now_ms,
            reading: false,
            snapshot: None,
        }
    }

    fn reset_to_probe(&mut self, next_index: u64) {
        self.next_index = next_index.max(self.match_index + 1);
        self.probing = true;
        self.inflight.clear();
    }
}

/// A tiny deterministic generator (splitmix64): the only randomness, from the seed given.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// One replica's Raft state machine. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Raft {
    config: RaftConfig,
    peers: Vec<ReplicaId>,
    /// How many replicas have a higher priority than this one.
    priority_rank: u64,
    role: Role,
    hard: HardState,
    hard_dirty: bool,
    leader: Option<ReplicaId>,
    log: RaftLog,
    commit_index: u64,
    commit_dirty: bool,
    now_ms: u64,
    election_deadline_ms: u64,
    heartbeat_deadline_ms: u64,
    quorum_check_deadline_ms: u64,
    /// When this replica last heard from a leader of its term.
    leader_contact_ms: Option<u64>,
    votes: BTreeMap<ReplicaId, bool>,
    progress: BTreeMap<ReplicaId, Progress>,
    /// Follower: how far its log is known to match the current leader's.
    matched_index: u64,
    /// Follower: an acknowledgement is owed once the new entries are flushed.
    ack_pending: bool,
    transfer: Option<(ReplicaId, u64)>,
    /// Follower: a snapshot being received.
    receiving: Option<SnapshotReceive>,
    /// Follower: snapshot chunks are ignored until then (the driver failed to store the last
    /// one, see [`Raft::handle_snapshot_install_failed`]).
    snapshot_refused_until_ms: u64,
    rng: Rng,
    /// The journal's last index as of the last `Ready` handed out (lowered by a truncation not
    /// yet handed out): flush reports above it are about entries that are not (or no longer) on
    /// disk.
    handed_last_index: u64,
    out: Ready,
    ready_number: u64,
    advanced_number: u64,
    bug: Option<InjectedBug>,
}

impl Raft {
    /// A replica that restarts with its persisted `hard` state and the log recovered from its
    /// journal, at time `now_ms`. `seed` drives its randomized timeouts.
    ///
    /// # Panics
    /// If the configuration is invalid (see [`RaftConfig::validate`]).
    #[must_use]
    pub fn new(config: RaftConfig, hard: HardState, log: RaftLog, now_ms: u64, seed: u64) -> Self {
        if let Err(e) = config.validate() {
            panic!("invalid Raft configuration: {e}");
        }
        let own = config
            .replicas
            .iter()
            .find(|r| r.id == config.id)
            .expect("validated")
            .priority;
        let priority_rank = config.replicas.iter().filter(|r| r.priority > own).count() as u64;
        let peers = config
            .replicas
            .iter()
            .map(|r| r.id)
            .filter(|id| *id != config.id)
            .collect();
        let handed_last_index = log.last_index();
        let commit_index = log.snapshot_index();
        let mut raft = Raft {
            peers,
            priority_rank,
            role: Role::Follower,
            hard,
            hard_dirty: false,
            leader: None,
            log,
            commit_index,
            commit_dirty: false,
            now_ms,
            election_deadline_ms: 0,
            heartbeat_deadline_ms: u64::MAX,
            quorum_check_deadline_ms: u64::MAX,
            leader_contact_ms: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            matched_index: 0,
            ack_pending: false,
            transfer: None,
            receiving: None,
            snapshot_refused_until_ms: 0,
            rng: Rng(seed ^ config.id.rotate_left(17)),
            handed_last_index,
            out: Ready::default(),
            ready_number: 0,
            advanced_number: 0,
            bug: None,
            config,
        };
        raft.reset_election_deadline();
        raft
    }

    /// Turns a deliberate bug on (simulator self-tests only).
    #[doc(hidden)]
    pub fn inject_bug(&mut self, bug: InjectedBug) {
        self.bug = Some(bug);
    }

    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.config.id
    }
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }
    #[must_use]
    pub fn term(&self) -> u64 {
        self.hard.term
    }
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard
    }
    #[must_use]
    pub fn leader(&self) -> Option<ReplicaId> {
        self.leader
    }
    #[must_use]
    pub fn commit_index(&self) -> u64 {
        self.commit_index
    }
    #[must_use]
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// Followers being sent a snapshot.
    #[must_use]
    pub fn peers_receiving_snapshot(&self) -> Vec<ReplicaId> {
        self.progress
            .iter()
            .filter(|(_, p)| p.snapshot.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The driver took a snapshot up to `index` (whose entry has `term`) and may drop entries up
    /// to it from the journal.
    ///
    /// # Panics
    /// If `index` is not committed and durable here, or `term` is not its term.
    pub fn handle_compacted(&mut self, index: u64, term: u64) {
        assert!(
            index <= self.commit_index,
            "a snapshot holds only committed entries"
        );
        self.log.compact(index, term);
    }

    /// Hands over a chunk of the snapshot the driver read for `peer` (see [`SnapshotRead`]).
    pub fn handle_snapshot_chunk(
        &mut self,
        peer: ReplicaId,
        snapshot_index: u64,
        offset: u64,
        data: Rc<[u8]>,
        done: bool,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        let Some(send) = p.snapshot.as_mut() else {
            return;
        };
        if send.index != snapshot_index || send.acked_bytes != offset {
            send.busy = false;
            return; // stale: asked again on the next round
        }
        let snapshot_term = send.term;
        let term = self.hard.term;
        let body = MessageBody::InstallSnapshot {
            snapshot_index,
            snapshot_term,
            offset,
            data,
            done,
        };
        self.send(peer, term, body);
    }

    /// The driver installed the snapshot of `Ready::install_snapshot`: its journal now starts
    /// after `index`.
    ///
    /// # Panics
    /// If no such snapshot was being installed.
    pub fn handle_snapshot_installed(&mut self, index: u64, term: u64) {
        let receiving = self
            .receiving
            .take()
            .expect("a snapshot was being installed");
        assert!(
            index > self.commit_index,
            "replica {}: installing snapshot {index} behind commit {}",
            self.config.id,
            self.commit_index
        );
        assert!(
            receiving.installing && receiving.index == index && receiving.term == term,
            "installed snapshot {index}/{term} is not the one received"
        );
        // Also the journal's next truncation epoch: the driver has just reset it.
        self.log.reset(index, term);
        self.out.entries.clear();
        self.out.truncate_after = None;
        self.handed_last_index = index;
        self.matched_index = index;
        self.set_commit(index);
        if let Some(leader) = self.leader {
            self.send_append_ack(leader);
        }
    }

    /// The driver could not store the snapshot of `Ready::install_snapshot` (a full disk): it
    /// dropped it and changed nothing (journal, state). Chunks from the leader are ignored until
    /// `retry_at_ms`, so it does not stream the snapshot again at once; the next chunk after
    /// that is answered with nothing received, and the leader sends it again from the start.
    ///
    /// # Panics
    /// If no such snapshot was being installed.
    pub fn handle_snapshot_install_failed(&mut self, index: u64, term: u64, retry_at_ms: u64) {
        let receiving = self
            .receiving
            .take()
            .expect("a snapshot was being installed");
        assert!(
            receiving.installing && receiving.index == index && receiving.term == term,
            "failed snapshot {index}/{term} is not the one received"
        );
        self.snapshot_refused_until_ms = retry_at_ms;
    }

    /// The next time `handle_tick` has something to do.
    #[must_use]
    pub fn poll_timeout_ms(&self) -> u64 {
        let mut next = self.election_deadline_ms;
        if self.role == Role::Leader {
            next = self
                .heartbeat_deadline_ms
                .min(self.quorum_check_deadline_ms);
            if let Some((_, deadline)) = self.transfer {
                next = next.min(deadline);
            }
        }
        next
    }

    fn quorum(&self) -> usize {
        self.config.replicas.len() / 2 + 1
    }

    fn reset_election_deadline(&mut self) {
        let t = self.config.election_timeout_ms;
        // Lower priorities wait longer: a whole half timeout per replica ranked above, more than
        // the random spread, so the highest-priority live replica stands first.
        self.election_deadline_ms =
            self.now_ms + t + self.priority_rank * (t / 2) + self.rng.below(t / 2);
    }

    fn lease_active(&self) -> bool {
        self.role == Role::Leader
            || self
                .leader_contact_ms
                .is_some_and(|at| self.now_ms < at + self.config.election_timeout_ms)
    }

    fn send(&mut self, to: ReplicaId, term: u64, body: MessageBody) {
        self.out.messages.push(Message {
            from: self.config.id,
            to,
            term,
            body,
        });
    }

    fn set_commit(&mut self, index: u64) {
        assert!(
            index <= self.log.last_index(),
            "replica {}: commit {index} beyond the last index {}",
            self.config.id,
            self.log.last_index()
        );
        if index > self.commit_index {
            self.commit_index = index;
            self.commit_dirty = true;
        }
    }

    // ---------------------------------------------------------------- inputs

    /// Advances the clock; fires election, heartbeat and check-quorum timeouts that are due.
    pub fn handle_tick(&mut self, now_ms: u64) {
        assert!(now_ms >= self.now_ms, "time never goes backwards");
        self.now_ms = now_ms;
        match self.role {
            Role::Leader => {
                if let Some((_, deadline)) = self.transfer
                    && now_ms >= deadline
                {
                    self.transfer = None;
                }
                if now_ms >= self.quorum_check_deadline_ms {
                    self.check_quorum();
                }
                if self.role == Role::Leader && now_ms >= self.heartbeat_deadline_ms {
                    self.heartbeat_deadline_ms = now_ms + self.config.heartbeat_interval_ms;
                    self.broadcast_heartbeats();
                }
            }
            _ => {
                if now_ms >= self.election_deadline_ms {
                    self.start_pre_vote();
                }
            }
        }
    }

    /// Appends a proposal (one journal batch's payload) if this replica leads; returns its index.
    ///
    /// # Errors
    /// [`ProposeError`] when this replica cannot take proposals now.
    pub fn propose(&mut self, payload: Rc<[u8]>) -> Result<u64, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if self.transfer.is_some() {
            return Err(ProposeError::Transferring);
        }
        Ok(self.append_local(payload))
    }

    fn append_local(&mut self, payload: Rc<[u8]>) -> u64 {
        let entry = Entry {
            index: self.log.last_index() + 1,
            term: self.hard.term,
            payload,
        };
        let index = entry.index;
        self.log.append(entry.clone());
        self.out.entries.push(entry);
        if self.peers.is_empty() {
            self.maybe_commit();
        }
        index
    }

    /// Records how far the journal is durable, as [`Journal::flush_report`] read it after a
    /// flush. The report may be late: whatever a cut handed out after its epoch took away is
    /// ignored, and so is anything past a cut not yet handed out.
    ///
    /// # Panics
    /// If the report's epoch is one Raft never handed out (see the module docs).
    ///
    /// [`Journal::flush_report`]: crate::Journal::flush_report
    pub fn handle_flushed(&mut self, report: FlushReport) {
        let vouched = if self.bug == Some(InjectedBug::StaleFlushReport) {
            report.durable_index
        } else {
            self.log.vouched_durable(report)
        };
        self.log.set_durable(vouched.min(self.handed_last_index));
        match self.role {
            Role::Leader => self.maybe_commit(),
            _ => {
                if self.ack_pending
                    && let Some(leader) = self.leader
                {
                    self.send_append_ack(leader);
                }
            }
        }
    }

    /// Hands over entries the driver read from the journal for `peer` (see [`LogRead`]).
    pub fn handle_log_read(&mut self, peer: ReplicaId, entries: Vec<Entry>) {
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        p.reading = false;
        if self.role != Role::Leader {
            return;
        }
        let Some(first) = entries.first() else {
            return;
        };
        if first.index != p.next_index || p.inflight.len() >= self.config.inflight_appends_max {
            return; // stale: the follower moved meanwhile; the next round asks again
        }
        // Only entries that still match this leader's log.
        let valid: Vec<Entry> = entries
            .into_iter()
            .take_while(|e| self.log.term_at(e.index) == Some(e.term))
            .collect();
        if !valid.is_empty() {
            self.send_entries(peer, valid);
        }
    }

    /// Asks the leader to hand leadership to `to` as soon as it has caught up (rebalancing).
    /// Proposals are refused meanwhile; the attempt ends after an election timeout.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] when this replica does not lead.
    pub fn transfer_leadership(&mut self, to: ReplicaId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        }
        if to == self.config.id || !self.peers.contains(&to) {
            return Ok(());
        }
        self.transfer = Some((to, self.now_ms + self.config.election_timeout_ms));
        self.maybe_send_timeout_now();
        Ok(())
    }

    /// Handles a message from a peer.
    ///
    /// The core's clock is the `now_ms` of the last [`Raft::handle_tick`]: timers a message resets
    /// (the election deadline on hearing from the leader) count from it. A driver that sleeps
    /// until [`Raft::poll_timeout_ms`] must tick with the current time before handing messages
    /// over, or followers time out while hearing from their leader.
    pub fn handle_message(&mut self, msg: Message) {
        if msg.to != self.config.id || !self.peers.contains(&msg.from) {
            return;
        }
        if msg.term > self.hard.term {
            match &msg.body {
                // Pre-votes change no state: answered below in the current term.
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote { transfer, .. } if self.lease_active() && !transfer => {
                    // A leader was heard recently: this candidate cannot be needed.
                    return;
                }
                MessageBody::Append { .. } => self.become_follower(msg.term, Some(msg.from)),
                _ => self.become_follower(msg.term, None),
            }
        } else if msg.term < self.hard.term {
            self.answer_stale(&msg);
            return;
        }
        match msg.body {
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.on_pre_vote(msg.from, msg.term, last_index, last_term),
            MessageBody::PreVoteResponse { granted } => {
                self.on_pre_vote_response(msg.from, msg.term, granted);
            }
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(msg.from, last_index, last_term),
            MessageBody::VoteResponse { granted } => self.on_vote_response(msg.from, granted),
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit_index,
            } => self.on_append(msg.from, prev_index, prev_term, entries, commit_index),
            MessageBody::AppendResponse {
                durable_index,
                last_index,
                reject,
            } => self.on_append_response(msg.from, durable_index, last_index, reject),
            MessageBody::TimeoutNow => {
                if self.role == Role::Follower && self.leader == Some(msg.from) {
                    self.become_candidate(true);
                }
            }
            MessageBody::InstallSnapshot {
                snapshot_index,
                snapshot_term,
                offset,
                data,
                done,
            } => self.on_install_snapshot(
                msg.from,
                SnapshotChunk {
                    snapshot_index,
                    snapshot_term,
                    offset,
                    data,
                },
                done,
            ),
            MessageBody::InstallSnapshotResponse {
                snapshot_index,
                received_bytes,
            } => self.on_install_snapshot_response(msg.from, snapshot_index, received_bytes),
        }
    }

    /// A message from an older term: tell leaders and candidates they are stale.
    fn answer_stale(&mut self, msg: &Message) {
        let term = self.hard.term;
        match msg.body {
            MessageBody::Append { .. } => {
                let body = MessageBody::AppendResponse {
                    durable_index: 0,
                    last_index: 0,
                    reject: None,
                };
                self.send(msg.from, term, body);
            }
            MessageBody::PreVote { .. } => {
                self.send(
                    msg.from,
                    term,
                    MessageBody::PreVoteResponse { granted: false },
                );
            }
            MessageBody::Vote { .. } => {
                self.send(msg.from, term, MessageBody::VoteResponse { granted: false });
            }
            // A leader sending a snapshot sends nothing else to this replica: without an answer
            // in the higher term it would never learn of it, and this replica would stay cut
            // off (found by the engine simulation, seed 449).
            MessageBody::InstallSnapshot { snapshot_index, .. } => {
                self.send(
                    msg.from,
                    term,
                    MessageBody::InstallSnapshotResponse {
                        snapshot_index,
                        received_bytes: 0,
                    },
                );
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- roles

    fn become_follower(&mut self, term: u64, leader: Option<ReplicaId>) {
        if term > self.hard.term {
            self.hard = HardState { term, vote: None };
            self.hard_dirty = true;
            self.leader_contact_ms = None;
        }
        if self.role != Role::Follower || leader != self.leader {
            self.matched_index = 0;
            self.ack_pending = false;
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.progress.clear();
        self.votes.clear();
        self.transfer = None;
        self.reset_election_deadline();
    }

    fn start_pre_vote(&mut self) {
        if self.peers.is_empty() {
            self.become_candidate(false);
            return;
        }
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_deadline();
        let (term, last_index, last_term) = (
            self.hard.term + 1,
            self.log.last_index(),
            self.log.last_term(),
        );
        for peer in self.peers.clone() {
            let body = MessageBody::PreVote {
                last_index,
                last_term,
            };
            self.send(peer, term, body);
        }
    }

    fn become_candidate(&mut self, transfer: bool) {
        self.role = Role::Candidate;
        self.hard = HardState {
            term: self.hard.term + 1,
            vote: Some(self.config.id),
        };
        self.hard_dirty = true;
        self.leader = None;
        self.leader_contact_ms = None;
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        self.reset_election_deadline();
        if self.peers.is_empty() {
            self.become_leader();
            return;
        }
        let (term, last_index, last_term) =
            (self.hard.term, self.log.last_index(), self.log.last_term());
        for peer in self.peers.clone() {
            let body = MessageBody::Vote {
                last_index,
                last_term,
                transfer,
            };
            self.send(peer, term, body);
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.votes.clear();
        let (last, now) = (self.log.last_index(), self.now_ms);
        self.progress = self
            .peers
            .iter()
            .map(|&p| (p, Progress::new(last, now)))
            .collect();
        self.heartbeat_deadline_ms = now + self.config.heartbeat_interval_ms;
        self.quorum_check_deadline_ms = now + self.config.election_timeout_ms;
        // A no-op in the new term: entries of earlier terms commit only under one of this term.
        self.append_local(Rc::from(Vec::new()));
    }

    fn check_quorum(&mut self) {
        let window = self.config.election_timeout_ms;
        let now = self.now_ms;
        let heard = 1 + self
            .progress
            .values()
            .filter(|p| now < p.heard_ms + window)
            .count();
        if heard < self.quorum() {
            let term = self.hard.term;
            self.become_follower(term, None);
        } else {
            self.quorum_check_deadline_ms = now + window;
        }
    }

    // ---------------------------------------------------------------- elections

    fn on_pre_vote(&mut self, from: ReplicaId, term: u64, last_index: u64, last_term: u64) {
        let up_to_date = self.log.is_up_to_date(last_index, last_term)
            || self.bug == Some(InjectedBug::VoteIgnoresLog);
        let grant = term > self.hard.term && !self.lease_active() && up_to_date;
        let answer_term = if grant { term } else { self.hard.term };
        self.send(
            from,
            answer_term,
            MessageBody::PreVoteResponse { granted: grant },
        );
    }

    fn on_pre_vote_response(&mut self, from: ReplicaId, term: u64, granted: bool) {
        if self.role != Role::PreCandidate || term != self.hard.term + 1 || !granted {
            return;
        }
        self.votes.insert(from, true);
        if self.votes.values().filter(|g| **g).count() >= self.quorum() {
            self.become_candidate(false);
        }
    }

    fn on_vote(&mut self, from: ReplicaId, last_index: u64, last_term: u64) {
        let can_vote = self.hard.vote.is_none_or(|v| v == from);
        let up_to_date = self.log.is_up_to_date(last_index, last_term)
            || self.bug == Some(InjectedBug::VoteIgnoresLog);
        let grant = self.role == Role::Follower && can_vote && up_to_date;
        if grant {
            if self.hard.vote != Some(from) {
                self.hard.vote = Some(from);
                self.hard_dirty = true;
            }
            self.reset_election_deadline();
        }
        let term = self.hard.term;
        self.send(from, term, MessageBody::VoteResponse { granted: grant });
    }

    fn on_vote_response(&mut self, from: ReplicaId, granted: bool) {
        if self.role != Role::Candidate {
            return;
        }
        self.votes.insert(from, granted);
        if self.votes.values().filter(|g| **g).count() >= self.quorum() {
            self.become_leader();
        } else if self.votes.values().filter(|g| !**g).count() >= self.quorum() {
            let term = self.hard.term;
            self.become_follower(term, None);
        }
    }

    // ---------------------------------------------------------------- replication: follower

    fn on_append(
        &mut self,
        from: ReplicaId,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        leader_commit: u64,
    ) {
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.hard.term;
            self.become_follower(term, Some(from));
        }
        self.leader_contact_ms = Some(self.now_ms);
        self.reset_election_deadline();
        if self.receiving.is_some_and(|r| r.installing) {
            return; // the log is about to be replaced; the leader sends again
        }
        // Entries at or below the snapshot are committed and already part of it.
        let snapshot = self.log.snapshot_index();
        let (prev_index, prev_term, entries) = if prev_index < snapshot {
            let skip = usize::try_from(snapshot - prev_index).unwrap_or(usize::MAX);
            let rest: Vec<Entry> = entries.into_iter().skip(skip).collect();
            (
                snapshot,
                self.log.term_at(snapshot).expect("snapshot term"),
                rest,
            )
        } else {
            (prev_index, prev_term, entries)
        };
        match self.log.term_at(prev_index) {
            None => {
                let hint = RejectHint {
                    rejected_index: prev_index,
                    follower_last_index: self.log.last_index(),
                    conflict_term: 0,
                    conflict_term_first_index: 0,
                };
                self.send_reject(from, hint);
                return;
            }
            Some(term) if term != prev_term => {
                let hint = RejectHint {
                    rejected_index: prev_index,
                    follower_last_index: self.log.last_index(),
                    conflict_term: term,
                    conflict_term_first_index: self.log.first_index_of_term_at(prev_index),
                };
                self.send_reject(from, hint);
                return;
            }
            Some(_) => {}
        }
        let matched = prev_index + entries.len() as u64;
        let mut appended = false;
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    assert!(
                        entry.index > self.commit_index,
                        "replica {}: truncating committed index {} (commit {})",
                        self.config.id,
                        entry.index,
                        self.commit_index
                    );
                    self.truncate_after(entry.index - 1);
                }
                None => {}
            }
            self.log.append(entry.clone());
            self.out.entries.push(entry);
            appended = true;
        }
        self.matched_index = self.matched_index.max(matched);
        self.set_commit(leader_commit.min(self.matched_index));
        if appended
            && self.log.durable_index() < self.matched_index
            && self.bug != Some(InjectedBug::AckUnflushed)
        {
            self.ack_pending = true;
        } else {
            self.send_append_ack(from);
        }
    }

    fn truncate_after(&mut self, index: u64) {
        self.log.truncate_after(index);
        self.matched_index = self.matched_index.min(index);
        self.out.entries.retain(|e| e.index <= index);
        if index < self.handed_last_index {
            self.handed_last_index = index;
            self.out.truncate_after = Some(self.out.truncate_after.map_or(index, |t| t.min(index)));
        }
    }

    fn send_reject(&mut self, to: ReplicaId, hint: RejectHint) {
        let body = MessageBody::AppendResponse {
            durable_index: self.log.durable_index().min(self.matched_index),
            last_index: self.matched_index,
            reject: Some(hint),
        };
        let term = self.hard.term;
        self.send(to, term, body);
    }

    fn send_append_ack(&mut self, to: ReplicaId) {
        let durable = if self.bug == Some(InjectedBug::AckUnflushed) {
            self.matched_index
        } else {
            self.log.durable_index().min(self.matched_index)
        };
        self.ack_pending = durable < self.matched_index;
        let body = MessageBody::AppendResponse {
            durable_index: durable,
            last_index: self.matched_index,
            reject: None,
        };
        let term = self.hard.term;
        self.send(to, term, body);
    }

    fn on_install_snapshot(&mut self, from: ReplicaId, chunk: SnapshotChunk, done: bool) {
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.hard.term;
            self.become_follower(term, Some(from));
        }
        self.leader_contact_ms = Some(self.now_ms);
        self.reset_election_deadline();
        let (index, term) = (chunk.snapshot_index, chunk.snapshot_term);
        let own_snapshot = self.log.snapshot_index();
        if index <= own_snapshot || self.log.term_at(index) == Some(term) {
            // Already held, as entries or in a snapshot of our own (committed entries are the
            // same everywhere): log matching covers everything before it.
            self.matched_index = self.matched_index.max(index.max(own_snapshot));
            self.set_commit(index.min(self.log.last_index()));
            self.send_append_ack(from);
            return;
        }
        if self.now_ms < self.snapshot_refused_until_ms {
            // The last install failed here: no answer, so the leader sends a chunk again only
            // after its stall timeout instead of streaming the whole snapshot at once.
            return;
        }
        let receiving = match self.receiving {
            Some(r) if r.index == index && r.term == term => r,
            Some(r) if r.installing => return, // finish that one first
            _ => SnapshotReceive {
                index,
                term,
                received_bytes: 0,
                installing: false,
            },
        };
        let mut receiving = receiving;
        if !receiving.installing && chunk.offset == receiving.received_bytes {
            receiving.received_bytes += chunk.data.len() as u64;
            self.out.snapshot_chunks.push(chunk);
            if done {
                receiving.installing = true;
                self.out.install_snapshot = Some((index, term));
            }
        }
        self.receiving = Some(receiving);
        let term_now = self.hard.term;
        let body = MessageBody::InstallSnapshotResponse {
            snapshot_index: index,
            received_bytes: receiving.received_bytes,
        };
        self.send(from, term_now, body);
    }

    // ---------------------------------------------------------------- replication: leader

    fn on_install_snapshot_response(
        &mut self,
        from: ReplicaId,
        snapshot_index: u64,
        received_bytes: u64,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let now = self.now_ms;
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.heard_ms = now;
        if let Some(send) = p.snapshot.as_mut()
            && send.index == snapshot_index
        {
            if received_bytes > send.acked_bytes {
                p.progressed_ms = now;
            }
            send.acked_bytes = received_bytes;
            send.busy = false;
        }
    }

    fn on_append_response(
        &mut self,
        from: ReplicaId,
        durable_index: u64,
        last_index: u64,
        reject: Option<RejectHint>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let now = self.now_ms;
        let log_last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.heard_ms = now;
        // A follower never claims more than the leader sent it.
        let last_index = last_index.min(log_last);
        let durable_index = durable_index.min(last_index);
        if last_index > p.match_index || durable_index > p.durable_index {
            p.progressed_ms = now;
        }
        p.match_index = p.match_index.max(last_index);
        p.durable_index = p.durable_index.max(durable_index);
        if p.snapshot.is_some_and(|s| p.match_index >= s.index) {
            p.snapshot = None;
        }
        while p.inflight.front().is_some_and(|l| *l <= p.match_index) {
            p.inflight.pop_front();
        }
        if let Some(hint) = reject {
            if hint.rejected_index <= p.match_index || hint.follower_last_index < p.match_index {
                // The follower lacks what was taken as matching: entries it had not flushed
                // were lost in a crash (or the rejection is an old one). Believe it, but
                // never below what it flushed, which no crash takes away.
                p.match_index = hint
                    .follower_last_index
                    .min(hint.rejected_index.saturating_sub(1))
                    .max(p.durable_index);
            }
            let next = if hint.follower_last_index < hint.rejected_index {
                hint.follower_last_index + 1
            } else if hint.conflict_term > 0 {
                // Skip the follower's whole conflicting term, or up to our own entries of
                // that term when we have them.
                let ours = self
                    .log
                    .last_index_with_term_at_most(hint.conflict_term, hint.rejected_index - 1);
                hint.conflict_term_first_index
                    .max(ours.min(hint.rejected_index - 1) + 1)
            } else {
                hint.rejected_index
            };
            p.reset_to_probe(next.min(hint.rejected_index));
        } else {
            if p.probing {
                p.probing = false;
                p.next_index = p.match_index + 1;
                p.inflight.clear();
            }
            p.next_index = p.next_index.max(p.match_index + 1);
        }
        self.maybe_commit();
        self.maybe_send_timeout_now();
    }

    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let mut durable: Vec<u64> = self.progress.values().map(|p| p.durable_index).collect();
        durable.push(self.log.durable_index());
        durable.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = durable[self.quorum() - 1];
        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.hard.term) {
            self.set_commit(candidate);
        }
    }

    fn maybe_send_timeout_now(&mut self) {
        let Some((to, _)) = self.transfer else {
            return;
        };
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|p| p.durable_index == self.log.last_index());
        if caught_up {
            let term = self.hard.term;
            self.send(to, term, MessageBody::TimeoutNow);
        }
    }

    fn broadcast_heartbeats(&mut self) {
        let now = self.now_ms;
        let stall_ms = 2 * self.config.heartbeat_interval_ms;
        for peer in self.peers.clone() {
            let p = self.progress.get_mut(&peer).expect("a progress per peer");
            // A snapshot chunk or its answer lost: send from what the follower confirmed.
            if let Some(send) = p.snapshot.as_mut()
                && send.busy
                && now >= p.progressed_ms + stall_ms
            {
                send.busy = false;
                p.progressed_ms = now;
            }
            // Appends or answers lost on the way: start over from what is known to match.
            if !p.inflight.is_empty() && now >= p.progressed_ms + stall_ms {
                let next = p.match_index + 1;
                p.reset_to_probe(next);
                p.progressed_ms = now;
            }
            let prev_index = p.match_index;
            let Some(prev_term) = self.log.term_at(prev_index) else {
                continue;
            };
            let body = MessageBody::Append {
                prev_index,
                prev_term,
                entries: Vec::new(),
                commit_index: self.commit_index,
            };
            let term = self.hard.term;
            self.send(peer, term, body);
        }
    }

    /// Sends every follower what it is missing, within the pipeline bound. Runs at every
    /// `ready`, so it walks the peers by position instead of cloning the list.
    fn replicate(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        for position in 0..self.peers.len() {
            let peer = self.peers[position];
            loop {
                let p = &self.progress[&peer];
                let busy = if p.probing {
                    !p.inflight.is_empty()
                } else {
                    p.inflight.len() >= self.config.inflight_appends_max
                };
                if busy || p.reading || p.next_index > self.log.last_index() {
                    break;
                }
                let from = p.next_index;
                if from <= self.log.snapshot_index() {
                    self.send_snapshot(peer);
                    break;
                }
                if let Some(entries) = self.log.cached_entries(from, self.config.append_bytes_max) {
                    self.send_entries(peer, entries);
                } else {
                    self.progress.get_mut(&peer).expect("peer").reading = true;
                    self.out.reads.push(LogRead {
                        peer,
                        from_index: from,
                        bytes_max: self.config.append_bytes_max,
                    });
                    break;
                }
            }
        }
    }

    /// Asks the driver for the next chunk of the snapshot `peer` needs, one at a time.
    fn send_snapshot(&mut self, peer: ReplicaId) {
        let (index, term) = (
            self.log.snapshot_index(),
            self.log
                .term_at(self.log.snapshot_index())
                .expect("the snapshot's term"),
        );
        let bytes_max = self.config.snapshot_chunk_bytes;
        let p = self.progress.get_mut(&peer).expect("a progress per peer");
        let send = p.snapshot.get_or_insert(SnapshotSend {
            index,
            term,
            acked_bytes: 0,
            busy: false,
        });
        if send.index != index {
            // A newer snapshot: start over with it.
            *send = SnapshotSend {
                index,
                term,
                acked_bytes: 0,
                busy: false,
            };
        }
        if send.busy {
            return;
        }
        send.busy = true;
        self.out.snapshot_reads.push(SnapshotRead {
            peer,
            snapshot_index: index,
            offset: send.acked_bytes,
            bytes_max,
        });
    }

    fn send_entries(&mut self, peer: ReplicaId, entries: Vec<Entry>) {
        let first = entries.first().expect("entries to send").index;
        let last = entries.last().expect("entries to send").index;
        let prev_index = first - 1;
        let prev_term = self.log.term_at(prev_index).expect("prev within the log");
        let p = self.progress.get_mut(&peer).expect("a progress per peer");
        p.next_index = last + 1;
        p.inflight.push_back(last);
        let body = MessageBody::Append {
            prev_index,
            prev_term,
            entries,
            commit_index: self.commit_index,
        };
        let term = self.hard.term;
        self.send(peer, term, body);
    }

    // ---------------------------------------------------------------- outputs

    /// Everything the driver must do now (see [`Ready`]). Number them: call [`Raft::advance`]
    /// with each before asking for the next.
    ///
    /// # Panics
    /// If the previous `Ready` was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert_eq!(
            self.advanced_number, self.ready_number,
            "advance the previous Ready first"
        );
        self.replicate();
        let mut ready = std::mem::take(&mut self.out);
        self.ready_number += 1;
        ready.number = self.ready_number;
        if let Some(cut) = ready.truncate_after {
            // Counted when handed out, not when made: cuts made and then cleared by an
            // installed snapshot never reach the journal.
            self.log.note_handed_cut(cut);
        }
        if self.hard_dirty {
            self.hard_dirty = false;
            ready.hard_state = Some(self.hard);
            // Everything said now may depend on the new term or vote.
            let mut now = std::mem::take(&mut ready.messages);
            now.append(&mut ready.messages_after_persist);
            ready.messages_after_persist = now;
        }
        if self.commit_dirty {
            self.commit_dirty = false;
            ready.commit_index = Some(self.commit_index);
        }
        self.handed_last_index = self.log.last_index();
        ready
    }

    /// The driver has carried out `Ready` number `number`.
    ///
    /// # Panics
    /// If `number` is not the last `Ready` handed out.
    pub fn advance(&mut self, number: u64) {
        assert_eq!(number, self.ready_number, "advance the Ready just taken");
        self.advanced_number = number;
    }
}

#[cfg(test)]
mod tests;
