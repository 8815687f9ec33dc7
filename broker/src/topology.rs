//! The cluster topology a broker remembers across restarts: who is in the cluster, and who led
//! or followed each partition, as last seen.
//!
//! The seed says "brokers keep cluster topology locally across restarts". A [`Topology`] is that
//! local copy: a value the broker updates from gossip and Raft ([`Topology::update_member`],
//! [`Topology::update_replica`]), queries ([`Topology::leader_of`], [`Topology::members`]) and
//! writes to its data directory ([`Topology::save`]) whenever [`Topology::version`] moved. At
//! start-up it reads it back ([`Topology::load`]) and checks it against the configured layout
//! ([`Topology::check_layout`]); a missing file means a first start, and the broker builds a
//! fresh one with [`Topology::new`]. The file is a cache of what the cluster knows: when it is
//! refused, moving it aside is always safe, the broker re-learns the topology from the
//! initial contact points.
//!
//! # Updates
//!
//! Every update returns whether it changed anything, and only a change bumps the version, so
//! "version moved" is exactly "worth saving". Members are recorded as given: the gossip core
//! decides which of two updates about a member wins (incarnation precedence), this table only
//! remembers its conclusions. Replica roles follow Raft terms: an update at a lower term than
//! the one known for that replica is stale and ignored; a leader at term `t` proves that any
//! leader known at a lower term has stepped down, so it is recorded as a follower; a leadership
//! claim older than the known leader's is ignored; and two leaders in the same term are
//! refused ([`TopologyError::LeaderConflict`]), as Raft never elects two.
//!
//! # File format
//!
//! One file, [`TOPOLOGY_FILE_NAME`] (`topology.bin`), in the directory given to
//! [`Topology::save`]. All integers are little-endian. A 16-byte header:
//!
//! | offset | size | field            | meaning                                           |
//! |-------:|-----:|------------------|---------------------------------------------------|
//! |      0 |    4 | `magic`          | the bytes `SLTP` ([`TOPOLOGY_MAGIC`])             |
//! |      4 |    2 | `format_version` | currently 1 ([`TOPOLOGY_FORMAT_VERSION`])         |
//! |      6 |    2 | reserved         | zero                                              |
//! |      8 |    4 | `body_bytes`     | length of the body, at most [`BODY_BYTES_MAX`]    |
//! |     12 |    4 | `body_crc`       | crc32c of the body                                |
//!
//! then the body, exactly `body_bytes` long, with nothing after it:
//!
//! | size | field                | meaning                                                |
//! |-----:|----------------------|--------------------------------------------------------|
//! |    8 | `version`            | [`Topology::version`]                                  |
//! |    4 | `cluster_size`       | `cluster.clusterSize` the topology was built for       |
//! |    4 | `partitions_count`   | at most [`PARTITIONS_COUNT_MAX`]                       |
//! |    4 | `replication_factor` | at most [`REPLICATION_FACTOR_MAX`]                     |
//! |    4 | `members_count`      | at most [`MEMBERS_MAX`]                                |
//! |      | members              | `members_count` member entries, by node id ascending   |
//! |      | partitions           | `partitions_count` partition entries, by id ascending  |
//!
//! A member entry (15 bytes plus the address):
//!
//! | size | field           | meaning                                                         |
//! |-----:|-----------------|-----------------------------------------------------------------|
//! |    4 | `node_id`       | strictly greater than the previous entry's                      |
//! |    1 | `state`         | 0 Alive, 1 Suspect, 2 Dead, 3 Left                              |
//! |    8 | `incarnation`   | the last known incarnation                                      |
//! |    2 | `address_bytes` | 1 to [`ADDRESS_BYTES_MAX`]                                      |
//! |    n | `address`       | UTF-8                                                           |
//!
//! A partition entry (4 bytes, then `replication_factor` replica entries of 13 bytes):
//!
//! | size | field          | meaning                                                          |
//! |-----:|----------------|------------------------------------------------------------------|
//! |    4 | `partition_id` | the entry's position plus 1                                      |
//! |    4 | `node_id`      | per replica: below `cluster_size`, distinct within the partition |
//! |    1 | `role`         | per replica: 0 Inactive, 1 Follower, 2 Leader (at most one)      |
//! |    8 | `term`         | per replica: the Raft term the role was seen in                  |
//!
//! The replica count is not stored: every partition has `replication_factor` replicas.
//!
//! # Durability
//!
//! [`Topology::save`] writes `topology.bin.tmp` ([`TOPOLOGY_TEMP_FILE_NAME`]) in the same
//! directory, syncs it, renames it over `topology.bin` and syncs the directory
//! ([`crate::durable::replace_file`]). A crash leaves either the old file or the new one, never a
//! mix; at worst a stray temp file, which [`Topology::load`] removes; a failed write removes its
//! own. Before writing, [`Topology::checked_bytes`] decodes its own bytes and asserts they give
//! back the same topology, so an encoder bug panics instead of reaching the disk. A running
//! broker saves off its shard: it takes [`Topology::checked_bytes`] and has
//! [`crate::durable::LatestWriter`] write them (retrying a failed write later).
//!
//! # Decoding
//!
//! Decoding checks the header field by field, the file length against `body_bytes`, the
//! checksum, and then every count against its bound *before* reading or allocating anything for
//! it, so a corrupted or crafted file cannot make the broker allocate more than the bounds allow.
//! Every failure is a [`TopologyError`] naming the file; none panics.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::partitioning::{
    ClusterShape, NodeId, PARTITIONS_COUNT_MAX, PartitionId, PartitionLayout,
    REPLICATION_FACTOR_MAX,
};

/// The file [`Topology::save`] writes and [`Topology::load`] reads, inside the given directory.
pub const TOPOLOGY_FILE_NAME: &str = "topology.bin";

/// The temporary file [`Topology::save`] writes before renaming it into place.
pub const TOPOLOGY_TEMP_FILE_NAME: &str = "topology.bin.tmp";

/// `SLTP` as a little-endian `u32`: the first four bytes of a topology file.
pub const TOPOLOGY_MAGIC: u32 = u32::from_le_bytes(*b"SLTP");

/// The file format version this build writes and reads.
pub const TOPOLOGY_FORMAT_VERSION: u16 = 1;

/// Most members a topology holds. It mirrors `sluice_net::swim::MEMBERS_LIMIT`, the most
/// members the gossip core can know; the broker does not depend on `sluice-net` yet, so the two
/// are kept equal by hand.
pub const MEMBERS_MAX: u32 = 4096;

/// Longest member address, in bytes. It mirrors `sluice_net::swim::ADDRESS_BYTES_MAX` (a host
/// name plus port fits), kept equal by hand like [`MEMBERS_MAX`].
pub const ADDRESS_BYTES_MAX: u16 = 255;

/// Bytes of the file header.
pub const HEADER_BYTES: u32 = 16;

/// Bytes of the body before the member entries: version, shape, members count.
const BODY_PREFIX_BYTES: u32 = 8 + 3 * 4 + 4;
/// Bytes of a member entry without its address.
const MEMBER_FIXED_BYTES: u32 = 4 + 1 + 8 + 2;
/// Bytes of a partition entry without its replicas.
const PARTITION_FIXED_BYTES: u32 = 4;
/// Bytes of a replica entry.
const REPLICA_BYTES: u32 = 4 + 1 + 8;

/// Largest body the bounds allow: every count and every address at its maximum. Longer bodies
/// are refused before they are read.
pub const BODY_BYTES_MAX: u32 = BODY_PREFIX_BYTES
    + MEMBERS_MAX * (MEMBER_FIXED_BYTES + ADDRESS_BYTES_MAX as u32)
    + PARTITIONS_COUNT_MAX * (PARTITION_FIXED_BYTES + REPLICATION_FACTOR_MAX * REPLICA_BYTES);

/// Largest topology file: header plus [`BODY_BYTES_MAX`].
pub const FILE_BYTES_MAX: u64 = HEADER_BYTES as u64 + BODY_BYTES_MAX as u64;

// The bounds must keep the file small enough to read whole at start-up (a few MiB).
const _: () = assert!(FILE_BYTES_MAX <= 8 * 1024 * 1024);

/// Header field offsets.
mod offset {
    pub const MAGIC: usize = 0;
    pub const FORMAT_VERSION: usize = 4;
    pub const RESERVED: usize = 6;
    pub const BODY_BYTES: usize = 8;
    pub const BODY_CRC: usize = 12;
}
const _: () = assert!(offset::BODY_CRC + 4 == HEADER_BYTES as usize);

/// This module's result type.
pub type Result<T, E = TopologyError> = std::result::Result<T, E>;

