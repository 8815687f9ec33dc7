//! Unit tests of the Raft core with a tiny lock-step harness: an in-memory journal per replica,
//! a message queue, explicit flushes and a manual clock. The seeded simulator exercises faults
//! at scale; these pin down single behaviours.

use std::collections::BTreeSet;

use super::*;

struct Node {
    raft: Raft,
    /// The journal: entries as the driver wrote them.
    journal: Vec<Entry>,
    durable: u64,
    /// The journal's truncation epoch: its truncations and resets.
    epoch: u64,
    persisted: HardState,
    committed: u64,
    /// Flush automatically after every Ready.
    auto_flush: bool,
    /// The latest snapshot: index, term, bytes (the entries up to it, encoded).
    snapshot: Option<(u64, u64, Vec<u8>)>,
    /// Chunks of an incoming snapshot.
    incoming: Vec<u8>,
    /// Installs to fail (as on a full disk) before one succeeds.
    failing_installs: u32,
}

impl Node {
    /// Stores the snapshot Raft finished receiving and makes it the log's start, or, while
    /// `failing_installs` lasts, fails as on a full disk: drops it, changes nothing, and tells
    /// Raft to take it again after a pause. Whether it was installed.
    fn install_snapshot(&mut self, id: ReplicaId, index: u64, term: u64, now_ms: u64) -> bool {
        if self.failing_installs > 0 {
            self.failing_installs -= 1;
            self.incoming.clear();
            self.raft
                .handle_snapshot_install_failed(index, term, now_ms + 200);
            return false;
        }
        let entries = decode_snapshot(&self.incoming);
        assert_eq!(entries.len() as u64, index, "node {id}: the whole snapshot");
        self.journal = entries;
        self.durable = index;
        self.epoch += 1;
        self.committed = self.committed.max(index);
        self.snapshot = Some((index, term, std::mem::take(&mut self.incoming)));
        self.raft.handle_snapshot_installed(index, term);
        true
    }

    /// Flushes the whole journal and reports it at once.
    fn flush(&mut self) {
        self.durable = self.journal.len() as u64;
        self.raft.handle_flushed(self.report());
    }

    /// What a flush completing now reports.
    fn report(&self) -> FlushReport {
        FlushReport {
            epoch: self.epoch,
            durable_index: self.durable,
        }
    }
}

/// The harness's snapshot format: each entry as term, payload length, payload.
fn encode_snapshot(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.term.to_le_bytes());
        out.extend_from_slice(&(e.payload.len() as u64).to_le_bytes());
        out.extend_from_slice(&e.payload);
    }
    out
}

fn decode_snapshot(mut bytes: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let term = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let len = usize::try_from(u64::from_le_bytes(
            bytes[8..16].try_into().expect("8 bytes"),
        ))
        .expect("small");
        entries.push(Entry {
            index: entries.len() as u64 + 1,
            term,
            payload: Rc::from(bytes[16..16 + len].to_vec()),
        });
        bytes = &bytes[16 + len..];
    }
    entries
}

struct Cluster {
    nodes: BTreeMap<ReplicaId, Node>,
    queue: VecDeque<Message>,
    /// Pairs (from, to) whose messages are dropped.
    cut: BTreeSet<(ReplicaId, ReplicaId)>,
    now_ms: u64,
    /// Journal reads served for lagging followers.
    reads: u64,
    snapshot_reads: u64,
    installs: u64,
    /// Installs failed on purpose, with the time of each.
    failed_installs: Vec<u64>,
}

fn config(id: ReplicaId, ids: &[ReplicaId]) -> RaftConfig {
    RaftConfig {
        heartbeat_interval_ms: 10,
        election_timeout_ms: 100,
        append_bytes_max: 4096,
        inflight_appends_max: 4,
        entry_cache_bytes_max: 1 << 20,
        ..RaftConfig::new(id, ids)
    }
}

