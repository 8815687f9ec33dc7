//! Raft safety checks over plain views of the replicas, independent of any Raft implementation.
//!
//! After every simulation step the driver builds one [`ReplicaView`] per live replica and calls
//! [`Checker::check_step`]. The checker remembers what it saw across steps (the leader of each
//! term, each replica's commit index, every entry seen committed), so a violation is caught even
//! when the evidence is spread over time. The client side reports proposals and
//! acknowledgements as they happen ([`Checker::note_proposed`], [`Checker::note_acknowledged`]);
//! once the cluster has healed and caught up, [`Checker::check_final`] checks that no
//! acknowledged write was lost, none was applied twice, and acknowledged writes kept their order.
//!
//! Rules checked at each step, in this order:
//!
//! - **view shape**: entry indexes are contiguous from `first_index`, the commit index is held or
//!   compacted, entry terms never decrease along a log and never exceed the replica's term;
//! - **durability**: a replica counts as durable (acknowledges to its leader, or counts for
//!   itself as leader) only entries its disk has synced;
//! - **election safety**: at most one leader per term, ever;
//! - **commit monotonicity**: a replica's commit index never decreases, except after
//!   [`Checker::note_restart`];
//! - **log matching**: two replicas holding an entry with the same index and term hold the same
//!   entry there and the same entries before it, as far back as both hold entries;
//! - **committed prefix**: an entry at or below a replica's commit index equals the entry seen
//!   committed at that index on any replica at any time. An *uncommitted* entry on a stale
//!   replica may still differ from a committed one; Raft overwrites it later, so it is not
//!   compared;
//! - **leader completeness**: a leader of term T holds every entry committed in a term below T
//!   (or has compacted it). The checker cannot see in which term an entry was committed; it uses
//!   the lowest current term of any replica seen with the entry committed, an upper bound, so a
//!   stale leader of an older term is never blamed for lacking entries committed after it.
//!
//! Each step costs time linear in the entries held by all replicas (plus a sort), so a long
//! simulation should compact its logs.

use std::collections::BTreeMap;
use std::fmt;

/// Replicas in one step at most.
pub const REPLICAS_MAX: usize = 64;

/// Terms whose leader is remembered at most.
pub const TERMS_TRACKED_MAX: usize = 1 << 20;

/// Committed indexes remembered at most.
pub const COMMITTED_TRACKED_MAX: usize = 1 << 22;

/// Client proposals remembered at most.
pub const PROPOSALS_TRACKED_MAX: usize = 1 << 22;

/// One log entry as the checker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryView {
    /// Raft index, from 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// The client proposal id the entry carries; `None` for a leader's no-op entry.
    pub proposal: Option<u64>,
}

impl fmt::Display for EntryView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "index {} term {} ", self.index, self.term)?;
        match self.proposal {
            Some(proposal) => write!(f, "proposal {proposal}"),
            None => f.write_str("no-op"),
        }
    }
}

/// One replica as the checker sees it after a step.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaView<'a> {
    /// The replica's node id.
    pub id: u64,
    /// Its current term.
    pub term: u64,
    /// Whether it believes it is the leader of `term`.
    pub is_leader: bool,
    /// The highest index it knows to be committed.
    pub commit_index: u64,
    /// The first index still held, from 1; entries below it were compacted into a snapshot.
    pub first_index: u64,
    /// The entries held: `entries[i]` has index `first_index + i`.
    pub entries: &'a [EntryView],
    /// The highest index it counts as durable: what it acknowledges to a leader, or counts
    /// for itself when it leads.
    pub durable_index: u64,
    /// The highest index its disk has synced, by the storage's own account (the journal's
    /// durable index).
    pub synced_index: u64,
}

impl ReplicaView<'_> {
    /// The last index held, or `first_index - 1` when no entry is held.
    #[must_use]
    pub fn last_index(&self) -> u64 {
        let held = u64::try_from(self.entries.len()).expect("lengths fit in u64");
        (self.first_index + held).saturating_sub(1)
    }

    /// The entry at `index`, if held.
    #[must_use]
    pub fn entry(&self, index: u64) -> Option<&EntryView> {
        let offset = usize::try_from(index.checked_sub(self.first_index)?).ok()?;
        self.entries.get(offset)
    }

    /// The entries at or below the commit index that are still held.
    fn committed_entries(&self) -> &[EntryView] {
        let held = self.commit_index.saturating_sub(self.first_index - 1);
        let held = usize::try_from(held).map_or(self.entries.len(), |n| n.min(self.entries.len()));
        &self.entries[..held]
    }
}