/// What the cluster believes about a member, as the gossip protocol last reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Answers probes.
    Alive,
    /// Missed a probe; may still refute.
    Suspect,
    /// Did not refute a suspicion in time.
    Dead,
    /// Left the cluster on purpose.
    Left,
}

impl MemberState {
    /// The `state` byte on disk.
    fn tag(self) -> u8 {
        match self {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(MemberState::Alive),
            1 => Some(MemberState::Suspect),
            2 => Some(MemberState::Dead),
            3 => Some(MemberState::Left),
            _ => None,
        }
    }
}

/// One cluster member as last known.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Member {
    /// The broker's node id (`cluster.nodeId`).
    pub node_id: NodeId,
    /// Where it is reached, 1 to [`ADDRESS_BYTES_MAX`] bytes.
    pub address: String,
    /// Alive, Suspect, Dead or Left.
    pub state: MemberState,
    /// The last known incarnation: raised by the member itself to refute suspicion.
    pub incarnation: u64,
}

/// A replica's role in its partition's Raft group, as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Leads the partition: takes requests and processes records.
    Leader,
    /// Replicates the leader's log.
    Follower,
    /// Not (yet) taking part: the replica was never seen, or is stopped.
    Inactive,
}

impl Role {
    /// The `role` byte on disk.
    fn tag(self) -> u8 {
        match self {
            Role::Inactive => 0,
            Role::Follower => 1,
            Role::Leader => 2,
        }
    }

    fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0 => Some(Role::Inactive),
            1 => Some(Role::Follower),
            2 => Some(Role::Leader),
            _ => None,
        }
    }
}

/// One replica of a partition: the node holding it, and its role and term as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplicaState {
    /// The broker holding the replica.
    pub node_id: NodeId,
    /// Its role as last seen.
    pub role: Role,
    /// The Raft term that role was seen in.
    pub term: u64,
}

/// The cluster topology a broker keeps across restarts: members, and per partition its
/// replicas' roles, with a version bumped by every change. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    version: u64,
    shape: ClusterShape,
    /// Sorted by node id, ids distinct, at most [`MEMBERS_MAX`].
    members: Vec<Member>,
    /// Indexed by `partition_id - 1`; each with `replication_factor` replicas on distinct nodes
    /// and at most one leader.
    partitions: Vec<Vec<ReplicaState>>,
}

impl Topology {
    /// A fresh topology for `layout`, at version 0: no members known yet, every replica
    /// [`Role::Inactive`] at term 0, listed in the layout's order (highest priority first).
    #[must_use]
    pub fn new(layout: &PartitionLayout) -> Self {
        let partitions = layout
            .iter()
            .map(|(_, replicas)| {
                replicas
                    .iter()
                    .map(|replica| ReplicaState {
                        node_id: replica.node_id,
                        role: Role::Inactive,
                        term: 0,
                    })
                    .collect()
            })
            .collect();
        Topology {
            version: 0,
            shape: layout.shape(),
            members: Vec::new(),
            partitions,
        }
    }

    /// Bumped by every update that changed something: save when it moved.
    #[must_use]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The cluster shape this topology was built for.
    #[must_use]
    pub fn shape(&self) -> ClusterShape {
        self.shape
    }

    /// Every known member, by node id ascending.
    #[must_use]
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `node_id`, if known.
    #[must_use]
    pub fn member(&self, node_id: NodeId) -> Option<&Member> {
        self.member_index(node_id)
            .ok()
            .and_then(|index| self.members.get(index))
    }

    /// The replicas of `partition_id` with their last seen roles, in the layout's order;
    /// `None` if there is no such partition.
    #[must_use]
    pub fn replicas_of(&self, partition_id: PartitionId) -> Option<&[ReplicaState]> {
        let index = self.partition_index(partition_id)?;
        self.partitions.get(index).map(Vec::as_slice)
    }

    /// The last seen leader of `partition_id` (node and term); `None` if no leader was seen or
    /// there is no such partition.
    #[must_use]
    pub fn leader_of(&self, partition_id: PartitionId) -> Option<ReplicaState> {
        self.replicas_of(partition_id)?
            .iter()
            .find(|replica| replica.role == Role::Leader)
            .copied()
    }

    /// The partitions `node_id` was last seen leading, ascending.
    #[must_use]
    pub fn partitions_led_by(&self, node_id: NodeId) -> Vec<PartitionId> {
        self.shape
            .partition_ids()
            .filter(|&partition_id| {
                self.leader_of(partition_id)
                    .is_some_and(|leader| leader.node_id == node_id)
            })
            .collect()
    }

    /// Records what gossip concluded about `member`: adds it, or replaces what was known about
    /// that node id. Returns whether anything changed (and so the version was bumped).
    ///
    /// Refuses an empty address or one longer than [`ADDRESS_BYTES_MAX`], and a new member
    /// beyond [`MEMBERS_MAX`]; the topology is then unchanged.
    pub fn update_member(&mut self, member: Member) -> Result<bool> {
        check_address(&member)?;
        match self.member_index(member.node_id) {
            Ok(index) => {
                if self.members[index] == member {
                    return Ok(false);
                }
                self.members[index] = member;
            }
            Err(index) => {
                if self.members.len() >= MEMBERS_MAX as usize {
                    return Err(TopologyError::MembersFull {
                        node_id: member.node_id,
                    });
                }
                self.members.insert(index, member);
            }
        }
        self.bump_version();
        Ok(true)
    }

    /// Forgets member `node_id`. Returns whether it was known (and so the version was bumped).
    pub fn remove_member(&mut self, node_id: NodeId) -> bool {
        match self.member_index(node_id) {
            Ok(index) => {
                self.members.remove(index);
                self.bump_version();
                true
            }
            Err(_) => false,
        }
    }

    /// Records that `node_id`'s replica of `partition_id` was seen in `role` at `term`. Returns
    /// whether anything changed (and so the version was bumped).
    ///
    /// Follows Raft terms (see the module docs): an update older than the replica's known term,
    /// or a leadership claim older than the known leader's, is ignored (`Ok(false)`); a new
    /// leader turns an older leader into a follower; a second leader in the same term is
    /// refused. An unknown partition or a node without a replica of it is refused too.
    pub fn update_replica(
        &mut self,
        partition_id: PartitionId,
        node_id: NodeId,
        role: Role,
        term: u64,
    ) -> Result<bool> {
        let replicas = self
            .partition_index(partition_id)
            .and_then(|index| self.partitions.get_mut(index))
            .ok_or(TopologyError::UnknownPartition {
                partition_id,
                partitions_count: self.shape.partitions_count(),
            })?;
        let position = replicas
            .iter()
            .position(|replica| replica.node_id == node_id)
            .ok_or(TopologyError::NotAReplica {
                partition_id,
                node_id,
            })?;
        let current = replicas[position];
        if term < current.term {
            return Ok(false);
        }
        if role == Role::Leader {
            let other_leader = replicas
                .iter()
                .find(|replica| replica.role == Role::Leader && replica.node_id != node_id);
            if let Some(other) = other_leader {
                if other.term > term {
                    return Ok(false);
                }
                if other.term == term {
                    return Err(TopologyError::LeaderConflict {
                        partition_id,
                        term,
                        node_ids: [other.node_id, node_id],
                    });
                }
            }
        }
        let updated = ReplicaState {
            node_id,
            role,
            term,
        };
        if updated == current {
            return Ok(false);
        }
        if role == Role::Leader {
            // Checked above: any other leader is from an older term, so it has stepped down.
            for replica in replicas.iter_mut() {
                if replica.role == Role::Leader {
                    replica.role = Role::Follower;
                }
            }
        }
        replicas[position] = updated;
        self.bump_version();
        Ok(true)
    }

    /// Checks that this topology was built for the configured shape: a broker restarted with a
    /// different `cluster.clusterSize`, `cluster.partitionsCount` or
    /// `cluster.replicationFactor` must not trust it.
    pub fn check_shape(&self, expected: ClusterShape) -> Result<()> {
        if self.shape == expected {
            Ok(())
        } else {
            Err(TopologyError::ShapeMismatch {
                stored: self.shape,
                configured: expected,
            })
        }
    }

