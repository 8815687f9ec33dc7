//! The engine side of a partition replica: commands processed on the leader, committed
//! entries replayed everywhere, side effects released at commit.
//!
//! Every journal entry starts with a tag byte: [`ENTRY_RAW`] for a raw append (the log
//! benchmark's payloads, which the engine ignores), [`ENTRY_RECORDS`] for the records of one
//! processed command (`sluice_engine::record::encode_records`). Raft's own no-op entries are
//! empty. Commands reach a partition as append payloads tagged [`PAYLOAD_COMMAND`], job
//! activation polls tagged [`PAYLOAD_POLL`].
//!
//! **Polls** are how jobs are pushed: a job activation that finds no job is not answered but
//! parked (it holds no backpressure slot and writes nothing) until the engine makes jobs of its
//! type available (`SideEffect::JobsAvailable`), then processed again right after the command
//! that made them, so its activation entry follows theirs and usually commits in the same
//! flush; when its wait runs out it is answered with the empty batch. A worker's stream thus
//! gets a job as its creation commits, with no polling loop. Parked polls are bounded in count
//! and bytes ([`crate::parked`]); a poll over the bound is answered `Overloaded` (the gateway's
//! `RESOURCE_EXHAUSTED`), and expiry and wake-ups find their poll without scanning.
//!
//! The rules, from the design:
//! - **Followers** replay committed entries in order ([`EngineRunner::apply_committed`]).
//! - **A new leader** first replays everything its log holds up to its commit index, and starts
//!   processing only once its commit index covers the first entry of its own term: then every
//!   earlier entry is committed and applied, so it starts warm and exact.
//! - **The leader** processes each command at once and proposes its records as one entry; its
//!   engine state runs ahead of the commit index (speculative). Replies and cross-partition
//!   commands wait until the entry commits.
//! - **Leadership lost** with speculative state: the engine is rebuilt from the committed log
//!   (the journal is replayed from the start: snapshots are not taken by the broker yet), and
//!   every reply still waiting is answered `Unavailable`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use sluice_engine::record::{decode_records, encode_records};
use sluice_engine::snapshot::{decode_snapshot, encode_snapshot};
use sluice_engine::state::State;
use sluice_engine::{Engine, EngineConfig, Output, Record, RecordType, RequestId, SideEffect};
use sluice_log::Journal;
use sluice_log::raft::{ProposeError, Raft, Role};
use sluice_log::storage::DmaStorage;

use crate::backpressure::AimdLimiter;
use crate::parked::{ParkedPolls, parked_poll_bytes};
use crate::partition::{AppendOutcome, RaftOutbox, Responder, node_id};
use crate::partitioning::PartitionId;
use crate::snapshots::StoredSnapshot;

/// Tag of a journal entry holding a raw append.
pub const ENTRY_RAW: u8 = 0x00;
/// Tag of a journal entry holding the records of one processed command.
pub const ENTRY_RECORDS: u8 = 0x01;
/// Tag of an append payload that is a client's engine command (one encoded command record),
/// from a gateway: only the commands a client may send are taken ([`client_may_send`]).
pub const PAYLOAD_COMMAND: u8 = 0x01;
/// Tag of an append payload that is a job activation poll: the tag, the wait in ms (u32,
/// little-endian), then one encoded job-batch activation command.
pub const PAYLOAD_POLL: u8 = 0x02;
/// Tag of an append payload that is a command from a partition's engine (distribution,
/// subscriptions, correlations): it reaches a partition only from this broker's engines or
/// over the cluster's mutual-TLS transport, never from a client.
pub const PAYLOAD_INTERNAL: u8 = 0x03;

/// Whether a client (through a gateway) may send `command`: the gateway's commands
/// ([`sluice_engine::client_may_send`]), and a deployment only as a new one (with a key, it is a
/// partition's distribution).
#[must_use]
pub fn client_may_send(command: &Record) -> bool {
    sluice_engine::client_may_send(command.value_type, command.intent)
        && !(command.value_type == sluice_engine::ValueType::Deployment && command.key > 0)
}

/// Bytes of committed entries read from the journal at a time when replaying.
const REPLAY_READ_BYTES_MAX: u64 = 4 << 20;
/// How long the engine's clock work waits after its output was too large for an entry.
const TICK_PAUSE_AFTER_TOO_LARGE_MS: i64 = 1_000;