impl Cluster {
    fn new(ids: &[ReplicaId]) -> Self {
        Self::with_configs(ids.iter().map(|&id| config(id, ids)).collect())
    }

    fn with_configs(configs: Vec<RaftConfig>) -> Self {
        let nodes = configs
            .into_iter()
            .map(|c| {
                let id = c.id;
                let log = RaftLog::recovered(0, 0, vec![], 0, 0, c.entry_cache_bytes_max);
                let raft = Raft::new(c, HardState::default(), log, 0, 42);
                (
                    id,
                    Node {
                        raft,
                        journal: Vec::new(),
                        durable: 0,
                        epoch: 0,
                        persisted: HardState::default(),
                        committed: 0,
                        auto_flush: true,
                        snapshot: None,
                        incoming: Vec::new(),
                        failing_installs: 0,
                    },
                )
            })
            .collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            now_ms: 0,
            reads: 0,
            snapshot_reads: 0,
            installs: 0,
            failed_installs: Vec::new(),
        }
    }

    fn node(&mut self, id: ReplicaId) -> &mut Node {
        self.nodes.get_mut(&id).expect("node")
    }

    /// Carries out every node's Ready until nothing moves.
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
            for id in ids {
                let node = self.nodes.get_mut(&id).expect("node");
                let ready = node.raft.ready();
                if !ready.is_empty() {
                    moved = true;
                }
                if let Some(t) = ready.truncate_after {
                    assert!(t >= node.committed, "node {id} truncates committed {t}");
                    node.journal.truncate(usize::try_from(t).expect("small"));
                    node.durable = node.durable.min(t);
                    node.epoch += 1;
                }
                for e in &ready.entries {
                    assert_eq!(
                        e.index,
                        node.journal.len() as u64 + 1,
                        "node {id} appends in order"
                    );
                    node.journal.push(e.clone());
                }
                if let Some(h) = ready.hard_state {
                    node.persisted = h;
                }
                // Messages that depend on term or vote leave only after they are persisted.
                for m in ready.messages_after_persist.iter().chain(&ready.messages) {
                    assert!(
                        m.term <= node.persisted.term
                            || matches!(
                                m.body,
                                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { .. }
                            ),
                        "node {id} sends term {} before persisting it ({})",
                        m.term,
                        node.persisted.term
                    );
                }
                self.queue.extend(ready.messages);
                self.queue.extend(ready.messages_after_persist);
                if let Some(c) = ready.commit_index {
                    assert!(c >= node.committed, "commit index went back on {id}");
                    assert!(c <= node.journal.len() as u64 || node.raft.role() != Role::Leader);
                    node.committed = c;
                }
                self.reads += ready.reads.len() as u64;
                for read in ready.reads {
                    let from = usize::try_from(read.from_index - 1).expect("small");
                    let entries: Vec<Entry> =
                        node.journal[from..].iter().take(8).cloned().collect();
                    node.raft.handle_log_read(read.peer, entries);
                }
                for read in ready.snapshot_reads {
                    self.snapshot_reads += 1;
                    let (index, _, data) = node.snapshot.as_ref().expect("a snapshot to send");
                    assert_eq!(*index, read.snapshot_index);
                    let from = usize::try_from(read.offset).expect("small").min(data.len());
                    let to =
                        (from + usize::try_from(read.bytes_max).expect("small")).min(data.len());
                    let chunk: Rc<[u8]> = Rc::from(data[from..to].to_vec());
                    let index = *index;
                    let done = to == data.len();
                    node.raft
                        .handle_snapshot_chunk(read.peer, index, read.offset, chunk, done);
                }
                for chunk in ready.snapshot_chunks {
                    assert_eq!(chunk.offset, node.incoming.len() as u64, "chunks in order");
                    node.incoming.extend_from_slice(&chunk.data);
                }
                if let Some((index, term)) = ready.install_snapshot {
                    if node.install_snapshot(id, index, term, self.now_ms) {
                        self.installs += 1;
                    } else {
                        self.failed_installs.push(self.now_ms);
                    }
                }
                node.raft.advance(ready.number);
                if node.auto_flush && node.durable < node.journal.len() as u64 {
                    node.flush();
                    moved = true;
                }
            }
            while let Some(m) = self.queue.pop_front() {
                moved = true;
                if self.cut.contains(&(m.from, m.to)) {
                    continue;
                }
                if let Some(node) = self.nodes.get_mut(&m.to) {
                    node.raft.handle_message(m);
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    /// Advances the clock in steps of `step_ms`, settling after each.
    fn run_for(&mut self, ms: u64, step_ms: u64) {
        let end = self.now_ms + ms;
        while self.now_ms < end {
            self.now_ms += step_ms;
            let now = self.now_ms;
            for node in self.nodes.values_mut() {
                node.raft.handle_tick(now);
            }
            self.settle();
        }
    }

    fn leaders(&self) -> Vec<ReplicaId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raft.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    fn leader(&self) -> ReplicaId {
        let leaders = self.leaders();
        assert_eq!(leaders.len(), 1, "exactly one leader: {leaders:?}");
        leaders[0]
    }

    fn isolate(&mut self, id: ReplicaId) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for other in ids {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// Takes a snapshot on `id` up to what it has committed and flushed.
    fn compact(&mut self, id: ReplicaId) -> u64 {
        let node = self.node(id);
        let index = node.raft.commit_index().min(node.durable);
        let upto = usize::try_from(index).expect("small");
        let term = node.journal[upto - 1].term;
        node.snapshot = Some((index, term, encode_snapshot(&node.journal[..upto])));
        node.raft.handle_compacted(index, term);
        index
    }

    fn propose(&mut self, leader: ReplicaId, payload: &[u8]) -> u64 {
        self.node(leader)
            .raft
            .propose(Rc::from(payload.to_vec()))
            .expect("the leader takes proposals")
    }
}

#[test]
fn a_single_replica_elects_itself_and_commits_after_its_flush() {
    let mut c = Cluster::new(&[1]);
    c.run_for(300, 10);
    assert_eq!(c.leader(), 1);
    c.node(1).auto_flush = false;
    let index = c.propose(1, b"a");
    c.settle();
    assert!(
        c.node(1).committed < index,
        "not committed before it is durable"
    );
    c.node(1).flush();
    c.settle();
    assert_eq!(c.node(1).committed, index);
}

#[test]
fn three_replicas_elect_one_leader_and_replicate() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let leader = c.leader();
    let term = c.node(leader).raft.term();
    for i in 0..20u8 {
        c.propose(leader, &[i]);
    }
    c.run_for(50, 10);
    let last = c.node(leader).journal.len() as u64;
    let journal = c.nodes[&leader].journal.clone();
    for id in [1, 2, 3] {
        let n = c.node(id);
        assert_eq!(n.raft.term(), term);
        assert_eq!(
            n.journal.len() as u64,
            last,
            "replica {id} holds every entry"
        );
        assert_eq!(
            n.committed, last,
            "replica {id} knows everything is committed"
        );
        assert_eq!(n.journal, journal);
    }
}

#[test]
fn commit_counts_only_flushed_replicas() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let leader = c.leader();
    let followers: Vec<ReplicaId> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    for f in &followers {
        c.node(*f).auto_flush = false;
    }
    let before = c.node(leader).committed;
    let index = c.propose(leader, b"x");
    c.run_for(50, 10);
    assert_eq!(
        c.node(leader).committed,
        before,
        "followers hold the entry unflushed: not committed"
    );
    let f = followers[0];
    c.node(f).flush();
    c.run_for(30, 10);
    assert_eq!(
        c.node(leader).committed,
        index,
        "leader + one flushed follower is a quorum"
    );
}

