//! The broker's configuration: a YAML file with Zeebe's key names, overridden by `ZEEBE_BROKER_*`
//! environment variables, checked before the broker starts.
//!
//! # Using it
//!
//! ```
//! use sluice_broker::config::BrokerConfig;
//!
//! let yaml = "
//! cluster:
//!   nodeId: 1
//!   clusterSize: 3
//!   partitionsCount: 3
//!   replicationFactor: 3
//!   heartbeatInterval: 100ms
//!   electionTimeout: PT1S
//! network:
//!   advertisedHost: broker-1
//!   portOffset: 1
//! ";
//! // In the broker: `std::env::vars().collect::<Vec<_>>()`.
//! let env = [("ZEEBE_BROKER_DATA_DIRECTORY".to_owned(), "/var/lib/sluice".to_owned())];
//! let config = BrokerConfig::from_yaml_str(yaml, &env)?;
//! assert_eq!(config.cluster.heartbeat_interval_ms, 100);
//! assert_eq!(config.cluster.election_timeout_ms, 1_000);
//! assert_eq!(config.data.directory, std::path::Path::new("/var/lib/sluice"));
//! // Every port moves by 10 * network.portOffset, as in Zeebe.
//! // The raw-append API (off unless `network.commandApi.enabled`) listens on loopback.
//! assert_eq!(config.command_api_addr().to_string(), "127.0.0.1:26511");
//! assert_eq!(config.advertised_internal_addr(), "broker-1:26512");
//! let layout = config.partition_layout()?;
//! assert_eq!(layout.partitions_of(1), [1, 2, 3]);
//! # Ok::<(), sluice_broker::config::ConfigError>(())
//! ```
//!
//! [`BrokerConfig::load`] reads a file (or takes the defaults when there is none) and does the
//! same. Both return a configuration that passed [`BrokerConfig::validate`]; the broker refuses
//! to start on a [`ConfigError`], whose message names the key and says what to change.
//! [`BrokerConfig::to_yaml`] renders the effective configuration for the start-up log.
//!
//! # The file
//!
//! The document's root is the broker section (`cluster`, `partitioning`, `network`, `data`,
//! `threads`, `backpressure`, `gateway`, `management`, `engine`); a Zeebe file whose root is `zeebe: { broker: ... }` is
//! accepted too. `partitioning` may also sit under `experimental.partitioning`, where Zeebe 8
//! keeps it. Keys are Zeebe's camelCase names and an unknown key is an error, so a typo cannot
//! silently fall back to a default.
//!
//! Durations are written `250ms`, `1s`, `2m`, `1h`, `1d` or ISO-8601 (`PT0.25S`, `PT1M30S`); a
//! plain number is milliseconds. Sizes are written `512KB`, `128MB`, `1GB` (binary multiples, as
//! in Zeebe; `KiB`, `MiB`, `GiB` work too) or as a plain number of bytes. In Rust every duration is
//! a `*_ms: u64` field and every size a `*_bytes: u64` field.
//!
//! # Environment variables
//!
//! Any key can be set with `ZEEBE_BROKER_` followed by its path in upper case, sections joined
//! with `_` and camelCase words run together: `cluster.nodeId` is `ZEEBE_BROKER_CLUSTER_NODEID`,
//! `network.commandApi.port` is `ZEEBE_BROKER_NETWORK_COMMANDAPI_PORT`. A list is set whole with
//! commas (`ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS=a:26502,b:26502`) or by element index
//! (`ZEEBE_BROKER_PARTITIONING_FIXED_0_NODES_1_PRIORITY=2`). The environment wins over the file.
//! A variable with the prefix that names no key is an error. An empty value unsets an optional
//! key (one whose default is `null`).
//!
//! # Limits
//!
//! Besides the rules of [`BrokerConfig::validate`], the file is at most [`CONFIG_FILE_BYTES_MAX`],
//! durations at most [`DURATION_MS_MAX`], and lists are bounded ([`CONTACT_POINTS_MAX`], and for
//! `partitioning.fixed` the bounds of [`crate::partitioning`]).
//!
//! # Backpressure
//!
//! Zeebe's keys, per partition leader ([`crate::backpressure`]); `algorithm` takes `aimd` (the
//! default) or `fixed`, case-insensitive:
//!
//! ```yaml
//! backpressure:
//!   enabled: true            # false: no command is ever refused
//!   algorithm: aimd
//!   aimd:
//!     initialLimit: 100      # minLimit <= initialLimit <= maxLimit, minLimit >= 1
//!     minLimit: 1
//!     maxLimit: 1000
//!     requestTimeout: 200ms  # a slower reply shrinks the limit
//!     backoffRatio: 0.9      # what it is multiplied by then, strictly between 0 and 1
//!   fixed:
//!     limit: 20
//! ```
//!
//! Limits are at most [`BACKPRESSURE_LIMIT_MAX`].
//!
//! # Gateway
//!
//! `gateway.enable`, `gateway.network` (where the gRPC gateway listens, and the bounds of its
//! connections), `gateway.longPolling` and `gateway.jobStreams` (how many long polls and job
//! streams it holds open, and for how long), `gateway.security` (TLS); see [`GatewayConfig`].
//!
//! # Engine caps
//!
//! Sluice's own keys (Zeebe has none): bounds on what one request may make the engine keep or
//! build; see [`EngineCapsConfig`] for what each does and its range:
//!
//! ```yaml
//! engine:
//!   messages:
//!     ttlMax: 7d                  # a PublishMessage asking for longer: INVALID_ARGUMENT
//!   variables:
//!     documentSizeMax: null       # null: network.maxMessageSize; never above it
//!     nestingMax: 64              # 1..=100
//!   feel:
//!     valueSizeMax: 4MB
//!     collectionItemsMax: 100000
//! ```
//!
//! # Management
//!
//! Reads on port 9600 are open; changing the cluster through it (`POST /actuator/rebalance`)
//! needs `management.security.token` (or `tokenFile`), and the test-only fault switch needs
//! `management.faults.enabled: true` as well. Both are off by default; see [`ManagementConfig`]:
//!
//! ```yaml
//! management:
//!   security:
//!     tokenFile: /etc/sluice/management-token   # or token: ...; 16..=1024 printable ASCII
//!   faults:
//!     enabled: false
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use serde_yaml_ng::{Mapping, Value};

mod engine;
mod gateway;
mod management;
use engine::ENGINE;
pub use engine::{
    EngineCaps, EngineCapsConfig, FEEL_COLLECTION_ITEMS_CEILING, FEEL_VALUE_BYTES_CEILING,
    FeelCapsConfig, MESSAGE_TTL_MS_CEILING, MessageCapsConfig, SIZE_BYTES_MIN, VariableCapsConfig,
};
use gateway::GATEWAY;
pub use gateway::{
    GATEWAY_CONNECTIONS_MAX, GATEWAY_POLLS_MAX, GATEWAY_STREAMS_PER_CONNECTION_MAX, GatewayConfig,
    GatewayNetworkConfig, GatewaySecurityConfig, JobStreamsConfig, LongPollingConfig,
    MAX_REQUEST_TIMEOUT_MS_MIN,
};
use management::MANAGEMENT;
pub use management::{
    ManagementConfig, ManagementFaultsConfig, ManagementSecurityConfig, TOKEN_BYTES_MAX,
    TOKEN_BYTES_MIN, TOKEN_FILE_BYTES_MAX, TOKEN_HIDDEN,
};

use crate::partitioning::{
    ClusterShape, FixedNode, FixedPartition, PARTITIONS_COUNT_MAX, PartitionLayout,
    PartitioningError, PartitioningScheme, REPLICATION_FACTOR_MAX, layout,
};

/// The prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "ZEEBE_BROKER_";

/// Largest configuration file [`BrokerConfig::load`] reads: a broker configuration is a few
/// kilobytes, so anything larger is the wrong file.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Most `ZEEBE_BROKER_*` environment variables taken into account.
pub const ENV_OVERRIDES_MAX: usize = 1024;

/// Most entries in `cluster.initialContactPoints`.
pub const CONTACT_POINTS_MAX: usize = 256;

/// Longest string value (host names, paths, cluster name) in bytes.
pub const STRING_BYTES_MAX: usize = 4096;

/// Longest `cluster.clusterName` in bytes.
pub const CLUSTER_NAME_BYTES_MAX: usize = 128;

/// Longest host name in bytes (DNS's limit).
pub const HOST_BYTES_MAX: usize = 253;

/// Longest duration: one day. Longer timeouts or intervals are typos.
pub const DURATION_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// Longest `data.flushDelay`: every commit waits for it, so more than a second is a mistake.
pub const FLUSH_DELAY_MS_MAX: u64 = 1_000;

/// Most glommio shards (`threads.cpuThreadCount`) one broker runs.
pub const CPU_THREAD_COUNT_MAX: u32 = 64;

/// Smallest `data.logSegmentSize` whatever `network.maxMessageSize` is; a segment must also hold
/// its 4 KiB header plus the largest batch ([`crate::limits::SizeLimits::segment_bytes_min`]).
pub const LOG_SEGMENT_BYTES_MIN: u64 = 1 << 20;

/// Largest `data.logSegmentSize`.
pub const LOG_SEGMENT_BYTES_MAX: u64 = 4 << 30;

/// Most `cluster.membership.suspectProbes`.
pub const SUSPECT_PROBES_MAX: u32 = 16;

/// Most `cluster.membership.gossipFanout`.
pub const GOSSIP_FANOUT_MAX: u32 = 16;

/// Largest backpressure limit (`backpressure.aimd.*Limit`, `backpressure.fixed.limit`): a
/// partition queues at most this many commands anyway.
pub const BACKPRESSURE_LIMIT_MAX: u32 = 65_536;
const _: () = assert!(BACKPRESSURE_LIMIT_MAX as usize <= crate::partition::APPENDS_PENDING_MAX);

/// Every configured port moves by this many times `network.portOffset` (Zeebe's convention).
pub const PORT_OFFSET_STEP: u32 = 10;

const MS_PER_SECOND: u64 = 1_000;
const MS_PER_MINUTE: u64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: u64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: u64 = 24 * MS_PER_HOUR;
const BYTES_PER_KIB: u64 = 1 << 10;
const BYTES_PER_MIB: u64 = 1 << 20;
const BYTES_PER_GIB: u64 = 1 << 30;
const BYTES_PER_TIB: u64 = 1 << 40;
/// Longest value quoted back in an error message, in characters.
const QUOTED_VALUE_CHARS_MAX: usize = 80;

// ---------------------------------------------------------------------------------------------
// The typed configuration.
// ---------------------------------------------------------------------------------------------

/// The broker's configuration. Build it with [`BrokerConfig::from_yaml_str`],
/// [`BrokerConfig::load`] or [`Default`]; the first two return only configurations that pass
/// [`BrokerConfig::validate`].
///
/// It derives `Deserialize` for the tree this module normalises (durations and sizes already
/// numbers); deserialize YAML through [`BrokerConfig::from_yaml_str`], not directly.
///
/// It is `PartialEq` but not `Eq`: `backpressure.aimd.backoffRatio` is a float.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerConfig {
    /// `cluster`: who this broker is and how the cluster is shaped.
    pub cluster: ClusterConfig,
    /// `partitioning` (or Zeebe 8's `experimental.partitioning`): where partitions live.
    pub partitioning: PartitioningConfig,
    /// `network`: addresses and ports.
    pub network: NetworkConfig,
    /// `data`: the journal on disk.
    pub data: DataConfig,
    /// `threads`: the broker's shards.
    pub threads: ThreadsConfig,
    /// `backpressure`: how many commands a partition leader takes in at once.
    pub backpressure: BackpressureConfig,
    /// `gateway`: the embedded client gateway.
    pub gateway: GatewayConfig,
    /// `management`: the HTTP management API (health, metrics), its token and fault switch.
    pub management: ManagementConfig,
    /// `engine`: the engine's caps on what a request may make it keep or build.
    pub engine: EngineCapsConfig,
}

/// `cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterConfig {
    /// `cluster.nodeId`: this broker's id, `0..clusterSize`. Default 0.
    pub node_id: u32,
    /// `cluster.clusterSize`: the number of brokers. Default 1.
    pub cluster_size: u32,
    /// `cluster.partitionsCount`. Default 1.
    pub partitions_count: u32,
    /// `cluster.replicationFactor`. Default 1.
    pub replication_factor: u32,
    /// `cluster.clusterName`: brokers only join a cluster of the same name. Default `sluice`.
    pub cluster_name: String,
    /// `cluster.initialContactPoints`: `host:port` of other brokers' internal API. Default empty.
    pub initial_contact_points: Vec<String>,
    /// `cluster.heartbeatInterval`: Raft leader heartbeat. Default 250 ms.
    #[serde(rename = "heartbeatInterval", serialize_with = "serialize_duration_ms")]
    pub heartbeat_interval_ms: u64,
    /// `cluster.electionTimeout`: Raft election timeout. Default 2500 ms.
    #[serde(rename = "electionTimeout", serialize_with = "serialize_duration_ms")]
    pub election_timeout_ms: u64,
    /// `cluster.raft`.
    pub raft: RaftConfig,
    /// `cluster.membership`: SWIM membership.
    pub membership: MembershipConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: 0,
            cluster_size: 1,
            partitions_count: 1,
            replication_factor: 1,
            cluster_name: "sluice".to_owned(),
            initial_contact_points: Vec::new(),
            heartbeat_interval_ms: 250,
            election_timeout_ms: 2_500,
            raft: RaftConfig::default(),
            membership: MembershipConfig::default(),
        }
    }
}

/// `cluster.raft`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RaftConfig {
    /// `cluster.raft.enablePriorityElection`. Default true.
    pub enable_priority_election: bool,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            enable_priority_election: true,
        }
    }
}

/// `cluster.membership`: the SWIM failure detector and gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MembershipConfig {
    /// `probeInterval`. Default 1 s.
    #[serde(rename = "probeInterval", serialize_with = "serialize_duration_ms")]
    pub probe_interval_ms: u64,
    /// `probeTimeout`. Default 100 ms.
    #[serde(rename = "probeTimeout", serialize_with = "serialize_duration_ms")]
    pub probe_timeout_ms: u64,
    /// `suspectProbes`: members asked to probe indirectly. Default 3.
    pub suspect_probes: u32,
    /// `failureTimeout`: how long a suspect has to refute before it is declared dead. Default
    /// 10 s.
    #[serde(rename = "failureTimeout", serialize_with = "serialize_duration_ms")]
    pub failure_timeout_ms: u64,
    /// `gossipInterval`. Default 250 ms.
    #[serde(rename = "gossipInterval", serialize_with = "serialize_duration_ms")]
    pub gossip_interval_ms: u64,
    /// `gossipFanout`: members gossiped to per round. Default 2.
    pub gossip_fanout: u32,
    /// `syncInterval`: full membership sync. Default 10 s.
    #[serde(rename = "syncInterval", serialize_with = "serialize_duration_ms")]
    pub sync_interval_ms: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 100,
            suspect_probes: 3,
            failure_timeout_ms: 10_000,
            gossip_interval_ms: 250,
            gossip_fanout: 2,
            sync_interval_ms: 10_000,
        }
    }
}

/// `partitioning.scheme`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchemeName {
    /// `ROUND_ROBIN`, the default.
    #[default]
    RoundRobin,
    /// `FIXED`: the layout is `partitioning.fixed`.
    Fixed,
}

/// `partitioning`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PartitioningConfig {
    /// `partitioning.scheme`. Default `ROUND_ROBIN`.
    pub scheme: SchemeName,
    /// `partitioning.fixed`: for `FIXED`, every partition's nodes. Default empty.
    pub fixed: Vec<FixedPartitionConfig>,
}

/// One entry of `partitioning.fixed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixedPartitionConfig {
    /// `partitionId` (required).
    pub partition_id: u32,
    /// `nodes` (required).
    pub nodes: Vec<FixedNodeConfig>,
}

/// One entry of `partitioning.fixed[].nodes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixedNodeConfig {
    /// `nodeId` (required).
    pub node_id: u32,
    /// `priority`: required with priority election.
    pub priority: Option<u32>,
}