/// The journal entry holding `records`: the tag, then the encoded records.
fn entry_payload(records: &[Record]) -> Vec<u8> {
    let encoded = encode_records(records);
    let mut payload = Vec::with_capacity(encoded.len() + 1);
    payload.push(ENTRY_RECORDS);
    payload.extend_from_slice(&encoded);
    payload
}

/// A command of this partition's engine for another partition, as an append payload: the
/// internal tag, then the encoded record.
#[must_use]
pub fn command_payload(command: &Record) -> Vec<u8> {
    let encoded = encode_records(std::slice::from_ref(command));
    let mut payload = Vec::with_capacity(encoded.len() + 1);
    payload.push(PAYLOAD_INTERNAL);
    payload.extend_from_slice(&encoded);
    payload
}

/// Decodes a command payload (without its tag): exactly one command record.
pub fn decode_command(bytes: &[u8]) -> Result<Record, String> {
    let mut records = decode_records(bytes).map_err(|error| error.to_string())?;
    if records.len() != 1 {
        return Err(format!(
            "expected one command record, got {}",
            records.len()
        ));
    }
    let record = records.pop().expect("one record");
    if record.record_type != RecordType::Command {
        return Err(format!(
            "expected a command, got a record of type {:?}",
            record.record_type
        ));
    }
    Ok(record)
}

struct QueuedCommand {
    command: Record,
    responder: Option<Responder>,
    arrived: Instant,
    /// For a poll: until when (wall-clock ms) it may be parked.
    poll_until_ms: Option<i64>,
}

/// A job activation poll that found no job, waiting for jobs of its type (its type and
/// deadline are the [`ParkedPolls`]' keys).
struct Parked {
    command: Record,
    responder: Responder,
    /// The empty batch to answer with when the wait runs out.
    reply: Record,
}

/// The engine of one replica and everything between it and the log.
pub(crate) struct EngineRunner {
    partition_id: PartitionId,
    config: EngineConfig,
    engine: Engine,
    /// The highest log index whose records are in `engine`.
    applied_index: u64,
    commands: VecDeque<QueuedCommand>,
    /// Requests whose reply has not been released: the client's responder and when the
    /// command arrived.
    waiting: HashMap<RequestId, (Responder, Instant)>,
    next_request: RequestId,
    /// Side effects by the log index that must commit before they are carried out.
    effects: BTreeMap<u64, Vec<SideEffect>>,
    out: Output,
    /// The replica led when last looked at.
    was_leader: bool,
    pub(crate) commands_processed: u64,
    pub(crate) rebuilds: u64,
    /// The snapshot the engine started from: a rebuild starts from it again.
    base: Option<StoredSnapshot>,
    /// Records applied since the last snapshot.
    pub(crate) records_since_snapshot: u64,
    /// The partition's backpressure: every queued command holds a slot until the entry with
    /// its records commits (or it is dropped).
    limiter: Rc<AimdLimiter>,
    /// Slots of processed commands: (entry index, arrival).
    slots: VecDeque<(u64, Instant)>,
    /// Polls waiting for jobs, bounded.
    parked: ParkedPolls<Parked>,
    /// Polls answered `Overloaded` because the parked ones were at their bound, for metrics.
    pub(crate) polls_refused: u64,
    /// Largest entry proposed; an output that would encode larger is rolled back and its
    /// command rejected (`EXCEEDED_BATCH_RECORD_SIZE`).
    entry_bytes_max: usize,
    /// The engine was rolled back (rebuilt) while leading: it replays every entry of the log,
    /// committed or not, before it processes again.
    replay_to_last: bool,
    /// Rolled-back clock work: no tick before this wall-clock ms.
    ticks_paused_until_ms: i64,
    /// Outputs rolled back for being too large, for metrics.
    pub(crate) outputs_too_large: u64,
}

/// What became of a processed command's output.
enum Proposal {
    /// Proposed (or nothing to write); its effects are filed.
    Done,
    /// Raft refused: leadership is lost, the engine was rebuilt.
    Lost,
    /// The output encodes to this many bytes, above the entry limit: nothing was proposed.
    TooLarge(usize),
}