/// A broken rule, with the replicas, indexes and terms that show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// A view that cannot describe a Raft log; a bug in the driver that built it, or in how the
    /// replica reports its state.
    MalformedView {
        /// The replica whose view is malformed.
        replica: u64,
        /// What is wrong.
        reason: String,
    },
    /// An entry's term is lower than the one before it, or higher than the replica's term.
    LogTermOrder {
        /// The replica holding the entry.
        replica: u64,
        /// The offending entry.
        entry: EntryView,
        /// The term it was compared against.
        bound_term: u64,
        /// Which comparison failed.
        reason: &'static str,
    },
    /// A replica counts entries as durable that its disk has not synced: it may acknowledge
    /// them, and a leader may commit them without a quorum holding them.
    DurabilityOverstated {
        /// The replica.
        replica: u64,
        /// What it counts as durable.
        durable_index: u64,
        /// What its disk has synced.
        synced_index: u64,
    },
    /// Two replicas led the same term.
    ElectionSafety {
        /// The term.
        term: u64,
        /// The leader seen first.
        first_leader: u64,
        /// The other leader.
        second_leader: u64,
    },
    /// A replica's commit index went down without a restart.
    CommitRegressed {
        /// The replica.
        replica: u64,
        /// Its commit index at an earlier step.
        commit_index_before: u64,
        /// Its commit index now.
        commit_index_now: u64,
    },
    /// Two replicas hold the same index and term but different entries there or before it.
    LogMatching {
        /// The index both hold with the same term.
        index: u64,
        /// That term.
        term: u64,
        /// The first replica.
        replica_a: u64,
        /// The second replica.
        replica_b: u64,
        /// The first replica's entry that differs (at `index` or just before it).
        entry_a: EntryView,
        /// The second replica's entry at the same index.
        entry_b: EntryView,
    },
    /// A replica has committed an entry other than the one seen committed at that index.
    CommittedEntryChanged {
        /// The index.
        index: u64,
        /// The entry seen committed first.
        committed: EntryView,
        /// The replica it was first seen committed on.
        committed_on: u64,
        /// The replica that now has a different entry committed there.
        replica: u64,
        /// Its entry.
        found: EntryView,
    },
    /// A leader lacks an entry committed in an earlier term.
    LeaderCompleteness {
        /// The leader.
        leader: u64,
        /// Its term.
        leader_term: u64,
        /// The committed entry it lacks.
        committed: EntryView,
        /// The entry was committed in this term or earlier.
        committed_term_max: u64,
        /// What the leader holds at that index instead, if anything.
        found: Option<EntryView>,
    },
    /// A proposal the client was told is committed is not in the committed log.
    AcknowledgedLost {
        /// The proposal.
        proposal: u64,
        /// The highest commit index of any replica.
        commit_index: u64,
        /// How many committed entries the checker knows; fewer than `commit_index` means some
        /// were compacted before the checker saw them.
        known_entries: u64,
    },
    /// One proposal committed at two indexes.
    CommittedTwice {
        /// The proposal.
        proposal: u64,
        /// Its first index.
        first_index: u64,
        /// Its second index.
        second_index: u64,
    },
    /// A committed entry carries a proposal no client made.
    UnknownProposal {
        /// The proposal.
        proposal: u64,
        /// Where it is committed.
        index: u64,
    },
    /// A proposal made after another was acknowledged is committed before it.
    AcknowledgementOrder {
        /// The proposal acknowledged first.
        acknowledged: u64,
        /// Its index.
        acknowledged_index: u64,
        /// The proposal made after that acknowledgement.
        proposed_after: u64,
        /// Its index, lower than `acknowledged_index`.
        proposed_after_index: u64,
    },
}

impl fmt::Display for Violation {
    #[expect(clippy::too_many_lines, reason = "one short arm per rule")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedView { replica, reason } => {
                write!(f, "malformed view of replica {replica}: {reason}")
            }
            Self::LogTermOrder {
                replica,
                entry,
                bound_term,
                reason,
            } => write!(
                f,
                "log term order: replica {replica} holds {entry}, whose term {reason} {bound_term}"
            ),
            Self::DurabilityOverstated {
                replica,
                durable_index,
                synced_index,
            } => write!(
                f,
                "durability: replica {replica} counts entries up to index {durable_index} as \
                 durable, but its disk has synced only up to {synced_index}"
            ),
            Self::ElectionSafety {
                term,
                first_leader,
                second_leader,
            } => write!(
                f,
                "election safety: replicas {first_leader} and {second_leader} both led term {term}"
            ),
            Self::CommitRegressed {
                replica,
                commit_index_before,
                commit_index_now,
            } => write!(
                f,
                "commit monotonicity: replica {replica} commit index went from \
                 {commit_index_before} down to {commit_index_now} without a restart"
            ),
            Self::LogMatching {
                index,
                term,
                replica_a,
                replica_b,
                entry_a,
                entry_b,
            } => write!(
                f,
                "log matching: replicas {replica_a} and {replica_b} both hold index {index} term \
                 {term}, but replica {replica_a} holds {entry_a} where replica {replica_b} holds \
                 {entry_b}"
            ),
            Self::CommittedEntryChanged {
                index,
                committed,
                committed_on,
                replica,
                found,
            } => {
                write!(
                    f,
                    "committed prefix: index {index} was committed as {committed} on replica \
                     {committed_on}, but replica {replica} has committed {found}"
                )
            }
            Self::LeaderCompleteness {
                leader,
                leader_term,
                committed,
                committed_term_max,
                found,
            } => {
                write!(
                    f,
                    "leader completeness: replica {leader}, leader of term {leader_term}, lacks \
                     {committed} (committed in term {committed_term_max} or earlier); "
                )?;
                match found {
                    Some(entry) => write!(f, "it holds {entry} instead"),
                    None => f.write_str("it holds nothing at that index"),
                }
            }
            Self::AcknowledgedLost {
                proposal,
                commit_index,
                known_entries,
            } => write!(
                f,
                "acknowledged write lost: proposal {proposal} was acknowledged but is not \
                 committed (commit index {commit_index}, {known_entries} committed entries known)"
            ),
            Self::CommittedTwice {
                proposal,
                first_index,
                second_index,
            } => write!(
                f,
                "exactly once: proposal {proposal} is committed at index {first_index} and again \
                 at index {second_index}"
            ),
            Self::UnknownProposal { proposal, index } => write!(
                f,
                "unknown proposal: index {index} commits proposal {proposal}, which no client made"
            ),
            Self::AcknowledgementOrder {
                acknowledged,
                acknowledged_index,
                proposed_after,
                proposed_after_index,
            } => write!(
                f,
                "acknowledgement order: proposal {acknowledged} was acknowledged before proposal \
                 {proposed_after} was made, yet commits at index {acknowledged_index}, after \
                 index {proposed_after_index}"
            ),
        }
    }
}