/// `network`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkConfig {
    /// `network.host`: the IP address every API binds to unless it sets its own. Default
    /// `0.0.0.0`.
    pub host: String,
    /// `network.advertisedHost`: the host other brokers reach this one at. Default: `host`, or
    /// `127.0.0.1` when `host` is unspecified (`0.0.0.0`, `::`).
    pub advertised_host: Option<String>,
    /// `network.portOffset`: every port moves by `10 * portOffset`. Default 0.
    pub port_offset: u16,
    /// `network.commandApi`: the log benchmark's raw-append API (TCP); off by default.
    pub command_api: CommandApiConfig,
    /// `network.internalApi`: QUIC between brokers. Default port 26502.
    pub internal_api: ApiConfig,
    /// `network.security`: mutual TLS between brokers.
    pub security: SecurityConfig,
    /// `network.maxMessageSize`: the largest request a client may send (Zeebe's key); every
    /// other size limit derives from it ([`crate::limits`]). Default 4 MiB, within
    /// [`crate::limits::MESSAGE_BYTES_MIN`]`..=`[`crate::limits::MESSAGE_BYTES_MAX`].
    #[serde(rename = "maxMessageSize", serialize_with = "serialize_size_bytes")]
    pub max_message_bytes: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            host: "0.0.0.0".to_owned(),
            advertised_host: None,
            port_offset: 0,
            command_api: CommandApiConfig::default(),
            internal_api: ApiConfig::on_port(26_502),
            security: SecurityConfig::default(),
            max_message_bytes: crate::limits::MESSAGE_BYTES_DEFAULT,
        }
    }
}

/// `network.commandApi`: the log benchmark's raw-append API (`sluice-bench append`). It takes
/// raw appends only (no engine commands: clients use the gRPC gateway), with no
/// authentication, so it is off unless `enabled`, and listens on loopback unless `host` says
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandApiConfig {
    /// `enabled`: serve raw appends. Default false.
    pub enabled: bool,
    /// `host`: the IP address to bind to. Default `127.0.0.1` (not `network.host`).
    pub host: Option<String>,
    /// `port`, before `network.portOffset`. Default 26501.
    pub port: u16,
}

impl Default for CommandApiConfig {
    fn default() -> Self {
        CommandApiConfig {
            enabled: false,
            host: None,
            port: 26_501,
        }
    }
}

/// A listening API: `host` (default: `network.host`) and `port` (before `network.portOffset`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ApiConfig {
    /// `host`: the IP address to bind to; `None` takes `network.host`.
    pub host: Option<String>,
    /// `port`, before `network.portOffset` is applied.
    pub port: u16,
}

impl ApiConfig {
    /// The API on `port`, bound to `network.host`.
    #[must_use]
    pub fn on_port(port: u16) -> Self {
        ApiConfig { host: None, port }
    }
}

/// `network.security`: the files of the brokers' mutual TLS; `sluice certs --dir DIR` writes
/// them. See [`BrokerConfig::tls_paths`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecurityConfig {
    /// `certificateAuthorityPath`: the CA certificate (PEM) peers must be signed by.
    pub certificate_authority_path: Option<PathBuf>,
    /// `certificateChainPath`: this broker's certificate chain (PEM).
    pub certificate_chain_path: Option<PathBuf>,
    /// `privateKeyPath`: this broker's private key (PEM).
    pub private_key_path: Option<PathBuf>,
}

/// `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DataConfig {
    /// `data.directory`. Default `data`.
    pub directory: PathBuf,
    /// `data.logSegmentSize`. Default 128 MiB.
    #[serde(rename = "logSegmentSize", serialize_with = "serialize_size_bytes")]
    pub log_segment_bytes: u64,
    /// `data.flushDelay`: extra wait before a flush to gather appends; 0 is none. Default 0.
    #[serde(rename = "flushDelay", serialize_with = "serialize_duration_ms")]
    pub flush_delay_ms: u64,
    /// `data.snapshotPeriod`: a replica snapshots its engine state at least this often when
    /// anything new was committed (Zeebe's key). Default 5 minutes.
    #[serde(rename = "snapshotPeriod", serialize_with = "serialize_duration_ms")]
    pub snapshot_period_ms: u64,
    /// `data.snapshotRecords`: ... and after this many committed records. Default 100,000.
    pub snapshot_records: u64,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            directory: PathBuf::from("data"),
            log_segment_bytes: 128 * BYTES_PER_MIB,
            flush_delay_ms: 0,
            snapshot_period_ms: 5 * 60 * 1000,
            snapshot_records: 100_000,
        }
    }
}

/// `threads`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ThreadsConfig {
    /// `threads.cpuThreadCount`: glommio shards (executors). Default 1.
    pub cpu_thread_count: u32,
}

impl Default for ThreadsConfig {
    fn default() -> Self {
        ThreadsConfig {
            cpu_thread_count: 1,
        }
    }
}

/// `backpressure.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackpressureAlgorithm {
    /// `aimd`, the default: the limit grows with fast replies and shrinks with slow ones.
    #[default]
    Aimd,
    /// `fixed`: the limit is `backpressure.fixed.limit`, always.
    Fixed,
}

/// `backpressure` (Zeebe's keys): see [`crate::backpressure`] and [`BrokerConfig::limiter`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackpressureConfig {
    /// `backpressure.enabled`: false admits every command (commands in flight are still
    /// counted for the metrics). Default true.
    pub enabled: bool,
    /// `backpressure.algorithm`: `aimd` or `fixed`. Default `aimd`.
    pub algorithm: BackpressureAlgorithm,
    /// `backpressure.aimd`: the AIMD limit.
    pub aimd: AimdBackpressureConfig,
    /// `backpressure.fixed`: the fixed limit.
    pub fixed: FixedBackpressureConfig,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        BackpressureConfig {
            enabled: true,
            algorithm: BackpressureAlgorithm::Aimd,
            aimd: AimdBackpressureConfig::default(),
            fixed: FixedBackpressureConfig::default(),
        }
    }
}

/// `backpressure.aimd`, with Zeebe's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AimdBackpressureConfig {
    /// `initialLimit`: commands in flight allowed at start. Default 100.
    pub initial_limit: u32,
    /// `minLimit`: at least 1. Default 1.
    pub min_limit: u32,
    /// `maxLimit`. Default 1000.
    pub max_limit: u32,
    /// `requestTimeout`: a reply slower than this shrinks the limit. Default 200 ms.
    #[serde(rename = "requestTimeout", serialize_with = "serialize_duration_ms")]
    pub request_timeout_ms: u64,
    /// `backoffRatio`: what the limit is multiplied by when it shrinks, strictly between 0 and
    /// 1. Default 0.9.
    pub backoff_ratio: f64,
}

impl Default for AimdBackpressureConfig {
    fn default() -> Self {
        let aimd = crate::backpressure::AimdConfig::default();
        AimdBackpressureConfig {
            initial_limit: aimd.initial_limit,
            min_limit: aimd.min_limit,
            max_limit: aimd.max_limit,
            request_timeout_ms: aimd.request_timeout_ms,
            backoff_ratio: aimd.backoff_ratio,
        }
    }
}

/// `backpressure.fixed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FixedBackpressureConfig {
    /// `limit`: commands in flight allowed, at least 1. Default 20 (Zeebe's).
    pub limit: u32,
}