impl EngineRunner {
    /// The runner of a replica whose entries, job batches and instance results are bounded by
    /// `limits` (derived from `maxMessageSize`), its engine by `caps` (`engine.*`).
    pub(crate) fn new(
        partition_id: PartitionId,
        partition_count: u32,
        limiter: Rc<AimdLimiter>,
        limits: crate::limits::SizeLimits,
        caps: crate::config::EngineCaps,
    ) -> Self {
        let config = caps.apply(EngineConfig {
            job_batch_bytes_max: limits.job_batch_bytes,
            result_variables_bytes_max: limits.result_variables_bytes,
            ..EngineConfig::new(partition_id, partition_count)
        });
        Self {
            partition_id,
            engine: Engine::new(config.clone()),
            config,
            applied_index: 0,
            commands: VecDeque::new(),
            waiting: HashMap::new(),
            next_request: 1,
            effects: BTreeMap::new(),
            out: Output::default(),
            was_leader: false,
            commands_processed: 0,
            rebuilds: 0,
            base: None,
            records_since_snapshot: 0,
            limiter,
            slots: VecDeque::new(),
            parked: ParkedPolls::default(),
            polls_refused: 0,
            entry_bytes_max: limits.entry_bytes,
            replay_to_last: false,
            ticks_paused_until_ms: 0,
            outputs_too_large: 0,
        }
    }

    /// Gives back every slot still held: the commands were dropped without a reply.
    fn drop_slots(&mut self) {
        for _ in &self.commands {
            self.limiter.release(None);
        }
        for _ in self.slots.drain(..) {
            self.limiter.release(None);
        }
    }

    /// Starts from a snapshot: its state, applied up to its index.
    pub(crate) fn restore(&mut self, snapshot: StoredSnapshot, state: State) {
        self.engine = Engine::with_state(self.config.clone(), state);
        self.applied_index = snapshot.index;
        self.base = Some(snapshot);
        self.records_since_snapshot = 0;
    }

    /// The engine's state, encoded, when it holds nothing speculative: `Some((index, bytes))`.
    pub(crate) fn snapshot_now(&mut self, commit_index: u64) -> Option<(u64, Vec<u8>)> {
        if self.applied_index != commit_index {
            return None;
        }
        Some((self.applied_index, encode_snapshot(self.engine.state())))
    }

    /// Remembers the snapshot just written as the base of future rebuilds. It covers the
    /// `records_covered` records counted when it was taken; those applied while it was being
    /// written count towards the next one.
    pub(crate) fn snapshot_taken(&mut self, snapshot: StoredSnapshot, records_covered: u64) {
        self.base = Some(snapshot);
        self.records_since_snapshot = self.records_since_snapshot.saturating_sub(records_covered);
    }

    pub(crate) fn applied_index(&self) -> u64 {
        self.applied_index
    }

    pub(crate) fn has_commands(&self) -> bool {
        !self.commands.is_empty()
    }

    /// Queues a command; `responder` hears the reply once it is committed. A poll (a job
    /// activation with `poll_wait_ms`) that finds no job is parked up to that long.
    pub(crate) fn queue(
        &mut self,
        command: Record,
        responder: Option<Responder>,
        poll_wait_ms: Option<u32>,
    ) {
        self.commands.push_back(QueuedCommand {
            command,
            responder,
            arrived: Instant::now(),
            poll_until_ms: poll_wait_ms
                .map(|wait_ms| Self::wall_clock_ms().saturating_add(i64::from(wait_ms))),
        });
    }

    /// Polls parked, for metrics.
    pub(crate) fn parked_polls(&self) -> usize {
        self.parked.len()
    }

    /// Answers the parked polls whose wait ran out with their empty batch.
    fn expire_parked(&mut self, now_ms: i64) {
        let index = self.applied_index;
        while let Some(parked) = self.parked.pop_expired(now_ms) {
            (parked.responder)(AppendOutcome::Committed {
                index,
                response: Some(encode_records(&[parked.reply]).to_vec()),
            });
        }
    }

    /// Queues again the longest-parked poll for `job_type`, in front: one per job made
    /// available, and another whenever a woken poll could not take every job there was. It
    /// takes a backpressure slot again, admitted whatever the limit, like a completion.
    fn wake_parked(&mut self, job_type: &str) {
        let Some((parked, until_ms)) = self.parked.take_oldest(job_type) else {
            return;
        };
        self.limiter.try_acquire(true);
        self.commands.push_front(QueuedCommand {
            command: parked.command,
            responder: Some(parked.responder),
            arrived: Instant::now(),
            poll_until_ms: Some(until_ms),
        });
    }