#[test]
fn the_leader_flushes_in_parallel_and_its_own_flush_counts() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let leader = c.leader();
    let followers: Vec<ReplicaId> = [1, 2, 3].into_iter().filter(|i| *i != leader).collect();
    c.node(leader).auto_flush = false;
    c.node(followers[0]).auto_flush = false;
    let index = c.propose(leader, b"x");
    c.run_for(30, 10);
    assert!(
        c.node(leader).committed < index,
        "one flushed replica of three is no quorum"
    );
    c.node(leader).flush();
    c.settle();
    assert_eq!(
        c.node(leader).committed,
        index,
        "the leader's own durable index counts"
    );
}

#[test]
fn a_partitioned_follower_does_not_disrupt_the_leader_when_it_returns() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let leader = c.leader();
    let term = c.node(leader).raft.term();
    let lone = [1, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("a follower");
    c.isolate(lone);
    c.run_for(2000, 10);
    assert_eq!(
        c.node(lone).raft.term(),
        term,
        "pre-vote keeps the lone replica's term"
    );
    assert_eq!(c.leader(), leader);
    c.heal();
    c.run_for(500, 10);
    assert_eq!(c.leader(), leader, "the leader stays");
    assert_eq!(c.node(leader).raft.term(), term, "no new term");
}

