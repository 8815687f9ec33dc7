//! Partition placement: which brokers replicate which partition, and with which priority.
//!
//! The cluster configuration names three numbers (`cluster.clusterSize`,
//! `cluster.partitionsCount`, `cluster.replicationFactor`), checked into a [`ClusterShape`], and a
//! scheme (`partitioning.scheme`):
//!
//! - `ROUND_ROBIN` (the default), [`round_robin`]: partition `p` is hosted by node `(p - 1) mod
//!   clusterSize` and the `replicationFactor - 1` nodes after it, wrapping around. This is the
//!   layout Zeebe guarantees ("the first partition will always be hosted by the first node, plus
//!   the following nodes based on the replication factor").
//! - `FIXED`, [`validate_fixed`]: the operator lists every partition's nodes in
//!   `partitioning.fixed[]`; the broker refuses to start unless the list passes every sanity check
//!   Zeebe documents (see [`PartitioningError`]).
//!
//! Both produce a [`PartitionLayout`]. Every broker computes the same layout from the same
//! configuration, so no coordination is needed to agree on it; [`layout`] picks the scheme.
//!
//! # Priorities
//!
//! A replica's priority feeds Raft's priority election: a higher priority stands for election
//! first (as in `sluice_log::raft::RaftConfig`). Without priority election every replica has
//! priority [`PRIORITY_DEFAULT`], which is plain Raft.
//!
//! The seed documents say nothing about `ROUND_ROBIN` priorities, so Sluice defines them: the node
//! that heads a partition (its "first node" in the seed's words) gets the highest priority,
//! `replicationFactor`, and each following node one less, down to 1. Because partition heads
//! rotate over the nodes, the preferred leaders do too: each broker is the preferred leader of
//! `partitionsCount / clusterSize` partitions, rounded up or down, which is what the seed's
//! "client traffic distributed evenly across all brokers" asks for. When a head fails, its
//! partitions fall to the next node on the ring; spreading those fail-overs too would need
//! rotated follower priorities and is not done.
//!
//! # Order of replicas
//!
//! [`PartitionLayout::replicas_of`] lists a partition's replicas by priority, highest first, ties
//! by node id ascending. So the first replica is always the preferred leader, and for
//! `ROUND_ROBIN` the list is the ring order starting at the partition's head.
//!
//! # Limits beyond the seeds
//!
//! Two bounds are not in the seed documents; they keep a typo in the configuration from
//! becoming an allocation of billions of entries: [`PARTITIONS_COUNT_MAX`] (Zeebe's own
//! maximum: its keys carry the partition id in 13 bits) and [`REPLICATION_FACTOR_MAX`] (the
//! Raft core's `REPLICAS_MAX`).

use std::fmt;
use std::ops::RangeInclusive;

/// A broker's id, `0..cluster.clusterSize` (the configuration key `cluster.nodeId`).
pub type NodeId = u32;

/// A partition's id, `1..=cluster.partitionsCount`.
pub type PartitionId = u32;

/// A replica's priority for priority election: higher stands for election first.
pub type Priority = u32;

/// The priority of every replica when priority election is disabled.
pub const PRIORITY_DEFAULT: Priority = 1;

/// Most partitions a cluster may have: Zeebe's `MAXIMUM_PARTITIONS` (2^13), since a record key
/// carries its partition id in 13 bits and the Sluice engine keeps Zeebe's keys.
pub const PARTITIONS_COUNT_MAX: u32 = 1 << 13;

/// Most replicas a partition may have. It mirrors `sluice_log::raft::REPLICAS_MAX`; the broker
/// does not depend on `sluice-log` yet, so the two are kept equal by hand.
pub const REPLICATION_FACTOR_MAX: u32 = 15;

/// This module's result type.
pub type Result<T, E = PartitioningError> = std::result::Result<T, E>;

/// The three numbers that size a cluster, checked: build it with [`ClusterShape::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterShape {
    cluster_size: u32,
    partitions_count: u32,
    replication_factor: u32,
}

impl ClusterShape {
    /// Checks `cluster.clusterSize`, `cluster.partitionsCount` and `cluster.replicationFactor`:
    /// each at least 1, the replication factor at most the cluster size, and both counts within
    /// [`PARTITIONS_COUNT_MAX`] and [`REPLICATION_FACTOR_MAX`].
    pub fn new(cluster_size: u32, partitions_count: u32, replication_factor: u32) -> Result<Self> {
        if cluster_size == 0 {
            return Err(PartitioningError::ClusterSizeZero);
        }
        if partitions_count == 0 {
            return Err(PartitioningError::PartitionsCountZero);
        }
        if partitions_count > PARTITIONS_COUNT_MAX {
            return Err(PartitioningError::PartitionsCountAboveMax { partitions_count });
        }
        if replication_factor == 0 {
            return Err(PartitioningError::ReplicationFactorZero);
        }
        // Checked before the absolute bound: "more replicas than brokers" is the likelier
        // mistake and its message says more.
        if replication_factor > cluster_size {
            return Err(PartitioningError::ReplicationFactorAboveClusterSize {
                replication_factor,
                cluster_size,
            });
        }
        if replication_factor > REPLICATION_FACTOR_MAX {
            return Err(PartitioningError::ReplicationFactorAboveMax { replication_factor });
        }
        Ok(ClusterShape {
            cluster_size,
            partitions_count,
            replication_factor,
        })
    }

    /// `cluster.clusterSize`: the number of brokers, with node ids `0..cluster_size`.
    #[must_use]
    pub fn cluster_size(self) -> u32 {
        self.cluster_size
    }

    /// `cluster.partitionsCount`: partition ids are `1..=partitions_count`.
    #[must_use]
    pub fn partitions_count(self) -> u32 {
        self.partitions_count
    }

    /// `cluster.replicationFactor`: the number of replicas of every partition.
    #[must_use]
    pub fn replication_factor(self) -> u32 {
        self.replication_factor
    }