    /// The job type of a poll whose activation (in `self.out`) left jobs behind.
    fn truncated_activation(&self) -> Option<String> {
        self.out
            .side_effects
            .iter()
            .find_map(|effect| match effect {
                SideEffect::Respond { record, .. } => match &record.value {
                    sluice_engine::record::RecordValue::JobBatch(batch) if batch.truncated => {
                        Some(batch.job_type.clone())
                    }
                    _ => None,
                },
                _ => None,
            })
    }

    /// Parks the poll `command` if its processing found no job (`self.out` holds that
    /// processing: nothing to write, only the empty reply) and its wait has not run out.
    fn try_park(&mut self, command: Record, until_ms: i64, request: Option<RequestId>) -> bool {
        let Some(request) = request else {
            return false;
        };
        let sluice_engine::record::RecordValue::JobBatch(activation) = &command.value else {
            return false;
        };
        let empty_reply = self.out.records.is_empty()
            && matches!(
                &self.out.side_effects[..],
                [SideEffect::Respond { request: answered, record }]
                    if *answered == request
                        && record.record_type == RecordType::Event
                        && matches!(
                            &record.value,
                            sluice_engine::record::RecordValue::JobBatch(batch)
                                if batch.jobs.is_empty()
                        )
            );
        if !empty_reply || until_ms <= Self::wall_clock_ms() {
            return false;
        }
        let Some((responder, arrived)) = self.waiting.remove(&request) else {
            return false;
        };
        let Some(SideEffect::Respond { record: reply, .. }) = self.out.side_effects.pop() else {
            unreachable!("checked above: one Respond");
        };
        let millis = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.limiter.release(Some(millis));
        let bytes = parked_poll_bytes(
            &activation.job_type,
            &activation.worker,
            &activation.fetch_variables,
        );
        let job_type = activation.job_type.clone();
        let parked = Parked {
            command,
            responder,
            reply,
        };
        if let Err((parked, full)) = self.parked.park(&job_type, until_ms, bytes, parked) {
            // Parking it would exceed a bound: the poll is answered at once, as overload, so
            // its gateway backs off instead of asking again at once.
            self.polls_refused += 1;
            (parked.responder)(AppendOutcome::Overloaded {
                message: format!(
                    "partition {} cannot park the job poll: {full}; retry shortly",
                    self.partition_id
                ),
            });
        }
        true
    }

    /// Wall-clock milliseconds: the engine's `now` (timers and deadlines are absolute times).
    pub(crate) fn wall_clock_ms() -> i64 {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(i64::MAX)
    }

    /// Whether the replica leads and has applied everything before its term: it may process.
    pub(crate) fn leader_ready(&self, raft: &Raft) -> bool {
        if raft.role() != Role::Leader {
            return false;
        }
        let log = raft.log();
        let last = log.last_index();
        if log.term_at(last) != Some(raft.term()) {
            return false;
        }
        // Everything up to the snapshot is committed; after it, the term's first entry counts.
        let term_start = if last <= log.snapshot_index() {
            log.snapshot_index()
        } else {
            log.first_index_of_term_at(last)
        };
        raft.commit_index() >= term_start
            && self.applied_index >= raft.commit_index()
            && !self.replay_to_last
    }

    /// Notices a change of role: a replica that stops leading drops its speculative state.
    pub(crate) fn on_role(&mut self, raft: &Raft) {
        let leads = raft.role() == Role::Leader;
        if self.was_leader && !leads {
            self.step_down(raft.commit_index(), raft.leader().map(node_id));
        }
        self.was_leader = leads;
    }

    fn step_down(&mut self, commit_index: u64, leader: Option<crate::partitioning::NodeId>) {
        self.drop_slots();
        for queued in self.commands.drain(..) {
            if let Some(responder) = queued.responder {
                responder(AppendOutcome::NotLeader { leader });
            }
        }
        for parked in self.parked.drain() {
            (parked.responder)(AppendOutcome::NotLeader { leader });
        }
        for (_, (responder, _)) in self.waiting.drain() {
            responder(AppendOutcome::Unavailable {
                message: format!(
                    "leadership was lost before the command's records committed; they {}",
                    crate::client_api::MAYBE_COMMITTED
                ),
            });
        }
        self.effects.clear();
        self.replay_to_last = false;
        if self.applied_index > commit_index {
            self.rebuild();
        }
    }