#[test]
fn an_isolated_leader_steps_down_and_the_majority_elects_another() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let old = c.leader();
    c.isolate(old);
    c.run_for(1000, 10);
    assert_ne!(
        c.node(old).raft.role(),
        Role::Leader,
        "check-quorum: the minority leader steps down"
    );
    let new = c.leader();
    assert_ne!(new, old);
    assert!(matches!(
        c.node(old).raft.propose(Rc::from(vec![1])),
        Err(ProposeError::NotLeader { .. })
    ));
    c.heal();
    c.run_for(500, 10);
    assert_eq!(c.leader(), new);
}

#[test]
fn conflicting_uncommitted_entries_are_truncated() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let old = c.leader();
    c.propose(old, b"committed");
    c.run_for(50, 10);
    let committed = c.node(old).committed;
    // The old leader appends entries nobody else receives, then loses leadership.
    c.isolate(old);
    for i in 0..5u8 {
        c.propose(old, &[b'x', i]);
    }
    c.run_for(1000, 10);
    let new = c.leader();
    assert_ne!(new, old);
    c.propose(new, b"new");
    c.run_for(50, 10);
    c.heal();
    c.run_for(500, 10);
    let journal = c.nodes[&new].journal.clone();
    assert_eq!(
        c.node(old).journal,
        journal,
        "the old leader's suffix was replaced"
    );
    assert!(journal.iter().all(|e| e.payload.first() != Some(&b'x')));
    assert!(c.node(old).committed >= committed);
}

#[test]
fn the_highest_priority_replica_becomes_leader() {
    for top in [1, 2, 3] {
        let ids = [1, 2, 3];
        let configs = ids
            .iter()
            .map(|&id| {
                let mut c = config(id, &ids);
                for r in &mut c.replicas {
                    r.priority = if r.id == top { 3 } else { 1 };
                }
                c
            })
            .collect();
        let mut c = Cluster::with_configs(configs);
        c.run_for(500, 10);
        assert_eq!(c.leader(), top, "priority {top} stands first");
    }
}

#[test]
fn leadership_moves_to_the_named_replica() {
    let mut c = Cluster::new(&[1, 2, 3]);
    c.run_for(500, 10);
    let old = c.leader();
    let target = [1, 2, 3].into_iter().find(|i| *i != old).expect("another");
    c.propose(old, b"before");
    c.node(old)
        .raft
        .transfer_leadership(target)
        .expect("leader");
    assert_eq!(
        c.node(old).raft.propose(Rc::from(vec![1])),
        Err(ProposeError::Transferring)
    );
    c.run_for(100, 10);
    assert_eq!(c.leader(), target);
    let index = c.propose(target, b"after");
    c.run_for(50, 10);
    assert!(c.nodes.values().all(|n| n.committed >= index));
}