impl Default for FixedBackpressureConfig {
    fn default() -> Self {
        FixedBackpressureConfig { limit: 20 }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// Why a configuration was refused. Each message names the key (or environment variable) and
/// says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read the configuration file {}: {source}; check the path given to the broker \
         and the file's permissions",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than [`CONFIG_FILE_BYTES_MAX`].
    #[error(
        "the configuration file {} is larger than {max_bytes} bytes; point the broker at its \
         YAML configuration file",
        path.display()
    )]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// [`CONFIG_FILE_BYTES_MAX`].
        max_bytes: u64,
    },
    /// The text is not YAML, or not a mapping at the top.
    #[error("{origin} cannot be read as a configuration: {message}; fix the YAML there")]
    Yaml {
        /// The file, or "the configuration text" for a string.
        origin: String,
        /// The parser's message, with the position.
        message: String,
    },
    /// A key no setting has.
    #[error(
        "unknown configuration key `{key}`; the keys there are: {known}. Check its spelling \
         (Zeebe's camelCase names) or remove it"
    )]
    UnknownKey {
        /// The key's full path.
        key: String,
        /// The keys allowed at that place.
        known: String,
    },
    /// A `ZEEBE_BROKER_*` environment variable that names no key.
    #[error(
        "environment variable {name} names no configuration key: {reason}. Fix its name \
         (ZEEBE_BROKER_ and the key path, e.g. ZEEBE_BROKER_CLUSTER_NODEID) or unset it"
    )]
    UnknownEnv {
        /// The variable.
        name: String,
        /// What did not match.
        reason: String,
    },
    /// A value of the wrong type or format.
    #[error("`{key}`{origin} is {value}, which is not {expected}; fix the value")]
    InvalidValue {
        /// The key's full path.
        key: String,
        /// Empty, or ` (set by ZEEBE_BROKER_...)` when the value came from the environment.
        origin: String,
        /// The value as written (shortened).
        value: String,
        /// What was expected there.
        expected: String,
    },
    /// A key that must be given is missing (within `partitioning.fixed`).
    #[error("`{key}` is required: add it")]
    MissingKey {
        /// The key's full path.
        key: String,
    },
    /// Two sources set the same key.
    #[error("`{key}` is set twice, by {first} and by {second}; keep one")]
    DuplicateKey {
        /// The key's full path.
        key: String,
        /// The first setter (a key or an environment variable).
        first: String,
        /// The second.
        second: String,
    },
    /// A number outside its allowed range.
    #[error(
        "`{key}` is {value} {unit}, outside the allowed {min}..={max} {unit}; set it within \
         that range"
    )]
    OutOfRange {
        /// The key's full path.
        key: String,
        /// The configured value.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
        /// The value's unit (`ms`, `bytes`, ...).
        unit: &'static str,
    },
    /// `cluster.nodeId` is not below `cluster.clusterSize`.
    #[error(
        "`cluster.nodeId` is {node_id} but `cluster.clusterSize` is {cluster_size}: node ids run \
         from 0 to clusterSize - 1; give each broker its own id in that range"
    )]
    NodeIdOutOfRange {
        /// `cluster.nodeId`.
        node_id: u32,
        /// `cluster.clusterSize`.
        cluster_size: u32,
    },
    /// `cluster.electionTimeout` is less than twice `cluster.heartbeatInterval`.
    #[error(
        "`cluster.electionTimeout` ({election_timeout_ms} ms) must be at least twice \
         `cluster.heartbeatInterval` ({heartbeat_interval_ms} ms), or followers elect a new \
         leader while the old one is healthy; raise the timeout or lower the interval"
    )]
    ElectionTimeoutTooShort {
        /// `cluster.electionTimeout`.
        election_timeout_ms: u64,
        /// `cluster.heartbeatInterval`.
        heartbeat_interval_ms: u64,
    },
    /// A port that is 0 or beyond 65535 once `network.portOffset` is applied.
    #[error(
        "`{key}` is {port}, which with `network.portOffset` {port_offset} gives port \
         {effective_port}; ports must end up within 1..=65535: change the port or the offset"
    )]
    PortOutOfRange {
        /// The port's key.
        key: &'static str,
        /// The configured port.
        port: u16,
        /// `network.portOffset`.
        port_offset: u16,
        /// `port + 10 * portOffset`.
        effective_port: u32,
    },
    /// Two APIs on one port.
    #[error("`{first}` and `{second}` both end up on port {port}; give each API its own port")]
    PortConflict {
        /// One port's key.
        first: &'static str,
        /// The other's.
        second: &'static str,
        /// The shared port, offset applied.
        port: u16,
    },
    /// A host that is not usable there.
    #[error("`{key}` is {host:?}, which is not {expected}; fix the host")]
    InvalidHost {
        /// The host's key.
        key: &'static str,
        /// The configured host.
        host: String,
        /// What is accepted there.
        expected: &'static str,
    },
    /// An entry of `cluster.initialContactPoints` that is not `host:port`.
    #[error(
        "`cluster.initialContactPoints[{index}]` is {value:?}: {reason}; write each contact \
         point as host:port of another broker's internal API, e.g. broker-1:26502"
    )]
    InvalidContactPoint {
        /// The entry's index.
        index: usize,
        /// The entry.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A value breaking a rule not covered above.
    #[error("`{key}` {reason}")]
    Invalid {
        /// The key's full path.
        key: &'static str,
        /// The rule and what to do.
        reason: String,
    },
    /// `partitioning.fixed` given while the scheme is `ROUND_ROBIN`, which would ignore it.
    #[error(
        "`partitioning.fixed` lists {entries} partition(s) but `partitioning.scheme` is \
         ROUND_ROBIN, which ignores them; set `partitioning.scheme: FIXED` or remove \
         `partitioning.fixed`"
    )]
    FixedWithoutScheme {
        /// How many entries `partitioning.fixed` has.
        entries: usize,
    },
    /// The cluster shape or the FIXED partitioning breaks a rule; the message names it.
    #[error(transparent)]
    Partitioning(#[from] PartitioningError),
    /// Mutual TLS files not configured; see [`BrokerConfig::tls_paths`].
    #[error(
        "mutual TLS between brokers needs {missing} to be set; run `sluice certs --dir DIR` and \
         set network.security.certificateAuthorityPath, network.security.certificateChainPath \
         and network.security.privateKeyPath (or ZEEBE_BROKER_NETWORK_SECURITY_*) to the files \
         it writes"
    )]
    TlsPathsMissing {
        /// The unset keys, comma-separated.
        missing: String,
    },
    /// The checked tree did not fit the settings: a bug in this module's key table.
    #[error("the configuration does not fit the broker's settings: {message}; please report it")]
    Shape {
        /// Serde's message.
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

impl BrokerConfig {
    /// Parses `yaml` (the broker section, or a Zeebe file with `zeebe.broker`), applies the
    /// `ZEEBE_BROKER_*` variables of `env` (other variables are ignored), and validates the
    /// result.
    pub fn from_yaml_str(
        yaml: &str,
        env: &[(String, String)],
    ) -> Result<BrokerConfig, ConfigError> {
        let config = parse_unvalidated(yaml, "the configuration text", env)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the file at `path` (at most [`CONFIG_FILE_BYTES_MAX`]) as
    /// [`BrokerConfig::from_yaml_str`] does; with `None`, starts from the defaults. Either way
    /// the `ZEEBE_BROKER_*` variables of `env` apply and the result is validated.
    pub fn load(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<BrokerConfig, ConfigError> {
        let Some(path) = path else {
            return BrokerConfig::from_yaml_str("", env);
        };
        let read_error = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut text = String::new();
        file.take(CONFIG_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(read_error)?;
        if u64::try_from(text.len()).map_or(true, |len| len > CONFIG_FILE_BYTES_MAX) {
            return Err(ConfigError::FileTooLarge {
                path: path.to_owned(),
                max_bytes: CONFIG_FILE_BYTES_MAX,
            });
        }
        let config = parse_unvalidated(&text, &format!("{}", path.display()), env)?;
        config.validate()?;
        Ok(config)
    }

    /// The effective configuration as YAML (the broker section, Zeebe's key names), for the
    /// start-up log. Durations and sizes are written with units; it parses back to `self`,
    /// except that `management.security.token` is shown as [`TOKEN_HIDDEN`].
    #[must_use]
    pub fn to_yaml(&self) -> String {
        let shown = BrokerConfig {
            management: self.management.hidden(),
            ..self.clone()
        };
        serde_yaml_ng::to_string(&shown)
            .unwrap_or_else(|error| format!("# the configuration cannot be rendered: {error}\n"))
    }
}

/// Everything [`BrokerConfig::from_yaml_str`] does except [`BrokerConfig::validate`].
fn parse_unvalidated(
    yaml: &str,
    origin: &str,
    env: &[(String, String)],
) -> Result<BrokerConfig, ConfigError> {
    let yaml_error = |message: String| ConfigError::Yaml {
        origin: origin.to_owned(),
        message,
    };
    let document: Value =
        serde_yaml_ng::from_str(yaml).map_err(|error| yaml_error(error.to_string()))?;
    let file = broker_section(document).map_err(|error| match error {
        SectionError::NotAMapping(what) => yaml_error(what),
        SectionError::Config(error) => error,
    })?;
    let defaults =
        serde_yaml_ng::to_value(BrokerConfig::default()).map_err(|error| ConfigError::Shape {
            message: error.to_string(),
        })?;
    let mut tree = defaults;
    merge(&mut tree, file);
    let origins = apply_env(&mut tree, env)?;
    check_section(&mut tree, ROOT, &mut String::new(), &origins)?;
    serde_yaml_ng::from_value(tree).map_err(|error| ConfigError::Shape {
        message: error.to_string(),
    })
}

enum SectionError {
    NotAMapping(String),
    Config(ConfigError),
}

/// The broker section of a parsed document: the root, or `zeebe.broker`; with
/// `experimental.partitioning` moved to `partitioning`.
fn broker_section(document: Value) -> Result<Mapping, SectionError> {
    let mut root = match document {
        Value::Null => Mapping::new(),
        Value::Mapping(mapping) => mapping,
        _ => {
            return Err(SectionError::NotAMapping(
                "the top of the document must be a mapping of keys (cluster, network, ...)"
                    .to_owned(),
            ));
        }
    };
    if let Some(zeebe) = root.remove("zeebe") {
        if let Some((key, _)) = root.iter().next() {
            return Err(SectionError::Config(ConfigError::UnknownKey {
                key: display_key(key),
                known: "zeebe (put every key under zeebe.broker, or none)".to_owned(),
            }));
        }
        let mut zeebe = match zeebe {
            Value::Null => Mapping::new(),
            Value::Mapping(mapping) => mapping,
            _ => {
                return Err(SectionError::NotAMapping(
                    "`zeebe` must be a mapping".to_owned(),
                ));
            }
        };
        let broker = zeebe.remove("broker");
        if let Some((key, _)) = zeebe.iter().next() {
            return Err(SectionError::Config(ConfigError::UnknownKey {
                key: format!("zeebe.{}", display_key(key)),
                known: "broker".to_owned(),
            }));
        }
        root = match broker {
            None | Some(Value::Null) => Mapping::new(),
            Some(Value::Mapping(mapping)) => mapping,
            Some(_) => {
                return Err(SectionError::NotAMapping(
                    "`zeebe.broker` must be a mapping".to_owned(),
                ));
            }
        };
    }
    if let Some(experimental) = root.remove("experimental") {
        let mut experimental = match experimental {
            Value::Null => Mapping::new(),
            Value::Mapping(mapping) => mapping,
            _ => {
                return Err(SectionError::NotAMapping(
                    "`experimental` must be a mapping".to_owned(),
                ));
            }
        };
        let partitioning = experimental.remove("partitioning");
        if let Some((key, _)) = experimental.iter().next() {
            return Err(SectionError::Config(ConfigError::UnknownKey {
                key: format!("experimental.{}", display_key(key)),
                known: "partitioning".to_owned(),
            }));
        }
        match (partitioning, root.get_mut("partitioning")) {
            (None | Some(Value::Null), _) => {}
            (Some(moved), None | Some(Value::Null)) => {
                root.insert(Value::from("partitioning"), moved);
            }
            (Some(Value::Mapping(moved)), Some(Value::Mapping(existing))) => {
                for (key, value) in moved {
                    if existing.contains_key(&key) {
                        let key = display_key(&key);
                        return Err(SectionError::Config(ConfigError::DuplicateKey {
                            first: format!("`experimental.partitioning.{key}`"),
                            second: format!("`partitioning.{key}`"),
                            key: format!("partitioning.{key}"),
                        }));
                    }
                    existing.insert(key, value);
                }
            }
            (Some(_), Some(_)) => {
                return Err(SectionError::NotAMapping(
                    "`partitioning` and `experimental.partitioning` must be mappings".to_owned(),
                ));
            }
        }
    }
    Ok(root)
}

/// Lays `file` over `tree`: mappings merge key by key, anything else replaces. A section left
/// empty in the file (`cluster:`) keeps its defaults.
fn merge(tree: &mut Value, file: Mapping) {
    let Value::Mapping(target) = tree else {
        *tree = Value::Mapping(file);
        return;
    };
    for (key, value) in file {
        match (target.get_mut(&key), value) {
            (Some(Value::Mapping(_)), Value::Null) => {}
            (Some(existing @ Value::Mapping(_)), Value::Mapping(inner)) => merge(existing, inner),
            (_, value) => {
                target.insert(key, value);
            }
        }
    }
}

fn display_key(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        other => quote_value(other),
    }
}

/// A value as written, shortened for an error message.
fn quote_value(value: &Value) -> String {
    let text = match value {
        Value::String(text) => format!("{text:?}"),
        Value::Null => "null".to_owned(),
        other => serde_yaml_ng::to_string(other).map_or_else(
            |_| "a value".to_owned(),
            |text| text.trim().replace('\n', " "),
        ),
    };
    if text.chars().count() > QUOTED_VALUE_CHARS_MAX {
        let short: String = text.chars().take(QUOTED_VALUE_CHARS_MAX).collect();
        format!("{short}...")
    } else {
        text
    }
}

// ---------------------------------------------------------------------------------------------
// The key table: every key, its kind, used for environment variables and for checking.
// ---------------------------------------------------------------------------------------------

/// One key of a section.
struct Field {
    name: &'static str,
    node: Node,
    /// Only within list entries: sections themselves come with every key from the defaults.
    required: bool,
}

enum Node {
    Section(&'static [Field]),
    /// A list of sections, with its most entries.
    Table(&'static [Field], usize),
    Leaf(Leaf),
}

#[derive(Clone, Copy)]
enum Leaf {
    Str,
    OptStr,
    Bool,
    /// An unsigned integer up to the bound.
    UInt(u64),
    OptUInt(u64),
    DurationMs,
    /// A duration that may be longer than [`DURATION_MS_MAX`]; `validate` bounds it.
    LongDurationMs,
    SizeBytes,
    OptSizeBytes,
    Enum(&'static [&'static str]),
    /// A finite decimal number.
    Float,
    /// A list of strings, with its most entries.
    StrList(usize),
}

impl Leaf {
    fn expected(self) -> String {
        match self {
            Leaf::Str => "a string".to_owned(),
            Leaf::OptStr => "a string or null".to_owned(),
            Leaf::Bool => "true or false".to_owned(),
            Leaf::UInt(max) => format!("a whole number from 0 to {max}"),
            Leaf::OptUInt(max) => format!("a whole number from 0 to {max}, or null"),
            Leaf::DurationMs => format!(
                "a duration such as 250ms, 10s, 2m or PT0.25S (whole milliseconds, at most \
                 {DURATION_MS_MAX} ms)"
            ),
            Leaf::LongDurationMs => {
                "a duration such as 30m, 12h, 7d or P7D (whole milliseconds)".to_owned()
            }
            Leaf::SizeBytes => "a size such as 512KB, 128MB, 1GB or a number of bytes".to_owned(),
            Leaf::OptSizeBytes => {
                "a size such as 512KB, 4MB or a number of bytes, or null".to_owned()
            }
            Leaf::Enum(options) => format!("one of {}", options.join(", ")),
            Leaf::Float => "a decimal number such as 0.9".to_owned(),
            Leaf::StrList(max) => {
                format!("a list of at most {max} strings, or one string of comma-separated ones")
            }
        }
    }

    fn is_optional(self) -> bool {
        matches!(self, Leaf::OptStr | Leaf::OptUInt(_) | Leaf::OptSizeBytes)
    }
}

const fn key(name: &'static str, leaf: Leaf) -> Field {
    Field {
        name,
        node: Node::Leaf(leaf),
        required: false,
    }
}

const fn required(name: &'static str, leaf: Leaf) -> Field {
    Field {
        name,
        node: Node::Leaf(leaf),
        required: true,
    }
}

const fn section(name: &'static str, fields: &'static [Field]) -> Field {
    Field {
        name,
        node: Node::Section(fields),
        required: false,
    }
}

const fn table(name: &'static str, fields: &'static [Field], max: usize, req: bool) -> Field {
    Field {
        name,
        node: Node::Table(fields, max),
        required: req,
    }
}

const U16: Leaf = Leaf::UInt(u16::MAX as u64);
const U32: Leaf = Leaf::UInt(u32::MAX as u64);

const RAFT: &[Field] = &[key("enablePriorityElection", Leaf::Bool)];

const MEMBERSHIP: &[Field] = &[
    key("probeInterval", Leaf::DurationMs),
    key("probeTimeout", Leaf::DurationMs),
    key("suspectProbes", U32),
    key("failureTimeout", Leaf::DurationMs),
    key("gossipInterval", Leaf::DurationMs),
    key("gossipFanout", U32),
    key("syncInterval", Leaf::DurationMs),
];

const CLUSTER: &[Field] = &[
    key("nodeId", U32),
    key("clusterSize", U32),
    key("partitionsCount", U32),
    key("replicationFactor", U32),
    key("clusterName", Leaf::Str),
    key("initialContactPoints", Leaf::StrList(CONTACT_POINTS_MAX)),
    key("heartbeatInterval", Leaf::DurationMs),
    key("electionTimeout", Leaf::DurationMs),
    section("raft", RAFT),
    section("membership", MEMBERSHIP),
];

const FIXED_NODE: &[Field] = &[
    required("nodeId", U32),
    key("priority", Leaf::OptUInt(u32::MAX as u64)),
];

const FIXED_PARTITION: &[Field] = &[
    required("partitionId", U32),
    table("nodes", FIXED_NODE, REPLICATION_FACTOR_MAX as usize, true),
];

const PARTITIONING: &[Field] = &[
    key("scheme", Leaf::Enum(&["ROUND_ROBIN", "FIXED"])),
    table(
        "fixed",
        FIXED_PARTITION,
        PARTITIONS_COUNT_MAX as usize,
        false,
    ),
];

const API: &[Field] = &[key("host", Leaf::OptStr), key("port", U16)];

const COMMAND_API: &[Field] = &[
    key("enabled", Leaf::Bool),
    key("host", Leaf::OptStr),
    key("port", U16),
];

const SECURITY: &[Field] = &[
    key("certificateAuthorityPath", Leaf::OptStr),
    key("certificateChainPath", Leaf::OptStr),
    key("privateKeyPath", Leaf::OptStr),
];

const NETWORK: &[Field] = &[
    key("host", Leaf::Str),
    key("advertisedHost", Leaf::OptStr),
    key("portOffset", U16),
    section("commandApi", COMMAND_API),
    section("internalApi", API),
    section("security", SECURITY),
    key("maxMessageSize", Leaf::SizeBytes),
];

const DATA: &[Field] = &[
    key("directory", Leaf::Str),
    key("logSegmentSize", Leaf::SizeBytes),
    key("flushDelay", Leaf::DurationMs),
    key("snapshotPeriod", Leaf::DurationMs),
    key("snapshotRecords", U32),
];

const THREADS: &[Field] = &[key("cpuThreadCount", U32)];

const AIMD: &[Field] = &[
    key("initialLimit", U32),
    key("minLimit", U32),
    key("maxLimit", U32),
    key("requestTimeout", Leaf::DurationMs),
    key("backoffRatio", Leaf::Float),
];

const FIXED_LIMIT: &[Field] = &[key("limit", U32)];

const BACKPRESSURE: &[Field] = &[
    key("enabled", Leaf::Bool),
    key("algorithm", Leaf::Enum(&["AIMD", "FIXED"])),
    section("aimd", AIMD),
    section("fixed", FIXED_LIMIT),
];

const ROOT: &[Field] = &[
    section("cluster", CLUSTER),
    section("partitioning", PARTITIONING),
    section("network", NETWORK),
    section("data", DATA),
    section("threads", THREADS),
    section("backpressure", BACKPRESSURE),
    section("gateway", GATEWAY),
    section("management", MANAGEMENT),
    section("engine", ENGINE),
];

fn field_names(fields: &[Field]) -> String {
    fields
        .iter()
        .map(|field| field.name)
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Environment variables.
// ---------------------------------------------------------------------------------------------

/// One step of a key path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(&'static str),
    Index(usize),
}

fn path_text(path: &[Step]) -> String {
    let mut text = String::new();
    for step in path {
        match step {
            Step::Key(name) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(name);
            }
            Step::Index(index) => {
                let _ = write!(text, "[{index}]");
            }
        }
    }
    text
}

/// The key path an environment variable names (`rest` is its name after [`ENV_PREFIX`]), and
/// the leaf it ends on.
fn resolve_env(name: &str, rest: &str) -> Result<(Vec<Step>, Leaf), ConfigError> {
    let segments: Vec<&str> = rest.split('_').collect();
    let mut path = Vec::new();
    // Zeebe 8's place for partitioning is an alias of `partitioning`.
    let leaf = match segments.as_slice() {
        [first, second, tail @ ..]
            if first.eq_ignore_ascii_case("experimental")
                && second.eq_ignore_ascii_case("partitioning") =>
        {
            path.push(Step::Key("partitioning"));
            resolve_steps(name, tail, &Node::Section(PARTITIONING), &mut path)?
        }
        _ => resolve_steps(name, &segments, &Node::Section(ROOT), &mut path)?,
    };
    Ok((path, leaf))
}

fn resolve_steps(
    name: &str,
    segments: &[&str],
    node: &Node,
    path: &mut Vec<Step>,
) -> Result<Leaf, ConfigError> {
    let unknown = |reason: String| ConfigError::UnknownEnv {
        name: name.to_owned(),
        reason,
    };
    let place = |path: &[Step]| {
        if path.is_empty() {
            "the top level".to_owned()
        } else {
            format!("`{}`", path_text(path))
        }
    };
    let Some((segment, rest)) = segments.split_first() else {
        return match node {
            Node::Leaf(leaf) => Ok(*leaf),
            Node::Section(fields) => Err(unknown(format!(
                "{} is a section; set one of its keys ({}) instead",
                place(path),
                field_names(fields)
            ))),
            Node::Table(fields, _) => Err(unknown(format!(
                "{} is a list; set its entries' keys ({}) by index, e.g. {name}_0_{}",
                place(path),
                field_names(fields),
                fields
                    .first()
                    .map_or(String::new(), |field| field.name.to_ascii_uppercase())
            ))),
        };
    };
    if segment.is_empty() {
        return Err(unknown(
            "it has an empty part between underscores".to_owned(),
        ));
    }
    match node {
        Node::Section(fields) => {
            let field = fields
                .iter()
                .find(|field| field.name.eq_ignore_ascii_case(segment))
                .ok_or_else(|| {
                    unknown(format!(
                        "{} has no key `{segment}`; its keys are {}",
                        place(path),
                        field_names(fields)
                    ))
                })?;
            path.push(Step::Key(field.name));
            resolve_steps(name, rest, &field.node, path)
        }
        Node::Table(_, max) | Node::Leaf(Leaf::StrList(max)) => {
            let index = parse_index(segment, *max).ok_or_else(|| {
                unknown(format!(
                    "{} is a list: `{segment}` should be an entry index from 0 to {}",
                    place(path),
                    max.saturating_sub(1)
                ))
            })?;
            path.push(Step::Index(index));
            let entry = match node {
                Node::Table(fields, _) => Node::Section(fields),
                _ => Node::Leaf(Leaf::Str),
            };
            resolve_steps(name, rest, &entry, path)
        }
        Node::Leaf(_) => Err(unknown(format!(
            "{} is a single value, with no `{segment}` below it",
            place(path)
        ))),
    }
}

fn parse_index(segment: &str, max: usize) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    segment.parse::<usize>().ok().filter(|index| *index < max)
}

/// Applies the `ZEEBE_BROKER_*` variables of `env` to `tree`. Returns which variable set which
/// key, for error messages.
fn apply_env(
    tree: &mut Value,
    env: &[(String, String)],
) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut overrides: Vec<(Vec<Step>, Leaf, &str, &str)> = Vec::new();
    for (name, value) in env {
        let Some(rest) = name
            .get(..ENV_PREFIX.len())
            .filter(|prefix| prefix.eq_ignore_ascii_case(ENV_PREFIX))
            .and_then(|_| name.get(ENV_PREFIX.len()..))
        else {
            continue;
        };
        if overrides.len() >= ENV_OVERRIDES_MAX {
            return Err(ConfigError::UnknownEnv {
                name: name.clone(),
                reason: format!("more than {ENV_OVERRIDES_MAX} ZEEBE_BROKER_* variables are set"),
            });
        }
        if rest.is_empty() {
            return Err(ConfigError::UnknownEnv {
                name: name.clone(),
                reason: "the key path after the prefix is missing".to_owned(),
            });
        }
        let (path, leaf) = resolve_env(name, rest)?;
        overrides.push((path, leaf, name, value));
    }
    // Shorter paths first: a whole list before its indexed entries.
    overrides.sort_by(|a, b| a.0.cmp(&b.0));
    let mut origins = BTreeMap::new();
    for pair in overrides.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(ConfigError::DuplicateKey {
                key: path_text(&pair[0].0),
                first: pair[0].2.to_owned(),
                second: pair[1].2.to_owned(),
            });
        }
    }
    for (path, leaf, name, text) in overrides {
        let value = match leaf {
            Leaf::StrList(_) => Value::Sequence(
                text.split(',')
                    .map(str::trim)
                    .filter(|entry| !entry.is_empty())
                    .map(Value::from)
                    .collect(),
            ),
            leaf if leaf.is_optional() && text.trim().is_empty() => Value::Null,
            _ => Value::from(text),
        };
        set_path(tree, &path, value);
        origins.insert(path_text(&path), name.to_owned());
    }
    Ok(origins)
}