    /// Every partition id, ascending.
    #[must_use]
    pub fn partition_ids(self) -> RangeInclusive<PartitionId> {
        1..=self.partitions_count
    }

    /// The index of `partition_id` into per-partition vectors, if it is a valid id.
    fn index_of(self, partition_id: PartitionId) -> Option<usize> {
        if self.partition_ids().contains(&partition_id) {
            usize::try_from(partition_id - 1).ok()
        } else {
            None
        }
    }
}

/// One replica of a partition: the node that holds it and its election priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Replica {
    /// The broker holding the replica.
    pub node_id: NodeId,
    /// Its priority for priority election; higher stands first.
    pub priority: Priority,
}

/// Where every partition lives: for each partition `1..=partitionsCount`, its replicas ordered
/// by priority (highest first), ties by node id. Built by [`round_robin`] or [`validate_fixed`],
/// which guarantee each partition has exactly `replicationFactor` replicas on distinct, valid
/// nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLayout {
    shape: ClusterShape,
    /// Indexed by `partition_id - 1`.
    replicas: Vec<Vec<Replica>>,
}

impl PartitionLayout {
    /// Orders each partition's replicas and checks the layout's invariants. Both schemes check
    /// their input before calling this, so a failed assertion here is a bug in this module.
    fn new(shape: ClusterShape, mut replicas: Vec<Vec<Replica>>) -> Self {
        assert_eq!(
            u32::try_from(replicas.len()).ok(),
            Some(shape.partitions_count),
            "one replica list per partition"
        );
        for list in &mut replicas {
            list.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.node_id.cmp(&b.node_id)));
            assert_eq!(
                u32::try_from(list.len()).ok(),
                Some(shape.replication_factor),
                "replicationFactor replicas per partition"
            );
            assert!(
                list.iter().all(|r| r.node_id < shape.cluster_size),
                "node ids within the cluster"
            );
            assert!(
                list.iter()
                    .enumerate()
                    .all(|(i, r)| list[..i].iter().all(|q| q.node_id != r.node_id)),
                "replicas of a partition on distinct nodes"
            );
        }
        PartitionLayout { shape, replicas }
    }

    /// The shape this layout was built for.
    #[must_use]
    pub fn shape(&self) -> ClusterShape {
        self.shape
    }

    /// Every partition id, ascending.
    #[must_use]
    pub fn partition_ids(&self) -> RangeInclusive<PartitionId> {
        self.shape.partition_ids()
    }

    /// Each partition with its replicas, by ascending partition id.
    pub fn iter(&self) -> impl Iterator<Item = (PartitionId, &[Replica])> {
        self.partition_ids()
            .zip(self.replicas.iter().map(Vec::as_slice))
    }

    /// The replicas of `partition_id`, highest priority first; `None` if there is no such
    /// partition.
    #[must_use]
    pub fn replicas_of(&self, partition_id: PartitionId) -> Option<&[Replica]> {
        let index = self.shape.index_of(partition_id)?;
        self.replicas.get(index).map(Vec::as_slice)
    }

    /// The partitions `node_id` holds a replica of, ascending: the Raft groups that broker
    /// starts. Empty for a node outside the cluster or one that holds nothing.
    #[must_use]
    pub fn partitions_of(&self, node_id: NodeId) -> Vec<PartitionId> {
        self.iter()
            .filter(|(_, replicas)| replicas.iter().any(|r| r.node_id == node_id))
            .map(|(partition_id, _)| partition_id)
            .collect()
    }

    /// The priority of `node_id`'s replica of `partition_id`; `None` if that node holds no
    /// replica of it (or either id is unknown).
    #[must_use]
    pub fn priority_of(&self, partition_id: PartitionId, node_id: NodeId) -> Option<Priority> {
        self.replicas_of(partition_id)?
            .iter()
            .find(|r| r.node_id == node_id)
            .map(|r| r.priority)
    }

    /// The node priority election prefers as leader of `partition_id`: its highest-priority
    /// replica (with equal priorities, the lowest node id, which means nothing to Raft).
    #[must_use]
    pub fn preferred_leader(&self, partition_id: PartitionId) -> Option<NodeId> {
        self.replicas_of(partition_id)?.first().map(|r| r.node_id)
    }

    /// The same placement with every priority set to [`PRIORITY_DEFAULT`], for a cluster that
    /// runs without priority election. Replicas are re-ordered by node id.
    #[must_use]
    pub fn with_equal_priorities(self) -> Self {
        let replicas = self
            .replicas
            .into_iter()
            .map(|list| {
                list.into_iter()
                    .map(|r| Replica {
                        priority: PRIORITY_DEFAULT,
                        ..r
                    })
                    .collect()
            })
            .collect();
        PartitionLayout::new(self.shape, replicas)
    }
}

/// The `ROUND_ROBIN` layout: partition `p` on node `(p - 1) mod clusterSize` and the
/// `replicationFactor - 1` nodes after it (wrapping), with priorities `replicationFactor` down
/// to 1 in that order (see the module docs for why).
#[must_use]
pub fn round_robin(shape: ClusterShape) -> PartitionLayout {
    let cluster_size = u64::from(shape.cluster_size);
    let replicas = shape
        .partition_ids()
        .map(|partition_id| {
            // u64 so that `head + offset` cannot overflow for any u32 shape.
            let head = u64::from(partition_id - 1) % cluster_size;
            (0..shape.replication_factor)
                .map(|offset| {
                    let node = (head + u64::from(offset)) % cluster_size;
                    Replica {
                        node_id: NodeId::try_from(node)
                            .expect("a value reduced modulo a u32 cluster size fits in u32"),
                        priority: shape.replication_factor - offset,
                    }
                })
                .collect()
        })
        .collect();
    PartitionLayout::new(shape, replicas)
}

/// One entry of `partitioning.fixed[]`: a partition and the nodes that replicate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedPartition {
    /// `partitionId`.
    pub partition_id: PartitionId,
    /// `nodes[]`.
    pub nodes: Vec<FixedNode>,
}