#[test]
fn a_lagging_follower_is_served_from_the_journal() {
    let ids = [1, 2, 3];
    let configs = ids
        .iter()
        .map(|&id| RaftConfig {
            entry_cache_bytes_max: 300,
            ..config(id, &ids)
        })
        .collect();
    let mut c = Cluster::with_configs(configs);
    c.run_for(500, 10);
    let leader = c.leader();
    let lagging = ids.into_iter().find(|i| *i != leader).expect("follower");
    c.isolate(lagging);
    for i in 0..30u8 {
        c.propose(leader, &[i; 50]);
    }
    c.run_for(50, 10);
    c.heal();
    c.run_for(500, 10);
    assert_eq!(c.nodes[&lagging].journal, c.nodes[&leader].journal);
    assert!(c.reads > 0, "entries past the cache came from the journal");
}

#[test]
fn votes_go_out_only_after_term_and_vote_are_persisted() {
    let mut c = Cluster::new(&[1, 2, 3]);
    // The harness asserts, for every message, that its term was persisted first.
    c.run_for(500, 10);
    let leader = c.leader();
    let r = &mut c.node(leader).raft;
    let ready = r.ready();
    assert!(ready.hard_state.is_none());
    r.advance(ready.number);
    c.isolate(leader);
    c.run_for(1000, 10);
    assert_ne!(c.leader(), leader);
}

#[test]
fn invalid_configurations_name_the_rule() {
    let mut c = RaftConfig::new(4, &[1, 2, 3]);
    assert!(
        c.validate()
            .expect_err("4 is not a replica")
            .contains("not among")
    );
    c = RaftConfig::new(1, &[1, 1, 2]);
    assert!(c.validate().expect_err("duplicate").contains("unique"));
    c = RaftConfig::new(1, &[1, 2, 3]);
    c.election_timeout_ms = c.heartbeat_interval_ms;
    assert!(
        c.validate()
            .expect_err("timeouts")
            .contains("election timeout")
    );
}

#[test]
fn a_follower_behind_the_snapshot_receives_it_in_chunks() {
    let ids = [1, 2, 3];
    let configs = ids
        .iter()
        .map(|&id| RaftConfig {
            snapshot_chunk_bytes: 256,
            entry_cache_bytes_max: 1000,
            ..config(id, &ids)
        })
        .collect();
    let mut c = Cluster::with_configs(configs);
    c.run_for(500, 10);
    let leader = c.leader();
    let lagging = ids.into_iter().find(|i| *i != leader).expect("follower");
    c.isolate(lagging);
    for i in 0..40u8 {
        c.propose(leader, &[i; 40]);
    }
    c.run_for(50, 10);
    let snapshot = c.compact(leader);
    assert!(snapshot > 30);
    for i in 0..5u8 {
        c.propose(leader, &[b's', i]);
    }
    c.heal();
    c.run_for(500, 10);
    assert!(c.installs >= 1, "the lagging follower installed a snapshot");
    assert!(
        c.snapshot_reads > 4,
        "in several chunks ({})",
        c.snapshot_reads
    );
    let (leader_journal, follower_journal) = (
        c.nodes[&leader].journal.clone(),
        c.nodes[&lagging].journal.clone(),
    );
    assert_eq!(
        follower_journal, leader_journal,
        "same log after the snapshot"
    );
    assert_eq!(
        c.nodes[&lagging].snapshot.as_ref().map(|s| s.0),
        Some(snapshot)
    );
    let index = c.propose(leader, b"after");
    c.run_for(50, 10);
    assert!(c.nodes.values().all(|n| n.committed >= index));
}