/// Sets the value at `path`, creating (or replacing) the mappings and lists on the way. Lists
/// grow to the index, padded with empty entries.
fn set_path(tree: &mut Value, path: &[Step], value: Value) {
    let Some((step, rest)) = path.split_first() else {
        *tree = value;
        return;
    };
    let padding = match rest.first() {
        Some(Step::Key(_)) => Value::Mapping(Mapping::new()),
        _ => Value::Null,
    };
    match *step {
        Step::Key(name) => {
            if !tree.is_mapping() {
                *tree = Value::Mapping(Mapping::new());
            }
            if let Value::Mapping(mapping) = tree {
                let child = mapping.entry(Value::from(name)).or_insert(padding);
                set_path(child, rest, value);
            }
        }
        Step::Index(index) => {
            if !tree.is_sequence() {
                *tree = Value::Sequence(Vec::new());
            }
            if let Value::Sequence(list) = tree {
                if list.len() <= index {
                    list.resize(index + 1, padding);
                }
                if let Some(child) = list.get_mut(index) {
                    set_path(child, rest, value);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking the tree against the key table.
// ---------------------------------------------------------------------------------------------

/// Checks `value` as a section with `fields` at `path`: known keys only, required ones present,
/// leaves of the right kind (durations and sizes turned into numbers).
fn check_section(
    value: &mut Value,
    fields: &'static [Field],
    path: &mut String,
    origins: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if value.is_null() {
        *value = Value::Mapping(Mapping::new());
    }
    let Value::Mapping(mapping) = value else {
        return Err(invalid(
            path,
            value,
            "a mapping of keys".to_owned(),
            origins,
        ));
    };
    for (key, _) in mapping.iter() {
        let known = key
            .as_str()
            .is_some_and(|name| fields.iter().any(|field| field.name == name));
        if !known {
            return Err(ConfigError::UnknownKey {
                key: join_key(path, &display_key(key)),
                known: field_names(fields),
            });
        }
    }
    for field in fields {
        let mark = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(field.name);
        match mapping.get_mut(field.name) {
            None if field.required => {
                return Err(ConfigError::MissingKey { key: path.clone() });
            }
            None => {}
            Some(child) => match &field.node {
                Node::Section(inner) => check_section(child, inner, path, origins)?,
                Node::Table(inner, max) => check_table(child, inner, *max, path, origins)?,
                Node::Leaf(leaf) => check_leaf(child, *leaf, path, origins)?,
            },
        }
        path.truncate(mark);
    }
    Ok(())
}

fn check_table(
    value: &mut Value,
    fields: &'static [Field],
    max: usize,
    path: &mut String,
    origins: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    if value.is_null() {
        *value = Value::Sequence(Vec::new());
    }
    let expected = || format!("a list of at most {max} entries");
    let Value::Sequence(entries) = value else {
        return Err(invalid(path, value, expected(), origins));
    };
    if entries.len() > max {
        let shown = Value::from(format!("a list of {} entries", entries.len()));
        return Err(invalid(path, &shown, expected(), origins));
    }
    for (index, entry) in entries.iter_mut().enumerate() {
        let mark = path.len();
        let _ = write!(path, "[{index}]");
        check_section(entry, fields, path, origins)?;
        path.truncate(mark);
    }
    Ok(())
}

fn check_leaf(
    value: &mut Value,
    leaf: Leaf,
    path: &str,
    origins: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let normalized = match (leaf, &*value) {
        (Leaf::OptStr | Leaf::OptUInt(_) | Leaf::OptSizeBytes, Value::Null) => Some(Value::Null),
        (Leaf::Str | Leaf::OptStr, _) => string_of(value).map(Value::String),
        (Leaf::Bool, Value::Bool(flag)) => Some(Value::Bool(*flag)),
        (Leaf::Bool, Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (Leaf::UInt(max) | Leaf::OptUInt(max), _) => {
            uint_of(value).filter(|n| *n <= max).map(Value::from)
        }
        (Leaf::DurationMs, Value::String(text)) => parse_duration_ms(text)
            .filter(|ms| *ms <= DURATION_MS_MAX)
            .map(Value::from),
        (Leaf::DurationMs, _) => uint_of(value)
            .filter(|ms| *ms <= DURATION_MS_MAX)
            .map(Value::from),
        (Leaf::LongDurationMs, Value::String(text)) => parse_duration_ms(text).map(Value::from),
        (Leaf::SizeBytes | Leaf::OptSizeBytes, Value::String(text)) => {
            parse_size_bytes(text).map(Value::from)
        }
        (Leaf::LongDurationMs | Leaf::SizeBytes | Leaf::OptSizeBytes, _) => {
            uint_of(value).map(Value::from)
        }
        (Leaf::Enum(options), Value::String(text)) => {
            let canonical = text.trim().to_ascii_uppercase().replace('-', "_");
            options
                .iter()
                .find(|option| **option == canonical)
                .map(|option| Value::from(*option))
        }
        (Leaf::Float, _) => float_of(value).map(Value::from),
        (Leaf::StrList(max), _) => string_list_of(value, max),
        _ => None,
    };
    match normalized {
        Some(normalized) => {
            *value = normalized;
            Ok(())
        }
        None => Err(invalid(path, value, leaf.expected(), origins)),
    }
}

fn string_of(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    (text.len() <= STRING_BYTES_MAX).then_some(text)
}

fn uint_of(value: &Value) -> Option<u64> {
    match value {
        Value::Number(number) => number.as_u64(),
        Value::String(text) => {
            let text = text.trim().replace('_', "");
            if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            text.parse().ok()
        }
        _ => None,
    }
}

fn float_of(value: &Value) -> Option<f64> {
    let number = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    };
    number.filter(|number: &f64| number.is_finite())
}

fn string_list_of(value: &Value, max: usize) -> Option<Value> {
    let entries: Vec<Value> = match value {
        Value::Null => Vec::new(),
        Value::String(text) => text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(Value::from)
            .collect(),
        Value::Sequence(list) => list
            .iter()
            .map(|entry| string_of(entry).map(Value::String))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    (entries.len() <= max).then_some(Value::Sequence(entries))
}

fn invalid(
    path: &str,
    value: &Value,
    expected: String,
    origins: &BTreeMap<String, String>,
) -> ConfigError {
    // A list entry set through its list's variable names the list's variable.
    let origin = origins.get(path).or_else(|| {
        path.rfind('[')
            .and_then(|at| path.get(..at))
            .and_then(|list| origins.get(list))
    });
    ConfigError::InvalidValue {
        key: path.to_owned(),
        origin: origin.map_or_else(String::new, |name| format!(" (set by {name})")),
        value: quote_value(value),
        expected,
    }
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

// ---------------------------------------------------------------------------------------------
// Durations and sizes.
// ---------------------------------------------------------------------------------------------

/// Parses a duration into milliseconds: `250ms`, `10s`, `2m`, `1h`, `1d` (case-insensitive), a
/// plain number of milliseconds, or ISO-8601 `PnDTnHnMn.nS` (e.g. `PT0.25S`, `PT1M30S`). `None`
/// if it is none of these, negative, not a whole number of milliseconds, or overflows.
#[must_use]
pub fn parse_duration_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.starts_with(['P', 'p']) {
        return parse_iso_duration_ms(text);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let ms_per_unit = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" => 1,
        "s" => MS_PER_SECOND,
        "m" => MS_PER_MINUTE,
        "h" => MS_PER_HOUR,
        "d" => MS_PER_DAY,
        _ => return None,
    };
    amount.checked_mul(ms_per_unit)
}

/// ISO-8601 durations as Java's `Duration.parse` reads them (without signs).
fn parse_iso_duration_ms(text: &str) -> Option<u64> {
    const NANOS_PER_MS: u128 = 1_000_000;
    let upper = text.to_ascii_uppercase();
    let body = upper.strip_prefix('P')?;
    let (date, time) = match body.split_once('T') {
        Some((date, time)) => {
            if time.is_empty() {
                return None;
            }
            (date, Some(time))
        }
        None => (body, None),
    };
    let mut total_ns: u128 = 0;
    if !date.is_empty() {
        let days = date.strip_suffix('D')?;
        total_ns = total_ns.checked_add(whole(days)?.checked_mul(u128::from(MS_PER_DAY))?)?;
        total_ns = total_ns.checked_mul(NANOS_PER_MS)?;
    } else if time.is_none() {
        return None;
    }
    if let Some(mut time) = time {
        // Components in order: hours, minutes, seconds; each at most once.
        let mut units: &[(char, u128)] = &[
            ('H', u128::from(MS_PER_HOUR) * NANOS_PER_MS),
            ('M', u128::from(MS_PER_MINUTE) * NANOS_PER_MS),
        ];
        while !time.is_empty() {
            let end = time.find(|c: char| !c.is_ascii_digit() && c != '.')?;
            let (number, rest) = time.split_at(end);
            let unit = rest.chars().next()?;
            time = &rest[unit.len_utf8()..];
            if unit == 'S' {
                if !time.is_empty() {
                    return None;
                }
                total_ns = total_ns.checked_add(seconds_ns(number)?)?;
                break;
            }
            let position = units.iter().position(|(name, _)| *name == unit)?;
            let ns_per_unit = units[position].1;
            units = &units[position + 1..];
            total_ns = total_ns.checked_add(whole(number)?.checked_mul(ns_per_unit)?)?;
        }
    }
    if !total_ns.is_multiple_of(NANOS_PER_MS) {
        return None;
    }
    u64::try_from(total_ns / NANOS_PER_MS).ok()
}

fn whole(digits: &str) -> Option<u128> {
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `12.345` seconds in nanoseconds; at most nine decimals.
fn seconds_ns(number: &str) -> Option<u128> {
    const NANOS_PER_SECOND: u128 = 1_000_000_000;
    const FRACTION_DIGITS_MAX: usize = 9;
    let (whole_part, fraction) = number.split_once('.').unwrap_or((number, ""));
    if number.contains('.') && fraction.is_empty() {
        return None;
    }
    if fraction.len() > FRACTION_DIGITS_MAX || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = whole(whole_part)?;
    let mut fraction_ns: u128 = 0;
    for (position, digit) in fraction.bytes().enumerate() {
        let exponent = u32::try_from(FRACTION_DIGITS_MAX - 1 - position).ok()?;
        fraction_ns += u128::from(digit - b'0') * 10u128.pow(exponent);
    }
    seconds
        .checked_mul(NANOS_PER_SECOND)?
        .checked_add(fraction_ns)
}

/// Parses a size into bytes: a plain number of bytes, or a number with `B`, `KB`, `MB`, `GB`,
/// `TB` (binary multiples, as Zeebe's `DataSize`) or `KiB`, `MiB`, `GiB`, `TiB`;
/// case-insensitive. `None` if it is none of these or overflows.
#[must_use]
pub fn parse_size_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    let bytes_per_unit = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "kib" => BYTES_PER_KIB,
        "mb" | "mib" => BYTES_PER_MIB,
        "gb" | "gib" => BYTES_PER_GIB,
        "tb" | "tib" => BYTES_PER_TIB,
        _ => return None,
    };
    amount.checked_mul(bytes_per_unit)
}

/// A duration in the largest unit that writes it exactly: `2m`, `10s`, `250ms`.
#[must_use]
pub fn format_duration_ms(ms: u64) -> String {
    match ms {
        0 => "0ms".to_owned(),
        _ if ms.is_multiple_of(MS_PER_DAY) => format!("{}d", ms / MS_PER_DAY),
        _ if ms.is_multiple_of(MS_PER_HOUR) => format!("{}h", ms / MS_PER_HOUR),
        _ if ms.is_multiple_of(MS_PER_MINUTE) => format!("{}m", ms / MS_PER_MINUTE),
        _ if ms.is_multiple_of(MS_PER_SECOND) => format!("{}s", ms / MS_PER_SECOND),
        _ => format!("{ms}ms"),
    }
}

/// A size in the largest unit that writes it exactly: `128MB`, `512KB`, `1000B`.
#[must_use]
pub fn format_size_bytes(bytes: u64) -> String {
    match bytes {
        0 => "0B".to_owned(),
        _ if bytes.is_multiple_of(BYTES_PER_GIB) => format!("{}GB", bytes / BYTES_PER_GIB),
        _ if bytes.is_multiple_of(BYTES_PER_MIB) => format!("{}MB", bytes / BYTES_PER_MIB),
        _ if bytes.is_multiple_of(BYTES_PER_KIB) => format!("{}KB", bytes / BYTES_PER_KIB),
        _ => format!("{bytes}B"),
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference.
fn serialize_duration_ms<S: Serializer>(ms: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_duration_ms(*ms))
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` passes a reference.
fn serialize_size_bytes<S: Serializer>(bytes: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_size_bytes(*bytes))
}

#[allow(clippy::ref_option)] // serde's `serialize_with` passes a reference.
fn serialize_opt_size_bytes<S: Serializer>(
    bytes: &Option<u64>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(bytes) => serializer.serialize_str(&format_size_bytes(*bytes)),
        None => serializer.serialize_none(),
    }
}

// ---------------------------------------------------------------------------------------------
// Validation and derived values.
// ---------------------------------------------------------------------------------------------

/// The ports' keys, in the order conflicts are reported.
const KEY_COMMAND_API_PORT: &str = "network.commandApi.port";
const KEY_INTERNAL_API_PORT: &str = "network.internalApi.port";
const KEY_GATEWAY_PORT: &str = "gateway.network.port";
const KEY_MANAGEMENT_PORT: &str = "management.port";

impl BrokerConfig {
    /// Checks every rule; the first broken one is returned, naming its key:
    ///
    /// - the cluster shape ([`ClusterShape::new`]: sizes at least 1 and within bounds,
    ///   `1 <= replicationFactor <= clusterSize`) and `nodeId < clusterSize`;
    /// - `clusterName` not empty, at most [`CLUSTER_NAME_BYTES_MAX`];
    /// - every `initialContactPoints` entry is `host:port`;
    /// - every duration within `1..=`[`DURATION_MS_MAX`] ms (`data.flushDelay` may be 0, at most
    ///   [`FLUSH_DELAY_MS_MAX`]), and `electionTimeout >= 2 * heartbeatInterval`;
    /// - `suspectProbes` and `gossipFanout` at least 1 (at most [`SUSPECT_PROBES_MAX`],
    ///   [`GOSSIP_FANOUT_MAX`]);
    /// - bind hosts are IP addresses (or `localhost`), `advertisedHost` a host name or address;
    /// - every port (with the offset) within `1..=65535` and all distinct;
    /// - `threads.cpuThreadCount` within `1..=`[`CPU_THREAD_COUNT_MAX`];
    /// - `data.logSegmentSize` within [`LOG_SEGMENT_BYTES_MIN`]`..=`[`LOG_SEGMENT_BYTES_MAX`],
    ///   `data.directory` not empty;
    /// - backpressure limits within `1..=`[`BACKPRESSURE_LIMIT_MAX`], `minLimit <= initialLimit
    ///   <= maxLimit`, `backoffRatio` strictly between 0 and 1 (so [`BrokerConfig::limiter`] is
    ///   always a limit [`crate::backpressure::AimdLimiter::new`] accepts);
    /// - the partition layout builds ([`BrokerConfig::partition_layout`]);
    /// - the `management` token and fault switch follow the rules of [`ManagementConfig`];
    /// - the `engine` caps are within the ranges of [`EngineCapsConfig`], none zero, and
    ///   `engine.variables.documentSizeMax` at most `network.maxMessageSize`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        self.cluster_shape()?;
        if cluster.node_id >= cluster.cluster_size {
            return Err(ConfigError::NodeIdOutOfRange {
                node_id: cluster.node_id,
                cluster_size: cluster.cluster_size,
            });
        }
        if cluster.cluster_name.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "cluster.clusterName",
                reason: "is empty; name the cluster (every broker of it uses the same name)"
                    .to_owned(),
            });
        }
        if cluster.cluster_name.len() > CLUSTER_NAME_BYTES_MAX {
            return Err(ConfigError::Invalid {
                key: "cluster.clusterName",
                reason: format!(
                    "is {} bytes long; use at most {CLUSTER_NAME_BYTES_MAX}",
                    cluster.cluster_name.len()
                ),
            });
        }
        self.validate_contact_points()?;
        self.validate_durations()?;
        let membership = &cluster.membership;
        in_range(
            "cluster.membership.suspectProbes",
            u64::from(membership.suspect_probes),
            1,
            u64::from(SUSPECT_PROBES_MAX),
            "probes",
        )?;
        in_range(
            "cluster.membership.gossipFanout",
            u64::from(membership.gossip_fanout),
            1,
            u64::from(GOSSIP_FANOUT_MAX),
            "members",
        )?;
        self.validate_hosts()?;
        self.validate_ports()?;
        in_range(
            "threads.cpuThreadCount",
            u64::from(self.threads.cpu_thread_count),
            1,
            u64::from(CPU_THREAD_COUNT_MAX),
            "threads",
        )?;
        in_range(
            "network.maxMessageSize",
            self.network.max_message_bytes,
            crate::limits::MESSAGE_BYTES_MIN,
            crate::limits::MESSAGE_BYTES_MAX,
            "bytes",
        )?;
        in_range(
            "data.logSegmentSize",
            self.data.log_segment_bytes,
            LOG_SEGMENT_BYTES_MIN,
            LOG_SEGMENT_BYTES_MAX,
            "bytes",
        )?;
        let segment_min = self.size_limits().segment_bytes_min();
        if self.data.log_segment_bytes < segment_min {
            return Err(ConfigError::Invalid {
                key: "data.logSegmentSize",
                reason: format!(
                    "is {} bytes, too small for the largest log entry that network.maxMessageSize \
                     ({} bytes) allows: a segment must hold at least {segment_min} bytes; raise \
                     data.logSegmentSize or lower network.maxMessageSize",
                    self.data.log_segment_bytes, self.network.max_message_bytes
                ),
            });
        }
        if self.data.directory.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "data.directory",
                reason: "is empty; set the directory the broker keeps its data in".to_owned(),
            });
        }
        self.validate_backpressure()?;
        self.partition_layout()?;
        self.gateway_tls_paths()?;
        self.gateway.validate()?;
        self.management.validate()?;
        self.engine.validate(self.network.max_message_bytes)?;
        Ok(())
    }

    fn validate_backpressure(&self) -> Result<(), ConfigError> {
        let aimd = &self.backpressure.aimd;
        let max = u64::from(BACKPRESSURE_LIMIT_MAX);
        for (key, limit) in [
            ("backpressure.aimd.minLimit", aimd.min_limit),
            ("backpressure.aimd.initialLimit", aimd.initial_limit),
            ("backpressure.aimd.maxLimit", aimd.max_limit),
            ("backpressure.fixed.limit", self.backpressure.fixed.limit),
        ] {
            in_range(key, u64::from(limit), 1, max, "commands")?;
        }
        if aimd.min_limit > aimd.max_limit {
            return Err(ConfigError::Invalid {
                key: "backpressure.aimd.minLimit",
                reason: format!(
                    "is {}, above `backpressure.aimd.maxLimit` ({}); lower it or raise maxLimit",
                    aimd.min_limit, aimd.max_limit
                ),
            });
        }
        if aimd.initial_limit < aimd.min_limit || aimd.initial_limit > aimd.max_limit {
            return Err(ConfigError::Invalid {
                key: "backpressure.aimd.initialLimit",
                reason: format!(
                    "is {}, outside `backpressure.aimd.minLimit`..=`maxLimit` ({}..={}); set it \
                     within that range",
                    aimd.initial_limit, aimd.min_limit, aimd.max_limit
                ),
            });
        }
        if !(aimd.backoff_ratio > 0.0 && aimd.backoff_ratio < 1.0) {
            return Err(ConfigError::Invalid {
                key: "backpressure.aimd.backoffRatio",
                reason: format!(
                    "is {}; it multiplies the limit when replies are slow, so set it strictly \
                     between 0 and 1 (Zeebe's default is 0.9)",
                    aimd.backoff_ratio
                ),
            });
        }
        Ok(())
    }

    fn validate_contact_points(&self) -> Result<(), ConfigError> {
        let points = &self.cluster.initial_contact_points;
        if points.len() > CONTACT_POINTS_MAX {
            return Err(ConfigError::Invalid {
                key: "cluster.initialContactPoints",
                reason: format!(
                    "lists {} entries; list at most {CONTACT_POINTS_MAX}",
                    points.len()
                ),
            });
        }
        for (index, point) in points.iter().enumerate() {
            check_contact_point(point).map_err(|reason| ConfigError::InvalidContactPoint {
                index,
                value: point.clone(),
                reason,
            })?;
        }
        Ok(())
    }

    fn validate_durations(&self) -> Result<(), ConfigError> {
        let cluster = &self.cluster;
        let membership = &cluster.membership;
        for (key, ms) in [
            ("cluster.heartbeatInterval", cluster.heartbeat_interval_ms),
            ("cluster.electionTimeout", cluster.election_timeout_ms),
            (
                "cluster.membership.probeInterval",
                membership.probe_interval_ms,
            ),
            (
                "cluster.membership.probeTimeout",
                membership.probe_timeout_ms,
            ),
            (
                "cluster.membership.failureTimeout",
                membership.failure_timeout_ms,
            ),
            (
                "cluster.membership.gossipInterval",
                membership.gossip_interval_ms,
            ),
            (
                "cluster.membership.syncInterval",
                membership.sync_interval_ms,
            ),
        ] {
            in_range(key, ms, 1, DURATION_MS_MAX, "ms")?;
        }
        in_range(
            "data.flushDelay",
            self.data.flush_delay_ms,
            0,
            FLUSH_DELAY_MS_MAX,
            "ms",
        )?;
        in_range(
            "data.snapshotPeriod",
            self.data.snapshot_period_ms,
            1_000,
            DURATION_MS_MAX,
            "ms",
        )?;
        in_range(
            "backpressure.aimd.requestTimeout",
            self.backpressure.aimd.request_timeout_ms,
            1,
            DURATION_MS_MAX,
            "ms",
        )?;
        in_range(
            "data.snapshotRecords",
            self.data.snapshot_records,
            1,
            u64::from(u32::MAX),
            "records",
        )?;
        if cluster.election_timeout_ms < cluster.heartbeat_interval_ms.saturating_mul(2) {
            return Err(ConfigError::ElectionTimeoutTooShort {
                election_timeout_ms: cluster.election_timeout_ms,
                heartbeat_interval_ms: cluster.heartbeat_interval_ms,
            });
        }
        Ok(())
    }

    fn validate_hosts(&self) -> Result<(), ConfigError> {
        const BIND: &str = "an IP address to bind to (such as 0.0.0.0, 127.0.0.1 or ::) or \
                            localhost; put host names in network.advertisedHost";
        let network = &self.network;
        let binds = [
            ("network.host", Some(&network.host)),
            ("network.commandApi.host", network.command_api.host.as_ref()),
            (
                "network.internalApi.host",
                network.internal_api.host.as_ref(),
            ),
            ("gateway.network.host", self.gateway.network.host.as_ref()),
            ("management.host", self.management.host.as_ref()),
        ];
        for (key, host) in binds {
            if let Some(host) = host
                && bind_ip(host).is_none()
            {
                return Err(ConfigError::InvalidHost {
                    key,
                    host: host.clone(),
                    expected: BIND,
                });
            }
        }
        if let Some(host) = &network.advertised_host
            && !is_host(host)
        {
            return Err(ConfigError::InvalidHost {
                key: "network.advertisedHost",
                host: host.clone(),
                expected: "a host name or IP address other brokers can reach this one at",
            });
        }
        Ok(())
    }

    fn validate_ports(&self) -> Result<(), ConfigError> {
        let mut ports: Vec<(&'static str, u16)> = Vec::with_capacity(4);
        for (key, port) in self.configured_ports() {
            let effective =
                u32::from(port) + PORT_OFFSET_STEP * u32::from(self.network.port_offset);
            match u16::try_from(effective) {
                Ok(effective) if port != 0 => ports.push((key, effective)),
                _ => {
                    return Err(ConfigError::PortOutOfRange {
                        key,
                        port,
                        port_offset: self.network.port_offset,
                        effective_port: effective,
                    });
                }
            }
        }
        for (index, (first, port)) in ports.iter().enumerate() {
            if let Some((second, _)) = ports[index + 1..].iter().find(|(_, p)| p == port) {
                return Err(ConfigError::PortConflict {
                    first,
                    second,
                    port: *port,
                });
            }
        }
        Ok(())
    }

    /// The ports in use, by key: the gateway's only when it is enabled.
    fn configured_ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![(KEY_INTERNAL_API_PORT, self.network.internal_api.port)];
        if self.network.command_api.enabled {
            ports.push((KEY_COMMAND_API_PORT, self.network.command_api.port));
        }
        if self.gateway.enable {
            ports.push((KEY_GATEWAY_PORT, self.gateway.network.port));
        }
        ports.push((KEY_MANAGEMENT_PORT, self.management.port));
        ports
    }

    /// The size limits `network.maxMessageSize` implies. Valid when `self` passed
    /// [`BrokerConfig::validate`].
    #[must_use]
    pub fn size_limits(&self) -> crate::limits::SizeLimits {
        crate::limits::SizeLimits::new(self.network.max_message_bytes)
    }

    /// The caps every replica's engine runs with, from `engine` (the document size from
    /// `network.maxMessageSize` unless set). Valid when `self` passed [`BrokerConfig::validate`].
    #[must_use]
    pub fn engine_caps(&self) -> EngineCaps {
        self.engine.caps(self.network.max_message_bytes)
    }

    /// The limiter every partition leader runs, from `backpressure`: the AIMD limit, or for
    /// `algorithm: fixed` one pinned to `fixed.limit`. Valid when `self` passed
    /// [`BrokerConfig::validate`].
    #[must_use]
    pub fn limiter(&self) -> crate::backpressure::LimiterConfig {
        let backpressure = &self.backpressure;
        let aimd = &backpressure.aimd;
        crate::backpressure::LimiterConfig {
            enabled: backpressure.enabled,
            aimd: match backpressure.algorithm {
                BackpressureAlgorithm::Aimd => crate::backpressure::AimdConfig {
                    initial_limit: aimd.initial_limit,
                    min_limit: aimd.min_limit,
                    max_limit: aimd.max_limit,
                    request_timeout_ms: aimd.request_timeout_ms,
                    backoff_ratio: aimd.backoff_ratio,
                },
                BackpressureAlgorithm::Fixed => {
                    crate::backpressure::AimdConfig::fixed(backpressure.fixed.limit)
                }
            },
        }
    }

    /// The checked cluster shape of `cluster.clusterSize`, `partitionsCount` and
    /// `replicationFactor`.
    pub fn cluster_shape(&self) -> Result<ClusterShape, ConfigError> {
        let cluster = &self.cluster;
        Ok(ClusterShape::new(
            cluster.cluster_size,
            cluster.partitions_count,
            cluster.replication_factor,
        )?)
    }

    /// The partitioning scheme as [`crate::partitioning`] takes it.
    pub fn partitioning_scheme(&self) -> Result<PartitioningScheme, ConfigError> {
        let fixed = &self.partitioning.fixed;
        match self.partitioning.scheme {
            SchemeName::RoundRobin if fixed.is_empty() => Ok(PartitioningScheme::RoundRobin),
            SchemeName::RoundRobin => Err(ConfigError::FixedWithoutScheme {
                entries: fixed.len(),
            }),
            SchemeName::Fixed => Ok(PartitioningScheme::Fixed(
                fixed
                    .iter()
                    .map(|entry| FixedPartition {
                        partition_id: entry.partition_id,
                        nodes: entry
                            .nodes
                            .iter()
                            .map(|node| FixedNode {
                                node_id: node.node_id,
                                priority: node.priority,
                            })
                            .collect(),
                    })
                    .collect(),
            )),
        }
    }

    /// Where every partition lives, by the configured scheme, with priorities when
    /// `cluster.raft.enablePriorityElection` is on. An error names the broken rule.
    pub fn partition_layout(&self) -> Result<PartitionLayout, ConfigError> {
        let shape = self.cluster_shape()?;
        let scheme = self.partitioning_scheme()?;
        Ok(layout(
            shape,
            &scheme,
            self.cluster.raft.enable_priority_election,
        )?)
    }

    /// `port` moved by `10 * network.portOffset`; `None` beyond 65535.
    #[must_use]
    pub fn effective_port(&self, port: u16) -> Option<u16> {
        let effective = u32::from(port) + PORT_OFFSET_STEP * u32::from(self.network.port_offset);
        u16::try_from(effective).ok()
    }

    fn bind_addr(&self, host: Option<&String>, port: u16) -> SocketAddr {
        let host = host.unwrap_or(&self.network.host);
        let ip = bind_ip(host).expect("validate() refuses a bind host that is not an IP address");
        let port = self
            .effective_port(port)
            .expect("validate() refuses ports beyond 65535 after network.portOffset");
        SocketAddr::new(ip, port)
    }

    /// Where the raw-append API (`network.commandApi`) listens when enabled, offset applied:
    /// loopback unless its `host` is set.
    ///
    /// # Panics
    ///
    /// On a configuration that fails [`BrokerConfig::validate`] on that host or port.
    #[must_use]
    pub fn command_api_addr(&self) -> SocketAddr {
        let api = &self.network.command_api;
        let loopback = "127.0.0.1".to_owned();
        self.bind_addr(Some(api.host.as_ref().unwrap_or(&loopback)), api.port)
    }

    /// Where the internal API (`network.internalApi`, QUIC) listens, offset applied.
    ///
    /// # Panics
    ///
    /// On a configuration that fails [`BrokerConfig::validate`] on that host or port.
    #[must_use]
    pub fn internal_api_addr(&self) -> SocketAddr {
        let api = &self.network.internal_api;
        self.bind_addr(api.host.as_ref(), api.port)
    }

    /// Where the embedded gateway (`gateway.network`) listens, offset applied.
    ///
    /// # Panics
    ///
    /// On a configuration that fails [`BrokerConfig::validate`] on that host or port.
    #[must_use]
    pub fn gateway_addr(&self) -> SocketAddr {
        let api = &self.gateway.network;
        self.bind_addr(api.host.as_ref(), api.port)
    }

    /// Where the management API (`management`) listens, offset applied.
    ///
    /// # Panics
    ///
    /// On a configuration that fails [`BrokerConfig::validate`] on that host or port.
    #[must_use]
    pub fn management_addr(&self) -> SocketAddr {
        self.bind_addr(self.management.host.as_ref(), self.management.port)
    }

    /// `host:port` other brokers reach this one's internal API at: `network.advertisedHost`,
    /// else `network.internalApi.host`, else `network.host`, where an unspecified address
    /// (`0.0.0.0`, `::`) becomes `127.0.0.1`; the port is the internal API's, offset applied.
    /// IPv6 addresses are bracketed.
    ///
    /// # Panics
    ///
    /// On a configuration that fails [`BrokerConfig::validate`] on that port.
    #[must_use]
    pub fn advertised_internal_addr(&self) -> String {
        let network = &self.network;
        let unspecified = |host: &str| bind_ip(host).is_some_and(|ip| ip.is_unspecified());
        let host = network
            .advertised_host
            .as_deref()
            .or(network
                .internal_api
                .host
                .as_deref()
                .filter(|host| !unspecified(host)))
            .unwrap_or(&network.host);
        let host = if unspecified(host) {
            Ipv4Addr::LOCALHOST.to_string()
        } else {
            host.to_owned()
        };
        let port = self
            .effective_port(network.internal_api.port)
            .expect("validate() refuses ports beyond 65535 after network.portOffset");
        if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }

    /// The three files of the brokers' mutual TLS: (certificate authority, certificate chain,
    /// private key). An error lists the unset keys and says to run `sluice certs --dir DIR`.
    pub fn tls_paths(&self) -> Result<(PathBuf, PathBuf, PathBuf), ConfigError> {
        let security = &self.network.security;
        match (
            &security.certificate_authority_path,
            &security.certificate_chain_path,
            &security.private_key_path,
        ) {
            (Some(authority), Some(chain), Some(key)) => {
                Ok((authority.clone(), chain.clone(), key.clone()))
            }
            (authority, chain, key) => {
                let missing: Vec<&str> = [
                    (authority, "network.security.certificateAuthorityPath"),
                    (chain, "network.security.certificateChainPath"),
                    (key, "network.security.privateKeyPath"),
                ]
                .into_iter()
                .filter(|(path, _)| path.is_none())
                .map(|(_, key)| key)
                .collect();
                Err(ConfigError::TlsPathsMissing {
                    missing: missing.join(", "),
                })
            }
        }
    }
}