/// One entry of `partitioning.fixed[].nodes[]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedNode {
    /// `nodeId`.
    pub node_id: NodeId,
    /// `priority`: required when priority election is enabled, ignored otherwise.
    pub priority: Option<Priority>,
}

/// How partitions are placed: `partitioning.scheme`, with `partitioning.fixed[]` for `FIXED`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PartitioningScheme {
    /// `ROUND_ROBIN`, the default: see [`round_robin`].
    #[default]
    RoundRobin,
    /// `FIXED`, with the configured `partitioning.fixed[]`: see [`validate_fixed`].
    Fixed(Vec<FixedPartition>),
}

/// The layout `scheme` gives `shape`. Without priority election every priority is
/// [`PRIORITY_DEFAULT`].
pub fn layout(
    shape: ClusterShape,
    scheme: &PartitioningScheme,
    priority_election_enabled: bool,
) -> Result<PartitionLayout> {
    match scheme {
        PartitioningScheme::RoundRobin if priority_election_enabled => Ok(round_robin(shape)),
        PartitioningScheme::RoundRobin => Ok(round_robin(shape).with_equal_priorities()),
        PartitioningScheme::Fixed(fixed) => validate_fixed(shape, fixed, priority_election_enabled),
    }
}

/// Checks a FIXED configuration and returns its layout, or the first broken rule.
///
/// The rules, in the seed's words, each with its error:
///
/// - all partitions configured have valid IDs, between 1 and `cluster.partitionsCount`
///   ([`PartitioningError::PartitionIdOutOfRange`]);
/// - each partition is configured once ([`PartitioningError::DuplicatePartition`]; implied by
///   "an exhaustive map of all partitions");
/// - all partitions configure exactly the replicas count, `cluster.replicationFactor`
///   ([`PartitioningError::ReplicaCountMismatch`]);
/// - all nodes configured for a partition have a valid node ID, between 0 and
///   `cluster.clusterSize - 1` ([`PartitioningError::NodeIdOutOfRange`]);
/// - no node appears twice in a partition ([`PartitioningError::DuplicateNode`]; two replicas
///   on one broker would be one replica);
/// - with priority election enabled, every node has a priority ("you must also specify the
///   priorities of each brokers", [`PartitioningError::PriorityMissing`]) and all priorities
///   configured for a partition are different ([`PartitioningError::DuplicatePriority`]);
/// - all partitions are explicitly configured ([`PartitioningError::PartitionsNotConfigured`]).
///
/// Entries are checked in configuration order, and within an entry the rules in the order
/// above; missing partitions are reported last, all at once. With priority election disabled,
/// configured priorities are ignored and every replica gets [`PRIORITY_DEFAULT`].
pub fn validate_fixed(
    shape: ClusterShape,
    fixed: &[FixedPartition],
    priority_election_enabled: bool,
) -> Result<PartitionLayout> {
    let mut configured: Vec<Option<Vec<Replica>>> = shape.partition_ids().map(|_| None).collect();
    for entry in fixed {
        let partition_id = entry.partition_id;
        let slot = shape
            .index_of(partition_id)
            .and_then(|index| configured.get_mut(index))
            .ok_or(PartitioningError::PartitionIdOutOfRange {
                partition_id,
                partitions_count: shape.partitions_count,
            })?;
        if slot.is_some() {
            return Err(PartitioningError::DuplicatePartition { partition_id });
        }
        if u32::try_from(entry.nodes.len()).ok() != Some(shape.replication_factor) {
            return Err(PartitioningError::ReplicaCountMismatch {
                partition_id,
                nodes_count: entry.nodes.len(),
                replication_factor: shape.replication_factor,
            });
        }
        let mut replicas: Vec<Replica> = Vec::with_capacity(entry.nodes.len());
        for node in &entry.nodes {
            let node_id = node.node_id;
            if node_id >= shape.cluster_size {
                return Err(PartitioningError::NodeIdOutOfRange {
                    partition_id,
                    node_id,
                    cluster_size: shape.cluster_size,
                });
            }
            if replicas.iter().any(|r| r.node_id == node_id) {
                return Err(PartitioningError::DuplicateNode {
                    partition_id,
                    node_id,
                });
            }
            let priority = if priority_election_enabled {
                let priority = node.priority.ok_or(PartitioningError::PriorityMissing {
                    partition_id,
                    node_id,
                })?;
                if let Some(other) = replicas.iter().find(|r| r.priority == priority) {
                    return Err(PartitioningError::DuplicatePriority {
                        partition_id,
                        priority,
                        node_ids: [other.node_id, node_id],
                    });
                }
                priority
            } else {
                PRIORITY_DEFAULT
            };
            replicas.push(Replica { node_id, priority });
        }
        *slot = Some(replicas);
    }
    let missing: Vec<PartitionId> = shape
        .partition_ids()
        .zip(&configured)
        .filter(|(_, slot)| slot.is_none())
        .map(|(partition_id, _)| partition_id)
        .collect();
    if !missing.is_empty() {
        return Err(PartitioningError::PartitionsNotConfigured {
            partition_ids: missing,
        });
    }
    let replicas = configured.into_iter().flatten().collect();
    Ok(PartitionLayout::new(shape, replicas))
}

