//! The messages brokers send each other, as rkyv archives inside [`crate::frame`] frames.
//!
//! Two kinds of traffic share the wire:
//! - Raft: all partitions' Raft messages between two brokers share one connection, so a frame
//!   of kind [`FrameKind::RaftBatch`] holds a [`RaftBatch`] of [`RaftEnvelope`]s, each a
//!   `sluice_log::raft::Message` tagged with its partition.
//! - Gossip: a frame of kind [`FrameKind::Swim`] holds one [`SwimMessage`], a
//!   [`crate::swim::Message`].
//!
//! The types here mirror the in-memory types field for field; they exist only to be archived.
//! Callers deal in the in-memory types:
//!
//! ```text
//! send:    out = encode_raft_batch(&[(partition_id, message), ..])?;  write out
//! receive: decoder.push(bytes); while let Some(frame) = decoder.next_frame()? {
//!              match frame.kind {
//!                  FrameKind::RaftBatch => for (partition_id, message) in decode_raft_batch(&frame)? { .. }
//!                  FrameKind::Swim => swim.handle_message(from, decode_swim_message(&frame)?, now_ms),
//!              }
//!          }
//! ```
//!
//! Decoding validates the archive with bytecheck before reading it, so arbitrary bytes give an
//! [`Error::InvalidBody`], never undefined behaviour; then it checks the bounds below and gives
//! [`Error::OutOfBounds`]. Encoding checks the same bounds, so a broker never sends what its
//! peers would reject. The archive format is rkyv 0.8's little-endian, 32-bit-offset, aligned
//! format; the body is copied into an aligned buffer before it is validated.

use std::rc::Rc;

use rkyv::rancor;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Serialize};
use sluice_log::raft;

use crate::frame::{FRAME_BODY_BYTES_MAX, Frame, FrameKind, encode_frame};
use crate::swim;
use crate::{Error, Result};

/// Most envelopes in one [`RaftBatch`].
pub const RAFT_BATCH_ENVELOPES_MAX: u32 = 65_536;
/// Most entries in one `Append`: as many as a full frame holds at Raft's own per-entry cost
/// ([`raft::ENTRY_OVERHEAD_BYTES`]).
#[expect(
    clippy::cast_possible_truncation,
    reason = "a frame's bytes over a positive per-entry cost fit the frame's u32 length"
)]
pub const RAFT_APPEND_ENTRIES_MAX: u32 =
    (FRAME_BODY_BYTES_MAX as u64 / raft::ENTRY_OVERHEAD_BYTES) as u32;
/// Largest payload of one Raft entry, in bytes; the rest of the frame is left for the archive's
/// own structure.
pub const RAFT_ENTRY_PAYLOAD_BYTES_MAX: u32 = FRAME_BODY_BYTES_MAX - (1 << 20);
/// Largest snapshot chunk in one `InstallSnapshot`, in bytes.
pub const RAFT_SNAPSHOT_CHUNK_BYTES_MAX: u32 = 8 << 20;
/// Most member updates in one gossip message.
pub const SWIM_UPDATES_MAX: u32 = swim::MESSAGE_UPDATES_LIMIT;
/// Longest member metadata on the wire, in bytes.
pub const SWIM_METADATA_BYTES_MAX: u32 = swim::METADATA_BYTES_LIMIT;
/// Longest member address on the wire, in bytes.
pub const SWIM_ADDRESS_BYTES_MAX: usize = swim::ADDRESS_BYTES_MAX;

const _: () = assert!(raft::ENTRY_OVERHEAD_BYTES > 0);
const _: () = assert!(RAFT_ENTRY_PAYLOAD_BYTES_MAX < FRAME_BODY_BYTES_MAX);
const _: () = assert!(RAFT_SNAPSHOT_CHUNK_BYTES_MAX < FRAME_BODY_BYTES_MAX);
// Not asserted: SWIM_UPDATES_MAX updates of SWIM_METADATA_BYTES_MAX each (64 MiB) do not fit a
// frame. With the gossip defaults (256 updates of 4 KiB) a message is about 1 MiB; a message
// that does not fit is refused by `encode_swim_message` with `Error::FrameTooLarge`.

/// Errors with [`Error::OutOfBounds`] when `value` is above `value_max`.
fn check_bound(field: &'static str, value: usize, value_max: u64) -> Result<()> {
    let value = value as u64;
    if value > value_max {
        return Err(Error::OutOfBounds {
            field,
            value,
            value_max,
        });
    }
    Ok(())
}

/// Validates `frame` as an archived `T` of `kind` and hands the checked archive to `read`.
fn with_archive<T, R>(
    frame: &Frame,
    kind: FrameKind,
    read: impl FnOnce(&T) -> Result<R>,
) -> Result<R>
where
    T: rkyv::Portable
        + for<'a> rkyv::bytecheck::CheckBytes<rkyv::api::high::HighValidator<'a, rancor::Error>>,
{
    if frame.kind != kind {
        return Err(Error::UnexpectedFrameKind {
            expected: kind,
            actual: frame.kind,
        });
    }
    // The aligned archive format needs the body at an aligned address; a frame body has none.
    let mut aligned = AlignedVec::<16>::with_capacity(frame.body.len());
    aligned.extend_from_slice(&frame.body);
    let archived =
        rkyv::access::<T, rancor::Error>(&aligned).map_err(|error| Error::InvalidBody {
            kind,
            reason: error.to_string(),
        })?;
    read(archived)
}