impl BrokerConfig {
    /// The gateway's TLS files (certificate chain, private key) when `gateway.security.enabled`
    /// is set and the gateway is on; `None` for plaintext. An error names the unset key.
    pub fn gateway_tls_paths(&self) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
        let security = &self.gateway.security;
        if !self.gateway.enable || !security.enabled {
            return Ok(None);
        }
        let missing = |key: &'static str| ConfigError::Invalid {
            key,
            reason: "is not set but gateway.security.enabled is true; set it to a PEM file \
                     (or ZEEBE_BROKER_GATEWAY_SECURITY_*), or set gateway.security.enabled: \
                     false for plaintext"
                .to_owned(),
        };
        let chain = security
            .certificate_chain_path
            .clone()
            .ok_or_else(|| missing("gateway.security.certificateChainPath"))?;
        let key = security
            .private_key_path
            .clone()
            .ok_or_else(|| missing("gateway.security.privateKeyPath"))?;
        Ok(Some((chain, key)))
    }
}

fn in_range(
    key: &str,
    value: u64,
    min: u64,
    max: u64,
    unit: &'static str,
) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key: key.to_owned(),
            value,
            min,
            max,
            unit,
        })
    }
}

/// A bind host as an IP address: an address (IPv6 with or without brackets), or `localhost`.
fn bind_ip(host: &str) -> Option<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// A host name (letters, digits, `-`, `_`, `.`) or an IP address.
fn is_host(host: &str) -> bool {
    if host.is_empty() || host.len() > HOST_BYTES_MAX {
        return false;
    }
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    })
}