    /// Starts over from the last snapshot (or an empty engine): the journal is replayed after
    /// it. The snapshot decoded when it was taken or loaded, so it decodes again.
    fn rebuild(&mut self) {
        self.rebuilds += 1;
        if let Some(base) = &self.base
            && let Ok(state) = decode_snapshot(&base.bytes)
        {
            self.engine = Engine::with_state(self.config.clone(), state);
            self.applied_index = base.index;
            return;
        }
        self.engine = Engine::new(self.config.clone());
        self.applied_index = 0;
    }

    /// The log lost entries after `index` (a new leader's log replaced them).
    pub(crate) fn on_truncated(&mut self, index: u64) {
        if self.applied_index > index {
            self.rebuild();
        }
    }

    /// Replays committed entries not yet in the engine; after a roll-back on the leader, every
    /// entry of its log (its own, not yet committed, included).
    pub(crate) async fn apply_committed(
        &mut self,
        raft: &Raft,
        journal: &Journal<DmaStorage>,
    ) -> anyhow::Result<()> {
        let commit = if self.replay_to_last && raft.role() == Role::Leader {
            raft.log().last_index()
        } else {
            raft.commit_index()
        };
        self.replay_until(commit, raft, journal).await?;
        if self.replay_to_last && self.applied_index >= raft.log().last_index() {
            self.replay_to_last = false;
        }
        Ok(())
    }

    /// Replays the log's entries after the applied index up to `commit`.
    async fn replay_until(
        &mut self,
        commit: u64,
        raft: &Raft,
        journal: &Journal<DmaStorage>,
    ) -> anyhow::Result<()> {
        while self.applied_index < commit {
            let from = self.applied_index + 1;
            let cached = raft
                .log()
                .cached_entries(from, REPLAY_READ_BYTES_MAX)
                .filter(|entries| !entries.is_empty());
            if let Some(entries) = cached {
                for entry in entries {
                    if entry.index > commit {
                        break;
                    }
                    self.replay_entry(entry.index, &entry.payload)?;
                }
            } else {
                let mut reader = journal.reader(from);
                let mut bytes = 0;
                while bytes < REPLAY_READ_BYTES_MAX && self.applied_index < commit {
                    let Some(batch) = reader.next(journal).await? else {
                        anyhow::bail!(
                            "the journal ends before the commit index {commit} (applied {})",
                            self.applied_index
                        );
                    };
                    bytes += batch.payload.len() as u64;
                    self.replay_entry(batch.index, &batch.payload)?;
                }
            }
        }
        Ok(())
    }

    fn replay_entry(&mut self, index: u64, payload: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(
            index == self.applied_index + 1,
            "replaying entry {index} after {}",
            self.applied_index
        );
        if payload.first() == Some(&ENTRY_RECORDS) {
            let records = decode_records(&payload[1..]).map_err(|error| {
                anyhow::anyhow!(
                    "partition {}: entry {index} holds records that do not decode: {error}",
                    self.partition_id
                )
            })?;
            for record in &records {
                self.engine.replay(record);
            }
            self.records_since_snapshot += records.len() as u64;
        }
        self.applied_index = index;
        Ok(())
    }