    /// Checks the shape ([`Topology::check_shape`]) and that every partition has the same
    /// replica nodes as in `layout`: a changed `partitioning.fixed` keeps the shape but moves
    /// replicas. Priorities may differ; they do not change who holds a replica.
    pub fn check_layout(&self, layout: &PartitionLayout) -> Result<()> {
        self.check_shape(layout.shape())?;
        for ((partition_id, configured), stored) in layout.iter().zip(&self.partitions) {
            let mut configured: Vec<NodeId> = configured.iter().map(|r| r.node_id).collect();
            let mut stored: Vec<NodeId> = stored.iter().map(|r| r.node_id).collect();
            configured.sort_unstable();
            stored.sort_unstable();
            if configured != stored {
                return Err(TopologyError::ReplicasMismatch {
                    partition_id,
                    stored,
                    configured,
                });
            }
        }
        Ok(())
    }

    /// Writes the topology to `dir`/[`TOPOLOGY_FILE_NAME`] durably and atomically: temp file in
    /// `dir`, write, sync, rename over the old file, sync `dir`. `dir` must exist. Blocks.
    pub fn save(&self, dir: &Path) -> Result<()> {
        Topology::write_bytes(dir, &self.checked_bytes())
    }

    /// The file's bytes, checked first: they decode back to this topology (an encoder bug
    /// panics here instead of leaving a file the next start refuses, or worse, misreads).
    #[must_use]
    pub fn checked_bytes(&self) -> Vec<u8> {
        let bytes = self.to_bytes();
        let decoded = Topology::from_bytes(&bytes, Path::new(TOPOLOGY_FILE_NAME))
            .expect("a topology decodes from its own encoding");
        assert_eq!(&decoded, self, "a topology survives its own encoding");
        bytes
    }

    /// Writes `bytes` (from [`Topology::checked_bytes`]) as `dir`/[`TOPOLOGY_FILE_NAME`], like
    /// [`Topology::save`]. Blocks.
    pub fn write_bytes(dir: &Path, bytes: &[u8]) -> Result<()> {
        crate::durable::replace_file(&dir.join(TOPOLOGY_FILE_NAME), &[bytes]).map_err(|error| {
            TopologyError::Io {
                file: error.path,
                operation: error.operation,
                source: error.source,
            }
        })
    }

    /// Reads `dir`/[`TOPOLOGY_FILE_NAME`]: `Ok(None)` if there is none (a first start), the
    /// topology if the file is intact, and an error naming the file and the damage otherwise.
    /// A temp file left by an interrupted [`Topology::save`] is removed.
    ///
    /// The caller still checks the result against its configuration with
    /// [`Topology::check_layout`] or [`Topology::check_shape`].
    pub fn load(dir: &Path) -> Result<Option<Topology>> {
        let path = dir.join(TOPOLOGY_FILE_NAME);
        let temp = dir.join(TOPOLOGY_TEMP_FILE_NAME);
        // A leftover temp file is a save that never reached its rename: the previous file (if
        // any) is the valid one.
        match fs::remove_file(&temp) {
            Ok(()) => eprintln!(
                "removed {}: a save interrupted before its rename (the topology file is intact)",
                temp.display()
            ),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TopologyError::Io {
                    file: temp,
                    operation: "remove the leftover",
                    source,
                });
            }
        }
        let io = |operation: &'static str| {
            let file = path.clone();
            move |source| TopologyError::Io {
                file,
                operation,
                source,
            }
        };
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io("open")(source)),
        };
        let file_bytes = file.metadata().map_err(io("inspect"))?.len();
        if file_bytes > FILE_BYTES_MAX {
            return Err(TopologyError::TooLarge {
                file: path,
                file_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(
            usize::try_from(file_bytes).expect("bounded by FILE_BYTES_MAX, a few MiB"),
        );
        // `take` keeps a file growing under us from being read past the bound.
        file.take(FILE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(io("read"))?;
        Topology::from_bytes(&bytes, &path).map(Some)
    }

    /// The file image: header and body, as documented in the module docs.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        seal(&self.encode_body())
    }

    /// Decodes a file image. `file` only names the source in errors. Never panics, whatever
    /// the bytes.
    pub fn from_bytes(bytes: &[u8], file: &Path) -> Result<Topology> {
        let body = unseal(bytes, file)?;
        decode_body(body, file)
    }

    fn encode_body(&self) -> Vec<u8> {
        let mut body = Vec::new();
        put_u64(&mut body, self.version);
        put_u32(&mut body, self.shape.cluster_size());
        put_u32(&mut body, self.shape.partitions_count());
        put_u32(&mut body, self.shape.replication_factor());
        put_u32(
            &mut body,
            u32::try_from(self.members.len()).expect("members bounded by MEMBERS_MAX"),
        );
        for member in &self.members {
            put_u32(&mut body, member.node_id);
            body.push(member.state.tag());
            put_u64(&mut body, member.incarnation);
            let address_bytes = u16::try_from(member.address.len())
                .expect("addresses bounded by ADDRESS_BYTES_MAX");
            put_u16(&mut body, address_bytes);
            body.extend_from_slice(member.address.as_bytes());
        }
        for (partition_id, replicas) in self.shape.partition_ids().zip(&self.partitions) {
            put_u32(&mut body, partition_id);
            for replica in replicas {
                put_u32(&mut body, replica.node_id);
                body.push(replica.role.tag());
                put_u64(&mut body, replica.term);
            }
        }
        body
    }

    fn member_index(&self, node_id: NodeId) -> std::result::Result<usize, usize> {
        self.members
            .binary_search_by_key(&node_id, |member| member.node_id)
    }

    fn partition_index(&self, partition_id: PartitionId) -> Option<usize> {
        if self.shape.partition_ids().contains(&partition_id) {
            usize::try_from(partition_id - 1).ok()
        } else {
            None
        }
    }

    fn bump_version(&mut self) {
        self.version = self
            .version
            .checked_add(1)
            .expect("a topology does not change 2^64 times");
    }
}

fn check_address(member: &Member) -> Result<()> {
    let address_bytes = member.address.len();
    if address_bytes == 0 || address_bytes > usize::from(ADDRESS_BYTES_MAX) {
        return Err(TopologyError::InvalidAddress {
            node_id: member.node_id,
            address_bytes,
        });
    }
    Ok(())
}

/// Prefixes `body` with the header.
fn seal(body: &[u8]) -> Vec<u8> {
    let body_bytes = u32::try_from(body.len()).expect("bodies bounded by BODY_BYTES_MAX");
    assert!(body_bytes <= BODY_BYTES_MAX, "body within BODY_BYTES_MAX");
    let mut bytes = Vec::with_capacity(HEADER_BYTES as usize + body.len());
    put_u32(&mut bytes, TOPOLOGY_MAGIC);
    put_u16(&mut bytes, TOPOLOGY_FORMAT_VERSION);
    put_u16(&mut bytes, 0);
    put_u32(&mut bytes, body_bytes);
    put_u32(&mut bytes, crc32c::crc32c(body));
    bytes.extend_from_slice(body);
    bytes
}

/// Checks the header, the length and the checksum; returns the body.
fn unseal<'a>(bytes: &'a [u8], file: &Path) -> Result<&'a [u8]> {
    let file_bytes = bytes.len() as u64;
    let truncated = |needed_bytes: u64| TopologyError::Truncated {
        file: file.to_path_buf(),
        file_bytes,
        needed_bytes,
    };
    let (header, body) = bytes
        .split_first_chunk::<{ HEADER_BYTES as usize }>()
        .ok_or_else(|| truncated(u64::from(HEADER_BYTES)))?;
    let magic = get_u32(header, offset::MAGIC);
    if magic != TOPOLOGY_MAGIC {
        return Err(TopologyError::BadMagic {
            file: file.to_path_buf(),
            magic,
        });
    }
    let format_version = get_u16(header, offset::FORMAT_VERSION);
    if format_version != TOPOLOGY_FORMAT_VERSION {
        return Err(TopologyError::UnknownFormatVersion {
            file: file.to_path_buf(),
            format_version,
        });
    }
    let reserved = get_u16(header, offset::RESERVED);
    if reserved != 0 {
        return Err(TopologyError::Malformed {
            file: file.to_path_buf(),
            reason: format!("the reserved header bytes hold {reserved:#06x} instead of zero"),
        });
    }
    let body_bytes = get_u32(header, offset::BODY_BYTES);
    if body_bytes > BODY_BYTES_MAX {
        return Err(TopologyError::CountAboveMax {
            file: file.to_path_buf(),
            what: "body bytes",
            count: body_bytes,
            max: BODY_BYTES_MAX,
        });
    }
    let needed_bytes = u64::from(HEADER_BYTES) + u64::from(body_bytes);
    match file_bytes.cmp(&needed_bytes) {
        std::cmp::Ordering::Less => return Err(truncated(needed_bytes)),
        std::cmp::Ordering::Greater => {
            return Err(TopologyError::TrailingBytes {
                file: file.to_path_buf(),
                file_bytes,
                expected_bytes: needed_bytes,
            });
        }
        std::cmp::Ordering::Equal => {}
    }
    let expected = get_u32(header, offset::BODY_CRC);
    let actual = crc32c::crc32c(body);
    if expected != actual {
        return Err(TopologyError::ChecksumMismatch {
            file: file.to_path_buf(),
            expected,
            actual,
        });
    }
    Ok(body)
}

