//! One replica of one partition: a Raft core over a journal on an in-memory crash disk, with the
//! partition's engine on top.
//!
//! The engine follows the committed log, except on a leader that processes commands: there it
//! runs ahead of the commit index by exactly the entries the leader proposed (its state is
//! *speculative*), and the side effects of each entry wait until that entry commits. The rules:
//!
//! - A follower (and a leader that has not yet caught up) applies committed entries in order:
//!   decode the payload, [`Engine::replay`] each record. `applied_index` follows `commit_index`.
//! - A new leader processes nothing until its commit index covers the first entry of its own
//!   term (the no-op Raft appends at term start): only then has it applied every entry an
//!   earlier leader may have acknowledged.
//! - A processing leader proposes one entry per processed command (`encode_records` of the
//!   command and its follow-up records), sets `applied_index` to that entry, and keeps the side
//!   effects under the entry's index; a command that wrote nothing keeps its side effects under
//!   the last index proposed so far.
//! - When leadership ends (step-down, new term), the speculative state is discarded: the engine
//!   is rebuilt from the latest snapshot plus the committed entries, and unreleased side effects
//!   are dropped (their clients never hear back, which is allowed: they were never told yes).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use sluice_engine::record::{Record, decode_records, encode_records};
use sluice_engine::{Engine, EngineConfig, Output, SideEffect};
use sluice_log::raft::{
    Entry, HardState, Message, Raft, RaftConfig, RaftLog, ReplicaId, Role, SnapshotChunk,
    SnapshotRead,
};
use sluice_log::sim::check::{EntryView, ReplicaView};
use sluice_log::{BatchMeta, IoDelay, Journal, JournalConfig, MemStorage};

use super::EngineSimBug;
use super::snapshot::{self, Snapshot};

/// Polls an in-memory journal operation to completion. Journal futures over `MemStorage` only
/// yield (to model I/O latency), so polling them again always makes progress.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    const POLLS_MAX: u32 = 1_000_000;
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS_MAX {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
    panic!("a journal operation on the in-memory disk did not finish in {POLLS_MAX} polls");
}

/// A stable 64-bit hash (FNV-1a) of an entry's payload: the checkers compare entries by it.
pub(crate) fn payload_hash(payload: &[u8]) -> Option<u64> {
    if payload.is_empty() {
        return None; // Raft's no-op
    }
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for byte in payload {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    Some(hash)
}

/// The engine's clock: the virtual clock plus a fixed epoch, so records carry plausible times.
pub(crate) fn engine_now(now_ms: u64) -> i64 {
    const EPOCH_MS: i64 = 1_700_000_000_000;
    EPOCH_MS + i64::try_from(now_ms).expect("virtual time fits i64")
}

/// How often an engine re-sends unacknowledged cross-partition commands in the simulation.
pub(crate) const RESEND_INTERVAL_MS: i64 = 200;

pub(crate) fn engine_config(partition: u32, partitions: u32) -> EngineConfig {
    EngineConfig {
        resend_interval_ms: RESEND_INTERVAL_MS,
        ..EngineConfig::new(partition, partitions)
    }
}

pub(crate) fn journal_config() -> JournalConfig {
    JournalConfig {
        segment_bytes: 256 << 10,
        batch_bytes_max: 64 << 10,
        flush_bytes_max: 64 << 10,
        index_interval_bytes: 4 << 10,
        ..JournalConfig::default()
    }
}

/// What processing one command (or one tick) did on a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Processed {
    /// Not a processing leader (any more): nothing happened.
    NotLeader,
    /// Processed; the side effects wait for this index to commit.
    Proposed { index: u64 },
    /// Processed, but Raft refused the entry (a leadership transfer is running): the engine
    /// was rebuilt from the committed log and `dropped` unreleased side effects (this command's
    /// included) were dropped.
    Refused { dropped: u64 },
}

/// What one `drive` did, for the report.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Driven {
    pub(crate) snapshot_installed: bool,
    pub(crate) dropped_side_effects: u64,
    pub(crate) rebuilt: bool,
}