    /// Processes queued commands (at most `max`) and, when due, the engine's clock work;
    /// proposes the records. Call only when [`Self::leader_ready`].
    pub(crate) fn process(&mut self, raft: &mut Raft, max: usize) {
        let now_ms = Self::wall_clock_ms();
        self.expire_parked(now_ms);
        for _ in 0..max {
            let Some(queued) = self.commands.pop_front() else {
                break;
            };
            let arrived = queued.arrived;
            let request = queued.responder.map(|responder| {
                let request = self.next_request;
                self.next_request += 1;
                self.waiting.insert(request, (responder, arrived));
                request
            });
            self.out.clear();
            // A poll keeps its command to process it again if it is parked.
            let (command, poll) = match queued.poll_until_ms {
                Some(until_ms) => (queued.command.clone(), Some((queued.command, until_ms))),
                None => (queued.command, None),
            };
            self.engine.process(command, request, now_ms, &mut self.out);
            self.commands_processed += 1;
            if let Some((command, until_ms)) = poll {
                if self.try_park(command, until_ms, request) {
                    continue;
                }
                if let Some(job_type) = self.truncated_activation() {
                    self.wake_parked(&job_type);
                }
            }
            let available = self.jobs_made_available();
            match self.propose_output(raft) {
                Proposal::Done => {}
                Proposal::Lost => {
                    // Its slot went with the step-down's; the command itself is lost unanswered.
                    self.limiter.release(None);
                    return;
                }
                Proposal::TooLarge(bytes) => {
                    self.reject_too_large(raft, request, bytes, arrived);
                    return;
                }
            }
            self.slots.push_back((self.applied_index, arrived));
            for job_type in available {
                self.wake_parked(&job_type);
            }
        }
        if now_ms >= self.ticks_paused_until_ms
            && self
                .engine
                .next_deadline_ms()
                .is_some_and(|deadline| deadline <= now_ms)
        {
            self.out.clear();
            self.engine.tick(now_ms, &mut self.out);
            let available = self.jobs_made_available();
            match self.propose_output(raft) {
                Proposal::Done => {
                    for job_type in available {
                        self.wake_parked(&job_type);
                    }
                }
                Proposal::Lost => {}
                Proposal::TooLarge(bytes) => {
                    // No command to reject: the clock work is undone and tried again later.
                    eprintln!(
                        "partition {}: the engine's clock work made an entry of {bytes} bytes, \
                         above the limit of {} bytes; rolled back, retrying in {} ms",
                        self.partition_id, self.entry_bytes_max, TICK_PAUSE_AFTER_TOO_LARGE_MS
                    );
                    self.roll_back();
                    self.ticks_paused_until_ms =
                        now_ms.saturating_add(TICK_PAUSE_AFTER_TOO_LARGE_MS);
                }
            }
        }
    }

    /// Undoes speculative processing that was not proposed: the engine starts again from its
    /// base and replays the whole log, its own uncommitted entries included, before it
    /// processes anything else.
    fn roll_back(&mut self) {
        self.outputs_too_large += 1;
        self.out.clear();
        self.rebuild();
        self.replay_to_last = true;
    }

    /// The output of the command answering `request` was too large for one entry: roll it back
    /// and write the command with its rejection instead (Zeebe's `EXCEEDED_BATCH_RECORD_SIZE`),
    /// answered once that entry commits.
    fn reject_too_large(
        &mut self,
        raft: &mut Raft,
        request: Option<RequestId>,
        bytes: usize,
        arrived: Instant,
    ) {
        let command = self.out.records.first().cloned();
        self.roll_back();
        let Some(command) = command else {
            self.limiter.release(None);
            return;
        };
        let reason = format!(
            "Expected to process the command, but the records it produces take {bytes} bytes, \
             above the largest log entry of {} bytes (derived from maxMessageSize); send \
             smaller variables or resources",
            self.entry_bytes_max
        );
        let rejection = Record {
            record_type: RecordType::CommandRejection,
            rejection: Some(sluice_engine::record::Rejection {
                rejection_type: sluice_engine::RejectionType::ExceededBatchRecordSize,
                reason,
            }),
            ..command.clone()
        };
        let payload = entry_payload(&[command, rejection.clone()]);
        if payload.len() > self.entry_bytes_max {
            // Not even the command fits (it came from another partition): answer at once.
            self.limiter.release(None);
            if let Some(request) = request
                && let Some((responder, _)) = self.waiting.remove(&request)
            {
                responder(AppendOutcome::Committed {
                    index: 0,
                    response: Some(encode_records(&[rejection]).to_vec()),
                });
            }
            return;
        }
        match raft.propose(Rc::from(payload)) {
            Ok(index) => {
                // The engine applies the entry when it replays up to the log's end.
                if let Some(request) = request {
                    self.effects
                        .entry(index)
                        .or_default()
                        .push(SideEffect::Respond {
                            request,
                            record: rejection,
                        });
                }
                self.slots.push_back((index, arrived));
            }
            Err(error) => {
                self.limiter.release(None);
                let leader = match error {
                    ProposeError::NotLeader { leader } => leader.map(node_id),
                    ProposeError::Transferring => None,
                };
                self.step_down(raft.commit_index(), leader);
            }
        }
    }