/// Why a cluster shape or a partitioning configuration was refused. The broker must not start
/// with it; each message names the configuration key and the rule, and where it applies the
/// offending partition and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitioningError {
    /// `cluster.clusterSize` is 0.
    ClusterSizeZero,
    /// `cluster.partitionsCount` is 0.
    PartitionsCountZero,
    /// `cluster.partitionsCount` is above [`PARTITIONS_COUNT_MAX`].
    PartitionsCountAboveMax {
        /// The configured count.
        partitions_count: u32,
    },
    /// `cluster.replicationFactor` is 0.
    ReplicationFactorZero,
    /// `cluster.replicationFactor` is larger than `cluster.clusterSize`: some partition would
    /// need two replicas on one broker.
    ReplicationFactorAboveClusterSize {
        /// The configured replication factor.
        replication_factor: u32,
        /// The configured cluster size.
        cluster_size: u32,
    },
    /// `cluster.replicationFactor` is above [`REPLICATION_FACTOR_MAX`].
    ReplicationFactorAboveMax {
        /// The configured replication factor.
        replication_factor: u32,
    },
    /// FIXED: a `partitionId` outside `1..=cluster.partitionsCount`.
    PartitionIdOutOfRange {
        /// The configured id.
        partition_id: PartitionId,
        /// `cluster.partitionsCount`.
        partitions_count: u32,
    },
    /// FIXED: two entries with the same `partitionId`.
    DuplicatePartition {
        /// The id configured twice.
        partition_id: PartitionId,
    },
    /// FIXED: a partition whose `nodes` are not exactly `cluster.replicationFactor` many.
    ReplicaCountMismatch {
        /// The partition.
        partition_id: PartitionId,
        /// How many nodes it lists.
        nodes_count: usize,
        /// `cluster.replicationFactor`.
        replication_factor: u32,
    },
    /// FIXED: a `nodeId` outside `0..cluster.clusterSize`.
    NodeIdOutOfRange {
        /// The partition listing it.
        partition_id: PartitionId,
        /// The configured node id.
        node_id: NodeId,
        /// `cluster.clusterSize`.
        cluster_size: u32,
    },
    /// FIXED: a partition lists the same `nodeId` twice.
    DuplicateNode {
        /// The partition.
        partition_id: PartitionId,
        /// The node listed twice.
        node_id: NodeId,
    },
    /// FIXED with priority election: a node without `priority`.
    PriorityMissing {
        /// The partition.
        partition_id: PartitionId,
        /// The node without a priority.
        node_id: NodeId,
    },
    /// FIXED with priority election: two nodes of a partition with the same `priority`.
    DuplicatePriority {
        /// The partition.
        partition_id: PartitionId,
        /// The shared priority.
        priority: Priority,
        /// The first two nodes sharing it, in configuration order.
        node_ids: [NodeId; 2],
    },
    /// FIXED: partitions of `1..=cluster.partitionsCount` with no entry.
    PartitionsNotConfigured {
        /// Every missing partition, ascending.
        partition_ids: Vec<PartitionId>,
    },
}

/// Most missing partition ids a message lists before summarising the rest.
const MISSING_LISTED_MAX: usize = 16;

impl fmt::Display for PartitioningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitioningError::ClusterSizeZero => {
                write!(f, "cluster.clusterSize is 0: it must be at least 1")
            }
            PartitioningError::PartitionsCountZero => {
                write!(f, "cluster.partitionsCount is 0: it must be at least 1")
            }
            PartitioningError::PartitionsCountAboveMax { partitions_count } => write!(
                f,
                "cluster.partitionsCount is {partitions_count}: it must be at most \
                 {PARTITIONS_COUNT_MAX}"
            ),
            PartitioningError::ReplicationFactorZero => {
                write!(f, "cluster.replicationFactor is 0: it must be at least 1")
            }
            PartitioningError::ReplicationFactorAboveClusterSize {
                replication_factor,
                cluster_size,
            } => write!(
                f,
                "cluster.replicationFactor ({replication_factor}) is larger than \
                 cluster.clusterSize ({cluster_size}): a partition cannot have more replicas \
                 than there are brokers; lower cluster.replicationFactor or add brokers"
            ),
            PartitioningError::ReplicationFactorAboveMax { replication_factor } => write!(
                f,
                "cluster.replicationFactor is {replication_factor}: it must be at most \
                 {REPLICATION_FACTOR_MAX}"
            ),
            PartitioningError::PartitionIdOutOfRange {
                partition_id,
                partitions_count,
            } => write!(
                f,
                "partitioning.fixed: partitionId {partition_id} is not valid: all partitions \
                 configured must have valid IDs, i.e. between 1 and cluster.partitionsCount \
                 ({partitions_count})"
            ),
            PartitioningError::DuplicatePartition { partition_id } => write!(
                f,
                "partitioning.fixed: partitionId {partition_id} is configured more than once: \
                 configure each partition exactly once"
            ),
            PartitioningError::ReplicaCountMismatch {
                partition_id,
                nodes_count,
                replication_factor,
            } => write!(
                f,
                "partitioning.fixed: partition {partition_id} configures {nodes_count} nodes: \
                 all partitions must configure exactly the replicas count, i.e. \
                 cluster.replicationFactor ({replication_factor})"
            ),
            PartitioningError::NodeIdOutOfRange {
                partition_id,
                node_id,
                cluster_size,
            } => write!(
                f,
                "partitioning.fixed: partition {partition_id} lists nodeId {node_id}: all nodes \
                 configured for a partition must have a valid node ID, i.e. between 0 and \
                 cluster.clusterSize - 1 ({})",
                cluster_size.saturating_sub(1)
            ),
            PartitioningError::DuplicateNode {
                partition_id,
                node_id,
            } => write!(
                f,
                "partitioning.fixed: partition {partition_id} lists nodeId {node_id} more than \
                 once: each replica of a partition must be on a different node"
            ),
            PartitioningError::PriorityMissing {
                partition_id,
                node_id,
            } => write!(
                f,
                "partitioning.fixed: partition {partition_id}, nodeId {node_id} has no priority: \
                 with priority election enabled, the priority of each broker must be specified"
            ),
            PartitioningError::DuplicatePriority {
                partition_id,
                priority,
                node_ids: [first, second],
            } => write!(
                f,
                "partitioning.fixed: partition {partition_id} gives priority {priority} to both \
                 nodeId {first} and nodeId {second}: if priority election is enabled, all \
                 priorities configured for a partition must be different (for example 1 to the \
                 replicas count)"
            ),
            PartitioningError::PartitionsNotConfigured { partition_ids } => {
                write_missing_partitions(f, partition_ids)
            }
        }
    }
}

impl std::error::Error for PartitioningError {}