#[test]
fn a_snapshot_the_follower_cannot_store_is_sent_again_after_its_pause() {
    let ids = [1, 2, 3];
    let configs = ids
        .iter()
        .map(|&id| RaftConfig {
            snapshot_chunk_bytes: 256,
            entry_cache_bytes_max: 1000,
            ..config(id, &ids)
        })
        .collect();
    let mut c = Cluster::with_configs(configs);
    c.run_for(500, 10);
    let leader = c.leader();
    let lagging = ids.into_iter().find(|i| *i != leader).expect("follower");
    c.isolate(lagging);
    for i in 0..40u8 {
        c.propose(leader, &[i; 40]);
    }
    c.run_for(50, 10);
    let snapshot = c.compact(leader);
    c.node(lagging).failing_installs = 2;
    let journal_before = c.nodes[&lagging].journal.clone();
    c.heal();
    while c.failed_installs.is_empty() {
        assert!(c.now_ms < 5_000, "the follower was never sent the snapshot");
        c.run_for(10, 10);
    }
    assert_eq!(c.failed_installs.len(), 1, "the first install failed");
    assert_eq!(c.installs, 0);
    assert_eq!(
        c.nodes[&lagging].journal, journal_before,
        "a failed install changes nothing"
    );
    c.run_for(150, 10);
    assert!(
        c.nodes[&lagging].incoming.is_empty() && c.failed_installs.len() == 1,
        "no chunk is taken during the pause"
    );
    c.run_for(1000, 10);
    assert_eq!(c.failed_installs.len(), 2, "asked again and failed again");
    assert!(
        c.failed_installs[1] >= c.failed_installs[0] + 200,
        "after the pause: {:?}",
        c.failed_installs
    );
    assert_eq!(c.installs, 1, "the third attempt installed it");
    assert_eq!(
        c.nodes[&lagging].snapshot.as_ref().map(|s| s.0),
        Some(snapshot)
    );
    assert_eq!(c.nodes[&lagging].journal, c.nodes[&leader].journal);
    assert_eq!(c.leader(), leader, "the failures cost no election");
}

#[test]
fn a_snapshot_chunk_from_an_older_term_is_answered_in_the_newer_one() {
    // A replica that moved to a higher term while cut off answers a stale leader's snapshot
    // chunk, so that leader learns the term and steps down instead of sending chunks forever.
    let ids = [1, 2, 3];
    let log = RaftLog::recovered(0, 0, vec![], 0, 0, 1 << 20);
    let hard = HardState {
        term: 12,
        vote: None,
    };
    let mut raft = Raft::new(config(2, &ids), hard, log, 0, 7);
    raft.handle_message(Message {
        from: 1,
        to: 2,
        term: 11,
        body: MessageBody::InstallSnapshot {
            snapshot_index: 40,
            snapshot_term: 11,
            offset: 0,
            data: Rc::from(&b"chunk"[..]),
            done: false,
        },
    });
    let ready = raft.ready();
    let answers: Vec<&Message> = ready
        .messages
        .iter()
        .chain(&ready.messages_after_persist)
        .filter(|m| m.to == 1)
        .collect();
    assert!(
        answers
            .iter()
            .any(|m| m.term == 12 && matches!(m.body, MessageBody::InstallSnapshotResponse { .. })),
        "the stale leader hears term 12: {answers:?}"
    );
    assert!(
        ready.snapshot_chunks.is_empty(),
        "the stale chunk is not stored"
    );
    raft.advance(ready.number);
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        payload: Rc::from(vec![u8::try_from(index % 256).expect("a byte")]),
    }
}

/// The durable index follower 2 acknowledges to `leader` in `ready`, if it does.
fn acknowledged_durable(ready: &Ready, leader: ReplicaId) -> Option<u64> {
    ready
        .messages
        .iter()
        .chain(&ready.messages_after_persist)
        .filter(|m| m.to == leader)
        .find_map(|m| match m.body {
            MessageBody::AppendResponse {
                durable_index,
                reject: None,
                ..
            } => Some(durable_index),
            _ => None,
        })
}