/// Decodes a body whose checksum matched. A failure here is a writer bug or a crafted file,
/// not a torn write, so it is reported as [`TopologyError::Malformed`] or
/// [`TopologyError::CountAboveMax`].
fn decode_body(body: &[u8], file: &Path) -> Result<Topology> {
    let mut reader = Reader { bytes: body, file };
    let version = reader.u64("version")?;
    let cluster_size = reader.u32("cluster_size")?;
    let partitions_count = reader.u32("partitions_count")?;
    let replication_factor = reader.u32("replication_factor")?;
    reader.bounded(partitions_count, PARTITIONS_COUNT_MAX, "partitions")?;
    reader.bounded(
        replication_factor,
        REPLICATION_FACTOR_MAX,
        "replicas per partition",
    )?;
    let shape =
        ClusterShape::new(cluster_size, partitions_count, replication_factor).map_err(|error| {
            reader.malformed(format!("the stored cluster shape is invalid: {error}"))
        })?;

    let members_count = reader.u32("members_count")?;
    reader.bounded(members_count, MEMBERS_MAX, "members")?;
    let mut members: Vec<Member> = Vec::with_capacity(members_count as usize);
    for _ in 0..members_count {
        let node_id = reader.u32("member node_id")?;
        if members.last().is_some_and(|last| last.node_id >= node_id) {
            return Err(reader.malformed(format!(
                "member {node_id} is out of order: members must be sorted by node id, each once"
            )));
        }
        let tag = reader.u8("member state")?;
        let state = MemberState::from_tag(tag)
            .ok_or_else(|| reader.malformed(format!("member {node_id} has unknown state {tag}")))?;
        let incarnation = reader.u64("member incarnation")?;
        let address_bytes = reader.u16("member address_bytes")?;
        if address_bytes == 0 || address_bytes > ADDRESS_BYTES_MAX {
            return Err(reader.malformed(format!(
                "member {node_id} has a {address_bytes}-byte address; addresses are 1 to \
                 {ADDRESS_BYTES_MAX} bytes"
            )));
        }
        let address = reader.take(usize::from(address_bytes), "member address")?;
        let address = std::str::from_utf8(address)
            .map_err(|_| reader.malformed(format!("member {node_id}'s address is not UTF-8")))?;
        members.push(Member {
            node_id,
            address: address.to_owned(),
            state,
            incarnation,
        });
    }

    let mut partitions = Vec::with_capacity(partitions_count as usize);
    for expected_id in shape.partition_ids() {
        let partition_id = reader.u32("partition_id")?;
        if partition_id != expected_id {
            return Err(reader.malformed(format!(
                "partition entry {expected_id} holds partition id {partition_id}"
            )));
        }
        let mut replicas: Vec<ReplicaState> = Vec::with_capacity(replication_factor as usize);
        for _ in 0..replication_factor {
            let node_id = reader.u32("replica node_id")?;
            if node_id >= cluster_size {
                return Err(reader.malformed(format!(
                    "partition {partition_id} has a replica on node {node_id}, outside a \
                     cluster of {cluster_size}"
                )));
            }
            if replicas.iter().any(|replica| replica.node_id == node_id) {
                return Err(reader.malformed(format!(
                    "partition {partition_id} lists node {node_id} twice"
                )));
            }
            let tag = reader.u8("replica role")?;
            let role = Role::from_tag(tag).ok_or_else(|| {
                reader.malformed(format!(
                    "partition {partition_id}, node {node_id} has unknown role {tag}"
                ))
            })?;
            if role == Role::Leader && replicas.iter().any(|replica| replica.role == Role::Leader) {
                return Err(
                    reader.malformed(format!("partition {partition_id} has more than one leader"))
                );
            }
            let term = reader.u64("replica term")?;
            replicas.push(ReplicaState {
                node_id,
                role,
                term,
            });
        }
        partitions.push(replicas);
    }
    if !reader.bytes.is_empty() {
        return Err(reader.malformed(format!(
            "{} bytes follow the last partition",
            reader.bytes.len()
        )));
    }
    Ok(Topology {
        version,
        shape,
        members,
        partitions,
    })
}

/// Reads fields off the front of a body, turning a short body into a typed error.
struct Reader<'a> {
    bytes: &'a [u8],
    file: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, field: &str) -> Result<&'a [u8]> {
        let Some((taken, rest)) = self.bytes.split_at_checked(count) else {
            return Err(self.malformed(format!("the body ends inside `{field}`")));
        };
        self.bytes = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        let bytes = self.take(N, field)?;
        Ok(bytes.try_into().expect("take returns exactly N bytes"))
    }

    fn u8(&mut self, field: &str) -> Result<u8> {
        self.array::<1>(field).map(|[byte]| byte)
    }

    fn u16(&mut self, field: &str) -> Result<u16> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &str) -> Result<u32> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &str) -> Result<u64> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Refuses `count` above `max` before anything is read or allocated for it.
    fn bounded(&self, count: u32, max: u32, what: &'static str) -> Result<()> {
        if count > max {
            return Err(TopologyError::CountAboveMax {
                file: self.file.to_path_buf(),
                what,
                count,
                max,
            });
        }
        Ok(())
    }

    fn malformed(&self, reason: String) -> TopologyError {
        TopologyError::Malformed {
            file: self.file.to_path_buf(),
            reason,
        }
    }
}

fn put_u16(bytes: &mut Vec<u8>, value: u16) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(bytes: &mut Vec<u8>, value: u32) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut Vec<u8>, value: u64) {
    bytes.extend_from_slice(&value.to_le_bytes());
}

fn get_u16(header: &[u8; HEADER_BYTES as usize], at: usize) -> u16 {
    u16::from_le_bytes([header[at], header[at + 1]])
}

fn get_u32(header: &[u8; HEADER_BYTES as usize], at: usize) -> u32 {
    u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
}