/// Writes [`PartitioningError::PartitionsNotConfigured`], listing at most
/// [`MISSING_LISTED_MAX`] ids so that an empty `partitioning.fixed` does not print thousands.
fn write_missing_partitions(
    f: &mut fmt::Formatter<'_>,
    partition_ids: &[PartitionId],
) -> fmt::Result {
    write!(f, "partitioning.fixed: partition")?;
    if partition_ids.len() > 1 {
        write!(f, "s")?;
    }
    for (i, partition_id) in partition_ids.iter().take(MISSING_LISTED_MAX).enumerate() {
        let separator = if i == 0 { " " } else { ", " };
        write!(f, "{separator}{partition_id}")?;
    }
    let more = partition_ids.len().saturating_sub(MISSING_LISTED_MAX);
    if more > 0 {
        write!(f, " and {more} more")?;
    }
    write!(
        f,
        " not configured: all partitions must be explicitly configured, one entry per \
         partitionId from 1 to cluster.partitionsCount"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(cluster_size: u32, partitions_count: u32, replication_factor: u32) -> ClusterShape {
        ClusterShape::new(cluster_size, partitions_count, replication_factor)
            .expect("test shapes are valid")
    }

    /// Reads a layout table written as one row per partition, one cell per node: `X` hosted,
    /// `.` not hosted.
    fn assert_layout_matches_table(layout: &PartitionLayout, table: &[&str]) {
        assert_eq!(
            layout.partition_ids().count(),
            table.len(),
            "one table row per partition"
        );
        for (partition_id, row) in layout.partition_ids().zip(table) {
            let cells: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(
                cells.len(),
                usize::try_from(layout.shape().cluster_size()).expect("small"),
                "one cell per node in row {partition_id}"
            );
            for (node_id, cell) in (0..).zip(&cells) {
                let hosted = match *cell {
                    "X" => true,
                    "." => false,
                    other => panic!("bad cell {other:?}"),
                };
                assert_eq!(
                    layout.priority_of(partition_id, node_id).is_some(),
                    hosted,
                    "partition {partition_id}, node id {node_id}"
                );
            }
        }
    }

    // Seed partitions-docs-1.1.txt, "Example 1": 4 nodes, 7 partitions, replication factor 3.
    // Columns are the seed's "Node 1".."Node 4", i.e. node ids 0..=3. The seed's text lost the
    // table's column positions ("Partition 1XXX"), so each row's cells are placed by the rule
    // the page states; the X counts per row match the text, except "Partition 4X", which shows
    // one X where the replication factor needs three (see `seed_tables_x_counts`).
    const SEED_EXAMPLE_1: [&str; 7] = [
        "X X X .", // Partition 1
        ". X X X", // Partition 2
        "X . X X", // Partition 3
        "X X . X", // Partition 4
        "X X X .", // Partition 5
        ". X X X", // Partition 6
        "X . X X", // Partition 7
    ];

    // Seed partitions-docs-1.1.txt, "Example 2": 5 nodes, 3 partitions, replication factor 3.
    // Columns "Node 1".."Node 5", node ids 0..=4.
    const SEED_EXAMPLE_2: [&str; 3] = [
        "X X X . .", // Partition 1
        ". X X X .", // Partition 2
        ". . X X X", // Partition 3
    ];

    // Seed partitions-docs-1.1.txt, the FIXED example's distribution table: 5 brokers, 3
    // partitions, replication factor 3. Columns "Node 0".."Node 4" are node ids themselves.
    // Cells taken from the YAML above the table (the table's text lost its columns too).
    const SEED_FIXED_TABLE: [&str; 3] = [
        "X . X . X", // Partition 1: nodes 0, 2, 4
        ". X . X X", // Partition 2: nodes 1, 3, 4
        "X . X X .", // Partition 3: nodes 0, 2, 3
    ];

    #[test]
    fn seed_tables_x_counts() {
        // The rows exactly as the seed's text renders them.
        let rendered_1 = [
            "Partition 1XXX",
            "Partition 2XXX",
            "Partition 3XXX",
            "Partition 4X",
            "Partition 5XXX",
            "Partition 6XXX",
            "Partition 7XXX",
        ];
        let rendered_2 = ["Partition 1XXX", "Partition 2XXX", "Partition 3XXX"];
        let x_count = |s: &str| s.matches('X').count();
        for (i, (rendered, row)) in rendered_1.iter().zip(SEED_EXAMPLE_1).enumerate() {
            if i == 3 {
                // The seed's one anomaly: three X by the stated rule and replication factor.
                assert_eq!((x_count(rendered), x_count(row)), (1, 3));
            } else {
                assert_eq!(x_count(rendered), x_count(row), "{rendered}");
            }
        }
        for (rendered, row) in rendered_2.iter().zip(SEED_EXAMPLE_2) {
            assert_eq!(x_count(rendered), x_count(row), "{rendered}");
        }
        for (rendered, row) in rendered_2.iter().zip(SEED_FIXED_TABLE) {
            assert_eq!(x_count(rendered), x_count(row), "{rendered}");
        }
    }

    #[test]
    fn round_robin_reproduces_seed_example_1() {
        assert_layout_matches_table(&round_robin(shape(4, 7, 3)), &SEED_EXAMPLE_1);
    }

    #[test]
    fn round_robin_reproduces_seed_example_2() {
        assert_layout_matches_table(&round_robin(shape(5, 3, 3)), &SEED_EXAMPLE_2);
    }

    #[test]
    fn round_robin_lists_replicas_in_ring_order_from_the_head() {
        let layout = round_robin(shape(4, 7, 3));
        let order = |p| -> Vec<NodeId> {
            layout
                .replicas_of(p)
                .expect("valid partition")
                .iter()
                .map(|r| r.node_id)
                .collect()
        };
        assert_eq!(order(1), [0, 1, 2]);
        assert_eq!(order(3), [2, 3, 0]);
        assert_eq!(order(4), [3, 0, 1]);
        assert_eq!(order(5), [0, 1, 2]);
    }

    #[test]
    fn round_robin_gives_the_head_the_highest_priority() {
        let layout = round_robin(shape(4, 7, 3));
        assert_eq!(
            layout.replicas_of(3).expect("valid partition"),
            [
                Replica {
                    node_id: 2,
                    priority: 3
                },
                Replica {
                    node_id: 3,
                    priority: 2
                },
                Replica {
                    node_id: 0,
                    priority: 1
                },
            ]
        );
        for (partition_id, replicas) in layout.iter() {
            let head = (partition_id - 1) % 4;
            assert_eq!(layout.preferred_leader(partition_id), Some(head));
            let mut priorities: Vec<Priority> = replicas.iter().map(|r| r.priority).collect();
            priorities.sort_unstable();
            assert_eq!(priorities, [1, 2, 3], "distinct, 1 to the replicas count");
        }
    }

    #[test]
    fn round_robin_spreads_preferred_leaders_evenly() {
        for cluster_size in 1..=7 {
            for replication_factor in 1..=cluster_size {
                for partitions_count in 1..=20 {
                    let layout =
                        round_robin(shape(cluster_size, partitions_count, replication_factor));
                    let mut led = vec![0_u32; usize::try_from(cluster_size).expect("small")];
                    for partition_id in layout.partition_ids() {
                        let leader = layout.preferred_leader(partition_id).expect("valid");
                        led[usize::try_from(leader).expect("small")] += 1;
                    }
                    let most = led.iter().max().expect("at least one node");
                    let least = led.iter().min().expect("at least one node");
                    assert!(
                        most - least <= 1,
                        "{cluster_size}/{partitions_count}/{replication_factor}: {led:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn round_robin_places_replication_factor_distinct_replicas() {
        for cluster_size in 1..=6 {
            for replication_factor in 1..=cluster_size {
                let layout = round_robin(shape(cluster_size, 11, replication_factor));
                for (_, replicas) in layout.iter() {
                    let mut nodes: Vec<NodeId> = replicas.iter().map(|r| r.node_id).collect();
                    nodes.sort_unstable();
                    nodes.dedup();
                    assert_eq!(nodes.len(), replicas.len());
                    assert_eq!(
                        u32::try_from(nodes.len()).expect("small"),
                        replication_factor
                    );
                }
            }
        }
    }

    #[test]
    fn round_robin_handles_the_largest_ids() {
        let layout = round_robin(shape(u32::MAX, 3, 2));
        assert_eq!(layout.priority_of(3, 3), Some(1));
        let layout = round_robin(shape(3, PARTITIONS_COUNT_MAX, 3));
        assert_eq!(
            layout.preferred_leader(PARTITIONS_COUNT_MAX),
            Some((PARTITIONS_COUNT_MAX - 1) % 3)
        );
    }

    #[test]
    fn helpers_answer_from_the_layout() {
        let layout = round_robin(shape(4, 7, 3));
        assert_eq!(layout.partitions_of(0), [1, 3, 4, 5, 7]);
        assert_eq!(layout.partitions_of(1), [1, 2, 4, 5, 6]);
        assert_eq!(layout.partitions_of(3), [2, 3, 4, 6, 7]);
        assert_eq!(layout.partitions_of(4), Vec::<PartitionId>::new());
        assert_eq!(layout.priority_of(4, 3), Some(3));
        assert_eq!(layout.priority_of(4, 1), Some(1));
        assert_eq!(layout.priority_of(4, 2), None);
        assert_eq!(layout.priority_of(0, 0), None);
        assert_eq!(layout.priority_of(8, 0), None);
        assert!(layout.replicas_of(0).is_none());
        assert!(layout.replicas_of(8).is_none());
        assert_eq!(layout.replicas_of(7).map(<[Replica]>::len), Some(3));
    }

    #[test]
    fn equal_priorities_keep_the_placement() {
        let layout = round_robin(shape(4, 7, 3));
        let equal = layout.clone().with_equal_priorities();
        for partition_id in layout.partition_ids() {
            for node_id in 0..4 {
                assert_eq!(
                    equal.priority_of(partition_id, node_id),
                    layout
                        .priority_of(partition_id, node_id)
                        .map(|_| PRIORITY_DEFAULT)
                );
            }
        }
        let order: Vec<NodeId> = equal
            .replicas_of(3)
            .expect("valid")
            .iter()
            .map(|r| r.node_id)
            .collect();
        assert_eq!(order, [0, 2, 3], "ties ordered by node id");
    }

    #[test]
    fn layout_picks_the_scheme() {
        let shape = shape(5, 3, 3);
        let rr = layout(shape, &PartitioningScheme::default(), true).expect("valid");
        assert_eq!(rr, round_robin(shape));
        let rr = layout(shape, &PartitioningScheme::RoundRobin, false).expect("valid");
        assert_eq!(rr, round_robin(shape).with_equal_priorities());
        let fixed = PartitioningScheme::Fixed(seed_fixed_with_priorities());
        let expected = validate_fixed(shape, &seed_fixed_with_priorities(), true).expect("valid");
        assert_eq!(layout(shape, &fixed, true).expect("valid"), expected);
    }

    // ---- ClusterShape ----

    #[test]
    fn shape_accepts_the_seed_examples_and_replication_equal_to_size() {
        for (size, count, rf) in [(4, 7, 3), (5, 3, 3), (1, 1, 1), (3, 1, 3)] {
            let s = ClusterShape::new(size, count, rf).expect("valid shape");
            assert_eq!(
                (
                    s.cluster_size(),
                    s.partitions_count(),
                    s.replication_factor()
                ),
                (size, count, rf)
            );
        }
    }

    #[test]
    fn shape_refuses_cluster_size_zero() {
        let error = ClusterShape::new(0, 1, 1).expect_err("invalid");
        assert_eq!(error, PartitioningError::ClusterSizeZero);
        assert!(error.to_string().contains("cluster.clusterSize"));
    }

    #[test]
    fn shape_refuses_partitions_count_zero() {
        let error = ClusterShape::new(3, 0, 1).expect_err("invalid");
        assert_eq!(error, PartitioningError::PartitionsCountZero);
        assert!(error.to_string().contains("cluster.partitionsCount"));
    }

    #[test]
    fn shape_refuses_replication_factor_zero() {
        let error = ClusterShape::new(3, 1, 0).expect_err("invalid");
        assert_eq!(error, PartitioningError::ReplicationFactorZero);
        assert!(error.to_string().contains("cluster.replicationFactor"));
    }

    #[test]
    fn shape_refuses_replication_factor_above_cluster_size() {
        let error = ClusterShape::new(3, 1, 4).expect_err("invalid");
        assert_eq!(
            error,
            PartitioningError::ReplicationFactorAboveClusterSize {
                replication_factor: 4,
                cluster_size: 3
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("cluster.replicationFactor (4)"),
            "{message}"
        );
        assert!(message.contains("cluster.clusterSize (3)"), "{message}");
    }

    #[test]
    fn shape_refuses_counts_above_the_bounds() {
        assert_eq!(
            ClusterShape::new(3, PARTITIONS_COUNT_MAX + 1, 1),
            Err(PartitioningError::PartitionsCountAboveMax {
                partitions_count: PARTITIONS_COUNT_MAX + 1
            })
        );
        assert!(ClusterShape::new(3, PARTITIONS_COUNT_MAX, 1).is_ok());
        assert_eq!(
            ClusterShape::new(20, 1, REPLICATION_FACTOR_MAX + 1),
            Err(PartitioningError::ReplicationFactorAboveMax {
                replication_factor: REPLICATION_FACTOR_MAX + 1
            })
        );
        assert!(ClusterShape::new(20, 1, REPLICATION_FACTOR_MAX).is_ok());
    }

    // ---- FIXED ----

    fn node(node_id: NodeId, priority: Option<Priority>) -> FixedNode {
        FixedNode { node_id, priority }
    }

    fn partition(
        partition_id: PartitionId,
        nodes: &[(NodeId, Option<Priority>)],
    ) -> FixedPartition {
        FixedPartition {
            partition_id,
            nodes: nodes.iter().map(|&(n, p)| node(n, p)).collect(),
        }
    }

    /// The seed's first FIXED example (no priorities): 5 brokers, 3 partitions, RF 3.
    fn seed_fixed() -> Vec<FixedPartition> {
        vec![
            partition(1, &[(0, None), (2, None), (4, None)]),
            partition(2, &[(1, None), (3, None), (4, None)]),
            partition(3, &[(0, None), (2, None), (3, None)]),
        ]
    }

    /// The seed's FIXED example with priorities, as printed under "Priority election".
    fn seed_fixed_with_priorities() -> Vec<FixedPartition> {
        vec![
            partition(1, &[(0, Some(1)), (2, Some(2)), (4, Some(3))]),
            partition(2, &[(1, Some(1)), (3, Some(3)), (4, Some(2))]),
            partition(3, &[(0, Some(3)), (2, Some(2)), (3, Some(1))]),
        ]
    }

    fn seed_shape() -> ClusterShape {
        shape(5, 3, 3)
    }

    fn refuse(fixed: &[FixedPartition], priority_election_enabled: bool) -> PartitioningError {
        validate_fixed(seed_shape(), fixed, priority_election_enabled)
            .expect_err("the configuration breaks a rule")
    }

    #[test]
    fn fixed_seed_example_reproduces_the_seed_table() {
        let layout = validate_fixed(seed_shape(), &seed_fixed(), false).expect("valid");
        assert_layout_matches_table(&layout, &SEED_FIXED_TABLE);
        for (_, replicas) in layout.iter() {
            assert!(replicas.iter().all(|r| r.priority == PRIORITY_DEFAULT));
        }
    }

    #[test]
    fn fixed_seed_example_with_priorities_is_accepted() {
        let layout = validate_fixed(seed_shape(), &seed_fixed_with_priorities(), true)
            .expect("the seed's example is valid");
        assert_layout_matches_table(&layout, &SEED_FIXED_TABLE);
        let replicas = |p| -> Vec<(NodeId, Priority)> {
            layout
                .replicas_of(p)
                .expect("valid")
                .iter()
                .map(|r| (r.node_id, r.priority))
                .collect()
        };
        // Highest priority first.
        assert_eq!(replicas(1), [(4, 3), (2, 2), (0, 1)]);
        assert_eq!(replicas(2), [(3, 3), (4, 2), (1, 1)]);
        assert_eq!(replicas(3), [(0, 3), (2, 2), (3, 1)]);
        assert_eq!(layout.preferred_leader(1), Some(4));
        assert_eq!(layout.priority_of(2, 4), Some(2));
        assert_eq!(layout.partitions_of(4), [1, 2]);
        assert_eq!(layout.partitions_of(1), [2]);
    }

    #[test]
    fn fixed_entries_may_come_in_any_order() {
        let mut fixed = seed_fixed_with_priorities();
        fixed.reverse();
        assert_eq!(
            validate_fixed(seed_shape(), &fixed, true),
            validate_fixed(seed_shape(), &seed_fixed_with_priorities(), true)
        );
    }

    #[test]
    fn fixed_rule_all_partitions_explicitly_configured() {
        let mut fixed = seed_fixed();
        fixed.remove(1);
        let error = refuse(&fixed, false);
        assert_eq!(
            error,
            PartitioningError::PartitionsNotConfigured {
                partition_ids: vec![2]
            }
        );
        let message = error.to_string();
        assert!(message.contains("partition 2 not configured"), "{message}");
        assert!(
            message.contains("all partitions must be explicitly configured"),
            "{message}"
        );
        assert_eq!(
            refuse(&[], false),
            PartitioningError::PartitionsNotConfigured {
                partition_ids: vec![1, 2, 3]
            }
        );
    }

    #[test]
    fn fixed_rule_partition_ids_valid() {
        for bad in [0, 4] {
            let mut fixed = seed_fixed();
            fixed[2].partition_id = bad;
            fixed.push(partition(3, &[(0, None), (2, None), (3, None)]));
            let error = refuse(&fixed, false);
            assert_eq!(
                error,
                PartitioningError::PartitionIdOutOfRange {
                    partition_id: bad,
                    partitions_count: 3
                }
            );
            let message = error.to_string();
            assert!(message.contains(&format!("partitionId {bad}")), "{message}");
            assert!(message.contains("must have valid IDs"), "{message}");
        }
    }

    #[test]
    fn fixed_rule_each_partition_once() {
        let mut fixed = seed_fixed();
        fixed.push(partition(2, &[(0, None), (1, None), (2, None)]));
        let error = refuse(&fixed, false);
        assert_eq!(
            error,
            PartitioningError::DuplicatePartition { partition_id: 2 }
        );
        assert!(error.to_string().contains("partitionId 2"));
    }

    #[test]
    fn fixed_rule_exactly_the_replicas_count() {
        for nodes in [
            &[(1, None), (3, None)][..],
            &[(1, None), (3, None), (4, None), (0, None)][..],
            &[][..],
        ] {
            let mut fixed = seed_fixed();
            fixed[1] = partition(2, nodes);
            let error = refuse(&fixed, false);
            assert_eq!(
                error,
                PartitioningError::ReplicaCountMismatch {
                    partition_id: 2,
                    nodes_count: nodes.len(),
                    replication_factor: 3
                }
            );
            let message = error.to_string();
            assert!(message.contains("partition 2"), "{message}");
            assert!(
                message.contains("must configure exactly the replicas count"),
                "{message}"
            );
        }
    }

    #[test]
    fn fixed_rule_node_ids_valid() {
        let mut fixed = seed_fixed();
        fixed[2] = partition(3, &[(0, None), (5, None), (3, None)]);
        let error = refuse(&fixed, false);
        assert_eq!(
            error,
            PartitioningError::NodeIdOutOfRange {
                partition_id: 3,
                node_id: 5,
                cluster_size: 5
            }
        );
        let message = error.to_string();
        assert!(message.contains("partition 3 lists nodeId 5"), "{message}");
        assert!(
            message.contains("between 0 and cluster.clusterSize - 1 (4)"),
            "{message}"
        );
    }

    #[test]
    fn fixed_rule_no_node_twice_in_a_partition() {
        let mut fixed = seed_fixed_with_priorities();
        fixed[0] = partition(1, &[(0, Some(1)), (2, Some(2)), (0, Some(3))]);
        let error = refuse(&fixed, true);
        assert_eq!(
            error,
            PartitioningError::DuplicateNode {
                partition_id: 1,
                node_id: 0
            }
        );
        assert!(
            error
                .to_string()
                .contains("partition 1 lists nodeId 0 more than once")
        );
        // Priority election or not, one broker cannot hold two replicas.
        let mut fixed = seed_fixed();
        fixed[0] = partition(1, &[(0, None), (2, None), (0, None)]);
        assert!(matches!(
            refuse(&fixed, false),
            PartitioningError::DuplicateNode { .. }
        ));
    }

    #[test]
    fn fixed_rule_priorities_present_with_priority_election() {
        let mut fixed = seed_fixed_with_priorities();
        fixed[1].nodes[2].priority = None;
        let error = refuse(&fixed, true);
        assert_eq!(
            error,
            PartitioningError::PriorityMissing {
                partition_id: 2,
                node_id: 4
            }
        );
        assert!(
            error
                .to_string()
                .contains("partition 2, nodeId 4 has no priority")
        );
        assert_eq!(
            refuse(&seed_fixed(), true),
            PartitioningError::PriorityMissing {
                partition_id: 1,
                node_id: 0
            }
        );
    }

    #[test]
    fn fixed_rule_priorities_distinct_with_priority_election() {
        let mut fixed = seed_fixed_with_priorities();
        fixed[2].nodes[2].priority = Some(3);
        let error = refuse(&fixed, true);
        assert_eq!(
            error,
            PartitioningError::DuplicatePriority {
                partition_id: 3,
                priority: 3,
                node_ids: [0, 3]
            }
        );
        let message = error.to_string();
        assert!(
            message.contains("partition 3 gives priority 3 to both nodeId 0 and nodeId 3"),
            "{message}"
        );
        assert!(
            message.contains("all priorities configured for a partition must be different"),
            "{message}"
        );
    }

    #[test]
    fn fixed_priorities_are_ignored_without_priority_election() {
        // Equal and missing priorities are fine when priority election is off.
        let mut fixed = seed_fixed_with_priorities();
        fixed[2].nodes[2].priority = Some(3);
        fixed[1].nodes[0].priority = None;
        let layout = validate_fixed(seed_shape(), &fixed, false).expect("valid");
        assert_eq!(
            layout,
            validate_fixed(seed_shape(), &seed_fixed(), false).expect("valid")
        );
        assert_eq!(layout.priority_of(3, 0), Some(PRIORITY_DEFAULT));
    }

    #[test]
    fn fixed_priorities_only_need_to_differ_within_a_partition() {
        // The seed reuses 1..=3 in every partition; only per-partition distinctness counts.
        let fixed = vec![
            partition(1, &[(0, Some(7)), (2, Some(2)), (4, Some(3))]),
            partition(2, &[(1, Some(7)), (3, Some(3)), (4, Some(2))]),
            partition(3, &[(0, Some(7)), (2, Some(2)), (3, Some(1))]),
        ];
        let layout = validate_fixed(seed_shape(), &fixed, true).expect("valid");
        assert_eq!(layout.preferred_leader(2), Some(1));
    }

    #[test]
    fn missing_partitions_message_is_bounded() {
        let error = PartitioningError::PartitionsNotConfigured {
            partition_ids: (1..=100).collect(),
        };
        let message = error.to_string();
        assert!(
            message.starts_with("partitioning.fixed: partitions 1, 2,"),
            "{message}"
        );
        assert!(
            message.contains(", 16 and 84 more not configured"),
            "{message}"
        );
    }
}