/// Checks `host:port` (IPv6 as `[addr]:port`).
fn check_contact_point(point: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = point.strip_prefix('[') {
        let (address, port) = rest
            .split_once("]:")
            .ok_or("an IPv6 contact point is written [address]:port")?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the part in brackets is not an IPv6 address");
        }
        (None, port)
    } else {
        let (host, port) = point.rsplit_once(':').ok_or("the port is missing")?;
        (Some(host), port)
    };
    if let Some(host) = host
        && !is_host(host)
    {
        return Err("the host is not a host name or IP address");
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err("the port is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn parse(yaml: &str) -> BrokerConfig {
        BrokerConfig::from_yaml_str(yaml, &[]).expect("a valid configuration")
    }

    fn refuse(yaml: &str, vars: &[(&str, &str)]) -> ConfigError {
        BrokerConfig::from_yaml_str(yaml, &env(vars)).expect_err("an invalid configuration")
    }

    /// The error's message, which must mention every one of `needles`.
    fn message_mentions(error: &ConfigError, needles: &[&str]) {
        let message = error.to_string();
        for needle in needles {
            assert!(message.contains(needle), "{needle:?} missing in: {message}");
        }
    }

    const THREE_NODES: &str = "
cluster:
  nodeId: 1
  clusterSize: 3
  partitionsCount: 3
  replicationFactor: 3
";

    // ---- defaults ----

    #[test]
    fn defaults_are_zeebes_and_valid() {
        let config = BrokerConfig::default();
        config.validate().expect("the defaults are valid");
        let cluster = &config.cluster;
        assert_eq!(
            (
                cluster.node_id,
                cluster.cluster_size,
                cluster.partitions_count,
                cluster.replication_factor
            ),
            (0, 1, 1, 1)
        );
        assert_eq!(cluster.cluster_name, "sluice");
        assert!(cluster.initial_contact_points.is_empty());
        assert_eq!(cluster.heartbeat_interval_ms, 250);
        assert_eq!(cluster.election_timeout_ms, 2_500);
        assert!(cluster.raft.enable_priority_election);
        assert_eq!(
            cluster.membership,
            MembershipConfig {
                probe_interval_ms: 1_000,
                probe_timeout_ms: 100,
                suspect_probes: 3,
                failure_timeout_ms: 10_000,
                gossip_interval_ms: 250,
                gossip_fanout: 2,
                sync_interval_ms: 10_000,
            }
        );
        assert_eq!(config.partitioning.scheme, SchemeName::RoundRobin);
        assert_eq!(config.network.host, "0.0.0.0");
        assert_eq!(config.network.port_offset, 0);
        assert_eq!(config.data.directory, Path::new("data"));
        assert_eq!(config.data.log_segment_bytes, 128 * 1024 * 1024);
        assert_eq!(config.data.flush_delay_ms, 0);
        assert_eq!(config.threads.cpu_thread_count, 1);
        let backpressure = &config.backpressure;
        assert!(backpressure.enabled);
        assert_eq!(backpressure.algorithm, BackpressureAlgorithm::Aimd);
        assert_eq!(
            (
                backpressure.aimd.initial_limit,
                backpressure.aimd.min_limit,
                backpressure.aimd.max_limit,
                backpressure.aimd.request_timeout_ms
            ),
            (100, 1, 1000, 200)
        );
        assert!((backpressure.aimd.backoff_ratio - 0.9).abs() < f64::EPSILON);
        assert_eq!(backpressure.fixed.limit, 20);
        assert_eq!(
            config.limiter(),
            crate::backpressure::LimiterConfig::default()
        );
        assert!(config.gateway.enable);
        assert!(!config.network.command_api.enabled);
        assert_eq!(config.command_api_addr().to_string(), "127.0.0.1:26501");
        assert_eq!(config.internal_api_addr().to_string(), "0.0.0.0:26502");
        assert_eq!(config.gateway_addr().to_string(), "0.0.0.0:26500");
        assert_eq!(config.management_addr().to_string(), "0.0.0.0:9600");
        assert_eq!(config.advertised_internal_addr(), "127.0.0.1:26502");
        let layout = config.partition_layout().expect("valid");
        assert_eq!(layout.partitions_of(0), [1]);
    }

    #[test]
    fn empty_text_and_empty_sections_give_the_defaults() {
        assert_eq!(parse(""), BrokerConfig::default());
        assert_eq!(parse("---\n"), BrokerConfig::default());
        assert_eq!(
            parse("cluster:\nnetwork:\ndata: {}\n"),
            BrokerConfig::default()
        );
        assert_eq!(
            BrokerConfig::load(None, &[]).expect("defaults"),
            BrokerConfig::default()
        );
    }

    // ---- files ----

    const FULL: &str = "
cluster:
  nodeId: 2
  clusterSize: 5
  partitionsCount: 3
  replicationFactor: 3
  clusterName: production
  initialContactPoints: [broker-0:26502, 'broker-1:26502', '[::1]:26502']
  heartbeatInterval: 100ms
  electionTimeout: PT1S
  raft:
    enablePriorityElection: true
  membership:
    probeInterval: 2s
    probeTimeout: 200ms
    suspectProbes: 2
    failureTimeout: 1m
    gossipInterval: PT0.5S
    gossipFanout: 3
    syncInterval: 30000
partitioning:
  scheme: FIXED
  fixed:
    - partitionId: 1
      nodes: [ { nodeId: 0, priority: 1 }, { nodeId: 2, priority: 2 }, { nodeId: 4, priority: 3 } ]
    - partitionId: 2
      nodes:
        - nodeId: 1
          priority: 1
        - nodeId: 3
          priority: 3
        - nodeId: 4
          priority: 2
    - partitionId: 3
      nodes: [ { nodeId: 0, priority: 3 }, { nodeId: 2, priority: 2 }, { nodeId: 3, priority: 1 } ]
network:
  host: 10.0.0.2
  advertisedHost: broker-2.internal
  portOffset: 2
  commandApi: { host: 127.0.0.1, port: 27501 }
  internalApi: { port: 27502 }
  security:
    certificateAuthorityPath: /etc/sluice/ca.pem
    certificateChainPath: /etc/sluice/broker.pem
    privateKeyPath: /etc/sluice/broker.key
data:
  directory: /var/lib/sluice
  logSegmentSize: 64MB
  flushDelay: 2ms
threads:
  cpuThreadCount: 4
backpressure:
  enabled: false
  algorithm: fixed
  aimd:
    initialLimit: 50
    minLimit: 10
    maxLimit: 500
    requestTimeout: PT0.5S
    backoffRatio: 0.75
  fixed:
    limit: 30
gateway:
  enable: false
  network: { host: 0.0.0.0, port: 27500 }
management:
  host: '::'
  port: 9700
  security:
    tokenFile: /etc/sluice/management-token
  faults:
    enabled: true
";

    #[test]
    fn a_full_zeebe_style_file_sets_every_key() {
        let config = parse(FULL);
        let cluster = &config.cluster;
        assert_eq!(cluster.node_id, 2);
        assert_eq!(cluster.cluster_size, 5);
        assert_eq!(cluster.cluster_name, "production");
        assert_eq!(
            cluster.initial_contact_points,
            ["broker-0:26502", "broker-1:26502", "[::1]:26502"]
        );
        assert_eq!(cluster.heartbeat_interval_ms, 100);
        assert_eq!(cluster.election_timeout_ms, 1_000);
        let membership = &cluster.membership;
        assert_eq!(membership.probe_interval_ms, 2_000);
        assert_eq!(membership.probe_timeout_ms, 200);
        assert_eq!(membership.suspect_probes, 2);
        assert_eq!(membership.failure_timeout_ms, 60_000);
        assert_eq!(membership.gossip_interval_ms, 500);
        assert_eq!(membership.gossip_fanout, 3);
        assert_eq!(membership.sync_interval_ms, 30_000);
        assert_eq!(config.partitioning.scheme, SchemeName::Fixed);
        assert_eq!(config.partitioning.fixed.len(), 3);
        assert_eq!(
            config.partitioning.fixed[1].nodes[1],
            FixedNodeConfig {
                node_id: 3,
                priority: Some(3)
            }
        );
        assert_eq!(config.network.port_offset, 2);
        assert_eq!(config.command_api_addr().to_string(), "127.0.0.1:27521");
        assert_eq!(config.internal_api_addr().to_string(), "10.0.0.2:27522");
        assert_eq!(config.gateway_addr().to_string(), "0.0.0.0:27520");
        assert_eq!(config.management_addr().to_string(), "[::]:9720");
        assert_eq!(
            config.management.security.token_file,
            Some(PathBuf::from("/etc/sluice/management-token"))
        );
        assert!(config.management.faults.enabled);
        assert_eq!(config.advertised_internal_addr(), "broker-2.internal:27522");
        assert_eq!(
            config.tls_paths().expect("all three set"),
            (
                PathBuf::from("/etc/sluice/ca.pem"),
                PathBuf::from("/etc/sluice/broker.pem"),
                PathBuf::from("/etc/sluice/broker.key")
            )
        );
        assert_eq!(config.data.directory, Path::new("/var/lib/sluice"));
        assert_eq!(config.data.log_segment_bytes, 64 << 20);
        assert_eq!(config.data.flush_delay_ms, 2);
        assert_eq!(config.threads.cpu_thread_count, 4);
        let backpressure = &config.backpressure;
        assert!(!backpressure.enabled);
        assert_eq!(backpressure.algorithm, BackpressureAlgorithm::Fixed);
        assert_eq!(
            (
                backpressure.aimd.initial_limit,
                backpressure.aimd.min_limit,
                backpressure.aimd.max_limit,
                backpressure.aimd.request_timeout_ms
            ),
            (50, 10, 500, 500)
        );
        assert!((backpressure.aimd.backoff_ratio - 0.75).abs() < f64::EPSILON);
        assert_eq!(backpressure.fixed.limit, 30);
        assert_eq!(
            config.limiter(),
            crate::backpressure::LimiterConfig {
                enabled: false,
                aimd: crate::backpressure::AimdConfig::fixed(30),
            }
        );
        assert!(!config.gateway.enable);
        let layout = config.partition_layout().expect("the seed's FIXED example");
        assert_eq!(layout.preferred_leader(1), Some(4));
        assert_eq!(layout.partitions_of(2), [1, 3]);
    }

    #[test]
    fn the_zeebe_broker_wrapper_is_accepted() {
        let mut wrapped = "zeebe:\n  broker:\n".to_owned();
        for line in FULL.lines() {
            wrapped.push_str("    ");
            wrapped.push_str(line);
            wrapped.push('\n');
        }
        assert_eq!(parse(&wrapped), parse(FULL));
        assert_eq!(parse("zeebe:\n  broker:\n"), BrokerConfig::default());
        let error = refuse("zeebe:\n  gateway: {}\n", &[]);
        assert!(matches!(&error, ConfigError::UnknownKey { key, .. } if key == "zeebe.gateway"));
        let error = refuse("zeebe: { broker: {} }\ncluster: {}\n", &[]);
        message_mentions(&error, &["`cluster`", "zeebe.broker"]);
    }

    #[test]
    fn partitioning_is_accepted_under_experimental() {
        let yaml = "
cluster: { clusterSize: 2, partitionsCount: 2, replicationFactor: 1 }
experimental:
  partitioning:
    scheme: fixed
    fixed:
      - { partitionId: 1, nodes: [ { nodeId: 1, priority: 1 } ] }
      - { partitionId: 2, nodes: [ { nodeId: 0, priority: 1 } ] }
";
        let config = parse(yaml);
        assert_eq!(config.partitioning.scheme, SchemeName::Fixed);
        assert_eq!(
            config.partition_layout().expect("valid").partitions_of(1),
            [1]
        );
        let both =
            "partitioning: { scheme: FIXED }\nexperimental: { partitioning: { scheme: FIXED } }\n";
        let error = refuse(both, &[]);
        message_mentions(
            &error,
            &[
                "experimental.partitioning.scheme",
                "partitioning.scheme",
                "keep one",
            ],
        );
        let error = refuse("experimental: { rocksdb: {} }\n", &[]);
        assert!(
            matches!(&error, ConfigError::UnknownKey { key, .. } if key == "experimental.rocksdb")
        );
    }

    #[test]
    fn to_yaml_round_trips_and_uses_units() {
        for config in [BrokerConfig::default(), parse(FULL)] {
            let yaml = config.to_yaml();
            assert_eq!(parse(&yaml), config, "{yaml}");
        }
        let yaml = BrokerConfig::default().to_yaml();
        for line in [
            "heartbeatInterval: 250ms",
            "electionTimeout: 2500ms",
            "failureTimeout: 10s",
            "logSegmentSize: 128MB",
            "flushDelay: 0ms",
            "scheme: ROUND_ROBIN",
            "nodeId: 0",
            "algorithm: AIMD",
            "requestTimeout: 200ms",
            "backoffRatio: 0.9",
        ] {
            assert!(yaml.contains(line), "{line:?} missing in:\n{yaml}");
        }
    }

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("sluice-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("broker.yaml");
        std::fs::write(&path, FULL).expect("write");
        let config = BrokerConfig::load(Some(&path), &env(&[("ZEEBE_BROKER_CLUSTER_NODEID", "4")]))
            .expect("valid");
        assert_eq!(config.cluster.node_id, 4);
        std::fs::write(&path, "cluster:\n  nodeId: [\n").expect("write");
        let error = BrokerConfig::load(Some(&path), &[]).expect_err("bad YAML");
        message_mentions(&error, &["broker.yaml", "fix the YAML"]);
        let error = BrokerConfig::load(Some(&dir.join("missing.yaml")), &[]).expect_err("missing");
        assert!(matches!(error, ConfigError::Read { .. }));
        message_mentions(&error, &["missing.yaml", "cannot read"]);
        let large = "#".repeat(usize::try_from(CONFIG_FILE_BYTES_MAX).expect("fits") + 1);
        std::fs::write(&path, large).expect("write");
        let error = BrokerConfig::load(Some(&path), &[]).expect_err("too large");
        assert!(matches!(error, ConfigError::FileTooLarge { .. }));
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn yaml_that_is_not_a_mapping_is_refused() {
        for yaml in ["- a\n- b\n", "42\n", "cluster: [\n"] {
            assert!(
                matches!(refuse(yaml, &[]), ConfigError::Yaml { .. }),
                "{yaml}"
            );
        }
        let error = refuse("cluster:\n  nodeId: 1\n  nodeId: 2\n", &[]);
        message_mentions(&error, &["nodeId"]);
    }

    // ---- unknown keys ----

    #[test]
    fn an_unknown_key_in_the_file_is_named() {
        let error = refuse("cluster:\n  nodeID: 1\n", &[]);
        assert!(matches!(&error, ConfigError::UnknownKey { key, .. } if key == "cluster.nodeID"));
        message_mentions(&error, &["cluster.nodeID", "nodeId", "spelling"]);
        let error = refuse("clutser: {}\n", &[]);
        message_mentions(&error, &["`clutser`", "cluster"]);
        let error = refuse(
            "partitioning: { scheme: FIXED, fixed: [ { partitionId: 1, nodes: [ { nodeId: 0, prio: 1 } ] } ] }\n",
            &[],
        );
        message_mentions(&error, &["partitioning.fixed[0].nodes[0].prio"]);
    }

    #[test]
    fn an_unknown_environment_variable_is_named() {
        for (name, hint) in [
            ("ZEEBE_BROKER_CLUSTER_NODEIDD", "no key `NODEIDD`"),
            (
                "ZEEBE_BROKER_CLUSTR_NODEID",
                "the top level has no key `CLUSTR`",
            ),
            ("ZEEBE_BROKER_CLUSTER", "is a section"),
            ("ZEEBE_BROKER_CLUSTER_NODEID_X", "single value"),
            ("ZEEBE_BROKER_PARTITIONING_FIXED", "by index"),
            (
                "ZEEBE_BROKER_PARTITIONING_FIXED_X_PARTITIONID",
                "entry index",
            ),
            ("ZEEBE_BROKER_PARTITIONING_FIXED_0", "is a section"),
            ("ZEEBE_BROKER_CLUSTER__NODEID", "empty part"),
            ("ZEEBE_BROKER_", "missing"),
            (
                "ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS_0_HOST",
                "single value",
            ),
        ] {
            let error = refuse("", &[(name, "1")]);
            assert!(
                matches!(error, ConfigError::UnknownEnv { .. }),
                "{name}: {error}"
            );
            message_mentions(&error, &[name, hint]);
        }
    }

    #[test]
    fn unrelated_environment_variables_are_ignored() {
        let vars = [
            ("PATH", "/bin"),
            ("ZEEBE_GATEWAY_CLUSTER_HOST", "x"),
            ("ZEEBE_LOG_LEVEL", "debug"),
        ];
        assert_eq!(
            BrokerConfig::from_yaml_str("", &env(&vars)).expect("valid"),
            BrokerConfig::default()
        );
    }

    // ---- environment overrides ----

    #[test]
    fn environment_overrides_scalars_and_wins_over_the_file() {
        let vars = [
            ("ZEEBE_BROKER_CLUSTER_NODEID", "2"),
            ("ZEEBE_BROKER_CLUSTER_CLUSTERNAME", "from-env"),
            ("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL", "PT0.1S"),
            ("ZEEBE_BROKER_CLUSTER_RAFT_ENABLEPRIORITYELECTION", "FALSE"),
            ("ZEEBE_BROKER_NETWORK_COMMANDAPI_PORT", "27000"),
            ("ZEEBE_BROKER_NETWORK_ADVERTISEDHOST", "node-2"),
            ("ZEEBE_BROKER_DATA_DIRECTORY", "/srv/data"),
            ("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE", "16MB"),
            ("zeebe_broker_threads_cpuThreadCount", "2"),
            ("ZEEBE_BROKER_GATEWAY_ENABLE", "false"),
        ];
        let config = BrokerConfig::from_yaml_str(THREE_NODES, &env(&vars)).expect("valid");
        assert_eq!(config.cluster.node_id, 2);
        assert_eq!(config.cluster.cluster_size, 3, "the file's value stays");
        assert_eq!(config.cluster.cluster_name, "from-env");
        assert_eq!(config.cluster.heartbeat_interval_ms, 100);
        assert!(!config.cluster.raft.enable_priority_election);
        assert_eq!(config.network.command_api.port, 27_000);
        assert_eq!(config.advertised_internal_addr(), "node-2:26502");
        assert_eq!(config.data.directory, Path::new("/srv/data"));
        assert_eq!(config.data.log_segment_bytes, 16 << 20);
        assert_eq!(config.threads.cpu_thread_count, 2);
        assert!(!config.gateway.enable);
    }

    #[test]
    fn an_empty_variable_unsets_an_optional_key() {
        let yaml = "network: { advertisedHost: somewhere }\n";
        let config =
            BrokerConfig::from_yaml_str(yaml, &env(&[("ZEEBE_BROKER_NETWORK_ADVERTISEDHOST", "")]))
                .expect("valid");
        assert_eq!(config.network.advertised_host, None);
    }

    #[test]
    fn environment_sets_whole_lists_and_list_entries() {
        let config = BrokerConfig::from_yaml_str(
            "cluster: { initialContactPoints: [ old:1 ] }\n",
            &env(&[(
                "ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS",
                "a:26502, b:26502,",
            )]),
        )
        .expect("valid");
        assert_eq!(
            config.cluster.initial_contact_points,
            ["a:26502", "b:26502"]
        );
        let config = BrokerConfig::from_yaml_str(
            "cluster: { initialContactPoints: [ a:1, b:2 ] }\n",
            &env(&[("ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS_1", "c:3")]),
        )
        .expect("valid");
        assert_eq!(config.cluster.initial_contact_points, ["a:1", "c:3"]);
        // The whole list first, then its entries.
        let config = BrokerConfig::from_yaml_str(
            "",
            &env(&[
                ("ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS_2", "z:9"),
                ("ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS", "a:1,b:2,c:3"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.cluster.initial_contact_points, ["a:1", "b:2", "z:9"]);
    }

    #[test]
    fn environment_sets_indexed_entries_of_fixed_partitioning() {
        let yaml = "
cluster: { clusterSize: 3, partitionsCount: 1, replicationFactor: 2 }
partitioning:
  scheme: FIXED
  fixed:
    - partitionId: 1
      nodes: [ { nodeId: 0, priority: 1 }, { nodeId: 1, priority: 1 } ]
";
        // The file's priorities clash; the environment fixes one.
        assert!(matches!(
            refuse(yaml, &[]),
            ConfigError::Partitioning(PartitioningError::DuplicatePriority { .. })
        ));
        let vars = [
            ("ZEEBE_BROKER_PARTITIONING_FIXED_0_NODES_1_PRIORITY", "2"),
            ("ZEEBE_BROKER_PARTITIONING_FIXED_0_NODES_0_NODEID", "2"),
        ];
        let config = BrokerConfig::from_yaml_str(yaml, &env(&vars)).expect("valid");
        let layout = config.partition_layout().expect("valid");
        assert_eq!(layout.preferred_leader(1), Some(1));
        assert_eq!(layout.priority_of(1, 2), Some(1));
        // A whole FIXED layout from the environment alone, via Zeebe 8's experimental path.
        let vars = [
            ("ZEEBE_BROKER_CLUSTER_CLUSTERSIZE", "2"),
            ("ZEEBE_BROKER_CLUSTER_PARTITIONSCOUNT", "2"),
            ("ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_SCHEME", "FIXED"),
            (
                "ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_FIXED_0_PARTITIONID",
                "1",
            ),
            (
                "ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_FIXED_0_NODES_0_NODEID",
                "1",
            ),
            (
                "ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_FIXED_0_NODES_0_PRIORITY",
                "1",
            ),
            ("ZEEBE_BROKER_PARTITIONING_FIXED_1_PARTITIONID", "2"),
            ("ZEEBE_BROKER_PARTITIONING_FIXED_1_NODES_0_NODEID", "0"),
            ("ZEEBE_BROKER_PARTITIONING_FIXED_1_NODES_0_PRIORITY", "1"),
        ];
        let config = BrokerConfig::from_yaml_str("", &env(&vars)).expect("valid");
        let layout = config.partition_layout().expect("valid");
        assert_eq!(layout.partitions_of(1), [1]);
        assert_eq!(layout.partitions_of(0), [2]);
        // An entry left incomplete names the missing key.
        let error = refuse(
            "",
            &[
                ("ZEEBE_BROKER_PARTITIONING_SCHEME", "FIXED"),
                ("ZEEBE_BROKER_PARTITIONING_FIXED_0_PARTITIONID", "1"),
            ],
        );
        assert!(
            matches!(&error, ConfigError::MissingKey { key } if key == "partitioning.fixed[0].nodes")
        );
    }

    #[test]
    fn two_variables_for_one_key_are_refused() {
        let error = refuse(
            "",
            &[
                ("ZEEBE_BROKER_PARTITIONING_SCHEME", "FIXED"),
                ("ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_SCHEME", "FIXED"),
            ],
        );
        message_mentions(
            &error,
            &[
                "partitioning.scheme",
                "ZEEBE_BROKER_PARTITIONING_SCHEME",
                "ZEEBE_BROKER_EXPERIMENTAL_PARTITIONING_SCHEME",
            ],
        );
    }

    #[test]
    fn a_bad_value_from_the_environment_names_the_variable() {
        let error = refuse("", &[("ZEEBE_BROKER_CLUSTER_NODEID", "one")]);
        assert!(matches!(error, ConfigError::InvalidValue { .. }));
        message_mentions(
            &error,
            &[
                "cluster.nodeId",
                "ZEEBE_BROKER_CLUSTER_NODEID",
                "\"one\"",
                "whole number",
            ],
        );
        let error = refuse("", &[("ZEEBE_BROKER_CLUSTER_HEARTBEATINTERVAL", "fast")]);
        message_mentions(&error, &["cluster.heartbeatInterval", "duration"]);
    }

    /// Every key of the table can be set through the environment and lands in the struct: the
    /// table and the structs agree.
    #[test]
    fn every_key_can_be_set_from_the_environment() {
        fn leaves(fields: &[Field], prefix: &str, out: &mut Vec<(String, Leaf)>) {
            for field in fields {
                let name = format!("{prefix}_{}", field.name.to_ascii_uppercase());
                match &field.node {
                    Node::Leaf(leaf) => out.push((name, *leaf)),
                    Node::Section(inner) => leaves(inner, &name, out),
                    Node::Table(inner, _) => leaves(inner, &format!("{name}_0"), out),
                }
            }
        }
        let mut all = Vec::new();
        leaves(ROOT, "ZEEBE_BROKER", &mut all);
        assert!(all.len() >= 44, "{}", all.len());
        let vars: Vec<(String, String)> = all
            .iter()
            .map(|(name, leaf)| {
                let value = match leaf {
                    Leaf::Str | Leaf::OptStr => "text",
                    Leaf::Bool => "true",
                    Leaf::UInt(_) | Leaf::OptUInt(_) => "7",
                    Leaf::DurationMs | Leaf::LongDurationMs => "7s",
                    Leaf::SizeBytes | Leaf::OptSizeBytes => "7MB",
                    Leaf::Enum(options) => options[0],
                    Leaf::Float => "0.5",
                    Leaf::StrList(_) => "a:1,b:2",
                };
                (name.clone(), value.to_owned())
            })
            .collect();
        let config = parse_unvalidated("", "test", &vars).expect("every key fits the structs");
        assert_eq!(config.cluster.node_id, 7);
        assert_eq!(config.cluster.membership.sync_interval_ms, 7_000);
        assert_eq!(config.partitioning.fixed[0].nodes[0].priority, Some(7));
        assert_eq!(
            config.network.security.private_key_path,
            Some(PathBuf::from("text"))
        );
        assert_eq!(config.management.host.as_deref(), Some("text"));
        assert_eq!(
            config.management.security.token_file,
            Some(PathBuf::from("text"))
        );
        assert!(config.management.faults.enabled);
        assert_eq!(config.gateway.network.port, 7);
        assert_eq!(config.data.log_segment_bytes, 7 << 20);
        assert_eq!(config.backpressure.aimd.max_limit, 7);
        assert_eq!(config.backpressure.aimd.request_timeout_ms, 7_000);
        assert!((config.backpressure.aimd.backoff_ratio - 0.5).abs() < f64::EPSILON);
        assert_eq!(config.backpressure.fixed.limit, 7);
        assert_eq!(config.engine.messages.ttl_max_ms, 7_000);
        assert_eq!(config.engine.variables.document_bytes_max, Some(7 << 20));
        assert_eq!(config.engine.variables.nesting_max, 7);
        assert_eq!(config.engine.feel.value_bytes_max, 7 << 20);
        assert_eq!(config.engine.feel.collection_items_max, 7);
    }

    #[test]
    fn backpressure_keys_come_from_the_environment() {
        let vars = [
            ("ZEEBE_BROKER_BACKPRESSURE_ENABLED", "false"),
            ("ZEEBE_BROKER_BACKPRESSURE_ALGORITHM", "aimd"),
            ("ZEEBE_BROKER_BACKPRESSURE_AIMD_INITIALLIMIT", "8"),
            ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MINLIMIT", "4"),
            ("ZEEBE_BROKER_BACKPRESSURE_AIMD_MAXLIMIT", "16"),
            ("ZEEBE_BROKER_BACKPRESSURE_AIMD_REQUESTTIMEOUT", "PT1S"),
            ("ZEEBE_BROKER_BACKPRESSURE_AIMD_BACKOFFRATIO", "0.5"),
            ("ZEEBE_BROKER_BACKPRESSURE_FIXED_LIMIT", "3"),
        ];
        let yaml = "backpressure: { algorithm: fixed, aimd: { initialLimit: 100 } }\n";
        let config = BrokerConfig::from_yaml_str(yaml, &env(&vars)).expect("valid");
        assert_eq!(
            config.limiter(),
            crate::backpressure::LimiterConfig {
                enabled: false,
                aimd: crate::backpressure::AimdConfig {
                    initial_limit: 8,
                    min_limit: 4,
                    max_limit: 16,
                    request_timeout_ms: 1_000,
                    backoff_ratio: 0.5,
                },
            },
            "the environment wins over the file"
        );
        assert_eq!(config.backpressure.fixed.limit, 3);
        let config = BrokerConfig::from_yaml_str(
            "",
            &env(&[("ZEEBE_BROKER_BACKPRESSURE_ALGORITHM", "FIXED")]),
        )
        .expect("valid");
        assert_eq!(
            config.limiter().aimd,
            crate::backpressure::AimdConfig::fixed(20)
        );
        let error = refuse(
            "",
            &[("ZEEBE_BROKER_BACKPRESSURE_AIMD_BACKOFFRATIO", "fast")],
        );
        message_mentions(
            &error,
            &[
                "backpressure.aimd.backoffRatio",
                "ZEEBE_BROKER_BACKPRESSURE_AIMD_BACKOFFRATIO",
                "decimal number",
            ],
        );
    }

    // ---- validation ----

    #[test]
    fn backpressure_limits_and_ratio_are_checked() {
        for (yaml, needles) in [
            (
                "backpressure: { aimd: { minLimit: 0 } }",
                &["backpressure.aimd.minLimit", "1..=65536"][..],
            ),
            (
                "backpressure: { aimd: { maxLimit: 65537 } }",
                &["backpressure.aimd.maxLimit", "65537"],
            ),
            (
                "backpressure: { aimd: { initialLimit: 0 } }",
                &["backpressure.aimd.initialLimit"],
            ),
            (
                "backpressure: { aimd: { minLimit: 20, maxLimit: 10, initialLimit: 15 } }",
                &["backpressure.aimd.minLimit", "above", "maxLimit"],
            ),
            (
                "backpressure: { aimd: { minLimit: 5, initialLimit: 4 } }",
                &["backpressure.aimd.initialLimit", "is 4", "5..=1000"],
            ),
            (
                "backpressure: { aimd: { initialLimit: 1001 } }",
                &["backpressure.aimd.initialLimit", "1..=1000"],
            ),
            (
                "backpressure: { aimd: { backoffRatio: 1 } }",
                &["backpressure.aimd.backoffRatio", "between 0 and 1"],
            ),
            (
                "backpressure: { aimd: { backoffRatio: 1.5 } }",
                &["backpressure.aimd.backoffRatio", "1.5"],
            ),
            (
                "backpressure: { aimd: { backoffRatio: 0 } }",
                &["backpressure.aimd.backoffRatio"],
            ),
            (
                "backpressure: { aimd: { backoffRatio: -0.1 } }",
                &["backpressure.aimd.backoffRatio"],
            ),
            (
                "backpressure: { aimd: { requestTimeout: 0ms } }",
                &["backpressure.aimd.requestTimeout", "0 ms"],
            ),
            (
                "backpressure: { fixed: { limit: 0 } }",
                &["backpressure.fixed.limit"],
            ),
        ] {
            let error = refuse(yaml, &[]);
            message_mentions(&error, needles);
        }
        for (yaml, key, expected) in [
            (
                "backpressure: { algorithm: vegas }",
                "backpressure.algorithm",
                "one of AIMD, FIXED",
            ),
            (
                "backpressure: { algorithm: gradient2 }",
                "backpressure.algorithm",
                "AIMD",
            ),
            (
                "backpressure: { aimd: { backoffRatio: .nan } }",
                "backpressure.aimd.backoffRatio",
                "decimal number",
            ),
            (
                "backpressure: { aimd: { requestTimeout: soon } }",
                "backpressure.aimd.requestTimeout",
                "duration",
            ),
            (
                "backpressure: { enabled: maybe }",
                "backpressure.enabled",
                "true or false",
            ),
        ] {
            let error = refuse(yaml, &[]);
            assert!(
                matches!(error, ConfigError::InvalidValue { .. }),
                "{yaml}: {error}"
            );
            message_mentions(&error, &[key, expected]);
        }
        // The edges are fine, and a configuration built in Rust is checked the same way.
        parse("backpressure: { aimd: { initialLimit: 1, minLimit: 1, maxLimit: 1 } }\n");
        parse("backpressure: { aimd: { backoffRatio: 0.01 } }\n");
        let mut config = BrokerConfig::default();
        config.backpressure.aimd.backoff_ratio = f64::NAN;
        let error = config.validate().expect_err("NaN is no ratio");
        message_mentions(&error, &["backpressure.aimd.backoffRatio"]);
    }

    #[test]
    fn node_id_must_be_below_cluster_size() {
        let error = refuse("cluster: { nodeId: 3, clusterSize: 3 }\n", &[]);
        assert!(matches!(error, ConfigError::NodeIdOutOfRange { .. }));
        message_mentions(&error, &["cluster.nodeId", "3", "cluster.clusterSize"]);
    }

    #[test]
    fn the_cluster_shape_is_checked() {
        let error = refuse("cluster: { replicationFactor: 2 }\n", &[]);
        message_mentions(
            &error,
            &["cluster.replicationFactor (2)", "cluster.clusterSize (1)"],
        );
        let error = refuse("cluster: { replicationFactor: 0 }\n", &[]);
        message_mentions(&error, &["cluster.replicationFactor"]);
        let error = refuse("cluster: { partitionsCount: 0 }\n", &[]);
        message_mentions(&error, &["cluster.partitionsCount"]);
        let error = refuse("cluster: { clusterSize: 0 }\n", &[]);
        message_mentions(&error, &["cluster.clusterSize"]);
        let error = refuse("cluster: { partitionsCount: 8193 }\n", &[]);
        message_mentions(&error, &["cluster.partitionsCount"]);
    }

    #[test]
    fn durations_must_be_positive_and_election_timeout_twice_the_heartbeat() {
        let error = refuse("cluster: { heartbeatInterval: 0ms }\n", &[]);
        assert!(
            matches!(&error, ConfigError::OutOfRange { key, .. } if key == "cluster.heartbeatInterval")
        );
        message_mentions(&error, &["cluster.heartbeatInterval", "0 ms", "1..="]);
        let error = refuse("cluster: { membership: { probeTimeout: 0s } }\n", &[]);
        message_mentions(&error, &["cluster.membership.probeTimeout"]);
        let error = refuse("data: { flushDelay: 2s }\n", &[]);
        message_mentions(&error, &["data.flushDelay", "2000 ms"]);
        let error = refuse(
            "cluster: { heartbeatInterval: 1s, electionTimeout: 1500ms }\n",
            &[],
        );
        assert!(matches!(error, ConfigError::ElectionTimeoutTooShort { .. }));
        message_mentions(
            &error,
            &["cluster.electionTimeout", "1500 ms", "1000 ms", "twice"],
        );
        parse("cluster: { heartbeatInterval: 1s, electionTimeout: 2s }\n");
        let error = refuse("cluster: { failureTimeout: 2d }\n", &[]);
        assert!(matches!(error, ConfigError::UnknownKey { .. }));
        let error = refuse("cluster: { membership: { failureTimeout: 2d } }\n", &[]);
        message_mentions(
            &error,
            &["cluster.membership.failureTimeout", "\"2d\"", "duration"],
        );
    }

    #[test]
    fn contact_points_must_be_host_and_port() {
        for (point, reason) in [
            ("broker-1", "port is missing"),
            ("broker-1:0", "port is not a number"),
            ("broker-1:70000", "port is not a number"),
            (":26502", "host is not"),
            ("bad host:26502", "host is not"),
            ("[::1]26502", "[address]:port"),
            ("[nope]:26502", "not an IPv6 address"),
        ] {
            let error = refuse("", &[("ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS", point)]);
            assert!(
                matches!(error, ConfigError::InvalidContactPoint { index: 0, .. }),
                "{point}"
            );
            message_mentions(
                &error,
                &["cluster.initialContactPoints[0]", reason, "host:port"],
            );
        }
        let config = parse("cluster: { initialContactPoints: '10.0.0.1:26502,[fe80::1]:26502' }\n");
        assert_eq!(config.cluster.initial_contact_points.len(), 2);
        let many: Vec<String> = (0..=CONTACT_POINTS_MAX)
            .map(|i| format!("h{i}:1"))
            .collect();
        let error = refuse(
            "",
            &[("ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS", &many.join(","))],
        );
        message_mentions(&error, &["cluster.initialContactPoints", "at most 256"]);
    }

    #[test]
    fn ports_must_fit_after_the_offset_and_differ() {
        // The raw-append API is off by default: its port does not count.
        let error = refuse("network: { portOffset: 4000 }\n", &[]);
        assert!(matches!(error, ConfigError::PortOutOfRange { .. }));
        message_mentions(
            &error,
            &[
                "network.internalApi.port",
                "26502",
                "network.portOffset",
                "66502",
            ],
        );
        // The raw-append API's port counts only when the API is on.
        parse("network: { portOffset: 100, commandApi: { port: 65000 } }\n");
        let error = refuse(
            "network: { portOffset: 100, commandApi: { enabled: true, port: 65000 } }\n",
            &[],
        );
        message_mentions(&error, &["network.commandApi.port", "65000", "66000"]);
        let error = refuse("management: { port: 0 }\n", &[]);
        message_mentions(&error, &["management.port", "1..=65535"]);
        let error = refuse("management: { port: 26502 }\n", &[]);
        assert!(matches!(error, ConfigError::PortConflict { .. }));
        message_mentions(
            &error,
            &["network.internalApi.port", "management.port", "26502"],
        );
        let error = refuse(
            "network: { commandApi: { enabled: true, port: 70000 } }\n",
            &[],
        );
        message_mentions(&error, &["network.commandApi.port", "65535"]);
        // A disabled gateway's port does not count.
        parse("gateway: { enable: false, network: { port: 9600 } }\n");
        assert!(matches!(
            refuse("gateway: { network: { port: 9600 } }\n", &[]),
            ConfigError::PortConflict { .. }
        ));
    }

    #[test]
    fn hosts_must_be_addresses_to_bind_to() {
        let error = refuse("network: { host: broker-0 }\n", &[]);
        assert!(matches!(error, ConfigError::InvalidHost { .. }));
        message_mentions(&error, &["network.host", "broker-0", "advertisedHost"]);
        let error = refuse("management: { host: 'not an ip' }\n", &[]);
        message_mentions(&error, &["management.host"]);
        let error = refuse("network: { advertisedHost: 'a b' }\n", &[]);
        message_mentions(&error, &["network.advertisedHost"]);
        let config = parse("network: { host: localhost, internalApi: { host: '[::1]' } }\n");
        assert_eq!(config.command_api_addr().to_string(), "127.0.0.1:26501");
        assert_eq!(config.internal_api_addr().to_string(), "[::1]:26502");
        assert_eq!(config.advertised_internal_addr(), "[::1]:26502");
        let config = parse("network: { host: '::' }\n");
        assert_eq!(config.advertised_internal_addr(), "127.0.0.1:26502");
        let config = parse("network: { host: 10.1.2.3 }\n");
        assert_eq!(config.advertised_internal_addr(), "10.1.2.3:26502");
    }

    #[test]
    fn thread_count_segment_size_and_membership_counts_are_bounded() {
        let error = refuse("threads: { cpuThreadCount: 0 }\n", &[]);
        message_mentions(&error, &["threads.cpuThreadCount", "1..=64"]);
        let error = refuse("threads: { cpuThreadCount: 65 }\n", &[]);
        message_mentions(&error, &["threads.cpuThreadCount", "65"]);
        let error = refuse("data: { logSegmentSize: 512KB }\n", &[]);
        message_mentions(&error, &["data.logSegmentSize", "524288 bytes"]);
        let error = refuse("data: { logSegmentSize: 5GB }\n", &[]);
        message_mentions(&error, &["data.logSegmentSize"]);
        parse("data: { logSegmentSize: 4GB }\n");
        parse("data: { logSegmentSize: 9MB }\n");
        // A segment holds the largest entry maxMessageSize allows: 8.25 MiB and a header for
        // the default 4 MiB.
        let error = refuse("data: { logSegmentSize: 5MB }\n", &[]);
        message_mentions(
            &error,
            &[
                "data.logSegmentSize",
                "network.maxMessageSize",
                "8654912 bytes",
            ],
        );
        parse("data: { logSegmentSize: 5MB }\nnetwork: { maxMessageSize: 1MB }\n");
        let error = refuse("data: { logSegmentSize: 512KB }\n", &[]);
        message_mentions(&error, &["data.logSegmentSize", "524288 bytes"]);
        let error = refuse("network: { maxMessageSize: 8MB }\n", &[]);
        message_mentions(&error, &["network.maxMessageSize", "8388608"]);
        let error = refuse("network: { maxMessageSize: 100KB }\n", &[]);
        message_mentions(&error, &["network.maxMessageSize"]);
        let config = parse("network: { maxMessageSize: 2MB }\n");
        assert_eq!(config.size_limits().message_bytes, 2 << 20);
        let error = refuse("cluster: { membership: { suspectProbes: 0 } }\n", &[]);
        message_mentions(&error, &["cluster.membership.suspectProbes"]);
        let error = refuse("cluster: { membership: { gossipFanout: 17 } }\n", &[]);
        message_mentions(&error, &["cluster.membership.gossipFanout"]);
        let error = refuse("data: { directory: '' }\n", &[]);
        message_mentions(&error, &["data.directory", "is empty"]);
        let error = refuse("cluster: { clusterName: '' }\n", &[]);
        message_mentions(&error, &["cluster.clusterName", "is empty"]);
    }

    #[test]
    fn values_of_the_wrong_kind_are_named() {
        for (yaml, key, expected) in [
            ("cluster: { nodeId: -1 }", "cluster.nodeId", "whole number"),
            ("cluster: { nodeId: 1.5 }", "cluster.nodeId", "whole number"),
            (
                "cluster: { clusterSize: 4294967296 }",
                "cluster.clusterSize",
                "4294967295",
            ),
            (
                "network: { portOffset: 65536 }",
                "network.portOffset",
                "65535",
            ),
            (
                "gateway: { enable: yes please }",
                "gateway.enable",
                "true or false",
            ),
            (
                "partitioning: { scheme: RANDOM }",
                "partitioning.scheme",
                "ROUND_ROBIN, FIXED",
            ),
            ("cluster: { raft: 3 }", "cluster.raft", "mapping"),
            ("network: { host: ~ }", "network.host", "a string"),
            ("partitioning: { fixed: 3 }", "partitioning.fixed", "list"),
            (
                "cluster: { initialContactPoints: [ [a] ] }",
                "cluster.initialContactPoints",
                "list",
            ),
        ] {
            let error = refuse(yaml, &[]);
            assert!(
                matches!(error, ConfigError::InvalidValue { .. }),
                "{yaml}: {error}"
            );
            message_mentions(&error, &[key, expected]);
        }
    }

    #[test]
    fn fixed_partitioning_surfaces_the_broken_rule() {
        let yaml = "
cluster: { clusterSize: 3, partitionsCount: 2, replicationFactor: 2 }
partitioning:
  scheme: FIXED
  fixed:
    - partitionId: 1
      nodes: [ { nodeId: 0, priority: 1 }, { nodeId: 1, priority: 2 } ]
";
        let error = refuse(yaml, &[]);
        assert!(matches!(error, ConfigError::Partitioning(_)));
        message_mentions(
            &error,
            &["partition 2 not configured", "explicitly configured"],
        );
        let error = refuse(
            yaml,
            &[("ZEEBE_BROKER_PARTITIONING_FIXED_0_NODES_1_NODEID", "5")],
        );
        message_mentions(&error, &["nodeId 5"]);
        let error = refuse(
            "partitioning: { fixed: [ { partitionId: 1, nodes: [ { nodeId: 0 } ] } ] }\n",
            &[],
        );
        assert!(matches!(
            error,
            ConfigError::FixedWithoutScheme { entries: 1 }
        ));
        message_mentions(&error, &["partitioning.scheme", "FIXED"]);
        let error = refuse(
            "partitioning: { scheme: FIXED, fixed: [ { nodes: [] } ] }\n",
            &[],
        );
        message_mentions(&error, &["partitioning.fixed[0].partitionId", "required"]);
    }

    #[test]
    fn tls_paths_name_the_missing_keys_and_the_command() {
        let error = BrokerConfig::default().tls_paths().expect_err("none set");
        message_mentions(
            &error,
            &[
                "network.security.certificateAuthorityPath",
                "network.security.privateKeyPath",
                "sluice certs --dir DIR",
            ],
        );
        let config = BrokerConfig::from_yaml_str(
            "",
            &env(&[
                (
                    "ZEEBE_BROKER_NETWORK_SECURITY_CERTIFICATEAUTHORITYPATH",
                    "ca.pem",
                ),
                (
                    "ZEEBE_BROKER_NETWORK_SECURITY_CERTIFICATECHAINPATH",
                    "chain.pem",
                ),
            ]),
        )
        .expect("valid");
        let error = config.tls_paths().expect_err("the key is missing");
        let message = error.to_string();
        assert!(
            message.starts_with(
                "mutual TLS between brokers needs network.security.privateKeyPath to be set"
            ),
            "{message}"
        );
    }

    #[test]
    fn gateway_tls_is_off_by_default_and_needs_both_files_when_on() {
        let config = parse("");
        assert!(!config.gateway.security.enabled);
        assert_eq!(config.gateway_tls_paths().expect("plaintext"), None);
        let config = parse(
            "gateway:\n  security:\n    enabled: true\n    certificateChainPath: /etc/gw.pem\n    \
             privateKeyPath: /etc/gw.key\n",
        );
        assert_eq!(
            config.gateway_tls_paths().expect("both set"),
            Some((PathBuf::from("/etc/gw.pem"), PathBuf::from("/etc/gw.key")))
        );
        let error = refuse(
            "gateway: { security: { enabled: true, certificateChainPath: /etc/gw.pem } }\n",
            &[],
        );
        message_mentions(
            &error,
            &[
                "gateway.security.privateKeyPath",
                "gateway.security.enabled",
            ],
        );
        let error = refuse(
            "",
            &[
                ("ZEEBE_BROKER_GATEWAY_SECURITY_ENABLED", "true"),
                (
                    "ZEEBE_BROKER_GATEWAY_SECURITY_PRIVATEKEYPATH",
                    "/etc/gw.key",
                ),
            ],
        );
        message_mentions(&error, &["gateway.security.certificateChainPath"]);
        // A disabled gateway needs no files.
        parse("gateway: { enable: false, security: { enabled: true } }\n");
        let error = refuse("gateway: { security: { enable: true } }\n", &[]);
        message_mentions(&error, &["gateway.security.enable"]);
    }

    // ---- durations and sizes ----

    #[test]
    fn durations_parse_in_every_form() {
        for (text, ms) in [
            ("250ms", 250),
            ("250MS", 250),
            ("1s", 1_000),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("0", 0),
            ("1500", 1_500),
            (" 3s ", 3_000),
            ("PT1S", 1_000),
            ("PT0.25S", 250),
            ("pt0.25s", 250),
            ("PT1M30S", 90_000),
            ("PT1H", 3_600_000),
            ("PT2H3M4.005S", 7_384_005),
            ("P1D", 86_400_000),
            ("P1DT1S", 86_401_000),
            ("PT0.000000000S", 0),
        ] {
            assert_eq!(parse_duration_ms(text), Some(ms), "{text}");
        }
        for text in [
            "",
            "ms",
            "1.5s",
            "-1s",
            "1 s",
            "1sec",
            "10x",
            "PT",
            "P",
            "PT1",
            "PT0.0005S",
            "PT1S2M",
            "PT1M1H",
            "PT1.S",
            "PT.5S",
            "PT1.0000000001S",
            "P1H",
            "PT1D",
            "99999999999999999999s",
            "18446744073709551615d",
            "PT-1S",
            "PT1S1S",
        ] {
            assert_eq!(parse_duration_ms(text), None, "{text}");
        }
    }

    #[test]
    fn sizes_parse_in_every_form() {
        for (text, bytes) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512B", 512),
            ("512KB", 512 << 10),
            ("128MB", 128 << 20),
            ("128mb", 128 << 20),
            ("1GB", 1 << 30),
            ("2GiB", 2 << 30),
            ("1TB", 1 << 40),
            ("64 MB", 64 << 20),
        ] {
            assert_eq!(parse_size_bytes(text), Some(bytes), "{text}");
        }
        for text in ["", "MB", "1.5MB", "-1MB", "12XB", "99999999999TB"] {
            assert_eq!(parse_size_bytes(text), None, "{text}");
        }
        let error = refuse("data: { logSegmentSize: 12XB }\n", &[]);
        message_mentions(&error, &["data.logSegmentSize", "\"12XB\"", "size"]);
    }

    #[test]
    fn durations_and_sizes_format_in_the_largest_exact_unit() {
        for (ms, text) in [
            (0, "0ms"),
            (250, "250ms"),
            (1_000, "1s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (7_200_000, "2h"),
            (86_400_000, "1d"),
            (90_000_000, "25h"),
            (604_800_000, "7d"),
        ] {
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(parse_duration_ms(text), Some(ms));
        }
        for (bytes, text) in [
            (0, "0B"),
            (1_000, "1000B"),
            (512 << 10, "512KB"),
            (128 << 20, "128MB"),
            (4 << 30, "4GB"),
        ] {
            assert_eq!(format_size_bytes(bytes), text);
            assert_eq!(parse_size_bytes(text), Some(bytes));
        }
    }
}