/// Why a topology update was refused, or why a topology file could not be used.
///
/// File errors name the file and say what to do. The file is a cache of what the cluster
/// knows, so the remedy for a damaged one is always the same: move it aside and restart; the
/// broker then fetches the topology from its initial contact points.
#[derive(Debug)]
pub enum TopologyError {
    /// Reading, writing, syncing or renaming a file failed.
    Io {
        /// The file operated on.
        file: PathBuf,
        /// What was being done, e.g. "sync".
        operation: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// The file does not start with [`TOPOLOGY_MAGIC`]: it is not a topology file.
    BadMagic {
        /// The file read.
        file: PathBuf,
        /// The first four bytes, as a little-endian `u32`.
        magic: u32,
    },
    /// The file has a format version this build does not read (likely a newer Sluice).
    UnknownFormatVersion {
        /// The file read.
        file: PathBuf,
        /// The version found.
        format_version: u16,
    },
    /// The file is shorter than its header says: a torn or cut file.
    Truncated {
        /// The file read.
        file: PathBuf,
        /// Its length.
        file_bytes: u64,
        /// The length its header asks for (or the header's own length).
        needed_bytes: u64,
    },
    /// The file is longer than its header says.
    TrailingBytes {
        /// The file read.
        file: PathBuf,
        /// Its length.
        file_bytes: u64,
        /// The length its header asks for.
        expected_bytes: u64,
    },
    /// The file is larger than any valid topology ([`FILE_BYTES_MAX`]); it was not read.
    TooLarge {
        /// The file.
        file: PathBuf,
        /// Its length.
        file_bytes: u64,
    },
    /// The body's crc32c differs from the header's: the file is corrupt.
    ChecksumMismatch {
        /// The file read.
        file: PathBuf,
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the body read.
        actual: u32,
    },
    /// A count or length in the file is above its bound; nothing was allocated for it.
    CountAboveMax {
        /// The file read.
        file: PathBuf,
        /// What was counted, e.g. "members".
        what: &'static str,
        /// The stored count.
        count: u32,
        /// Its bound.
        max: u32,
    },
    /// The checksum matched but the body breaks a rule of the format (a writer bug or a
    /// crafted file).
    Malformed {
        /// The file read.
        file: PathBuf,
        /// Which rule, and where.
        reason: String,
    },
    /// The topology was built for another cluster shape than the configured one.
    ShapeMismatch {
        /// The shape in the topology.
        stored: ClusterShape,
        /// The shape in the configuration.
        configured: ClusterShape,
    },
    /// A partition's replicas are on other nodes than the configured layout places them.
    ReplicasMismatch {
        /// The partition.
        partition_id: PartitionId,
        /// Its replica nodes in the topology, ascending.
        stored: Vec<NodeId>,
        /// Its replica nodes in the configured layout, ascending.
        configured: Vec<NodeId>,
    },
    /// An update named a partition outside `1..=partitionsCount`.
    UnknownPartition {
        /// The partition named.
        partition_id: PartitionId,
        /// `cluster.partitionsCount`.
        partitions_count: u32,
    },
    /// An update named a node that holds no replica of the partition.
    NotAReplica {
        /// The partition.
        partition_id: PartitionId,
        /// The node named.
        node_id: NodeId,
    },
    /// An update reported a second leader in a term that already has one.
    LeaderConflict {
        /// The partition.
        partition_id: PartitionId,
        /// The term both claim.
        term: u64,
        /// The known leader, then the new claimant.
        node_ids: [NodeId; 2],
    },
    /// A new member would exceed [`MEMBERS_MAX`].
    MembersFull {
        /// The member that did not fit.
        node_id: NodeId,
    },
    /// A member's address is empty or longer than [`ADDRESS_BYTES_MAX`].
    InvalidAddress {
        /// The member.
        node_id: NodeId,
        /// The address's length in bytes.
        address_bytes: usize,
    },
}

/// What an operator does with a topology file the broker refuses.
const MOVE_ASIDE: &str = "move the file aside and restart the broker; it fetches the topology \
                          from its initial contact points";

impl fmt::Display for TopologyError {
    #[expect(clippy::too_many_lines, reason = "one short arm per variant")]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::Io {
                file,
                operation,
                source,
            } => write!(
                f,
                "cluster topology {}: could not {operation}: {source}; check that the data \
                 directory exists, is writable and has free space",
                file.display()
            ),
            TopologyError::BadMagic { file, magic } => write!(
                f,
                "cluster topology {}: not a topology file (it starts with {magic:#010x}, not \
                 `SLTP`); {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::UnknownFormatVersion {
                file,
                format_version,
            } => write!(
                f,
                "cluster topology {}: format version {format_version}, but this build reads \
                 only version {TOPOLOGY_FORMAT_VERSION}; run the Sluice version that wrote it, \
                 or {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::Truncated {
                file,
                file_bytes,
                needed_bytes,
            } => write!(
                f,
                "cluster topology {}: truncated, {file_bytes} bytes where {needed_bytes} are \
                 needed; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::TrailingBytes {
                file,
                file_bytes,
                expected_bytes,
            } => write!(
                f,
                "cluster topology {}: {file_bytes} bytes where its header says \
                 {expected_bytes}; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::TooLarge { file, file_bytes } => write!(
                f,
                "cluster topology {}: {file_bytes} bytes, more than the {FILE_BYTES_MAX} a \
                 topology can take; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::ChecksumMismatch {
                file,
                expected,
                actual,
            } => write!(
                f,
                "cluster topology {}: corrupt, the body's crc32c is {actual:#010x} but the \
                 header says {expected:#010x}; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::CountAboveMax {
                file,
                what,
                count,
                max,
            } => write!(
                f,
                "cluster topology {}: {count} {what}, more than the {max} allowed; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::Malformed { file, reason } => write!(
                f,
                "cluster topology {}: malformed, {reason}; {MOVE_ASIDE}",
                file.display()
            ),
            TopologyError::ShapeMismatch { stored, configured } => write!(
                f,
                "the stored cluster topology ({TOPOLOGY_FILE_NAME}) was built for {}, but the \
                 configuration says {}; restore the previous cluster configuration, or move \
                 {TOPOLOGY_FILE_NAME} aside to start from the configured shape",
                ShapeDisplay(*stored),
                ShapeDisplay(*configured)
            ),
            TopologyError::ReplicasMismatch {
                partition_id,
                stored,
                configured,
            } => write!(
                f,
                "the stored cluster topology ({TOPOLOGY_FILE_NAME}) places partition \
                 {partition_id} on nodes {stored:?}, but the configuration places it on nodes \
                 {configured:?}; restore the previous partitioning configuration, or move \
                 {TOPOLOGY_FILE_NAME} aside to start from the configured layout"
            ),
            TopologyError::UnknownPartition {
                partition_id,
                partitions_count,
            } => write!(
                f,
                "topology update for partition {partition_id}, which does not exist: partition \
                 ids are 1 to cluster.partitionsCount ({partitions_count}); the sender's \
                 configuration differs from this broker's"
            ),
            TopologyError::NotAReplica {
                partition_id,
                node_id,
            } => write!(
                f,
                "topology update for node {node_id} in partition {partition_id}, which has no \
                 replica there; the sender's partitioning differs from this broker's"
            ),
            TopologyError::LeaderConflict {
                partition_id,
                term,
                node_ids: [known, claimant],
            } => write!(
                f,
                "topology update makes node {claimant} leader of partition {partition_id} in \
                 term {term}, but node {known} leads it in that term; Raft never elects two \
                 leaders in one term, so one of the reports is wrong and is ignored"
            ),
            TopologyError::MembersFull { node_id } => write!(
                f,
                "cannot add member {node_id}: the topology already holds the {MEMBERS_MAX} \
                 members it can; remove Left or Dead members first"
            ),
            TopologyError::InvalidAddress {
                node_id,
                address_bytes,
            } => write!(
                f,
                "member {node_id} has a {address_bytes}-byte address; addresses are 1 to \
                 {ADDRESS_BYTES_MAX} bytes"
            ),
        }
    }
}

impl std::error::Error for TopologyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TopologyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Shows a shape with its configuration keys.
struct ShapeDisplay(ClusterShape);