pub(crate) struct Live {
    pub(crate) raft: Raft,
    journal: Journal<MemStorage>,
    /// When the flush in progress completes, if one is.
    pub(crate) flush_done_ms: Option<u64>,
    pub(crate) engine: Engine,
    /// The last entry the engine's state includes.
    pub(crate) applied_index: u64,
    /// The term in which this replica processes commands as leader, once caught up.
    pub(crate) processing_term: Option<u64>,
    /// Side effects waiting for their entry to commit: (index, effects), by index.
    unreleased: VecDeque<(u64, Vec<SideEffect>)>,
    out: Output,
}

pub(crate) struct Replica {
    pub(crate) broker: ReplicaId,
    pub(crate) partition: u32,
    partitions: u32,
    disk: MemStorage,
    /// The durable hard-state record.
    hard: HardState,
    pub(crate) live: Option<Live>,
    /// The entries the journal holds after the snapshot: entry `i` has index `base() + 1 + i`.
    pub(crate) shadow: Vec<EntryView>,
    /// Their payloads, parallel to `shadow`.
    payloads: Vec<Rc<[u8]>>,
    /// The latest snapshot (durable).
    pub(crate) snapshot: Option<Snapshot>,
    /// Chunks of a snapshot arriving from the leader (lost at a crash).
    incoming: Vec<u8>,
    pub(crate) slow_disk: bool,
    /// A deliberate bug (checker self-tests).
    bug: Option<EngineSimBug>,
}

impl Replica {
    pub(crate) fn new(
        broker: ReplicaId,
        partition: u32,
        partitions: u32,
        bug: Option<EngineSimBug>,
    ) -> Self {
        Replica {
            bug,
            broker,
            partition,
            partitions,
            disk: MemStorage::new(),
            hard: HardState::default(),
            live: None,
            shadow: Vec::new(),
            payloads: Vec::new(),
            snapshot: None,
            incoming: Vec::new(),
            slow_disk: false,
        }
    }

    pub(crate) fn name(&self) -> String {
        format!("partition {} replica {}", self.partition, self.broker)
    }