    /// The job types `self.out` made activatable, when polls are parked. Those polls are
    /// woken at once, not when the jobs' entry commits: their activation is the next entry,
    /// so it usually commits in the same flush, and its answer is released only after the
    /// jobs' entry committed anyway (entries commit in order).
    fn jobs_made_available(&self) -> Vec<String> {
        if self.parked.is_empty() {
            return Vec::new();
        }
        self.out
            .side_effects
            .iter()
            .filter_map(|effect| match effect {
                SideEffect::JobsAvailable { job_type } => Some(job_type.clone()),
                _ => None,
            })
            .collect()
    }

    /// Proposes `self.out`'s records and files its side effects under the entry's index.
    fn propose_output(&mut self, raft: &mut Raft) -> Proposal {
        let index = if self.out.records.is_empty() {
            self.applied_index
        } else {
            let payload = entry_payload(&self.out.records);
            if payload.len() > self.entry_bytes_max {
                return Proposal::TooLarge(payload.len());
            }
            self.records_since_snapshot += self.out.records.len() as u64;
            match raft.propose(Rc::from(payload)) {
                Ok(index) => {
                    self.applied_index = index;
                    index
                }
                Err(error) => {
                    // The engine already holds the records that were not proposed.
                    let leader = match error {
                        ProposeError::NotLeader { leader } => leader.map(node_id),
                        ProposeError::Transferring => None,
                    };
                    self.step_down(raft.commit_index(), leader);
                    self.rebuild();
                    return Proposal::Lost;
                }
            }
        };
        let effects = std::mem::take(&mut self.out.side_effects);
        if !effects.is_empty() {
            self.effects.entry(index).or_default().extend(effects);
        }
        Proposal::Done
    }

    /// Carries out the side effects of entries up to `commit`; records each reply's time from
    /// the command's arrival in `latency_us`.
    pub(crate) fn release(
        &mut self,
        commit: u64,
        outbox: &dyn RaftOutbox,
        latency_us: &mut hdrhistogram::Histogram<u64>,
    ) {
        while let Some(&(index, arrived)) = self.slots.front() {
            if index > commit {
                break;
            }
            self.slots.pop_front();
            let millis = u64::try_from(arrived.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.limiter.release(Some(millis));
        }
        while let Some(entry) = self.effects.first_entry() {
            if *entry.key() > commit {
                break;
            }
            let (index, effects) = entry.remove_entry();
            for effect in effects {
                match effect {
                    SideEffect::Respond { request, record } => {
                        if let Some((responder, arrived)) = self.waiting.remove(&request) {
                            let micros = u64::try_from(arrived.elapsed().as_micros())
                                .unwrap_or(u64::MAX)
                                .min(latency_us.high());
                            let _ = latency_us.record(micros);
                            responder(AppendOutcome::Committed {
                                index,
                                response: Some(encode_records(&[record]).to_vec()),
                            });
                        }
                    }
                    SideEffect::Send {
                        partition_id,
                        record,
                    } => outbox.send_command(partition_id, command_payload(&record)),
                    // Parked polls were woken when the jobs were made (`process`).
                    SideEffect::JobsAvailable { .. } => {}
                }
            }
        }
    }

    /// When the engine next has clock work, in wall-clock ms.
    pub(crate) fn next_deadline_ms(&self) -> Option<i64> {
        let parked = self.parked.next_deadline_ms();
        match (self.engine.next_deadline_ms(), parked) {
            (Some(engine), Some(parked)) => Some(engine.min(parked)),
            (engine, parked) => engine.or(parked),
        }
    }

    /// Answers everything still waiting (shutdown, storage error).
    pub(crate) fn fail_all(&mut self, message: &str) {
        self.drop_slots();
        for queued in self.commands.drain(..) {
            if let Some(responder) = queued.responder {
                responder(AppendOutcome::Unavailable {
                    message: message.to_owned(),
                });
            }
        }
        for (_, (responder, _)) in self.waiting.drain() {
            responder(AppendOutcome::Unavailable {
                message: message.to_owned(),
            });
        }
        for parked in self.parked.drain() {
            (parked.responder)(AppendOutcome::Unavailable {
                message: message.to_owned(),
            });
        }
        self.effects.clear();
    }
}