/// Follower 2 flushes entries 1..=3 of term 1, but the flush's report is still on its way
/// (the broker's flush task runs beside its driver) when the leader of term 2 cuts after 1 and
/// appends its own entry 2. Returns the follower, with that Ready carried out, and the report.
fn follower_with_a_report_overtaken_by_a_cut(bug: Option<InjectedBug>) -> (Raft, FlushReport) {
    let ids = [1, 2, 3];
    let log = RaftLog::recovered(0, 0, vec![], 0, 0, 1 << 20);
    let mut raft = Raft::new(config(2, &ids), HardState::default(), log, 0, 7);
    if let Some(bug) = bug {
        raft.inject_bug(bug);
    }
    let mut epoch = 0;
    raft.handle_message(Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries: (1..=3).map(|i| entry(i, 1)).collect(),
            commit_index: 0,
        },
    });
    let ready = raft.ready();
    assert_eq!(ready.entries.len(), 3);
    raft.advance(ready.number);
    // The flush of 1..=3 completes; its report is read now and delivered later.
    let stale = FlushReport {
        epoch,
        durable_index: 3,
    };
    raft.handle_message(Message {
        from: 3,
        to: 2,
        term: 2,
        body: MessageBody::Append {
            prev_index: 1,
            prev_term: 1,
            entries: vec![entry(2, 2)],
            commit_index: 1,
        },
    });
    let ready = raft.ready();
    assert_eq!(ready.truncate_after, Some(1), "the conflicting suffix goes");
    assert_eq!(ready.entries, vec![entry(2, 2)]);
    epoch += 1; // the driver's journal.truncate_after
    assert_eq!(raft.log().journal_epoch(), epoch);
    assert_eq!(
        acknowledged_durable(&ready, 3),
        None,
        "nothing new is acknowledged before its flush"
    );
    raft.advance(ready.number);
    (raft, stale)
}

#[test]
fn a_flush_report_overtaken_by_a_cut_vouches_only_below_the_cut() {
    let (mut raft, stale) = follower_with_a_report_overtaken_by_a_cut(None);
    raft.handle_flushed(stale);
    assert_eq!(
        raft.log().durable_index(),
        1,
        "entry 1 was flushed and never cut; entry 2 of term 2 is not on disk"
    );
    let ready = raft.ready();
    assert_eq!(acknowledged_durable(&ready, 3), Some(1));
    raft.advance(ready.number);
    // The next flush, of the new entry 2, reports in the new epoch.
    raft.handle_flushed(FlushReport {
        epoch: 1,
        durable_index: 2,
    });
    assert_eq!(raft.log().durable_index(), 2);
    let ready = raft.ready();
    assert_eq!(acknowledged_durable(&ready, 3), Some(2));
    raft.advance(ready.number);
}

#[test]
fn the_planted_bug_acknowledges_what_the_stale_report_never_flushed() {
    let (mut raft, stale) =
        follower_with_a_report_overtaken_by_a_cut(Some(InjectedBug::StaleFlushReport));
    raft.handle_flushed(stale);
    assert_eq!(raft.log().durable_index(), 2, "the old behaviour");
    let ready = raft.ready();
    assert_eq!(acknowledged_durable(&ready, 3), Some(2));
    raft.advance(ready.number);
}

#[test]
fn a_report_older_than_the_cuts_remembered_vouches_for_nothing() {
    let (mut raft, stale) = follower_with_a_report_overtaken_by_a_cut(None);
    // Many more cuts of nothing new (a driver's no-op truncations count as epochs too).
    for _ in 0..64 {
        raft.log.note_handed_cut(2);
    }
    raft.handle_flushed(stale);
    assert_eq!(raft.log().durable_index(), 0);
}

#[test]
#[should_panic(expected = "flush report from truncation epoch 5")]
fn a_report_from_an_epoch_never_handed_out_is_a_driver_bug() {
    let (mut raft, _) = follower_with_a_report_overtaken_by_a_cut(None);
    raft.handle_flushed(FlushReport {
        epoch: 5,
        durable_index: 2,
    });
}