    /// The index the shadow starts after: the snapshot's.
    pub(crate) fn base(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    /// The payload of the entry at `index`, if this replica's journal holds it.
    pub(crate) fn payload(&self, index: u64) -> Option<&Rc<[u8]>> {
        let offset = index.checked_sub(self.base() + 1)?;
        self.payloads.get(usize::try_from(offset).ok()?)
    }

    pub(crate) fn is_processing_leader(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.processing_term
                .is_some_and(|t| l.raft.role() == Role::Leader && l.raft.term() == t)
        })
    }

    pub(crate) fn view(&self) -> Option<ReplicaView<'_>> {
        self.live.as_ref().map(|l| ReplicaView {
            id: self.broker,
            term: l.raft.term(),
            is_leader: l.raft.role() == Role::Leader,
            commit_index: l.raft.commit_index(),
            first_index: self.base() + 1,
            entries: &self.shadow,
            durable_index: l.raft.log().durable_index(),
            synced_index: l.journal.durable_index(),
        })
    }

    fn fresh_engine(&self) -> Result<Engine, String> {
        let config = engine_config(self.partition, self.partitions);
        match &self.snapshot {
            Some(s) => {
                snapshot::restore(config, &s.bytes).map_err(|e| format!("{}: {e}", self.name()))
            }
            None => Ok(Engine::new(config)),
        }
    }

    /// (Re)starts from disk: journal recovery, a Raft core over what survived, and the engine
    /// from the snapshot (committed entries are applied as Raft learns the commit index).
    pub(crate) fn start(&mut self, now_ms: u64, seed: u64, config: RaftConfig) {
        let name = self.name();
        let (journal, _) = block_on(Journal::open(self.disk.clone(), journal_config()))
            .unwrap_or_else(|e| panic!("{name}: the journal must recover: {e}"));
        self.disk.set_io_delay(
            seed,
            Some(IoDelay {
                write_yields_max: 2,
                sync_yields_max: 4,
            }),
        );
        let (base, base_term) = self.snapshot.as_ref().map_or((0, 0), |s| (s.index, s.term));
        let mut runs: Vec<(u64, u64)> = Vec::new();
        self.shadow.clear();
        self.payloads.clear();
        let mut reader = journal.reader(journal.first_index().max(base + 1));
        while let Some(batch) =
            block_on(reader.next(&journal)).unwrap_or_else(|e| panic!("{name}: read: {e}"))
        {
            if runs.last().is_none_or(|r| r.1 != batch.term) {
                runs.push((batch.index, batch.term));
            }
            let payload: Rc<[u8]> = Rc::from(batch.payload);
            self.shadow.push(EntryView {
                index: batch.index,
                term: batch.term,
                proposal: payload_hash(&payload),
            });
            self.payloads.push(payload);
        }
        let last = journal.next_index() - 1;
        assert!(last >= base, "{name}: the journal ends before its snapshot");
        let log = RaftLog::recovered(
            base,
            base_term,
            runs,
            last,
            journal.truncation_epoch(),
            config.entry_cache_bytes_max,
        );
        let raft = Raft::new(config, self.hard, log, now_ms, seed);
        let engine = self
            .fresh_engine()
            .unwrap_or_else(|e| panic!("{name}: the snapshot must restore: {e}"));
        self.incoming.clear();
        self.live = Some(Live {
            raft,
            journal,
            flush_done_ms: None,
            engine,
            applied_index: base,
            processing_term: None,
            unreleased: VecDeque::new(),
            out: Output::default(),
        });
    }

    /// Power loss: the engine and everything in memory go; unflushed appends are lost, and when
    /// `tear_polls` is set, a flush of them is caught part-way. True when a flush was torn.
    pub(crate) fn crash(&mut self, tear_polls: Option<u64>, crash_seed: u64) -> bool {
        let Some(live) = self.live.take() else {
            return false;
        };
        let mut torn = false;
        if let Some(polls) = tear_polls
            && live.journal.pending_bytes() > 0
        {
            let mut flush = pin!(live.journal.flush());
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..polls {
                if flush.as_mut().poll(&mut cx).is_ready() {
                    break;
                }
            }
            torn = true;
        }
        drop(live);
        self.disk.crash(crash_seed);
        self.shadow.clear();
        self.payloads.clear();
        self.incoming.clear();
        torn
    }

    // ------------------------------------------------------------ engine state

    /// Rebuilds the engine from the snapshot plus the entries up to `upto`, dropping whatever
    /// speculative state it had.
    fn rebuild_engine(&mut self, upto: u64) -> Result<(), String> {
        let mut engine = self.fresh_engine()?;
        let base = self.base();
        for index in base + 1..=upto {
            let payload = self
                .payload(index)
                .ok_or_else(|| format!("{}: rebuild needs entry {index}, not held", self.name()))?;
            replay_payload(&mut engine, payload)
                .map_err(|e| format!("{}: entry {index}: {e}", self.name()))?;
        }
        let live = self.live.as_mut().expect("live");
        live.engine = engine;
        live.applied_index = upto;
        Ok(())
    }

    /// Ends processing if this replica no longer leads the term it processed in: the engine is
    /// rebuilt from the committed log and unreleased side effects are dropped. Returns how many
    /// were dropped, or `None` when nothing changed.
    fn settle_role(&mut self) -> Result<Option<u64>, String> {
        let Some(live) = self.live.as_mut() else {
            return Ok(None);
        };
        let Some(term) = live.processing_term else {
            return Ok(None);
        };
        if live.raft.role() == Role::Leader && live.raft.term() == term {
            return Ok(None);
        }
        self.stop_processing().map(Some)
    }

    /// Leaves the processing mode: the engine is rebuilt from the committed log and unreleased
    /// side effects are dropped. Returns how many were dropped.
    fn stop_processing(&mut self) -> Result<u64, String> {
        let live = self.live.as_mut().expect("live");
        let dropped = live.unreleased.iter().map(|(_, e)| e.len() as u64).sum();
        live.unreleased.clear();
        live.processing_term = None;
        if self.bug == Some(EngineSimBug::KeepSpeculativeState) {
            return Ok(dropped);
        }
        let commit = live.raft.commit_index();
        self.rebuild_engine(commit)?;
        Ok(dropped)
    }

    /// A follower (or a leader still catching up) applies committed entries; a leader whose
    /// commit index covers its term's first entry starts processing. Returns the term when
    /// processing started.
    fn catch_up(&mut self) -> Result<Option<u64>, String> {
        let name = self.name();
        let Some(live) = self.live.as_ref() else {
            return Ok(None);
        };
        if live.processing_term.is_some() {
            return Ok(None);
        }
        let commit = live.raft.commit_index();
        let mut applied = live.applied_index;
        if applied < commit {
            let mut engine_updates = Vec::new();
            while applied < commit {
                let index = applied + 1;
                let payload = self
                    .payload(index)
                    .ok_or_else(|| format!("{name}: committed entry {index} is not held"))?;
                engine_updates.push((index, Rc::clone(payload)));
                applied = index;
            }
            let live = self.live.as_mut().expect("live");
            for (index, payload) in engine_updates {
                replay_payload(&mut live.engine, &payload)
                    .map_err(|e| format!("{name}: entry {index}: {e}"))?;
                live.applied_index = index;
            }
        }
        let live = self.live.as_mut().expect("live");
        if live.raft.role() != Role::Leader {
            return Ok(None);
        }
        let term = live.raft.term();
        if self.bug == Some(EngineSimBug::ProcessBeforeCaughtUp) {
            live.processing_term = Some(term);
            return Ok(Some(term));
        }
        let last = live.raft.log().last_index();
        if live.raft.log().term_at(last) != Some(term) {
            return Ok(None);
        }
        // A leader that snapshotted everything it holds (its no-op included) is caught up.
        let snapshot_index = live.raft.log().snapshot_index();
        let first = if last <= snapshot_index {
            snapshot_index
        } else {
            live.raft.log().first_index_of_term_at(last)
        };
        // Every entry of earlier terms must be applied (the no-op committed), and every entry of
        // this term too: a leader that stopped processing (a refused proposal) waits for its
        // earlier proposals to commit and applies them like a follower.
        if live.raft.commit_index() < first || live.raft.commit_index() < last {
            return Ok(None);
        }
        assert_eq!(
            live.applied_index, last,
            "{name}: a leader starts processing with every entry applied"
        );
        live.processing_term = Some(term);
        Ok(Some(term))
    }

    // ------------------------------------------------------------ leader work

    /// Processes a command on a processing leader and proposes its records.
    pub(crate) fn process(
        &mut self,
        command: Record,
        request: Option<u64>,
        now_ms: u64,
    ) -> Result<(Processed, u64), String> {
        let dropped = self.settle_role()?.unwrap_or(0);
        if !self.is_processing_leader() {
            return Ok((Processed::NotLeader, dropped));
        }
        let live = self.live.as_mut().expect("live");
        live.out.clear();
        live.engine
            .process(command, request, engine_now(now_ms), &mut live.out);
        Ok((self.propose_output()?, dropped))
    }

    /// Runs the engine's due work (timers, job deadlines, message expiry, re-sends) on a
    /// processing leader, when its deadline has passed.
    pub(crate) fn tick(&mut self, now_ms: u64) -> Result<(Processed, u64), String> {
        let dropped = self.settle_role()?.unwrap_or(0);
        if !self.is_processing_leader() {
            return Ok((Processed::NotLeader, dropped));
        }
        let live = self.live.as_mut().expect("live");
        let now = engine_now(now_ms);
        if live.engine.next_deadline_ms().is_none_or(|at| at > now) {
            return Ok((Processed::NotLeader, dropped));
        }
        live.out.clear();
        let _more = live.engine.tick(now, &mut live.out);
        Ok((self.propose_output()?, dropped))
    }

    /// Proposes `out.records` as one entry and files `out.side_effects` under its index.
    fn propose_output(&mut self) -> Result<Processed, String> {
        let live = self.live.as_mut().expect("live");
        let effects = std::mem::take(&mut live.out.side_effects);
        let index = if live.out.records.is_empty() {
            live.raft.log().last_index()
        } else {
            let payload: Rc<[u8]> = Rc::from(encode_records(&live.out.records).as_slice());
            let Ok(index) = live.raft.propose(payload) else {
                // The engine applied the command already. Undo it the way a step-down does:
                // rebuild from the committed log, drop unreleased side effects, and start
                // processing again once every entry of this term has committed.
                let dropped = self.stop_processing()?;
                return Ok(Processed::Refused { dropped });
            };
            live.applied_index = index;
            index
        };
        if !effects.is_empty() {
            live.unreleased.push_back((index, effects));
        }
        Ok(Processed::Proposed { index })
    }

    /// The side effects whose entries have committed, on a processing leader.
    pub(crate) fn release(&mut self, into: &mut Vec<SideEffect>) {
        if !self.is_processing_leader() {
            return;
        }
        let live = self.live.as_mut().expect("live");
        let commit = if self.bug == Some(EngineSimBug::RespondBeforeCommit) {
            u64::MAX
        } else {
            live.raft.commit_index()
        };
        while live
            .unreleased
            .front()
            .is_some_and(|(index, _)| *index <= commit)
        {
            let (_, effects) = live.unreleased.pop_front().expect("checked");
            into.extend(effects);
        }
    }

    /// True when the engine holds exactly the committed state and nothing waits to be released.
    pub(crate) fn is_settled(&self) -> bool {
        self.live.as_ref().is_some_and(|l| {
            l.applied_index == l.raft.commit_index()
                && l.raft.log().last_index() == l.raft.commit_index()
                && l.unreleased.is_empty()
        })
    }

    // ------------------------------------------------------------ Raft

    /// Carries out this replica's `Ready` against its journal, hard state and the network, then
    /// applies what committed and starts processing once caught up.
    pub(crate) fn drive(
        &mut self,
        now_ms: u64,
        outbox: &mut Vec<Message>,
    ) -> Result<Driven, String> {
        let mut driven = Driven::default();
        if let Some(dropped) = self.settle_role()? {
            driven.dropped_side_effects += dropped;
            driven.rebuilt = true;
        }
        let name = self.name();
        let live = self.live.as_mut().expect("live");
        let ready = live.raft.ready();
        if let Some(index) = ready.truncate_after {
            if index < live.applied_index {
                return Err(format!(
                    "{name}: Raft truncates after {index}, below the applied index {}",
                    live.applied_index
                ));
            }
            block_on(live.journal.truncate_after(index))
                .map_err(|e| format!("{name}: truncate_after({index}): {e}"))?;
            let keep = usize::try_from(index - self.snapshot.as_ref().map_or(0, |s| s.index))
                .expect("small");
            self.shadow.truncate(keep);
            self.payloads.truncate(keep);
        }
        for entry in &ready.entries {
            let meta = BatchMeta {
                term: entry.term,
                timestamp_ms: now_ms,
                record_count: 1,
            };
            let index = live
                .journal
                .append(meta, &entry.payload)
                .map_err(|e| format!("{name}: append {}: {e}", entry.index))?;
            if index != entry.index {
                return Err(format!(
                    "{name}: Raft entry {} landed at journal index {index}",
                    entry.index
                ));
            }
            self.shadow.push(EntryView {
                index: entry.index,
                term: entry.term,
                proposal: payload_hash(&entry.payload),
            });
            self.payloads.push(Rc::clone(&entry.payload));
        }
        self.serve_snapshot_reads(&ready.snapshot_reads)?;
        if self.store_snapshot(&ready.snapshot_chunks, ready.install_snapshot)? {
            driven.snapshot_installed = true;
        }
        let live = self.live.as_mut().expect("live");
        if let Some(hard) = ready.hard_state {
            self.hard = hard;
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
                    Err(e) => return Err(format!("{name}: read for {}: {e}", read.peer)),
                }
            }
            live.raft.handle_log_read(read.peer, entries);
        }
        live.raft.advance(ready.number);
        // Hard state is durable at once here, so both kinds of messages leave now.
        outbox.extend(ready.messages);
        outbox.extend(ready.messages_after_persist);
        self.catch_up()?;
        Ok(driven)
    }

    /// Completes the flush in progress if it is due, and reports it to Raft.
    pub(crate) fn complete_flush(&mut self, now_ms: u64) -> Result<(), String> {
        let name = self.name();
        let Some(live) = self.live.as_mut() else {
            return Ok(());
        };
        if live.flush_done_ms.is_some_and(|at| at <= now_ms) {
            live.flush_done_ms = None;
            block_on(live.journal.flush()).map_err(|e| format!("{name}: flush: {e}"))?;
            live.raft.handle_flushed(live.journal.flush_report());
        }
        Ok(())
    }

    /// Schedules a flush when appends wait and none runs; `delay_ms` is how long it takes.
    pub(crate) fn start_flush(&mut self, now_ms: u64, delay_ms: impl FnOnce(bool) -> u64) {
        let slow = self.slow_disk;
        if let Some(live) = self.live.as_mut()
            && live.flush_done_ms.is_none()
            && live.journal.pending_bytes() > 0
        {
            live.flush_done_ms = Some(now_ms + 1 + delay_ms(slow));
        }
    }

    /// Reads chunks of this replica's snapshot for the leader's Raft to send.
    fn serve_snapshot_reads(&mut self, reads: &[SnapshotRead]) -> Result<(), String> {
        let name = self.name();
        let live = self.live.as_mut().expect("live");
        for read in reads {
            let snapshot = self
                .snapshot
                .as_ref()
                .ok_or_else(|| format!("{name}: asked to send a snapshot it lacks"))?;
            if snapshot.index != read.snapshot_index {
                return Err(format!(
                    "{name}: asked for snapshot {} but holds {}",
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

    /// Stores incoming snapshot chunks, and installs the snapshot when told: the engine is
    /// restored from it and the journal restarts after it. True when one was installed.
    fn store_snapshot(
        &mut self,
        chunks: &[SnapshotChunk],
        install: Option<(u64, u64)>,
    ) -> Result<bool, String> {
        let name = self.name();
        for chunk in chunks {
            if chunk.offset == 0 {
                self.incoming.clear();
            }
            if chunk.offset != self.incoming.len() as u64 {
                return Err(format!(
                    "{name}: snapshot chunk at {} but {} bytes held",
                    chunk.offset,
                    self.incoming.len()
                ));
            }
            self.incoming.extend_from_slice(&chunk.data);
        }
        let Some((index, term)) = install else {
            return Ok(false);
        };
        let engine = snapshot::restore(
            engine_config(self.partition, self.partitions),
            &self.incoming,
        )
        .map_err(|e| format!("{name}: the snapshot received for {index}: {e}"))?;
        self.snapshot = Some(Snapshot {
            index,
            term,
            bytes: Rc::from(std::mem::take(&mut self.incoming)),
        });
        let live = self.live.as_mut().expect("live");
        assert!(
            live.processing_term.is_none(),
            "{name}: a leader never installs a snapshot"
        );
        block_on(live.journal.reset(index + 1))
            .map_err(|e| format!("{name}: journal reset: {e}"))?;
        self.shadow.clear();
        self.payloads.clear();
        live.engine = engine;
        live.applied_index = index;
        live.raft.handle_snapshot_installed(index, term);
        Ok(true)
    }

    /// Takes a snapshot of the engine once `every` entries were applied since the last one, if
    /// the engine holds exactly the committed, durable state (a leader: nothing in flight), and
    /// compacts the journal below it.
    pub(crate) fn maybe_snapshot(&mut self, every: u64) -> Result<bool, String> {
        let name = self.name();
        let base = self.base();
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        let upto = live.applied_index;
        if upto != live.raft.commit_index()
            || upto > live.raft.log().durable_index()
            || upto < base + every
        {
            return Ok(false);
        }
        let take = usize::try_from(upto - base).expect("small");
        let term = self.shadow[take - 1].term;
        let bytes = snapshot::encode(&live.engine);
        self.shadow.drain(..take);
        self.payloads.drain(..take);
        self.snapshot = Some(Snapshot {
            index: upto,
            term,
            bytes: Rc::from(bytes),
        });
        block_on(live.journal.compact_before(upto + 1))
            .map_err(|e| format!("{name}: compact_before({}): {e}", upto + 1))?;
        live.raft.handle_compacted(upto, term);
        Ok(true)
    }
}

/// Replays one entry's records into an engine (a no-op entry has none).
pub(crate) fn replay_payload(engine: &mut Engine, payload: &[u8]) -> Result<(), String> {
    if payload.is_empty() {
        return Ok(());
    }
    let records = decode_records(payload).map_err(|e| e.to_string())?;
    for record in &records {
        engine.replay(record);
    }
    Ok(())
}