impl fmt::Display for ShapeDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cluster.clusterSize {}, cluster.partitionsCount {}, cluster.replicationFactor {}",
            self.0.cluster_size(),
            self.0.partitions_count(),
            self.0.replication_factor()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitioning::{FixedNode, FixedPartition, round_robin, validate_fixed};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A directory under the system temp dir, unique per test and per run, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "sluice-topology-{test}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // A directory left by a killed earlier run with the same pid is stale.
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create the test's temp dir");
            TempDir(path)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn file(&self) -> PathBuf {
            self.0.join(TOPOLOGY_FILE_NAME)
        }

        fn temp_file(&self) -> PathBuf {
            self.0.join(TOPOLOGY_TEMP_FILE_NAME)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn shape(cluster_size: u32, partitions_count: u32, replication_factor: u32) -> ClusterShape {
        ClusterShape::new(cluster_size, partitions_count, replication_factor).expect("valid shape")
    }

    fn member(node_id: NodeId, state: MemberState, incarnation: u64) -> Member {
        Member {
            node_id,
            address: format!("broker-{node_id}.sluice.local:26502"),
            state,
            incarnation,
        }
    }

    /// 4 brokers, 7 partitions, RF 3, with members in every state and every role present.
    fn populated() -> Topology {
        let mut topology = Topology::new(&round_robin(shape(4, 7, 3)));
        topology
            .update_member(member(2, MemberState::Suspect, 4))
            .expect("valid member");
        topology
            .update_member(member(0, MemberState::Alive, 1))
            .expect("valid member");
        topology
            .update_member(member(3, MemberState::Dead, 9))
            .expect("valid member");
        topology
            .update_member(Member {
                node_id: 1,
                address: "[fe80::1]:26502 ünïcode".to_owned(),
                state: MemberState::Left,
                incarnation: u64::MAX,
            })
            .expect("valid member");
        for partition_id in 1..=7 {
            let replicas: Vec<NodeId> = topology
                .replicas_of(partition_id)
                .expect("valid partition")
                .iter()
                .map(|r| r.node_id)
                .collect();
            let term = u64::from(partition_id) * 3;
            topology
                .update_replica(partition_id, replicas[0], Role::Leader, term)
                .expect("valid replica");
            topology
                .update_replica(partition_id, replicas[1], Role::Follower, term)
                .expect("valid replica");
        }
        topology
    }

    #[test]
    fn new_topology_mirrors_the_layout() {
        let layout = round_robin(shape(4, 7, 3));
        let topology = Topology::new(&layout);
        assert_eq!(topology.version(), 0);
        assert_eq!(topology.shape(), layout.shape());
        assert!(topology.members().is_empty());
        for (partition_id, replicas) in layout.iter() {
            let stored = topology.replicas_of(partition_id).expect("valid partition");
            let nodes: Vec<NodeId> = stored.iter().map(|r| r.node_id).collect();
            let expected: Vec<NodeId> = replicas.iter().map(|r| r.node_id).collect();
            assert_eq!(nodes, expected);
            assert!(
                stored
                    .iter()
                    .all(|r| r.role == Role::Inactive && r.term == 0)
            );
            assert_eq!(topology.leader_of(partition_id), None);
        }
        assert!(topology.replicas_of(0).is_none());
        assert!(topology.replicas_of(8).is_none());
        topology
            .check_layout(&layout)
            .expect("built for this layout");
    }

    #[test]
    fn queries_answer_from_the_last_seen_state() {
        let topology = populated();
        let ids: Vec<NodeId> = topology.members().iter().map(|m| m.node_id).collect();
        assert_eq!(ids, [0, 1, 2, 3], "members sorted by node id");
        assert_eq!(topology.member(3), Some(&member(3, MemberState::Dead, 9)));
        assert_eq!(topology.member(4), None);
        // Round robin with 4 brokers: partition p is headed by node (p - 1) mod 4.
        assert_eq!(
            topology.leader_of(5),
            Some(ReplicaState {
                node_id: 0,
                role: Role::Leader,
                term: 15
            })
        );
        assert_eq!(topology.leader_of(0), None);
        assert_eq!(topology.partitions_led_by(0), [1, 5]);
        assert_eq!(topology.partitions_led_by(3), [4]);
        assert!(topology.partitions_led_by(9).is_empty());
    }

    #[test]
    fn round_trip_of_a_populated_topology() {
        let dir = TempDir::new("round-trip");
        let topology = populated();
        topology.save(dir.path()).expect("save");
        let loaded = Topology::load(dir.path())
            .expect("load")
            .expect("a saved topology is present");
        assert_eq!(loaded, topology);
        assert!(!dir.temp_file().exists(), "save leaves no temp file");

        // A later save replaces the earlier one.
        let mut changed = loaded;
        assert!(changed.remove_member(3));
        changed.save(dir.path()).expect("save again");
        let reloaded = Topology::load(dir.path()).expect("load").expect("present");
        assert_eq!(reloaded, changed);
        assert_ne!(reloaded, topology);
    }

    #[test]
    fn encoding_matches_the_documented_layout() {
        let mut topology = Topology::new(&round_robin(shape(2, 1, 1)));
        topology
            .update_member(Member {
                node_id: 1,
                address: "ab".to_owned(),
                state: MemberState::Suspect,
                incarnation: 7,
            })
            .expect("valid member");
        topology
            .update_replica(1, 0, Role::Leader, 5)
            .expect("valid replica");
        let bytes = topology.to_bytes();
        let body: Vec<u8> = [
            &2u64.to_le_bytes()[..], // version: two changes
            &2u32.to_le_bytes(),     // cluster_size
            &1u32.to_le_bytes(),     // partitions_count
            &1u32.to_le_bytes(),     // replication_factor
            &1u32.to_le_bytes(),     // members_count
            &1u32.to_le_bytes(),     // node_id
            &[1],                    // Suspect
            &7u64.to_le_bytes(),     // incarnation
            &2u16.to_le_bytes(),     // address_bytes
            b"ab",
            &1u32.to_le_bytes(), // partition_id
            &0u32.to_le_bytes(), // replica node_id
            &[2],                // Leader
            &5u64.to_le_bytes(), // term
        ]
        .concat();
        assert_eq!(&bytes[0..4], b"SLTP");
        assert_eq!(&bytes[4..6], &1u16.to_le_bytes());
        assert_eq!(&bytes[6..8], &[0, 0]);
        let body_bytes = u32::try_from(body.len()).expect("small");
        assert_eq!(&bytes[8..12], &body_bytes.to_le_bytes());
        assert_eq!(&bytes[12..16], &crc32c::crc32c(&body).to_le_bytes());
        assert_eq!(&bytes[16..], &body[..]);
    }

    #[test]
    fn version_bumps_only_on_real_changes() {
        let mut topology = Topology::new(&round_robin(shape(3, 2, 3)));
        let alive = member(1, MemberState::Alive, 1);

        assert_eq!(topology.update_member(alive.clone()).ok(), Some(true));
        assert_eq!(topology.version(), 1);
        assert_eq!(topology.update_member(alive.clone()).ok(), Some(false));
        assert_eq!(topology.version(), 1, "the same member again is no change");
        let suspect = Member {
            state: MemberState::Suspect,
            ..alive.clone()
        };
        assert_eq!(topology.update_member(suspect).ok(), Some(true));
        assert_eq!(topology.version(), 2);
        let moved = Member {
            address: "elsewhere:1".to_owned(),
            ..alive
        };
        assert_eq!(topology.update_member(moved).ok(), Some(true));
        assert_eq!(topology.version(), 3);

        assert!(!topology.remove_member(2), "unknown member");
        assert_eq!(topology.version(), 3);
        assert!(topology.remove_member(1));
        assert_eq!(topology.version(), 4);

        assert_eq!(
            topology.update_replica(1, 0, Role::Follower, 1).ok(),
            Some(true)
        );
        assert_eq!(topology.version(), 5);
        assert_eq!(
            topology.update_replica(1, 0, Role::Follower, 1).ok(),
            Some(false)
        );
        assert_eq!(
            topology.version(),
            5,
            "the same role and term again is no change"
        );
        assert_eq!(
            topology.update_replica(1, 0, Role::Follower, 2).ok(),
            Some(true)
        );
        assert_eq!(topology.version(), 6, "a new term is a change");

        // Refused updates change nothing.
        assert!(topology.update_replica(9, 0, Role::Leader, 3).is_err());
        assert!(
            topology
                .update_member(Member {
                    address: String::new(),
                    ..member(1, MemberState::Alive, 1)
                })
                .is_err()
        );
        assert_eq!(topology.version(), 6);
    }

    #[test]
    fn replica_updates_follow_raft_terms() {
        let mut topology = Topology::new(&round_robin(shape(3, 1, 3)));
        assert_eq!(
            topology.update_replica(1, 0, Role::Leader, 2).ok(),
            Some(true)
        );
        assert_eq!(
            topology.leader_of(1).map(|l| (l.node_id, l.term)),
            Some((0, 2))
        );

        // A report from an older term about the same replica is stale.
        assert_eq!(
            topology.update_replica(1, 0, Role::Follower, 1).ok(),
            Some(false)
        );
        // A leadership claim older than the known leader's is stale.
        assert_eq!(
            topology.update_replica(1, 1, Role::Leader, 1).ok(),
            Some(false)
        );
        assert_eq!(topology.leader_of(1).map(|l| l.node_id), Some(0));

        // Two leaders in one term: refused, nothing changes.
        let version = topology.version();
        let error = topology
            .update_replica(1, 2, Role::Leader, 2)
            .expect_err("two leaders in term 2");
        assert!(matches!(
            error,
            TopologyError::LeaderConflict {
                partition_id: 1,
                term: 2,
                node_ids: [0, 2]
            }
        ));
        assert!(error.to_string().contains("node 0 leads it"), "{error}");
        assert_eq!(topology.version(), version);

        // A newer leader demotes the old one, which keeps its term.
        assert_eq!(
            topology.update_replica(1, 2, Role::Leader, 3).ok(),
            Some(true)
        );
        assert_eq!(
            topology.leader_of(1).map(|l| (l.node_id, l.term)),
            Some((2, 3))
        );
        let old = topology.replicas_of(1).expect("valid")[0];
        assert_eq!(
            old,
            ReplicaState {
                node_id: 0,
                role: Role::Follower,
                term: 2
            }
        );
        assert_eq!(
            topology
                .replicas_of(1)
                .expect("valid")
                .iter()
                .filter(|r| r.role == Role::Leader)
                .count(),
            1
        );
        // The same leader re-announcing itself is no change.
        assert_eq!(
            topology.update_replica(1, 2, Role::Leader, 3).ok(),
            Some(false)
        );
    }

    #[test]
    fn invalid_updates_are_refused_with_context() {
        let mut topology = Topology::new(&round_robin(shape(5, 3, 3)));

        let error = topology
            .update_replica(4, 0, Role::Leader, 1)
            .expect_err("no partition 4");
        assert!(matches!(
            error,
            TopologyError::UnknownPartition {
                partition_id: 4,
                partitions_count: 3
            }
        ));
        assert!(topology.update_replica(0, 0, Role::Leader, 1).is_err());

        // Partition 1 is on nodes 0, 1, 2.
        let error = topology
            .update_replica(1, 4, Role::Leader, 1)
            .expect_err("node 4 holds no replica of partition 1");
        assert!(matches!(
            error,
            TopologyError::NotAReplica {
                partition_id: 1,
                node_id: 4
            }
        ));
        assert!(
            error.to_string().contains("node 4 in partition 1"),
            "{error}"
        );

        let long = Member {
            address: "x".repeat(usize::from(ADDRESS_BYTES_MAX) + 1),
            ..member(1, MemberState::Alive, 1)
        };
        assert!(matches!(
            topology.update_member(long),
            Err(TopologyError::InvalidAddress {
                node_id: 1,
                address_bytes: 256
            })
        ));
        let longest = Member {
            address: "x".repeat(usize::from(ADDRESS_BYTES_MAX)),
            ..member(1, MemberState::Alive, 1)
        };
        assert_eq!(topology.update_member(longest).ok(), Some(true));
    }

    #[test]
    fn members_are_bounded() {
        let mut topology = Topology::new(&round_robin(shape(1, 1, 1)));
        for node_id in 0..MEMBERS_MAX {
            topology
                .update_member(member(node_id, MemberState::Alive, 0))
                .expect("within the bound");
        }
        let error = topology
            .update_member(member(MEMBERS_MAX, MemberState::Alive, 0))
            .expect_err("one member too many");
        assert!(matches!(error, TopologyError::MembersFull { node_id } if node_id == MEMBERS_MAX));
        // Updating a known member still works when full.
        assert_eq!(
            topology.update_member(member(0, MemberState::Dead, 0)).ok(),
            Some(true)
        );

        // A full topology still saves and loads: the bounds and BODY_BYTES_MAX agree.
        let dir = TempDir::new("members-bounded");
        topology.save(dir.path()).expect("save a full topology");
        let loaded = Topology::load(dir.path()).expect("load").expect("present");
        assert_eq!(loaded, topology);
    }

    #[test]
    fn largest_topology_fits_the_file_bound() {
        let mut topology = Topology::new(&round_robin(shape(
            REPLICATION_FACTOR_MAX,
            PARTITIONS_COUNT_MAX,
            REPLICATION_FACTOR_MAX,
        )));
        for node_id in 0..MEMBERS_MAX {
            topology
                .update_member(Member {
                    address: "a".repeat(usize::from(ADDRESS_BYTES_MAX)),
                    ..member(node_id, MemberState::Alive, 0)
                })
                .expect("within the bound");
        }
        let bytes = topology.to_bytes();
        assert_eq!(
            bytes.len() as u64,
            FILE_BYTES_MAX,
            "every bound at its maximum"
        );
        let decoded = Topology::from_bytes(&bytes, Path::new("largest")).expect("decodes");
        assert_eq!(decoded, topology);
    }

    #[test]
    fn load_of_a_missing_file_is_none() {
        let dir = TempDir::new("missing");
        assert!(Topology::load(dir.path()).expect("no error").is_none());
    }

    #[test]
    fn every_single_byte_flip_is_an_error() {
        let dir = TempDir::new("byte-flip");
        let topology = populated();
        topology.save(dir.path()).expect("save");
        let bytes = fs::read(dir.file()).expect("read the saved file");
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut flipped = bytes.clone();
                flipped[at] ^= mask;
                fs::write(dir.file(), &flipped).expect("write the flipped file");
                match Topology::load(dir.path()) {
                    Err(error) => {
                        let message = error.to_string();
                        assert!(
                            message.contains(&dir.file().display().to_string()),
                            "byte {at} mask {mask:#04x}: {message}"
                        );
                    }
                    Ok(loaded) => {
                        panic!("byte {at} mask {mask:#04x} flipped, yet load gave {loaded:?}")
                    }
                }
            }
        }
    }

    #[test]
    fn truncation_at_every_length_is_an_error() {
        let dir = TempDir::new("truncate");
        populated().save(dir.path()).expect("save");
        let bytes = fs::read(dir.file()).expect("read the saved file");
        for length in 0..bytes.len() {
            fs::write(dir.file(), &bytes[..length]).expect("write the cut file");
            let error = Topology::load(dir.path()).expect_err("a cut file is refused");
            assert!(
                matches!(
                    error,
                    TopologyError::Truncated { file_bytes, .. } if file_bytes == length as u64
                ),
                "length {length}: {error}"
            );
            assert!(error.to_string().contains("truncated"), "{error}");
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let dir = TempDir::new("trailing");
        populated().save(dir.path()).expect("save");
        let mut bytes = fs::read(dir.file()).expect("read the saved file");
        bytes.push(0);
        fs::write(dir.file(), &bytes).expect("write the longer file");
        let error = Topology::load(dir.path()).expect_err("extra bytes are refused");
        assert!(
            matches!(error, TopologyError::TrailingBytes { .. }),
            "{error}"
        );
    }

    #[test]
    fn oversized_file_is_refused_before_reading() {
        let dir = TempDir::new("oversized");
        let file = File::create(dir.file()).expect("create");
        // Sparse: no disk space is used, and load must not read it.
        file.set_len(FILE_BYTES_MAX + 1).expect("extend");
        drop(file);
        let error = Topology::load(dir.path()).expect_err("too large");
        assert!(
            matches!(
                error,
                TopologyError::TooLarge { file_bytes, .. } if file_bytes == FILE_BYTES_MAX + 1
            ),
            "{error}"
        );
    }

    #[test]
    fn header_errors_are_typed_and_name_the_file() {
        let dir = TempDir::new("header");
        populated().save(dir.path()).expect("save");
        let bytes = fs::read(dir.file()).expect("read");
        let with = |at: usize, value: &[u8]| {
            let mut changed = bytes.clone();
            changed[at..at + value.len()].copy_from_slice(value);
            fs::write(dir.file(), &changed).expect("write");
            Topology::load(dir.path()).expect_err("refused")
        };
        let error = with(offset::MAGIC, b"JUNK");
        assert!(matches!(error, TopologyError::BadMagic { .. }), "{error}");
        assert!(error.to_string().contains("not a topology file"), "{error}");
        let error = with(offset::FORMAT_VERSION, &2u16.to_le_bytes());
        assert!(
            matches!(
                error,
                TopologyError::UnknownFormatVersion {
                    format_version: 2,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("format version 2"), "{error}");
        let error = with(offset::BODY_CRC, &0u32.to_le_bytes());
        assert!(
            matches!(error, TopologyError::ChecksumMismatch { expected: 0, .. }),
            "{error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(&dir.file().display().to_string()),
            "{message}"
        );
        assert!(message.contains("move the file aside"), "{message}");
        let error = with(offset::BODY_BYTES, &u32::MAX.to_le_bytes());
        assert!(
            matches!(
                error,
                TopologyError::CountAboveMax {
                    what: "body bytes",
                    ..
                }
            ),
            "{error}"
        );
    }

    #[test]
    fn leftover_temp_file_does_not_break_load() {
        let dir = TempDir::new("leftover");
        // A save interrupted before its rename, with no earlier file: still a first start.
        fs::write(dir.temp_file(), b"SLTP half-written").expect("write the temp file");
        assert!(Topology::load(dir.path()).expect("load").is_none());
        assert!(!dir.temp_file().exists(), "load removes the leftover");

        // With an earlier file, that file is what loads.
        let topology = populated();
        topology.save(dir.path()).expect("save");
        fs::write(dir.temp_file(), b"garbage").expect("write the temp file");
        let loaded = Topology::load(dir.path()).expect("load").expect("present");
        assert_eq!(loaded, topology);
        assert!(!dir.temp_file().exists(), "load removes the leftover");

        // And a save over a leftover temp file works.
        fs::write(dir.temp_file(), vec![0xAB; 100_000]).expect("write the temp file");
        let mut changed = topology;
        assert!(changed.remove_member(0));
        changed.save(dir.path()).expect("save over the leftover");
        let loaded = Topology::load(dir.path()).expect("load").expect("present");
        assert_eq!(loaded, changed);
    }

    #[test]
    fn shape_mismatch_names_both_shapes() {
        let topology = populated();
        topology.check_shape(shape(4, 7, 3)).expect("same shape");
        let error = topology
            .check_shape(shape(5, 8, 2))
            .expect_err("a different shape");
        assert!(matches!(error, TopologyError::ShapeMismatch { .. }));
        let message = error.to_string();
        assert!(
            message.contains(
                "built for cluster.clusterSize 4, cluster.partitionsCount 7, \
                 cluster.replicationFactor 3"
            ),
            "{message}"
        );
        assert!(
            message.contains(
                "configuration says cluster.clusterSize 5, cluster.partitionsCount 8, \
                 cluster.replicationFactor 2"
            ),
            "{message}"
        );
        assert!(message.contains(TOPOLOGY_FILE_NAME), "{message}");
        assert!(topology.check_layout(&round_robin(shape(5, 8, 2))).is_err());
    }

    #[test]
    fn layout_mismatch_names_the_partition() {
        let shape = shape(5, 3, 3);
        let fixed = |nodes_of_2: [NodeId; 3]| -> PartitionLayout {
            let entry = |partition_id, nodes: [NodeId; 3]| FixedPartition {
                partition_id,
                nodes: nodes
                    .iter()
                    .map(|&node_id| FixedNode {
                        node_id,
                        priority: None,
                    })
                    .collect(),
            };
            let fixed = [
                entry(1, [0, 2, 4]),
                entry(2, nodes_of_2),
                entry(3, [0, 2, 3]),
            ];
            validate_fixed(shape, &fixed, false).expect("valid FIXED layout")
        };
        let topology = Topology::new(&fixed([1, 3, 4]));
        topology
            .check_layout(&fixed([4, 1, 3]))
            .expect("the same nodes in another order");
        let error = topology
            .check_layout(&fixed([1, 2, 4]))
            .expect_err("partition 2 moved");
        assert!(
            matches!(&error, TopologyError::ReplicasMismatch { partition_id: 2, stored, configured }
                if stored == &[1, 3, 4] && configured == &[1, 2, 4]),
            "{error}"
        );
        assert!(
            error.to_string().contains(
                "partition 2 on nodes [1, 3, 4], but the configuration places it on nodes [1, 2, 4]"
            ),
            "{error}"
        );
    }

    /// Offset of `members_count` in the body: after version and shape.
    const MEMBERS_COUNT_AT: usize = 8 + 12;

    /// The start of a body for a 3-node cluster, up to and including `members_count`; the
    /// caller appends the member and partition entries.
    fn body_prefix(partitions_count: u32, replication_factor: u32, members_count: u32) -> Vec<u8> {
        let mut body = Vec::new();
        put_u64(&mut body, 1);
        put_u32(&mut body, 3);
        put_u32(&mut body, partitions_count);
        put_u32(&mut body, replication_factor);
        put_u32(&mut body, members_count);
        assert_eq!(body.len(), MEMBERS_COUNT_AT + 4);
        body
    }

    fn decode_sealed(body: &[u8]) -> TopologyError {
        let file = Path::new("/data/crafted/topology.bin");
        let error = Topology::from_bytes(&seal(body), file).expect_err("a crafted body is refused");
        assert!(
            error.to_string().contains("/data/crafted/topology.bin"),
            "{error}"
        );
        error
    }

    #[test]
    fn huge_counts_are_rejected_before_allocating() {
        // Only the count is present: had the decoder allocated or read per entry first, it
        // would report a short body (Malformed) instead of the bound.
        let error = decode_sealed(&body_prefix(1, 1, u32::MAX));
        assert!(
            matches!(
                error,
                TopologyError::CountAboveMax {
                    what: "members",
                    count: u32::MAX,
                    max: MEMBERS_MAX,
                    ..
                }
            ),
            "{error}"
        );
        assert!(error.to_string().contains("4294967295 members"), "{error}");

        let error = decode_sealed(&body_prefix(u32::MAX, 1, 0));
        assert!(
            matches!(
                error,
                TopologyError::CountAboveMax {
                    what: "partitions",
                    ..
                }
            ),
            "{error}"
        );
        let error = decode_sealed(&body_prefix(1, u32::MAX, 0));
        assert!(
            matches!(
                error,
                TopologyError::CountAboveMax {
                    what: "replicas per partition",
                    ..
                }
            ),
            "{error}"
        );

        let mut body = body_prefix(1, 1, 1);
        put_u32(&mut body, 0);
        body.push(MemberState::Alive.tag());
        put_u64(&mut body, 0);
        put_u16(&mut body, u16::MAX);
        let error = decode_sealed(&body);
        assert!(
            matches!(
                &error,
                TopologyError::Malformed { reason, .. } if reason.contains("65535-byte address")
            ),
            "{error}"
        );
    }

    #[test]
    fn crafted_bodies_breaking_format_rules_are_malformed() {
        let valid_partition = |body: &mut Vec<u8>| {
            put_u32(body, 1);
            put_u32(body, 0);
            body.push(Role::Leader.tag());
            put_u64(body, 1);
        };
        let member_entry = |body: &mut Vec<u8>, node_id: u32, state: u8, address: &[u8]| {
            put_u32(body, node_id);
            body.push(state);
            put_u64(body, 0);
            put_u16(body, u16::try_from(address.len()).expect("short"));
            body.extend_from_slice(address);
        };
        let malformed = |body: Vec<u8>, needle: &str| {
            let error = decode_sealed(&body);
            assert!(
                matches!(
                    &error,
                    TopologyError::Malformed { reason, .. } if reason.contains(needle)
                ),
                "expected `{needle}`: {error}"
            );
        };

        // The valid baseline decodes.
        let mut body = body_prefix(1, 1, 1);
        member_entry(&mut body, 0, 0, b"a:1");
        valid_partition(&mut body);
        Topology::from_bytes(&seal(&body), Path::new("valid")).expect("the baseline is valid");

        let mut body = body_prefix(1, 1, 2);
        member_entry(&mut body, 1, 0, b"a:1");
        member_entry(&mut body, 1, 0, b"b:1");
        valid_partition(&mut body);
        malformed(body, "out of order");

        let mut body = body_prefix(1, 1, 1);
        member_entry(&mut body, 0, 9, b"a:1");
        malformed(body, "unknown state 9");

        let mut body = body_prefix(1, 1, 1);
        member_entry(&mut body, 0, 0, &[0xff, 0xfe]);
        malformed(body, "not UTF-8");

        let mut body = body_prefix(1, 1, 1);
        member_entry(&mut body, 0, 0, b"");
        malformed(body, "0-byte address");

        let mut body = body_prefix(1, 1, 0);
        put_u32(&mut body, 2);
        malformed(body, "partition entry 1 holds partition id 2");

        let mut body = body_prefix(1, 1, 0);
        put_u32(&mut body, 1);
        put_u32(&mut body, 3);
        malformed(body, "outside a cluster of 3");

        let mut body = body_prefix(1, 2, 0);
        put_u32(&mut body, 1);
        for node_id in [0, 0] {
            put_u32(&mut body, node_id);
            body.push(Role::Follower.tag());
            put_u64(&mut body, 1);
        }
        malformed(body, "lists node 0 twice");

        let mut body = body_prefix(1, 2, 0);
        put_u32(&mut body, 1);
        for node_id in [0, 1] {
            put_u32(&mut body, node_id);
            body.push(Role::Leader.tag());
            put_u64(&mut body, 1);
        }
        malformed(body, "more than one leader");

        let mut body = body_prefix(1, 1, 0);
        put_u32(&mut body, 1);
        put_u32(&mut body, 0);
        body.push(7);
        put_u64(&mut body, 1);
        malformed(body, "unknown role 7");

        malformed(
            body_prefix(2, 4, 0),
            "cluster.replicationFactor (4) is larger",
        );

        let mut body = body_prefix(1, 1, 0);
        valid_partition(&mut body);
        body.push(0);
        malformed(body, "1 bytes follow the last partition");

        let mut body = body_prefix(1, 1, 0);
        put_u32(&mut body, 1);
        put_u32(&mut body, 0);
        malformed(body, "the body ends inside `replica role`");

        let error = decode_sealed(&[0; 3]);
        assert!(
            matches!(
                &error,
                TopologyError::Malformed { reason, .. } if reason.contains("`version`")
            ),
            "{error}"
        );
    }

    #[test]
    fn the_durable_helper_writes_the_documented_temp_file() {
        assert_eq!(
            crate::durable::temp_path(Path::new(TOPOLOGY_FILE_NAME)),
            Path::new(TOPOLOGY_TEMP_FILE_NAME)
        );
    }

    #[test]
    fn io_errors_name_the_file_and_keep_the_source() {
        let dir = TempDir::new("io");
        let missing = dir.path().join("no-such-dir");
        let error = populated()
            .save(&missing)
            .expect_err("the directory does not exist");
        assert!(
            matches!(
                error,
                TopologyError::Io {
                    operation: "create",
                    ..
                }
            ),
            "{error}"
        );
        let message = error.to_string();
        assert!(message.contains(TOPOLOGY_TEMP_FILE_NAME), "{message}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
