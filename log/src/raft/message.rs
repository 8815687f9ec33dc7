//! What replicas of one partition say to each other, and what Raft hands its driver.

use std::rc::Rc;

/// A replica of a partition: the id of the broker that holds it.
pub type ReplicaId = u64;

/// One Raft entry: one journal batch. The payload is opaque to Raft; an empty payload is the
/// no-op a new leader appends to commit earlier terms' entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    pub payload: Rc<[u8]>,
}

impl Entry {
    /// Bytes this entry counts for in batching limits.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        self.payload.len() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// What an entry costs beyond its payload (its batch header), for byte limits.
pub const ENTRY_OVERHEAD_BYTES: u64 = 64;

/// Term and vote: what a replica must persist before it sends anything that depends on them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: Option<ReplicaId>,
}

/// A message between two replicas of one partition. Every message carries the sender's term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub from: ReplicaId,
    pub to: ReplicaId,
    pub term: u64,
    pub body: MessageBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me in `term`?" (the message's term is the proposed one); changes no
    /// state on either side, so a replica cut off from the leader cannot disrupt it.
    PreVote {
        last_index: u64,
        last_term: u64,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// A vote request. `transfer` when the leader asked for this election (leadership transfer):
    /// receivers then grant even though they heard from a leader recently.
    Vote {
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// Entries after `prev_index` (empty: a heartbeat), and the leader's commit index.
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        commit_index: u64,
    },
    /// The answer to an `Append`. `durable_index`: how far the follower's log matches the leader's
    /// and is flushed (what counts towards commit). `last_index`: how far it matches, flushed or
    /// not (where the next append starts). On a mismatch, `reject` hints where to retry.
    AppendResponse {
        durable_index: u64,
        last_index: u64,
        reject: Option<RejectHint>,
    },
    /// "Start an election now": the leader hands over to this replica.
    TimeoutNow,
    /// One chunk of the snapshot up to `snapshot_index` (opaque bytes from `offset`); `done` on
    /// the last. Sent to a follower whose next entry the leader has compacted.
    InstallSnapshot {
        snapshot_index: u64,
        snapshot_term: u64,
        offset: u64,
        data: Rc<[u8]>,
        done: bool,
    },
    /// How many bytes of the snapshot the follower holds (where the next chunk starts).
    InstallSnapshotResponse {
        snapshot_index: u64,
        received_bytes: u64,
    },
}

/// Why a follower refused an append, and where the leader should look next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RejectHint {
    /// The `prev_index` that did not match.
    pub rejected_index: u64,
    /// The follower's last index, when it is shorter than `prev_index`.
    pub follower_last_index: u64,
    /// The follower's term at `rejected_index` (0 if it has no entry there) and the first index
    /// the follower holds in that term, so the leader can skip the whole term at once.
    pub conflict_term: u64,
    pub conflict_term_first_index: u64,
}

/// A request to the driver: read entries `[from_index, ..]` (at most `bytes_max`) from the
/// journal for `peer`, and hand them to [`super::Raft::handle_log_read`]. Raft keeps only recent
/// entries in memory; a lagging follower is served from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRead {
    pub peer: ReplicaId,
    pub from_index: u64,
    pub bytes_max: u64,
}

/// A request to the leader's driver: read `bytes_max` bytes at `offset` of its snapshot up to
/// `snapshot_index` for `peer`, and hand them to [`super::Raft::handle_snapshot_chunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRead {
    pub peer: ReplicaId,
    pub snapshot_index: u64,
    pub offset: u64,
    pub bytes_max: u64,
}

/// A chunk of an incoming snapshot for the follower's driver to store, in order from offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    pub snapshot_index: u64,
    pub snapshot_term: u64,
    pub offset: u64,
    pub data: Rc<[u8]>,
}

/// Everything Raft asks of its driver at one point, numbered. The driver, in this order:
/// 1. truncates the journal after `truncate_after` (if set) with exactly one
///    [`crate::Journal::truncate_after`] call (Raft counts it as the journal's next truncation
///    epoch), then appends `entries`;
/// 2. persists `hard_state` (if set) durably;
/// 3. sends `messages` at once (they need nothing on disk: the leader's appends go out while its
///    own flush runs) and `messages_after_persist` only once step 2 is durable;
/// 4. serves `reads` and `snapshot_reads`, stores `snapshot_chunks` (in order), and when
///    `install_snapshot` is set, makes the stored snapshot its state, resets the journal to start
///    after it (one [`crate::Journal::reset`], another epoch), and calls
///    [`super::Raft::handle_snapshot_installed`]; applies entries up to
///    `commit_index`;
/// 5. calls [`super::Raft::advance`] with `number`, and reports flushes with
///    [`super::Raft::handle_flushed`] as the journal makes entries durable, each with the
///    [`crate::Journal::flush_report`] read when its flush completed.
///
/// Messages that must wait for a journal flush (a follower's acknowledgement of new entries) are
/// not held here: Raft produces them only when [`super::Raft::handle_flushed`] reports the flush,
/// so whatever a `Ready` carries may leave as soon as its hard state is durable.
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Ready {
    pub number: u64,
    pub truncate_after: Option<u64>,
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
    pub messages: Vec<Message>,
    pub messages_after_persist: Vec<Message>,
    /// The new commit index, when it moved.
    pub commit_index: Option<u64>,
    pub reads: Vec<LogRead>,
    pub snapshot_reads: Vec<SnapshotRead>,
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// `(snapshot_index, snapshot_term)`: every chunk is stored; install it.
    pub install_snapshot: Option<(u64, u64)>,
}

impl Ready {
    /// True when there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.truncate_after.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.messages.is_empty()
            && self.messages_after_persist.is_empty()
            && self.commit_index.is_none()
            && self.reads.is_empty()
            && self.snapshot_reads.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.install_snapshot.is_none()
    }
}