impl std::error::Error for Violation {}

/// An entry seen committed.
#[derive(Clone, Copy, Debug)]
struct Committed {
    entry: EntryView,
    /// The replica it was first seen committed on.
    first_seen_on: u64,
    /// The lowest current term of a replica seen with it committed: it was committed in this
    /// term or an earlier one.
    term_max: u64,
}

/// What a client did with a proposal, as positions in the sequence of client events.
#[derive(Clone, Copy, Debug)]
struct Proposal {
    proposed_at: u64,
    acknowledged_at: Option<u64>,
}

/// One held entry, for the log-matching sort.
#[derive(Clone, Copy, Debug)]
struct Held {
    index: u64,
    term: u64,
    /// Position of the replica in the step's slice.
    replica_slot: usize,
    /// Position of the entry in that replica's `entries`.
    entry_slot: usize,
}

/// Checks Raft's safety rules over a run. See the [module docs](self).
#[derive(Debug, Default)]
pub struct Checker {
    /// Term to the leader seen in it.
    leaders: BTreeMap<u64, u64>,
    /// Replica to the lowest commit index it may report next.
    commit_floors: BTreeMap<u64, u64>,
    /// Index to the entry seen committed there.
    committed: BTreeMap<u64, Committed>,
    /// Proposal id to its history.
    proposals: BTreeMap<u64, Proposal>,
    /// Client events so far; orders proposals and acknowledgements.
    client_events: u64,
    steps: u64,
    /// Reused by the log-matching check.
    scratch: Vec<Held>,
}

impl Checker {
    /// A checker that has seen nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Steps checked so far.
    #[must_use]
    pub const fn steps(&self) -> u64 {
        self.steps
    }