/// Archives `value` and frames it as `kind`.
fn encode<T>(kind: FrameKind, value: &T) -> Result<Vec<u8>>
where
    T: for<'a> Serialize<
        rkyv::api::high::HighSerializer<
            AlignedVec,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rancor::Error,
        >,
    >,
{
    // Serializing fails only when an offset overflows the 32-bit relative pointers (2 GiB);
    // callers bound the archive to a few frames' worth first.
    let body = rkyv::to_bytes::<rancor::Error>(value)
        .expect("an archive bounded to a few frames fits 32-bit offsets");
    let mut out = Vec::new();
    encode_frame(kind, &body, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Raft
// ---------------------------------------------------------------------------------------------

/// All Raft messages one broker sends another in one frame, of any partitions.
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftBatch {
    /// The messages, in the order they were produced.
    pub envelopes: Vec<RaftEnvelope>,
}

/// One Raft message and the partition whose replicas exchange it.
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftEnvelope {
    /// The partition.
    pub partition_id: u32,
    /// The message between two of its replicas.
    pub message: RaftMessage,
}

/// Mirrors [`raft::Message`].
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftMessage {
    /// The sending replica.
    pub from: u64,
    /// The receiving replica.
    pub to: u64,
    /// The sender's term.
    pub term: u64,
    /// What the message says.
    pub body: RaftMessageBody,
}

/// Mirrors [`raft::MessageBody`]; see there for what each variant means.
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[expect(
    missing_docs,
    reason = "the fields mirror raft::MessageBody, documented there"
)]
pub enum RaftMessageBody {
    /// [`raft::MessageBody::PreVote`].
    PreVote { last_index: u64, last_term: u64 },
    /// [`raft::MessageBody::PreVoteResponse`].
    PreVoteResponse { granted: bool },
    /// [`raft::MessageBody::Vote`].
    Vote {
        last_index: u64,
        last_term: u64,
        transfer: bool,
    },
    /// [`raft::MessageBody::VoteResponse`].
    VoteResponse { granted: bool },
    /// [`raft::MessageBody::Append`].
    Append {
        prev_index: u64,
        prev_term: u64,
        entries: Vec<RaftEntry>,
        commit_index: u64,
    },
    /// [`raft::MessageBody::AppendResponse`].
    AppendResponse {
        durable_index: u64,
        last_index: u64,
        reject: Option<RaftRejectHint>,
    },
    /// [`raft::MessageBody::TimeoutNow`].
    TimeoutNow,
    /// [`raft::MessageBody::InstallSnapshot`].
    InstallSnapshot {
        snapshot_index: u64,
        snapshot_term: u64,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    },
    /// [`raft::MessageBody::InstallSnapshotResponse`].
    InstallSnapshotResponse {
        snapshot_index: u64,
        received_bytes: u64,
    },
}

/// Mirrors [`raft::Entry`].
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftEntry {
    /// The entry's index.
    pub index: u64,
    /// The term it was appended in.
    pub term: u64,
    /// The opaque journal batch; empty for a leader's no-op.
    pub payload: Vec<u8>,
}

/// Mirrors [`raft::RejectHint`].
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftRejectHint {
    /// The `prev_index` that did not match.
    pub rejected_index: u64,
    /// The follower's last index.
    pub follower_last_index: u64,
    /// The follower's term at `rejected_index`, 0 if it has no entry there.
    pub conflict_term: u64,
    /// The first index the follower holds in `conflict_term`.
    pub conflict_term_first_index: u64,
}

impl From<raft::RejectHint> for RaftRejectHint {
    fn from(hint: raft::RejectHint) -> Self {
        Self {
            rejected_index: hint.rejected_index,
            follower_last_index: hint.follower_last_index,
            conflict_term: hint.conflict_term,
            conflict_term_first_index: hint.conflict_term_first_index,
        }
    }
}

impl From<&ArchivedRaftRejectHint> for raft::RejectHint {
    fn from(hint: &ArchivedRaftRejectHint) -> Self {
        Self {
            rejected_index: hint.rejected_index.to_native(),
            follower_last_index: hint.follower_last_index.to_native(),
            conflict_term: hint.conflict_term.to_native(),
            conflict_term_first_index: hint.conflict_term_first_index.to_native(),
        }
    }
}

impl TryFrom<&raft::Entry> for RaftEntry {
    type Error = Error;

    fn try_from(entry: &raft::Entry) -> Result<Self> {
        check_bound(
            "raft entry payload bytes",
            entry.payload.len(),
            u64::from(RAFT_ENTRY_PAYLOAD_BYTES_MAX),
        )?;
        Ok(Self {
            index: entry.index,
            term: entry.term,
            payload: entry.payload.to_vec(),
        })
    }
}

impl TryFrom<&ArchivedRaftEntry> for raft::Entry {
    type Error = Error;

    fn try_from(entry: &ArchivedRaftEntry) -> Result<Self> {
        check_bound(
            "raft entry payload bytes",
            entry.payload.len(),
            u64::from(RAFT_ENTRY_PAYLOAD_BYTES_MAX),
        )?;
        Ok(Self {
            index: entry.index.to_native(),
            term: entry.term.to_native(),
            payload: Rc::from(entry.payload.as_slice()),
        })
    }
}

impl TryFrom<&raft::MessageBody> for RaftMessageBody {
    type Error = Error;

    fn try_from(body: &raft::MessageBody) -> Result<Self> {
        use raft::MessageBody as B;
        Ok(match body {
            &B::PreVote {
                last_index,
                last_term,
            } => Self::PreVote {
                last_index,
                last_term,
            },
            &B::PreVoteResponse { granted } => Self::PreVoteResponse { granted },
            &B::Vote {
                last_index,
                last_term,
                transfer,
            } => Self::Vote {
                last_index,
                last_term,
                transfer,
            },
            &B::VoteResponse { granted } => Self::VoteResponse { granted },
            B::Append {
                prev_index,
                prev_term,
                entries,
                commit_index,
            } => {
                check_bound(
                    "raft append entries",
                    entries.len(),
                    u64::from(RAFT_APPEND_ENTRIES_MAX),
                )?;
                Self::Append {
                    prev_index: *prev_index,
                    prev_term: *prev_term,
                    entries: entries
                        .iter()
                        .map(RaftEntry::try_from)
                        .collect::<Result<_>>()?,
                    commit_index: *commit_index,
                }
            }
            &B::AppendResponse {
                durable_index,
                last_index,
                reject,
            } => Self::AppendResponse {
                durable_index,
                last_index,
                reject: reject.map(RaftRejectHint::from),
            },
            B::TimeoutNow => Self::TimeoutNow,
            B::InstallSnapshot {
                snapshot_index,
                snapshot_term,
                offset,
                data,
                done,
            } => {
                check_bound(
                    "raft snapshot chunk bytes",
                    data.len(),
                    u64::from(RAFT_SNAPSHOT_CHUNK_BYTES_MAX),
                )?;
                Self::InstallSnapshot {
                    snapshot_index: *snapshot_index,
                    snapshot_term: *snapshot_term,
                    offset: *offset,
                    data: data.to_vec(),
                    done: *done,
                }
            }
            &B::InstallSnapshotResponse {
                snapshot_index,
                received_bytes,
            } => Self::InstallSnapshotResponse {
                snapshot_index,
                received_bytes,
            },
        })
    }
}

impl TryFrom<&ArchivedRaftMessageBody> for raft::MessageBody {
    type Error = Error;

    fn try_from(body: &ArchivedRaftMessageBody) -> Result<Self> {
        use ArchivedRaftMessageBody as A;
        Ok(match body {
            A::PreVote {
                last_index,
                last_term,
            } => Self::PreVote {
                last_index: last_index.to_native(),
                last_term: last_term.to_native(),
            },
            A::PreVoteResponse { granted } => Self::PreVoteResponse { granted: *granted },
            A::Vote {
                last_index,
                last_term,
                transfer,
            } => Self::Vote {
                last_index: last_index.to_native(),
                last_term: last_term.to_native(),
                transfer: *transfer,
            },
            A::VoteResponse { granted } => Self::VoteResponse { granted: *granted },
            A::Append {
                prev_index,
                prev_term,
                entries,
                commit_index,
            } => {
                check_bound(
                    "raft append entries",
                    entries.len(),
                    u64::from(RAFT_APPEND_ENTRIES_MAX),
                )?;
                Self::Append {
                    prev_index: prev_index.to_native(),
                    prev_term: prev_term.to_native(),
                    entries: entries
                        .iter()
                        .map(raft::Entry::try_from)
                        .collect::<Result<_>>()?,
                    commit_index: commit_index.to_native(),
                }
            }
            A::AppendResponse {
                durable_index,
                last_index,
                reject,
            } => Self::AppendResponse {
                durable_index: durable_index.to_native(),
                last_index: last_index.to_native(),
                reject: reject.as_ref().map(raft::RejectHint::from),
            },
            A::TimeoutNow => Self::TimeoutNow,
            A::InstallSnapshot {
                snapshot_index,
                snapshot_term,
                offset,
                data,
                done,
            } => {
                check_bound(
                    "raft snapshot chunk bytes",
                    data.len(),
                    u64::from(RAFT_SNAPSHOT_CHUNK_BYTES_MAX),
                )?;
                Self::InstallSnapshot {
                    snapshot_index: snapshot_index.to_native(),
                    snapshot_term: snapshot_term.to_native(),
                    offset: offset.to_native(),
                    data: Rc::from(data.as_slice()),
                    done: *done,
                }
            }
            A::InstallSnapshotResponse {
                snapshot_index,
                received_bytes,
            } => Self::InstallSnapshotResponse {
                snapshot_index: snapshot_index.to_native(),
                received_bytes: received_bytes.to_native(),
            },
        })
    }
}

impl TryFrom<&raft::Message> for RaftMessage {
    type Error = Error;

    fn try_from(message: &raft::Message) -> Result<Self> {
        Ok(Self {
            from: message.from,
            to: message.to,
            term: message.term,
            body: RaftMessageBody::try_from(&message.body)?,
        })
    }
}

impl TryFrom<&ArchivedRaftMessage> for raft::Message {
    type Error = Error;

    fn try_from(message: &ArchivedRaftMessage) -> Result<Self> {
        Ok(Self {
            from: message.from.to_native(),
            to: message.to.to_native(),
            term: message.term.to_native(),
            body: raft::MessageBody::try_from(&message.body)?,
        })
    }
}

/// One frame of kind [`FrameKind::RaftBatch`] holding `messages`, each with its partition id.
///
/// Errors with [`Error::OutOfBounds`] or [`Error::FrameTooLarge`] when the batch breaks a wire
/// bound; split it and send the parts.
pub fn encode_raft_batch(messages: &[(u32, raft::Message)]) -> Result<Vec<u8>> {
    check_bound(
        "raft batch envelopes",
        messages.len(),
        u64::from(RAFT_BATCH_ENVELOPES_MAX),
    )?;
    // Refuse a batch whose archive surely exceeds a frame before copying any of it.
    let archive_bytes_min = raft_batch_archive_bytes_min(messages);
    if archive_bytes_min > u64::from(FRAME_BODY_BYTES_MAX) {
        return Err(Error::FrameTooLarge {
            body_bytes: archive_bytes_min,
            body_bytes_max: FRAME_BODY_BYTES_MAX,
        });
    }
    let batch = RaftBatch {
        envelopes: messages
            .iter()
            .map(|(partition_id, message)| {
                Ok(RaftEnvelope {
                    partition_id: *partition_id,
                    message: RaftMessage::try_from(message)?,
                })
            })
            .collect::<Result<_>>()?,
    };
    encode(FrameKind::RaftBatch, &batch)
}

/// A lower bound of the archived size of a batch: its envelopes, entries and byte payloads.
fn raft_batch_archive_bytes_min(messages: &[(u32, raft::Message)]) -> u64 {
    let envelope_bytes = size_of::<ArchivedRaftEnvelope>() as u64;
    let entry_bytes = size_of::<ArchivedRaftEntry>() as u64;
    messages
        .iter()
        .map(|(_, message)| {
            envelope_bytes
                + match &message.body {
                    raft::MessageBody::Append { entries, .. } => entries
                        .iter()
                        .map(|entry| entry_bytes + entry.payload.len() as u64)
                        .sum(),
                    raft::MessageBody::InstallSnapshot { data, .. } => data.len() as u64,
                    _ => 0,
                }
        })
        .sum()
}

/// The partition ids and messages of a [`FrameKind::RaftBatch`] frame, validated.
pub fn decode_raft_batch(frame: &Frame) -> Result<Vec<(u32, raft::Message)>> {
    with_archive(frame, FrameKind::RaftBatch, |batch: &ArchivedRaftBatch| {
        check_bound(
            "raft batch envelopes",
            batch.envelopes.len(),
            u64::from(RAFT_BATCH_ENVELOPES_MAX),
        )?;
        batch
            .envelopes
            .iter()
            .map(|envelope| {
                Ok((
                    envelope.partition_id.to_native(),
                    raft::Message::try_from(&envelope.message)?,
                ))
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// SWIM
// ---------------------------------------------------------------------------------------------

/// Mirrors [`swim::Message`].
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SwimMessage {
    /// The member that sent it.
    pub sender_id: u64,
    /// What the message asks for.
    pub kind: SwimMessageKind,
    /// Piggybacked member updates.
    pub updates: Vec<SwimMember>,
}

/// Mirrors [`swim::MessageKind`]; see there for what each variant means.
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
#[expect(
    missing_docs,
    reason = "the fields mirror swim::MessageKind, documented there"
)]
pub enum SwimMessageKind {
    /// [`swim::MessageKind::Join`].
    Join,
    /// [`swim::MessageKind::Sync`].
    Sync,
    /// [`swim::MessageKind::Ping`].
    Ping { sequence: u64, target_id: u64 },
    /// [`swim::MessageKind::Ack`].
    Ack { sequence: u64 },
    /// [`swim::MessageKind::PingReq`].
    PingReq {
        sequence: u64,
        target_id: u64,
        target_address: String,
    },
    /// [`swim::MessageKind::Gossip`].
    Gossip,
}

/// Mirrors [`swim::Member`].
#[derive(Archive, Serialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SwimMember {
    /// The broker's node id.
    pub id: u64,
    /// Where the transport reaches it.
    pub address: String,
    /// Alive, Suspect, Dead or Left.
    pub state: SwimMemberState,
    /// The member's incarnation.
    pub incarnation: u64,
    /// Opaque broker metadata.
    pub metadata: Vec<u8>,
}

/// Mirrors [`swim::MemberState`].
#[derive(Archive, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum SwimMemberState {
    /// [`swim::MemberState::Alive`].
    Alive,
    /// [`swim::MemberState::Suspect`].
    Suspect,
    /// [`swim::MemberState::Dead`].
    Dead,
    /// [`swim::MemberState::Left`].
    Left,
}

impl From<swim::MemberState> for SwimMemberState {
    fn from(state: swim::MemberState) -> Self {
        match state {
            swim::MemberState::Alive => Self::Alive,
            swim::MemberState::Suspect => Self::Suspect,
            swim::MemberState::Dead => Self::Dead,
            swim::MemberState::Left => Self::Left,
        }
    }
}

impl From<&ArchivedSwimMemberState> for swim::MemberState {
    fn from(state: &ArchivedSwimMemberState) -> Self {
        match state {
            ArchivedSwimMemberState::Alive => Self::Alive,
            ArchivedSwimMemberState::Suspect => Self::Suspect,
            ArchivedSwimMemberState::Dead => Self::Dead,
            ArchivedSwimMemberState::Left => Self::Left,
        }
    }
}

fn check_address(address: &str) -> Result<()> {
    check_bound(
        "gossip member address bytes",
        address.len(),
        SWIM_ADDRESS_BYTES_MAX as u64,
    )
}

fn check_metadata(metadata: &[u8]) -> Result<()> {
    check_bound(
        "gossip member metadata bytes",
        metadata.len(),
        u64::from(SWIM_METADATA_BYTES_MAX),
    )
}

fn check_updates(updates: usize) -> Result<()> {
    check_bound(
        "gossip message updates",
        updates,
        u64::from(SWIM_UPDATES_MAX),
    )
}

impl TryFrom<&swim::Member> for SwimMember {
    type Error = Error;

    fn try_from(member: &swim::Member) -> Result<Self> {
        check_address(&member.address)?;
        check_metadata(&member.metadata)?;
        Ok(Self {
            id: member.id,
            address: member.address.clone(),
            state: member.state.into(),
            incarnation: member.incarnation,
            metadata: member.metadata.clone(),
        })
    }
}

impl TryFrom<&ArchivedSwimMember> for swim::Member {
    type Error = Error;

    fn try_from(member: &ArchivedSwimMember) -> Result<Self> {
        check_address(&member.address)?;
        check_metadata(&member.metadata)?;
        Ok(Self {
            id: member.id.to_native(),
            address: member.address.as_str().to_owned(),
            state: (&member.state).into(),
            incarnation: member.incarnation.to_native(),
            metadata: member.metadata.to_vec(),
        })
    }
}

impl TryFrom<&swim::MessageKind> for SwimMessageKind {
    type Error = Error;

    fn try_from(kind: &swim::MessageKind) -> Result<Self> {
        use swim::MessageKind as K;
        Ok(match kind {
            K::Join => Self::Join,
            K::Sync => Self::Sync,
            &K::Ping {
                sequence,
                target_id,
            } => Self::Ping {
                sequence,
                target_id,
            },
            &K::Ack { sequence } => Self::Ack { sequence },
            K::PingReq {
                sequence,
                target_id,
                target_address,
            } => {
                check_address(target_address)?;
                Self::PingReq {
                    sequence: *sequence,
                    target_id: *target_id,
                    target_address: target_address.clone(),
                }
            }
            K::Gossip => Self::Gossip,
        })
    }
}

impl TryFrom<&ArchivedSwimMessageKind> for swim::MessageKind {
    type Error = Error;

    fn try_from(kind: &ArchivedSwimMessageKind) -> Result<Self> {
        use ArchivedSwimMessageKind as A;
        Ok(match kind {
            A::Join => Self::Join,
            A::Sync => Self::Sync,
            A::Ping {
                sequence,
                target_id,
            } => Self::Ping {
                sequence: sequence.to_native(),
                target_id: target_id.to_native(),
            },
            A::Ack { sequence } => Self::Ack {
                sequence: sequence.to_native(),
            },
            A::PingReq {
                sequence,
                target_id,
                target_address,
            } => {
                check_address(target_address)?;
                Self::PingReq {
                    sequence: sequence.to_native(),
                    target_id: target_id.to_native(),
                    target_address: target_address.as_str().to_owned(),
                }
            }
            A::Gossip => Self::Gossip,
        })
    }
}

impl TryFrom<&swim::Message> for SwimMessage {
    type Error = Error;

    fn try_from(message: &swim::Message) -> Result<Self> {
        check_updates(message.updates.len())?;
        Ok(Self {
            sender_id: message.sender_id,
            kind: SwimMessageKind::try_from(&message.kind)?,
            updates: message
                .updates
                .iter()
                .map(SwimMember::try_from)
                .collect::<Result<_>>()?,
        })
    }
}

impl TryFrom<&ArchivedSwimMessage> for swim::Message {
    type Error = Error;

    fn try_from(message: &ArchivedSwimMessage) -> Result<Self> {
        check_updates(message.updates.len())?;
        Ok(Self {
            sender_id: message.sender_id.to_native(),
            kind: swim::MessageKind::try_from(&message.kind)?,
            updates: message
                .updates
                .iter()
                .map(swim::Member::try_from)
                .collect::<Result<_>>()?,
        })
    }
}

/// One frame of kind [`FrameKind::Swim`] holding `message`.
///
/// Errors with [`Error::OutOfBounds`] when the message breaks a wire bound (the gossip core
/// never builds such a message from a valid configuration), and with [`Error::FrameTooLarge`]
/// when many updates with large metadata do not fit a frame. Within the bounds a message
/// archives to well under 100 MiB, so it is checked against the frame after archiving.
pub fn encode_swim_message(message: &swim::Message) -> Result<Vec<u8>> {
    encode(FrameKind::Swim, &SwimMessage::try_from(message)?)
}

/// The gossip message of a [`FrameKind::Swim`] frame, validated.
pub fn decode_swim_message(frame: &Frame) -> Result<swim::Message> {
    with_archive(frame, FrameKind::Swim, |message: &ArchivedSwimMessage| {
        swim::Message::try_from(message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;
    use crate::frame::tests::SplitMix64;

    fn single_frame(bytes: &[u8]) -> Frame {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        let frame = decoder
            .next_frame()
            .expect("encoder output is a valid frame")
            .expect("encoder output is a whole frame");
        assert_eq!(decoder.buffered_bytes(), 0, "exactly one frame");
        frame
    }

    fn raw_frame(kind: FrameKind, body: &[u8]) -> Frame {
        let mut bytes = Vec::new();
        encode_frame(kind, body, &mut bytes).expect("test bodies fit a frame");
        single_frame(&bytes)
    }

    fn entry(index: u64, term: u64, payload: &[u8]) -> raft::Entry {
        raft::Entry {
            index,
            term,
            payload: Rc::from(payload),
        }
    }

    fn every_raft_body() -> Vec<raft::MessageBody> {
        use raft::MessageBody as B;
        vec![
            B::PreVote {
                last_index: 10,
                last_term: 2,
            },
            B::PreVoteResponse { granted: true },
            B::PreVoteResponse { granted: false },
            B::Vote {
                last_index: u64::MAX,
                last_term: 7,
                transfer: true,
            },
            B::Vote {
                last_index: 0,
                last_term: 0,
                transfer: false,
            },
            B::VoteResponse { granted: true },
            B::Append {
                prev_index: 41,
                prev_term: 3,
                entries: vec![entry(42, 3, b""), entry(43, 4, b"a journal batch")],
                commit_index: 40,
            },
            B::Append {
                prev_index: 43,
                prev_term: 4,
                entries: Vec::new(),
                commit_index: 43,
            },
            B::AppendResponse {
                durable_index: 43,
                last_index: 43,
                reject: None,
            },
            B::AppendResponse {
                durable_index: 12,
                last_index: 12,
                reject: Some(raft::RejectHint {
                    rejected_index: 40,
                    follower_last_index: 12,
                    conflict_term: 2,
                    conflict_term_first_index: 9,
                }),
            },
            B::TimeoutNow,
            B::InstallSnapshot {
                snapshot_index: 1000,
                snapshot_term: 5,
                offset: 0,
                data: Rc::from(&[1_u8, 2, 3, 4][..]),
                done: false,
            },
            B::InstallSnapshot {
                snapshot_index: 1000,
                snapshot_term: 5,
                offset: 4,
                data: Rc::from(&[][..]),
                done: true,
            },
            B::InstallSnapshotResponse {
                snapshot_index: 1000,
                received_bytes: 4,
            },
        ]
    }

    fn every_raft_message() -> Vec<(u32, raft::Message)> {
        every_raft_body()
            .into_iter()
            .enumerate()
            .map(|(i, body)| {
                let i = u64::try_from(i).expect("few test messages");
                let partition_id = u32::try_from(i % 3).expect("below 3");
                (
                    partition_id,
                    raft::Message {
                        from: 1 + i,
                        to: 100 + i,
                        term: 5 + i,
                        body,
                    },
                )
            })
            .collect()
    }

    fn member(id: u64, state: swim::MemberState, metadata: &[u8]) -> swim::Member {
        swim::Member {
            id,
            address: format!("broker-{id}.sluice:26502"),
            state,
            incarnation: id * 3,
            metadata: metadata.to_vec(),
        }
    }

    fn every_swim_message() -> Vec<swim::Message> {
        use swim::MemberState as S;
        use swim::MessageKind as K;
        let updates = vec![
            member(1, S::Alive, b"partitions: 1 leader, 2 follower"),
            member(2, S::Suspect, b""),
            member(3, S::Dead, &[0xFF; 17]),
            member(4, S::Left, b"bye"),
        ];
        let kinds = vec![
            K::Join,
            K::Sync,
            K::Ping {
                sequence: 9,
                target_id: 4,
            },
            K::Ack { sequence: 9 },
            K::PingReq {
                sequence: 10,
                target_id: 2,
                target_address: "10.0.0.2:26502".into(),
            },
            K::Gossip,
        ];
        kinds
            .into_iter()
            .enumerate()
            .flat_map(|(i, kind)| {
                let sender_id = u64::try_from(i).expect("few kinds");
                [
                    swim::Message {
                        sender_id,
                        kind: kind.clone(),
                        updates: updates.clone(),
                    },
                    swim::Message {
                        sender_id,
                        kind,
                        updates: Vec::new(),
                    },
                ]
            })
            .collect()
    }

    #[test]
    fn raft_batch_round_trip_every_variant() {
        let messages = every_raft_message();
        let bytes = encode_raft_batch(&messages).expect("within bounds");
        let frame = single_frame(&bytes);
        assert_eq!(frame.kind, FrameKind::RaftBatch);
        assert_eq!(decode_raft_batch(&frame), Ok(messages.clone()));

        // One message per frame too, and the empty batch.
        for message in messages {
            let batch = [message];
            let bytes = encode_raft_batch(&batch).expect("within bounds");
            assert_eq!(decode_raft_batch(&single_frame(&bytes)), Ok(batch.to_vec()));
        }
        let bytes = encode_raft_batch(&[]).expect("empty batch");
        assert_eq!(decode_raft_batch(&single_frame(&bytes)), Ok(Vec::new()));
    }

    #[test]
    fn swim_round_trip_every_kind() {
        for message in every_swim_message() {
            let bytes = encode_swim_message(&message).expect("within bounds");
            let frame = single_frame(&bytes);
            assert_eq!(frame.kind, FrameKind::Swim);
            assert_eq!(decode_swim_message(&frame), Ok(message));
        }
    }

    #[test]
    fn frames_of_the_other_kind_are_refused() {
        let raft_frame = single_frame(&encode_raft_batch(&every_raft_message()).expect("ok"));
        let swim_frame = single_frame(&encode_swim_message(&every_swim_message()[0]).expect("ok"));
        assert_eq!(
            decode_swim_message(&raft_frame),
            Err(Error::UnexpectedFrameKind {
                expected: FrameKind::Swim,
                actual: FrameKind::RaftBatch,
            })
        );
        assert_eq!(
            decode_raft_batch(&swim_frame),
            Err(Error::UnexpectedFrameKind {
                expected: FrameKind::RaftBatch,
                actual: FrameKind::Swim,
            })
        );
    }

    #[test]
    fn random_bodies_are_rejected_without_panic() {
        let seed = 0x5EED_F00D;
        let mut random = SplitMix64(seed);
        for round in 0..4000 {
            let length = match round % 4 {
                0 => random.below(16),
                1 => random.below(64),
                2 => random.below(512),
                _ => random.below(4096),
            };
            let body = random.bytes(length);
            let raft = decode_raft_batch(&raw_frame(FrameKind::RaftBatch, &body));
            assert!(
                raft.is_err(),
                "seed {seed:#x} round {round}: random bytes decoded as {raft:?}"
            );
            let swim = decode_swim_message(&raw_frame(FrameKind::Swim, &body));
            assert!(
                swim.is_err(),
                "seed {seed:#x} round {round}: random bytes decoded as {swim:?}"
            );
        }
    }

    #[test]
    fn mutated_valid_bodies_never_panic() {
        let seed = 0xB17_F11B;
        let mut random = SplitMix64(seed);
        let raft_body = single_frame(&encode_raft_batch(&every_raft_message()).expect("ok")).body;
        let swim_body =
            single_frame(&encode_swim_message(&every_swim_message()[8]).expect("ok")).body;
        let mut decoded_ok = 0_u32;
        for _ in 0..3000 {
            for (kind, valid) in [
                (FrameKind::RaftBatch, &raft_body),
                (FrameKind::Swim, &swim_body),
            ] {
                let mut body = valid.clone();
                for _ in 0..=random.below(4) {
                    let at = random.below(body.len());
                    body[at] = random.next_u64().to_le_bytes()[0];
                }
                if random.below(8) == 0 {
                    body.truncate(random.below(body.len()));
                }
                // Damage inside payload bytes can still decode; what matters is that every
                // outcome is a value or a typed error.
                let frame = raw_frame(kind, &body);
                let ok = match kind {
                    FrameKind::RaftBatch => decode_raft_batch(&frame).is_ok(),
                    FrameKind::Swim => decode_swim_message(&frame).is_ok(),
                    FrameKind::Command | FrameKind::Request | FrameKind::Reply => {
                        unreachable!("not among the kinds tried")
                    }
                };
                decoded_ok += u32::from(ok);
            }
        }
        assert!(decoded_ok < 6000, "some mutations must be caught");
    }

    #[test]
    fn bounds_are_checked_on_encode() {
        let mut message = every_swim_message()[0].clone();
        message.updates[0].address = "a".repeat(SWIM_ADDRESS_BYTES_MAX + 1);
        assert_eq!(
            encode_swim_message(&message),
            Err(Error::OutOfBounds {
                field: "gossip member address bytes",
                value: SWIM_ADDRESS_BYTES_MAX as u64 + 1,
                value_max: SWIM_ADDRESS_BYTES_MAX as u64,
            })
        );

        let snapshot = raft::Message {
            from: 1,
            to: 2,
            term: 3,
            body: raft::MessageBody::InstallSnapshot {
                snapshot_index: 1,
                snapshot_term: 1,
                offset: 0,
                data: Rc::from(vec![0_u8; RAFT_SNAPSHOT_CHUNK_BYTES_MAX as usize + 1]),
                done: true,
            },
        };
        assert!(matches!(
            encode_raft_batch(&[(0, snapshot)]),
            Err(Error::OutOfBounds {
                field: "raft snapshot chunk bytes",
                ..
            })
        ));
    }

    #[test]
    fn batch_larger_than_a_frame_is_refused_before_archiving() {
        let payload: Rc<[u8]> = Rc::from(vec![0_u8; 1 << 20]);
        let append = raft::Message {
            from: 1,
            to: 2,
            term: 1,
            body: raft::MessageBody::Append {
                prev_index: 0,
                prev_term: 0,
                entries: (1..=17)
                    .map(|index| raft::Entry {
                        index,
                        term: 1,
                        payload: Rc::clone(&payload),
                    })
                    .collect(),
                commit_index: 0,
            },
        };
        assert!(matches!(
            encode_raft_batch(&[(1, append)]),
            Err(Error::FrameTooLarge { body_bytes, .. }) if body_bytes > 17 << 20
        ));
    }

    #[test]
    fn bounds_are_checked_on_decode() {
        // Archive out-of-bounds messages directly, past the encoder's checks.
        let update = SwimMember {
            id: 1,
            address: "x".into(),
            state: SwimMemberState::Alive,
            incarnation: 0,
            metadata: Vec::new(),
        };
        let too_many_updates = SwimMessage {
            sender_id: 1,
            kind: SwimMessageKind::Gossip,
            updates: vec![update.clone(); SWIM_UPDATES_MAX as usize + 1],
        };
        let body = rkyv::to_bytes::<rancor::Error>(&too_many_updates).expect("archive");
        assert_eq!(
            decode_swim_message(&raw_frame(FrameKind::Swim, &body)),
            Err(Error::OutOfBounds {
                field: "gossip message updates",
                value: u64::from(SWIM_UPDATES_MAX) + 1,
                value_max: u64::from(SWIM_UPDATES_MAX),
            })
        );

        let long_target = SwimMessage {
            sender_id: 1,
            kind: SwimMessageKind::PingReq {
                sequence: 1,
                target_id: 2,
                target_address: "y".repeat(SWIM_ADDRESS_BYTES_MAX + 1),
            },
            updates: vec![update],
        };
        let body = rkyv::to_bytes::<rancor::Error>(&long_target).expect("archive");
        assert!(matches!(
            decode_swim_message(&raw_frame(FrameKind::Swim, &body)),
            Err(Error::OutOfBounds {
                field: "gossip member address bytes",
                ..
            })
        ));

        let big_metadata = SwimMessage {
            sender_id: 1,
            kind: SwimMessageKind::Gossip,
            updates: vec![SwimMember {
                id: 1,
                address: "x".into(),
                state: SwimMemberState::Dead,
                incarnation: 0,
                metadata: vec![0; SWIM_METADATA_BYTES_MAX as usize + 1],
            }],
        };
        let body = rkyv::to_bytes::<rancor::Error>(&big_metadata).expect("archive");
        assert!(matches!(
            decode_swim_message(&raw_frame(FrameKind::Swim, &body)),
            Err(Error::OutOfBounds {
                field: "gossip member metadata bytes",
                ..
            })
        ));

        let big_chunk = RaftBatch {
            envelopes: vec![RaftEnvelope {
                partition_id: 1,
                message: RaftMessage {
                    from: 1,
                    to: 2,
                    term: 1,
                    body: RaftMessageBody::InstallSnapshot {
                        snapshot_index: 1,
                        snapshot_term: 1,
                        offset: 0,
                        data: vec![0; RAFT_SNAPSHOT_CHUNK_BYTES_MAX as usize + 1],
                        done: false,
                    },
                },
            }],
        };
        let body = rkyv::to_bytes::<rancor::Error>(&big_chunk).expect("archive");
        assert!(matches!(
            decode_raft_batch(&raw_frame(FrameKind::RaftBatch, &body)),
            Err(Error::OutOfBounds {
                field: "raft snapshot chunk bytes",
                ..
            })
        ));
    }
}
