//! `sluice-broker`: the Sluice broker — configuration, node start-up, shards, partitions and
//! the gateway. The `sluice` binary (`src/main.rs`) is the thin driver over this library.
//!
//! # A broker at run time
//!
//! `sluice broker --config FILE` loads a [`config::BrokerConfig`] (YAML with Zeebe's key names,
//! every key overridable by a `ZEEBE_BROKER_*` variable) and calls [`run::run`], which:
//! 1. computes the partition layout and deals this broker's replicas over
//!    `threads.cpuThreadCount` glommio executors (shards); each replica stays on its shard;
//! 2. starts shards 1.. with [`shard::run`], and on shard 0 a [`node::Node`]: the QUIC transport
//!    (`sluice_net::quic`), the SWIM gossip driver, the topology kept on disk, the Raft outbox
//!    that batches every partition's messages per peer broker, and shard 0's replicas;
//! 3. serves the command API ([`command_server`], the append protocol of [`client_api`]) and the
//!    management API ([`management`] over [`http`], Prometheus text from [`metrics`]).
//!
//! Each replica is a [`partition::Partition`]: a journal and a Raft core driven by two tasks (Raft
//! and flush); an append is answered once its entry is committed. [`dev`] is `sluice dev`, a
//! local cluster of broker processes.
//!
//! The pure parts decide *where* partitions live and what the broker remembers:
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
//!
//! # Remembering the cluster
//!
//! [`topology`] keeps what the broker last knew of the cluster (members, and who led or followed
//! each partition) in `topology.bin` in its data directory, so that a restart begins from it.
//! At start-up the broker loads it, checks it against the configured layout, and starts fresh
//! if there is none; afterwards it saves whenever an update moved the version:
//!
//! ```
//! use sluice_broker::partitioning::{ClusterShape, round_robin};
//! use sluice_broker::topology::{Role, Topology};
//!
//! # let data_dir = std::env::temp_dir().join(format!("sluice-lib-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&data_dir)?;
//! let layout = round_robin(ClusterShape::new(3, 2, 3)?);
//! let mut topology = match Topology::load(&data_dir)? {
//!     Some(stored) => {
//!         // Refuse to start on a topology built for another configuration.
//!         stored.check_layout(&layout)?;
//!         stored
//!     }
//!     None => Topology::new(&layout),
//! };
//! // Raft reported node 1 leading partition 2 in term 4.
//! if topology.update_replica(2, 1, Role::Leader, 4)? {
//!     topology.save(&data_dir)?;
//! }
//! assert_eq!(topology.leader_of(2).map(|leader| leader.node_id), Some(1));
//! # std::fs::remove_dir_all(&data_dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod apply;
pub mod backpressure;
pub mod client_api;
pub mod command_server;
pub mod config;
pub mod dev;
pub mod durable;
pub mod gateway;
pub mod http;
pub mod limits;
pub mod link;
pub mod management;
pub mod metrics;
pub mod node;
pub mod notify;
pub mod parked;
pub mod partition;
pub mod partitioning;
pub mod requests;
pub mod run;
pub mod shard;
pub mod snapshots;
pub mod topology;