    /// Indexes seen committed so far.
    #[must_use]
    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }

    /// Checks the replicas after one step against every per-step rule and remembers what they
    /// show. Pass every replica that is up; a crashed one may be left out. After a violation the
    /// checker's memory is only partly updated: stop the run.
    pub fn check_step(&mut self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        assert!(
            replicas.len() <= REPLICAS_MAX,
            "more than {REPLICAS_MAX} replicas in one step"
        );
        self.steps += 1;
        for (slot, replica) in replicas.iter().enumerate() {
            check_shape(replica)?;
            if let Some(other) = replicas[..slot].iter().find(|other| other.id == replica.id) {
                return Err(Violation::MalformedView {
                    replica: other.id,
                    reason: "the replica appears twice in one step".to_owned(),
                });
            }
        }
        check_durability(replicas)?;
        self.check_election_safety(replicas)?;
        self.check_commit_monotonic(replicas)?;
        self.check_log_matching(replicas)?;
        self.check_committed_prefix(replicas)?;
        self.check_leader_completeness(replicas)
    }

    /// Records that `replica` restarted: it may report any commit index at its next step.
    pub fn note_restart(&mut self, replica: u64) {
        self.commit_floors.insert(replica, 0);
    }

    /// Records that a client proposed `proposal`. Proposing the same id again (a retry) keeps
    /// the time of the first proposal.
    pub fn note_proposed(&mut self, proposal: u64) {
        self.client_events += 1;
        let at = self.client_events;
        self.proposals.entry(proposal).or_insert(Proposal {
            proposed_at: at,
            acknowledged_at: None,
        });
        assert!(
            self.proposals.len() <= PROPOSALS_TRACKED_MAX,
            "more than {PROPOSALS_TRACKED_MAX} proposals tracked"
        );
    }

    /// Records that a client was told `proposal` is committed. Panics if it was never proposed:
    /// that is a bug in the driver.
    pub fn note_acknowledged(&mut self, proposal: u64) {
        self.client_events += 1;
        let at = self.client_events;
        let state = self
            .proposals
            .get_mut(&proposal)
            .unwrap_or_else(|| panic!("proposal {proposal} acknowledged but never proposed"));
        state.acknowledged_at.get_or_insert(at);
    }

    /// Checks the client-visible guarantees once the cluster has healed and caught up: every
    /// acknowledged proposal is committed, no proposal is committed twice or without having been
    /// made, and a proposal made after another was acknowledged commits after it. The committed
    /// log is everything seen committed by [`check_step`](Self::check_step) plus the committed
    /// entries of `replicas`; call `check_step` with the same replicas first.
    pub fn check_final(&self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        let log = self.final_committed_log(replicas)?;

        let mut index_of: BTreeMap<u64, u64> = BTreeMap::new();
        for (&index, &(entry, _)) in &log {
            let Some(proposal) = entry.proposal else {
                continue;
            };
            if let Some(&first_index) = index_of.get(&proposal) {
                return Err(Violation::CommittedTwice {
                    proposal,
                    first_index,
                    second_index: index,
                });
            }
            if !self.proposals.contains_key(&proposal) {
                return Err(Violation::UnknownProposal { proposal, index });
            }
            index_of.insert(proposal, index);
        }

        // (acknowledged_at, index, proposal) of every acknowledged proposal, by time.
        let mut acknowledged = Vec::new();
        for (&proposal, state) in &self.proposals {
            let Some(acknowledged_at) = state.acknowledged_at else {
                continue;
            };
            let Some(&index) = index_of.get(&proposal) else {
                return Err(Violation::AcknowledgedLost {
                    proposal,
                    commit_index: replicas.iter().map(|r| r.commit_index).max().unwrap_or(0),
                    known_entries: u64::try_from(log.len()).expect("counts fit in u64"),
                });
            };
            acknowledged.push((acknowledged_at, index, proposal));
        }
        acknowledged.sort_unstable();
        // highest[i]: the acknowledged proposal with the highest index among the first i + 1.
        let mut highest: Vec<(u64, u64)> = Vec::with_capacity(acknowledged.len());
        for &(_, index, proposal) in &acknowledged {
            let best = highest
                .last()
                .copied()
                .filter(|&(best_index, _)| best_index > index);
            highest.push(best.unwrap_or((index, proposal)));
        }
        for (&proposal, &index) in &index_of {
            let proposed_at = self.proposals[&proposal].proposed_at;
            let before = acknowledged.partition_point(|&(at, _, _)| at < proposed_at);
            if before == 0 {
                continue;
            }
            let (acknowledged_index, acknowledged) = highest[before - 1];
            if acknowledged_index > index {
                return Err(Violation::AcknowledgementOrder {
                    acknowledged,
                    acknowledged_index,
                    proposed_after: proposal,
                    proposed_after_index: index,
                });
            }
        }
        Ok(())
    }

    /// Index to (entry, replica first seen committed on): the remembered committed entries
    /// merged with the committed entries of `replicas`.
    fn final_committed_log(
        &self,
        replicas: &[ReplicaView<'_>],
    ) -> Result<BTreeMap<u64, (EntryView, u64)>, Violation> {
        let mut log: BTreeMap<u64, (EntryView, u64)> = self
            .committed
            .iter()
            .map(|(&i, c)| (i, (c.entry, c.first_seen_on)))
            .collect();
        for replica in replicas {
            check_shape(replica)?;
            for entry in replica.committed_entries() {
                let &mut (committed, committed_on) =
                    log.entry(entry.index).or_insert((*entry, replica.id));
                if committed != *entry {
                    return Err(Violation::CommittedEntryChanged {
                        index: entry.index,
                        committed,
                        committed_on,
                        replica: replica.id,
                        found: *entry,
                    });
                }
            }
        }
        Ok(log)
    }

    fn check_election_safety(&mut self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        for replica in replicas.iter().filter(|r| r.is_leader) {
            let leader = *self.leaders.entry(replica.term).or_insert(replica.id);
            if leader != replica.id {
                return Err(Violation::ElectionSafety {
                    term: replica.term,
                    first_leader: leader,
                    second_leader: replica.id,
                });
            }
        }
        assert!(
            self.leaders.len() <= TERMS_TRACKED_MAX,
            "more than {TERMS_TRACKED_MAX} terms"
        );
        Ok(())
    }

    fn check_commit_monotonic(&mut self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        for replica in replicas {
            let floor = self.commit_floors.entry(replica.id).or_insert(0);
            if replica.commit_index < *floor {
                return Err(Violation::CommitRegressed {
                    replica: replica.id,
                    commit_index_before: *floor,
                    commit_index_now: replica.commit_index,
                });
            }
            *floor = replica.commit_index;
        }
        Ok(())
    }

    /// Log matching, by induction down the log: if every pair of replicas that holds the same
    /// (index, term) holds the same entry there and the same entry just before it (when both
    /// hold one), their logs agree as far back as both reach.
    fn check_log_matching(&mut self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        self.scratch.clear();
        for (replica_slot, replica) in replicas.iter().enumerate() {
            for (entry_slot, entry) in replica.entries.iter().enumerate() {
                self.scratch.push(Held {
                    index: entry.index,
                    term: entry.term,
                    replica_slot,
                    entry_slot,
                });
            }
        }
        // Keys are unique (one entry per replica per index), so the order is deterministic.
        self.scratch
            .sort_unstable_by_key(|h| (h.index, h.term, h.replica_slot));
        for run in self
            .scratch
            .chunk_by(|a, b| (a.index, a.term) == (b.index, b.term))
        {
            let first = run[0];
            let replica_a = &replicas[first.replica_slot];
            let entry_a = replica_a.entries[first.entry_slot];
            let previous_a = first
                .entry_slot
                .checked_sub(1)
                .map(|slot| replica_a.entries[slot]);
            for other in &run[1..] {
                let replica_b = &replicas[other.replica_slot];
                let entry_b = replica_b.entries[other.entry_slot];
                let previous_b = other
                    .entry_slot
                    .checked_sub(1)
                    .map(|slot| replica_b.entries[slot]);
                let differing = if entry_a == entry_b {
                    match (previous_a, previous_b) {
                        (Some(a), Some(b)) if a != b => Some((a, b)),
                        _ => None,
                    }
                } else {
                    Some((entry_a, entry_b))
                };
                if let Some((entry_a, entry_b)) = differing {
                    return Err(Violation::LogMatching {
                        index: first.index,
                        term: first.term,
                        replica_a: replica_a.id,
                        replica_b: replica_b.id,
                        entry_a,
                        entry_b,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_committed_prefix(&mut self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        for replica in replicas {
            for entry in replica.committed_entries() {
                let committed = self.committed.entry(entry.index).or_insert(Committed {
                    entry: *entry,
                    first_seen_on: replica.id,
                    term_max: replica.term,
                });
                if committed.entry != *entry {
                    return Err(Violation::CommittedEntryChanged {
                        index: entry.index,
                        committed: committed.entry,
                        committed_on: committed.first_seen_on,
                        replica: replica.id,
                        found: *entry,
                    });
                }
                committed.term_max = committed.term_max.min(replica.term);
            }
        }
        assert!(
            self.committed.len() <= COMMITTED_TRACKED_MAX,
            "more than {COMMITTED_TRACKED_MAX} committed indexes tracked"
        );
        Ok(())
    }

    fn check_leader_completeness(&self, replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
        for leader in replicas.iter().filter(|r| r.is_leader) {
            // Entries below first_index are compacted; compaction only covers committed entries.
            for committed in self.committed.range(leader.first_index..).map(|(_, c)| c) {
                if committed.term_max >= leader.term {
                    continue;
                }
                let found = leader.entry(committed.entry.index).copied();
                if found != Some(committed.entry) {
                    return Err(Violation::LeaderCompleteness {
                        leader: leader.id,
                        leader_term: leader.term,
                        committed: committed.entry,
                        committed_term_max: committed.term_max,
                        found,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Every replica's durability claim against its disk. A claim above the disk is what lets a
/// follower acknowledge, or a leader count, an entry a crash would take away.
fn check_durability(replicas: &[ReplicaView<'_>]) -> Result<(), Violation> {
    match replicas.iter().find(|r| r.durable_index > r.synced_index) {
        Some(r) => Err(Violation::DurabilityOverstated {
            replica: r.id,
            durable_index: r.durable_index,
            synced_index: r.synced_index,
        }),
        None => Ok(()),
    }
}

/// The rules that concern one view alone.
fn check_shape(replica: &ReplicaView<'_>) -> Result<(), Violation> {
    let malformed = |reason: String| Violation::MalformedView {
        replica: replica.id,
        reason,
    };
    if replica.first_index == 0 {
        return Err(malformed(
            "first_index is 0; Raft indexes start at 1".to_owned(),
        ));
    }
    let mut previous_term = 0;
    for (expected_index, entry) in (replica.first_index..).zip(replica.entries) {
        if entry.index != expected_index {
            return Err(malformed(format!(
                "entry {entry} is at the position of index {expected_index}"
            )));
        }
        if entry.term < previous_term {
            return Err(Violation::LogTermOrder {
                replica: replica.id,
                entry: *entry,
                bound_term: previous_term,
                reason: "is below the previous entry's term",
            });
        }
        if entry.term > replica.term {
            return Err(Violation::LogTermOrder {
                replica: replica.id,
                entry: *entry,
                bound_term: replica.term,
                reason: "is above the replica's current term",
            });
        }
        previous_term = entry.term;
    }
    if replica.commit_index > replica.last_index() {
        return Err(malformed(format!(
            "commit index {} is beyond the last index held, {}",
            replica.commit_index,
            replica.last_index()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log from `first_index`, one (term, proposal) per entry.
    fn log(first_index: u64, entries: &[(u64, Option<u64>)]) -> Vec<EntryView> {
        (first_index..)
            .zip(entries)
            .map(|(index, &(term, proposal))| EntryView {
                index,
                term,
                proposal,
            })
            .collect()
    }

    fn view(
        id: u64,
        term: u64,
        is_leader: bool,
        commit_index: u64,
        entries: &[EntryView],
    ) -> ReplicaView<'_> {
        let first_index = entries.first().map_or(1, |e| e.index);
        ReplicaView {
            id,
            term,
            is_leader,
            commit_index,
            first_index,
            entries,
            durable_index: 0,
            synced_index: 0,
        }
    }

    fn entry(index: u64, term: u64, proposal: Option<u64>) -> EntryView {
        EntryView {
            index,
            term,
            proposal,
        }
    }

    // --- view shape ---

    #[test]
    fn shape_rejects_gaps_zero_index_decreasing_terms_and_commit_beyond_log() {
        let mut checker = Checker::new();
        let gap = [entry(1, 1, None), entry(3, 1, Some(1))];
        let err = checker
            .check_step(&[view(1, 1, false, 0, &gap)])
            .expect_err("the violation is caught");
        assert!(
            matches!(err, Violation::MalformedView { replica: 1, .. }),
            "{err}"
        );

        let zero = ReplicaView {
            id: 2,
            term: 1,
            is_leader: false,
            commit_index: 0,
            first_index: 0,
            entries: &[],
            durable_index: 0,
            synced_index: 0,
        };
        assert!(matches!(
            checker.check_step(&[zero]),
            Err(Violation::MalformedView { .. })
        ));

        let decreasing = log(1, &[(2, None), (1, Some(1))]);
        let err = checker
            .check_step(&[view(1, 2, false, 0, &decreasing)])
            .expect_err("the violation is caught");
        assert!(
            matches!(err, Violation::LogTermOrder { bound_term: 2, .. }),
            "{err}"
        );

        let future = log(1, &[(3, None)]);
        let err = checker
            .check_step(&[view(1, 2, false, 0, &future)])
            .expect_err("the violation is caught");
        assert!(
            err.to_string().contains("above the replica's current term"),
            "{err}"
        );

        let short = log(1, &[(1, None)]);
        let err = checker
            .check_step(&[view(1, 1, false, 2, &short)])
            .expect_err("the violation is caught");
        assert!(err.to_string().contains("beyond the last index"), "{err}");

        let twice = log(1, &[(1, None)]);
        let err = checker.check_step(&[view(1, 1, false, 0, &twice), view(1, 1, false, 0, &twice)]);
        assert!(
            err.expect_err("the violation is caught")
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn shape_accepts_empty_and_compacted_logs() {
        let mut checker = Checker::new();
        let compacted = log(11, &[(2, Some(5))]);
        let snapshot_only = ReplicaView {
            id: 3,
            term: 2,
            is_leader: false,
            commit_index: 10,
            first_index: 11,
            entries: &[],
            durable_index: 10,
            synced_index: 10,
        };
        checker
            .check_step(&[
                view(1, 0, false, 0, &[]),
                view(2, 2, false, 10, &compacted),
                snapshot_only,
            ])
            .expect("the rules hold");
        assert_eq!(snapshot_only.last_index(), 10);
        assert_eq!(
            view(2, 2, false, 10, &compacted).entry(11),
            Some(&compacted[0])
        );
        assert_eq!(view(2, 2, false, 10, &compacted).entry(10), None);
    }

    // --- durability ---

    #[test]
    fn durability_holds_up_to_the_synced_index_and_is_caught_past_it() {
        let mut checker = Checker::new();
        let entries = log(1, &[(1, None), (1, Some(1)), (2, Some(2))]);
        let mut replica = view(1, 2, false, 1, &entries);
        replica.durable_index = 2;
        replica.synced_index = 2;
        checker.check_step(&[replica]).expect("the rules hold");
        // Index 3 was truncated and replaced after the flush that synced it: the disk no longer
        // holds a synced entry there, whatever a late flush report says.
        replica.synced_index = 1;
        replica.durable_index = 3;
        let err = checker
            .check_step(&[replica])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::DurabilityOverstated {
                replica: 1,
                durable_index: 3,
                synced_index: 1,
            }
        );
        assert!(
            err.to_string().starts_with("durability: replica 1"),
            "{err}"
        );
    }

    // --- election safety ---

    #[test]
    fn election_safety_holds_with_one_leader_per_term() {
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 1, true, 0, &[]), view(2, 1, false, 0, &[])])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 1, true, 0, &[]), view(2, 2, true, 0, &[])])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 2, false, 0, &[]), view(2, 2, true, 0, &[])])
            .expect("the rules hold");
    }

    #[test]
    fn election_safety_catches_two_leaders_in_one_term() {
        let mut checker = Checker::new();
        let err = checker
            .check_step(&[view(1, 3, true, 0, &[]), view(2, 3, true, 0, &[])])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::ElectionSafety {
                term: 3,
                first_leader: 1,
                second_leader: 2
            }
        );
        assert!(err.to_string().starts_with("election safety"), "{err}");

        // Across steps: replica 1 led term 3 and is gone by the time replica 2 claims it.
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 3, true, 0, &[])])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 4, false, 0, &[])])
            .expect("the rules hold");
        let err = checker
            .check_step(&[view(2, 3, true, 0, &[])])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::ElectionSafety {
                term: 3,
                first_leader: 1,
                second_leader: 2
            }
        );
    }

    // --- commit monotonicity ---

    #[test]
    fn commit_monotonicity_holds_and_a_restart_resets_the_floor() {
        let entries = log(1, &[(1, None), (1, Some(1)), (1, Some(2))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 1, false, 1, &entries)])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 1, false, 3, &entries)])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 1, false, 3, &entries)])
            .expect("the rules hold");
        checker.note_restart(1);
        checker
            .check_step(&[view(1, 1, false, 0, &entries)])
            .expect("the rules hold");
        checker
            .check_step(&[view(1, 1, false, 2, &entries)])
            .expect("the rules hold");
    }

    #[test]
    fn commit_monotonicity_catches_commit_going_backwards() {
        let entries = log(1, &[(1, None), (1, Some(1)), (1, Some(2))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 1, false, 3, &entries)])
            .expect("the rules hold");
        checker
            .check_step(&[view(2, 1, false, 0, &entries)])
            .expect("the rules hold"); // replica 1 absent
        let err = checker
            .check_step(&[view(1, 1, false, 2, &entries)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::CommitRegressed {
                replica: 1,
                commit_index_before: 3,
                commit_index_now: 2
            }
        );
        assert!(err.to_string().starts_with("commit monotonicity"), "{err}");
    }

    // --- log matching ---

    #[test]
    fn log_matching_holds_for_diverging_suffixes_and_compacted_prefixes() {
        // Common prefix through index 2, then an uncommitted term-2 suffix on replica 1 that
        // the term-3 leader (replica 2) has replaced.
        let a = log(1, &[(1, None), (1, Some(1)), (2, Some(2)), (2, Some(3))]);
        let b = log(1, &[(1, None), (1, Some(1)), (3, None), (3, Some(4))]);
        // Replica 3 has compacted through index 2 and holds the term-3 entries.
        let c = log(3, &[(3, None), (3, Some(4))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[
                view(1, 2, false, 2, &a),
                view(2, 3, true, 2, &b),
                view(3, 3, false, 2, &c),
            ])
            .expect("the rules hold");
    }

    #[test]
    fn log_matching_catches_same_index_and_term_with_different_entries() {
        let a = log(1, &[(1, None), (1, Some(1))]);
        let b = log(1, &[(1, None), (1, Some(9))]);
        let mut checker = Checker::new();
        let err = checker
            .check_step(&[view(1, 1, false, 0, &a), view(2, 1, false, 0, &b)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::LogMatching {
                index: 2,
                term: 1,
                replica_a: 1,
                replica_b: 2,
                entry_a: entry(2, 1, Some(1)),
                entry_b: entry(2, 1, Some(9)),
            }
        );
        assert!(err.to_string().starts_with("log matching"), "{err}");
    }

    #[test]
    fn log_matching_catches_a_divergent_earlier_entry() {
        // Index 3 term 3 on both, but index 2 differs in term: the prefixes disagree.
        let a = log(1, &[(1, None), (1, Some(1)), (3, Some(3))]);
        let b = log(1, &[(1, None), (2, Some(2)), (3, Some(3))]);
        let mut checker = Checker::new();
        let err = checker
            .check_step(&[view(1, 3, false, 0, &a), view(2, 3, false, 0, &b)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::LogMatching {
                index: 3,
                term: 3,
                replica_a: 1,
                replica_b: 2,
                entry_a: entry(2, 1, Some(1)),
                entry_b: entry(2, 2, Some(2)),
            }
        );
    }

    // --- committed prefix ---

    #[test]
    fn committed_prefix_holds_while_a_stale_replica_keeps_an_uncommitted_entry() {
        // Index 2 is committed as term 2 on replicas 1 and 2; replica 3 still holds a stale
        // term-1 entry at index 2, uncommitted there. That is legal.
        let committed = log(1, &[(1, None), (2, Some(7))]);
        let stale = log(1, &[(1, None), (1, Some(5))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[
                view(1, 2, true, 2, &committed),
                view(2, 2, false, 2, &committed),
                view(3, 1, false, 1, &stale),
            ])
            .expect("the rules hold");
        assert_eq!(checker.committed_count(), 2);
        // Later the stale replica catches up.
        checker
            .check_step(&[view(3, 2, false, 2, &committed)])
            .expect("the rules hold");
    }

    #[test]
    fn committed_prefix_catches_divergent_committed_entries() {
        // Both replicas commit index 2, with different terms (log matching alone is silent:
        // they share no (index, term) at index 2).
        let a = log(1, &[(1, None), (1, Some(1))]);
        let b = log(1, &[(1, None), (2, Some(2))]);
        let mut checker = Checker::new();
        let err = checker
            .check_step(&[view(1, 2, false, 2, &a), view(2, 2, false, 2, &b)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::CommittedEntryChanged {
                index: 2,
                committed: entry(2, 1, Some(1)),
                committed_on: 1,
                replica: 2,
                found: entry(2, 2, Some(2)),
            }
        );
        assert!(err.to_string().starts_with("committed prefix"), "{err}");
    }

    #[test]
    fn committed_prefix_catches_a_committed_entry_changing_over_time() {
        let before = log(1, &[(1, None), (1, Some(1))]);
        let after = log(1, &[(1, None), (2, Some(2))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 1, false, 2, &before)])
            .expect("the rules hold");
        // Replica 1 crashes and is gone; replica 2 later commits another entry at index 2.
        let err = checker
            .check_step(&[view(2, 2, false, 2, &after)])
            .expect_err("the violation is caught");
        assert!(matches!(
            err,
            Violation::CommittedEntryChanged {
                index: 2,
                committed_on: 1,
                replica: 2,
                ..
            }
        ));
    }

    // --- leader completeness ---

    #[test]
    fn leader_completeness_holds_for_complete_compacted_and_stale_leaders() {
        let full = log(1, &[(1, None), (1, Some(1)), (3, None), (3, Some(2))]);
        let mut checker = Checker::new();
        // Term 3 leader commits through index 4 with a majority.
        checker
            .check_step(&[view(1, 3, true, 4, &full), view(2, 3, false, 4, &full)])
            .expect("the rules hold");
        // A term-4 leader that compacted through index 3 still holds index 4.
        let compacted = log(4, &[(3, Some(2)), (4, None)]);
        checker
            .check_step(&[view(3, 4, true, 4, &compacted)])
            .expect("the rules hold");
        // A stale leader of term 2, partitioned since before index 3 and 4 were committed in
        // term 3, may lack them.
        let stale = log(1, &[(1, None), (1, Some(1)), (2, None)]);
        checker
            .check_step(&[view(4, 2, true, 2, &stale)])
            .expect("the rules hold");
    }

    #[test]
    fn leader_completeness_catches_a_leader_missing_a_committed_entry() {
        let full = log(1, &[(1, None), (1, Some(1)), (1, Some(2))]);
        let mut checker = Checker::new();
        checker
            .check_step(&[view(1, 1, true, 3, &full), view(2, 1, false, 3, &full)])
            .expect("the rules hold");
        // Replica 3 becomes leader of term 2 without index 3.
        let short = log(1, &[(1, None), (1, Some(1)), (2, None)]);
        let err = checker
            .check_step(&[view(3, 2, true, 2, &short)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::LeaderCompleteness {
                leader: 3,
                leader_term: 2,
                committed: entry(3, 1, Some(2)),
                committed_term_max: 1,
                found: Some(entry(3, 2, None)),
            }
        );
        assert!(err.to_string().starts_with("leader completeness"), "{err}");

        let shorter = log(1, &[(1, None), (1, Some(1))]);
        let err = Checker::new()
            .check_step(&[view(1, 1, false, 3, &full), view(3, 2, true, 2, &shorter)])
            .expect_err("the violation is caught");
        assert!(
            matches!(err, Violation::LeaderCompleteness { found: None, .. }),
            "{err}"
        );
    }

    // --- client guarantees ---

    fn final_log() -> Vec<EntryView> {
        log(
            1,
            &[
                (1, None),
                (1, Some(10)),
                (1, Some(11)),
                (2, None),
                (2, Some(12)),
            ],
        )
    }

    #[test]
    fn final_check_holds_for_a_clean_run() {
        let mut checker = Checker::new();
        checker.note_proposed(10);
        checker.note_proposed(11);
        checker.note_acknowledged(10);
        checker.note_proposed(12);
        checker.note_proposed(13); // never acknowledged and never committed: allowed
        checker.note_acknowledged(12);
        checker.note_acknowledged(11);
        let entries = final_log();
        let replicas = [
            view(1, 2, true, 5, &entries),
            view(2, 2, false, 5, &entries),
        ];
        checker.check_step(&replicas).expect("the rules hold");
        checker.check_final(&replicas).expect("the rules hold");
    }

    #[test]
    fn final_check_counts_entries_compacted_after_they_were_seen() {
        let mut checker = Checker::new();
        checker.note_proposed(10);
        checker.note_acknowledged(10);
        let entries = log(1, &[(1, None), (1, Some(10))]);
        checker
            .check_step(&[view(1, 1, true, 2, &entries)])
            .expect("the rules hold");
        // Every replica has since compacted index 2 into a snapshot.
        let after = log(3, &[(1, None)]);
        let replicas = [view(1, 1, true, 3, &after)];
        checker.check_step(&replicas).expect("the rules hold");
        checker.check_final(&replicas).expect("the rules hold");
    }

    #[test]
    fn final_check_catches_a_lost_acknowledged_proposal() {
        let mut checker = Checker::new();
        for proposal in 10..=14 {
            checker.note_proposed(proposal);
        }
        checker.note_acknowledged(14);
        let entries = final_log();
        let replicas = [view(1, 2, true, 5, &entries)];
        checker.check_step(&replicas).expect("the rules hold");
        let err = checker
            .check_final(&replicas)
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::AcknowledgedLost {
                proposal: 14,
                commit_index: 5,
                known_entries: 5
            }
        );
        assert!(
            err.to_string().starts_with("acknowledged write lost"),
            "{err}"
        );
    }

    #[test]
    fn final_check_ignores_uncommitted_entries() {
        // Proposal 14 is held past the commit index only: acknowledging it was a lie.
        let mut checker = Checker::new();
        checker.note_proposed(14);
        checker.note_acknowledged(14);
        let entries = log(1, &[(1, None), (1, Some(14))]);
        let replicas = [view(1, 1, true, 1, &entries)];
        checker.check_step(&replicas).expect("the rules hold");
        assert!(matches!(
            checker.check_final(&replicas),
            Err(Violation::AcknowledgedLost { proposal: 14, .. })
        ));
    }

    #[test]
    fn final_check_catches_a_proposal_committed_twice() {
        let mut checker = Checker::new();
        checker.note_proposed(10);
        checker.note_acknowledged(10);
        let entries = log(1, &[(1, Some(10)), (2, None), (2, Some(10))]);
        let replicas = [view(1, 2, true, 3, &entries)];
        checker.check_step(&replicas).expect("the rules hold");
        let err = checker
            .check_final(&replicas)
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::CommittedTwice {
                proposal: 10,
                first_index: 1,
                second_index: 3
            }
        );
        assert!(err.to_string().starts_with("exactly once"), "{err}");
    }

    #[test]
    fn final_check_catches_an_unknown_proposal() {
        let checker = Checker::new();
        let entries = log(1, &[(1, Some(77))]);
        let err = checker
            .check_final(&[view(1, 1, true, 1, &entries)])
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::UnknownProposal {
                proposal: 77,
                index: 1
            }
        );
    }

    #[test]
    fn final_check_allows_concurrent_proposals_in_any_order() {
        // 11 was proposed before 10 was acknowledged, so 11 may commit first.
        let mut checker = Checker::new();
        checker.note_proposed(10);
        checker.note_proposed(11);
        checker.note_acknowledged(11);
        checker.note_acknowledged(10);
        let entries = log(1, &[(1, Some(11)), (1, Some(10))]);
        let replicas = [view(1, 1, true, 2, &entries)];
        checker.check_step(&replicas).expect("the rules hold");
        checker.check_final(&replicas).expect("the rules hold");
    }

    #[test]
    fn final_check_catches_reversed_order() {
        // 10 was acknowledged before 12 was proposed, yet 12 commits first. 11 is an earlier
        // acknowledged proposal that is in order.
        let mut checker = Checker::new();
        checker.note_proposed(11);
        checker.note_acknowledged(11);
        checker.note_proposed(10);
        checker.note_acknowledged(10);
        checker.note_proposed(12);
        let entries = log(1, &[(1, Some(11)), (1, Some(12)), (1, Some(10))]);
        let replicas = [view(1, 1, true, 3, &entries)];
        checker.check_step(&replicas).expect("the rules hold");
        let err = checker
            .check_final(&replicas)
            .expect_err("the violation is caught");
        assert_eq!(
            err,
            Violation::AcknowledgementOrder {
                acknowledged: 10,
                acknowledged_index: 3,
                proposed_after: 12,
                proposed_after_index: 2,
            }
        );
        assert!(
            err.to_string().starts_with("acknowledgement order"),
            "{err}"
        );
    }

    #[test]
    fn final_check_catches_a_replica_disagreeing_with_the_committed_history() {
        let mut checker = Checker::new();
        checker.note_proposed(10);
        let entries = log(1, &[(1, Some(10))]);
        checker
            .check_step(&[view(1, 1, true, 1, &entries)])
            .expect("the rules hold");
        let other = log(1, &[(2, None)]);
        let err = checker
            .check_final(&[view(2, 2, true, 1, &other)])
            .expect_err("the violation is caught");
        assert!(
            matches!(err, Violation::CommittedEntryChanged { index: 1, .. }),
            "{err}"
        );
    }

    #[test]
    #[should_panic(expected = "never proposed")]
    fn acknowledging_an_unknown_proposal_is_a_driver_bug() {
        Checker::new().note_acknowledged(1);
    }
}
