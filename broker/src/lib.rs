//! `sluice-broker`: the Sluice broker — configuration, node start-up, shards, partitions and
//! the gateway. The `sluice` binary (`src/main.rs`) is the thin driver over this library.
//!
//! So far the library holds the pure parts that decide *where* partitions live:
//!
//! # Placing partitions
//!
//! [`partitioning`] turns the cluster configuration into a [`partitioning::PartitionLayout`]:
//! for every partition `1..=cluster.partitionsCount`, the nodes that replicate it and each
//! replica's priority for priority election. A broker computes it once at start-up, the same
//! way on every node, and refuses to start if the configuration is invalid:
//!
//! ```
//! use sluice_broker::partitioning::{ClusterShape, PartitioningScheme, layout};
//!
//! // cluster.clusterSize, cluster.partitionsCount, cluster.replicationFactor
//! let shape = ClusterShape::new(4, 7, 3)?;
//! let layout = layout(shape, &PartitioningScheme::RoundRobin, true)?;
//! let node_id = 1;
//! for partition_id in layout.partitions_of(node_id) {
//!     // Start (or join) this partition's Raft group with these replicas and priorities.
//!     let replicas = layout.replicas_of(partition_id).expect("partitions_of yields valid ids");
//!     assert!(replicas.iter().any(|r| r.node_id == node_id));
//! }
//! # Ok::<(), sluice_broker::partitioning::PartitioningError>(())
//! ```

pub mod partitioning;
