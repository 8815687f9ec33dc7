//! A broker node at run time: the transport, gossip, the partition replicas and the topology.
//!
//! [`Node::start`] runs on the broker's first shard (glommio executor). It binds the QUIC
//! transport, loads the topology kept on disk, opens this broker's partition replicas and spawns
//! four tasks:
//! - **receive**: frames from peers. Raft batches are split by partition and queued on the
//!   replicas; gossip messages go to the SWIM core.
//! - **gossip**: pumps the [`Swim`] core: sends its messages, applies its membership events to
//!   the directory (where each node's transport, command API and management API are) and to the
//!   topology, and ticks it at its deadline.
//! - **outbox**: sends the Raft messages the replicas produced since it last ran, one frame per
//!   peer node holding the messages of all partitions (split when large), so replication of
//!   every partition between two brokers shares one connection and its batching.
//! - **roles**: records role changes of the local replicas in the topology (saved to disk) and in
//!   the gossip metadata, so every broker learns who leads what.
//!
//! Raft messages to a node whose address gossip has not told yet are dropped; Raft retries.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use serde::{Deserialize, Serialize};
use sluice_log::raft::{Message, MessageBody, Role as RaftRole};
use sluice_net::frame::FRAME_HEADER_BYTES;
use sluice_net::quic::{Incoming, Transport, TransportConfig};
use sluice_net::swim::{MemberState as SwimState, MembershipEvent, Swim, SwimConfig};
use sluice_net::tls::TlsIdentity;
use sluice_net::{
    FrameKind, decode_raft_batch, decode_swim_message, encode_raft_batch, encode_swim_message,
};

use glommio::channels::shared_channel::{ConnectedSender, SharedReceiver, SharedSender};

use crate::notify::Notify;
use crate::partition::{
    AppendOutcome, Partition, PartitionConfig, PartitionStatus, RaftOutbox, Responder,
    StatusListener, StorageFault, replica_id,
};
use crate::partitioning::{NodeId, PartitionId, PartitionLayout};
use crate::shard::{ShardInput, ShardOutput};
use crate::topology::{Member, MemberState, Role, Topology};

/// Largest archive of one outgoing Raft frame before the batch is split.
const RAFT_FRAME_BYTES_TARGET: u64 = 4 << 20;
/// Most Raft messages in one outgoing frame.
const RAFT_FRAME_MESSAGES_MAX: usize = 4096;

/// Everything a node needs to start, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// `cluster.nodeId`.
    pub node_id: NodeId,
    /// Where partitions live and with which priorities.
    pub layout: PartitionLayout,
    /// `cluster.raft.enablePriorityElection`.
    pub priority_election: bool,
    /// `data.directory`.
    pub data_dir: PathBuf,
    /// The QUIC socket.
    pub internal_bind: SocketAddr,
    /// How peers reach the QUIC socket (host:port), as gossiped.
    pub internal_advertised: String,
    /// How clients reach the command API (host:port), as gossiped.
    pub command_api_advertised: String,
    /// How operators reach the management API (host:port), as gossiped.
    pub management_advertised: String,
    /// How clients reach the gRPC gateway (host:port), as gossiped; empty when it is off.
    pub gateway_advertised: String,
    /// Where the node publishes what the gateway needs to route (see [`Node::publish_gateway_view`]);
    /// `None` when this broker runs no gateway.
    pub gateway_view: Option<crate::gateway::SharedGatewayView>,
    /// `cluster.initialContactPoints`.
    pub contact_points: Vec<String>,
    /// `cluster.membership.*`.
    pub swim: SwimConfig,
    /// `cluster.heartbeatInterval`.
    pub heartbeat_interval_ms: u64,
    /// `cluster.electionTimeout`.
    pub election_timeout_ms: u64,
    /// `data.logSegmentSize`.
    pub segment_bytes: u64,
    /// The size limits derived from `network.maxMessageSize`.
    pub limits: crate::limits::SizeLimits,
    /// `data.snapshotPeriod`.
    pub snapshot_period_ms: u64,
    /// `data.snapshotRecords`.
    pub snapshot_records: u64,
    /// `backpressure.*`: every partition leader's limiter.
    pub backpressure: crate::backpressure::LimiterConfig,
    /// `engine.*`: the caps every replica's engine runs with.
    pub engine_caps: crate::config::EngineCaps,
    /// The broker's certificate, key and cluster CA.
    pub tls: TlsIdentity,
    /// The largest QUIC datagram to try (loopback allows large ones).
    pub mtu_upper_bound_bytes: u16,
}

/// What a broker gossips about itself besides its address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberMetadata {
    /// host:port of the command API.
    pub command_api: String,
    /// host:port of the management API.
    pub management: String,
    /// host:port of the gRPC gateway; empty when it is off (or the broker is older).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// `(partition, "LEADER" | "FOLLOWER" | "INACTIVE", term)` of each local replica; an
    /// inactive one is down (recovering from a storage error).
    pub partitions: Vec<(PartitionId, String, u64)>,
    /// Which life of the process this is (its start, in ms since the epoch): a new value means
    /// the broker restarted and lost what it was asked before; a higher incarnation alone does
    /// not (it also comes with new metadata and refuted suspicions). 0 when not told.
    #[serde(default)]
    pub life: u64,
}

/// What this broker knows of another.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The node.
    pub node_id: NodeId,
    /// Its gossiped transport address.
    pub address: String,
    /// The transport address resolved, when resolvable.
    pub socket: Option<SocketAddr>,
    /// Alive, Suspect, Dead or Left.
    pub state: MemberState,
    /// Its gossiped metadata, when it parsed.
    pub metadata: Option<MemberMetadata>,
    /// Its SWIM incarnation: a restarted broker comes back with a higher one.
    pub incarnation: u64,
}

/// Counters of the node's own tasks, for `/metrics`.
#[derive(Debug, Default)]
pub struct NodeCounters {
    /// Raft messages dropped because the peer's address is unknown.
    pub raft_unroutable: Cell<u64>,
    /// Frames received that failed to decode.
    pub frames_malformed: Cell<u64>,
    /// Raft messages received for a partition this node does not host, or addressed to another
    /// replica than this node's.
    pub raft_misrouted: Cell<u64>,
    /// Raft frames sent.
    pub raft_frames_sent: Cell<u64>,
    /// Raft messages sent.
    pub raft_messages_sent: Cell<u64>,
    /// Commands between partitions forwarded to another broker's leader.
    pub commands_forwarded: Cell<u64>,
    /// Commands between partitions dropped because no leader of their partition was known.
    pub commands_unroutable: Cell<u64>,
    /// Command frames from peers dropped unread: not a partition's internal command, or for a
    /// partition this node does not host.
    pub peer_commands_dropped: Cell<u64>,
    /// Internal commands from peers that the partition refused as invalid (malformed, or a kind
    /// no partition sends).
    pub peer_commands_refused: Cell<u64>,
    /// Raft messages dropped because their claimed sender is not the node named in the sending
    /// broker's certificate.
    pub raft_sender_mismatch: Cell<u64>,
    /// Gossip messages dropped for the same reason.
    pub gossip_sender_mismatch: Cell<u64>,
    /// Replies from other brokers that answered no waiting request (it aged out, or the peer
    /// named another's).
    pub replies_unmatched: Cell<u64>,
}

/// The running node. See the module docs.
pub struct Node {
    settings: NodeSettings,
    transport: Transport,
    swim: RefCell<Swim>,
    swim_notify: Notify,
    directory: RefCell<BTreeMap<NodeId, Peer>>,
    resolved: RefCell<HashMap<String, SocketAddr>>,
    topology: RefCell<Topology>,
    /// Saves the topology off the shard, retrying a failed save.
    topology_writer: crate::durable::LatestWriter,
    partitions: RefCell<BTreeMap<PartitionId, Rc<Partition>>>,
    /// Replicas on other shards, with their last reported status.
    remote: BTreeMap<PartitionId, RemoteReplica>,
    /// Queues to the other shards, by shard index - 1.
    shard_inputs: Vec<Rc<ShardInputQueue>>,
    /// Responders of appends handed to other shards, by ticket.
    tickets: RefCell<HashMap<u64, Responder>>,
    next_ticket: Cell<u64>,
    outbox: Rc<Outbox>,
    role_changes: Rc<RoleChanges>,
    clock: Instant,
    counters: NodeCounters,
    /// Set by `shut_down`.
    stopping: Cell<bool>,
    /// Set when another shard stopped before `shut_down`: the broker is unhealthy.
    shard_failed: Cell<bool>,
    /// Client requests sent to other brokers, waiting for their replies.
    forwards: crate::requests::Forwards,
    /// This life of the process, gossiped in [`MemberMetadata::life`].
    life: u64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.settings.node_id)
            .finish_non_exhaustive()
    }
}

/// The other end of a shard's channels, for [`Node::start`].
#[derive(Debug)]
pub struct ShardEnds {
    /// The shard's index (1 and up).
    pub shard: usize,
    /// The partitions whose local replica lives there.
    pub partitions: Vec<PartitionId>,
    /// To the shard.
    pub input: SharedSender<ShardInput>,
    /// From the shard.
    pub output: SharedReceiver<ShardOutput>,
}

struct RemoteReplica {
    shard: usize,
    status: RefCell<PartitionStatus>,
    preferred_leader: NodeId,
}

/// Inputs waiting for a shard's channel.
#[derive(Default)]
struct ShardInputQueue {
    items: RefCell<VecDeque<ShardInput>>,
    notify: Notify,
}

impl ShardInputQueue {
    fn push(&self, item: ShardInput) {
        self.items.borrow_mut().push_back(item);
        self.notify.notify();
    }

    async fn pump(self: Rc<Self>, sender: ConnectedSender<ShardInput>) {
        loop {
            let item = self.items.borrow_mut().pop_front();
            match item {
                Some(item) => {
                    if sender.send(item).await.is_err() {
                        return;
                    }
                }
                None => self.notify.notified().await,
            }
        }
    }
}

#[derive(Default)]
struct Outbox {
    queued: RefCell<BTreeMap<NodeId, Vec<(PartitionId, Message)>>>,
    commands: RefCell<Vec<(PartitionId, Vec<u8>)>>,
    notify: Notify,
}

impl RaftOutbox for Outbox {
    fn send(&self, to: NodeId, partition_id: PartitionId, message: Message) {
        self.queued
            .borrow_mut()
            .entry(to)
            .or_default()
            .push((partition_id, message));
        self.notify.notify();
    }

    fn send_command(&self, partition_id: PartitionId, payload: Vec<u8>) {
        self.commands.borrow_mut().push((partition_id, payload));
        self.notify.notify();
    }
}

#[derive(Default)]
struct RoleChanges {
    changes: RefCell<Vec<PartitionStatus>>,
    notify: Notify,
}

/// A replica's role in the topology: a down replica is inactive.
fn topology_role(status: &PartitionStatus) -> Role {
    if status.down.is_some() {
        Role::Inactive
    } else if status.role == RaftRole::Leader {
        Role::Leader
    } else {
        Role::Follower
    }
}

/// A replica's role as gossiped: `LEADER`, `FOLLOWER` or `INACTIVE` (down).
fn gossiped_role(status: &PartitionStatus) -> &'static str {
    match topology_role(status) {
        Role::Leader => "LEADER",
        Role::Follower => "FOLLOWER",
        Role::Inactive => "INACTIVE",
    }
}

fn member_state(state: SwimState) -> MemberState {
    match state {
        SwimState::Alive => MemberState::Alive,
        SwimState::Suspect => MemberState::Suspect,
        SwimState::Dead => MemberState::Dead,
        SwimState::Left => MemberState::Left,
    }
}

impl Node {
    /// Starts the node on the current executor. See the module docs.
    /// `shards` are the other shards of this broker and the partitions they host; shard 0 (the
    /// current executor) hosts the rest.
    /// `link` is this broker's gateway's end of the [`crate::link`], when it runs one.
    pub async fn start(
        settings: NodeSettings,
        shards: Vec<ShardEnds>,
        link: Option<crate::link::LinkReceiver>,
    ) -> anyhow::Result<Rc<Node>> {
        let clock = Instant::now();
        crate::durable::create_dir_all(&settings.data_dir)
            .map_err(|error| anyhow::anyhow!("creating the data directory: {error}"))?;
        let topology = match Topology::load(&settings.data_dir)? {
            Some(stored) => {
                stored.check_layout(&settings.layout)?;
                eprintln!(
                    "node {}: loaded the topology (version {}, {} members)",
                    settings.node_id,
                    stored.version(),
                    stored.members().len()
                );
                stored
            }
            None => Topology::new(&settings.layout),
        };
        let mut transport_config =
            TransportConfig::new(settings.internal_bind, settings.tls.clone());
        transport_config.mtu_upper_bound_bytes = settings.mtu_upper_bound_bytes;
        let transport = retry_bind(
            &format!("the QUIC transport on UDP {}", settings.internal_bind),
            || Transport::bind(transport_config.clone()).map_err(anyhow::Error::from),
        )
        .await?;
        // Each life starts above the incarnations of the previous ones (see
        // `Swim::with_initial_incarnation`), and says which life it is in its metadata.
        let life = wall_clock_ms();
        let metadata = MemberMetadata {
            command_api: settings.command_api_advertised.clone(),
            management: settings.management_advertised.clone(),
            gateway: settings.gateway_advertised.clone(),
            partitions: Vec::new(),
            life,
        };
        let seed = u64::from(settings.node_id) ^ u64::from(clock.elapsed().subsec_nanos()) << 20;
        let mut swim = Swim::new(
            settings.swim.clone(),
            u64::from(settings.node_id),
            settings.internal_advertised.clone(),
            serde_json::to_vec(&metadata)?,
            seed,
            0,
        )?
        .with_initial_incarnation(life);
        // Contact points, plus every member the stored topology remembers: a restarted broker
        // finds its peers even if its contact points are gone.
        let mut contacts = settings.contact_points.clone();
        for member in topology.members() {
            if member.node_id != settings.node_id && !contacts.contains(&member.address) {
                contacts.push(member.address.clone());
            }
        }
        swim.join(&contacts)?;
        let (remote, shard_inputs, shard_outputs) = connect_shards(&settings, shards).await;
        let node = Rc::new(Node {
            remote,
            shard_inputs,
            tickets: RefCell::default(),
            next_ticket: Cell::new(0),
            transport,
            swim: RefCell::new(swim),
            swim_notify: Notify::default(),
            directory: RefCell::default(),
            resolved: RefCell::default(),
            topology: RefCell::new(topology),
            topology_writer: crate::durable::LatestWriter::new(
                settings.data_dir.join(crate::topology::TOPOLOGY_FILE_NAME),
                format!("node {}: the topology", settings.node_id),
            ),
            partitions: RefCell::default(),
            outbox: Rc::default(),
            role_changes: Rc::default(),
            clock,
            counters: NodeCounters::default(),
            stopping: Cell::new(false),
            shard_failed: Cell::new(false),
            forwards: crate::requests::Forwards::default(),
            life,
            settings,
        });
        node.record_self_member();
        glommio::spawn_local(Rc::clone(&node).receive_task()).detach();
        glommio::spawn_local(Rc::clone(&node).gossip_task()).detach();
        glommio::spawn_local(Rc::clone(&node).outbox_task()).detach();
        glommio::spawn_local(Rc::clone(&node).roles_task()).detach();
        for output in shard_outputs {
            let receiver = output.connect().await;
            glommio::spawn_local(Rc::clone(&node).shard_output_task(receiver)).detach();
        }
        node.open_local_partitions().await?;
        if let Some(link) = link {
            glommio::spawn_local(crate::requests::link_task(Rc::clone(&node), link)).detach();
        }
        Ok(node)
    }

    /// Opens the replicas that live on this shard.
    async fn open_local_partitions(self: &Rc<Self>) -> anyhow::Result<()> {
        for partition_id in self.settings.layout.partitions_of(self.settings.node_id) {
            if self.remote.contains_key(&partition_id) {
                continue;
            }
            let config = partition_config(&self.settings, partition_id);
            let changes = Rc::clone(&self.role_changes);
            let listener: StatusListener = Rc::new(move |status: &PartitionStatus| {
                changes.changes.borrow_mut().push(status.clone());
                changes.notify.notify();
            });
            let outbox: Rc<dyn RaftOutbox> = self.outbox.clone();
            let partition = Partition::open(config, outbox, listener).await?;
            self.partitions.borrow_mut().insert(partition_id, partition);
        }
        Ok(())
    }

    /// This broker's node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.settings.node_id
    }

    /// The settings it started with.
    #[must_use]
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// The transport, for its statistics and the fault switch.
    #[must_use]
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Counters of the node's tasks.
    #[must_use]
    pub fn counters(&self) -> &NodeCounters {
        &self.counters
    }

    /// Client requests sent to other brokers and not answered yet.
    #[must_use]
    pub fn forwards(&self) -> &crate::requests::Forwards {
        &self.forwards
    }

    /// The transport address of `node_id`, as gossip told it.
    #[must_use]
    pub fn peer_socket(&self, node_id: NodeId) -> Option<SocketAddr> {
        let directory = self.directory.borrow();
        let peer = directory.get(&node_id)?;
        if matches!(peer.state, MemberState::Dead | MemberState::Left) {
            return None;
        }
        peer.socket
    }

    /// Milliseconds since the node started.
    #[must_use]
    pub fn uptime_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The local replica of `partition_id`, if this broker hosts one.
    #[must_use]
    pub fn partition(&self, partition_id: PartitionId) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(&partition_id).cloned()
    }

    /// The replicas on this shard.
    #[must_use]
    pub fn partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    /// Every replica of this broker, on any shard: its status and its partition's preferred
    /// leader. Statuses of other shards are at most [`crate::shard::STATUS_INTERVAL`] old.
    #[must_use]
    pub fn replica_statuses(&self) -> Vec<(PartitionStatus, NodeId)> {
        let mut statuses: Vec<(PartitionStatus, NodeId)> = self
            .partitions()
            .iter()
            .map(|p| (p.status(), p.preferred_leader()))
            .chain(
                self.remote
                    .values()
                    .map(|r| (r.status.borrow().clone(), r.preferred_leader)),
            )
            .collect();
        statuses.sort_by_key(|(status, _)| status.partition_id);
        statuses
    }

    /// Whether a shard other than the first stopped unexpectedly.
    #[must_use]
    pub fn shard_failed(&self) -> bool {
        self.shard_failed.get()
    }

    /// Whether this broker holds a replica of `partition_id`.
    #[must_use]
    pub fn hosts(&self, partition_id: PartitionId) -> bool {
        self.partitions.borrow().contains_key(&partition_id)
            || self.remote.contains_key(&partition_id)
    }

    /// Appends to the local replica of `partition_id`, on whichever shard it lives. Gives the
    /// responder back if this broker holds no replica of it.
    pub fn append(
        &self,
        partition_id: PartitionId,
        payload: Vec<u8>,
        responder: Responder,
    ) -> Result<(), Responder> {
        if let Some(partition) = self.partition(partition_id) {
            partition.append(payload, responder);
            return Ok(());
        }
        let Some(remote) = self.remote.get(&partition_id) else {
            return Err(responder);
        };
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        self.tickets.borrow_mut().insert(ticket, responder);
        self.shard_inputs[remote.shard - 1].push(ShardInput::Append {
            ticket,
            partition_id,
            payload,
        });
        Ok(())
    }

    /// Delivers an engine command to the leader of `partition_id`: to a replica on this broker
    /// if it leads here, else over QUIC to the broker the topology names as leader. Best effort:
    /// a command with no known leader is dropped (and counted); the engine that sent it sends
    /// it again until it is answered.
    pub fn forward_command(&self, partition_id: PartitionId, payload: Vec<u8>) {
        let leader = self.leader_hint(partition_id).map(|(leader, _)| leader);
        if leader == Some(self.settings.node_id) || (leader.is_none() && self.hosts(partition_id)) {
            // The outcome goes nowhere: the sender learns of it through the reply command.
            let _ = self.append(partition_id, payload, Box::new(|_| {}));
            return;
        }
        let socket = leader.and_then(|leader| {
            self.directory
                .borrow()
                .get(&leader)
                .and_then(|peer| peer.socket)
        });
        let Some(socket) = socket else {
            let c = &self.counters.commands_unroutable;
            c.set(c.get() + 1);
            return;
        };
        let mut body = Vec::with_capacity(payload.len() + 4);
        body.extend_from_slice(&partition_id.to_le_bytes());
        body.extend_from_slice(&payload);
        let _ = self.transport.send(socket, FrameKind::Command, &body);
        let c = &self.counters.commands_forwarded;
        c.set(c.get() + 1);
    }

    /// A copy of the topology.
    #[must_use]
    pub fn topology(&self) -> Topology {
        self.topology.borrow().clone()
    }

    /// What this broker knows of the others.
    #[must_use]
    pub fn peers(&self) -> Vec<Peer> {
        self.directory.borrow().values().cloned().collect()
    }

    /// Gossip counters.
    #[must_use]
    pub fn swim_stats(&self) -> sluice_net::swim::SwimStats {
        self.swim.borrow().stats()
    }

    /// The leader of `partition_id` as far as this broker knows, with its command-API address.
    #[must_use]
    pub fn leader_hint(&self, partition_id: PartitionId) -> Option<(NodeId, String)> {
        let leader = self
            .partition(partition_id)
            .and_then(|p| p.status().leader)
            .or_else(|| self.remote.get(&partition_id)?.status.borrow().leader)
            .or_else(|| {
                self.topology
                    .borrow()
                    .leader_of(partition_id)
                    .map(|r| r.node_id)
            })?;
        if leader == self.settings.node_id {
            return Some((leader, self.settings.command_api_advertised.clone()));
        }
        let directory = self.directory.borrow();
        let address = directory
            .get(&leader)?
            .metadata
            .as_ref()?
            .command_api
            .clone();
        Some((leader, address))
    }

    /// Moves leadership of the local leaders whose partition prefers another replica there.
    /// Returns the partitions asked to move.
    pub fn rebalance_local(&self) -> Vec<PartitionId> {
        let mut moved = Vec::new();
        for (status, preferred) in self.replica_statuses() {
            if status.role != RaftRole::Leader || preferred == self.settings.node_id {
                continue;
            }
            let partition_id = status.partition_id;
            if let Some(partition) = self.partition(partition_id) {
                partition.transfer_leadership(preferred);
            } else if let Some(remote) = self.remote.get(&partition_id) {
                self.shard_inputs[remote.shard - 1].push(ShardInput::Transfer {
                    partition_id,
                    to: preferred,
                });
            }
            moved.push(partition_id);
        }
        moved
    }

    /// Fault injection into the storage of the local replica of `partition_id` (see
    /// [`StorageFault`]). False if this broker holds none.
    pub fn storage_fault(&self, partition_id: PartitionId, fault: StorageFault) -> bool {
        if let Some(partition) = self.partition(partition_id) {
            partition.inject_storage_fault(fault);
            return true;
        }
        let Some(remote) = self.remote.get(&partition_id) else {
            return false;
        };
        self.shard_inputs[remote.shard - 1].push(ShardInput::StorageFault {
            partition_id,
            fault,
        });
        true
    }

    /// Management addresses of the other live brokers, for requests that fan out.
    #[must_use]
    pub fn peer_management_addresses(&self) -> Vec<String> {
        self.directory
            .borrow()
            .values()
            .filter(|peer| peer.state == MemberState::Alive)
            .filter_map(|peer| peer.metadata.as_ref().map(|m| m.management.clone()))
            .collect()
    }

    /// Stops the replicas and the transport.
    pub fn shut_down(&self) {
        self.stopping.set(true);
        self.swim.borrow_mut().leave();
        self.swim_notify.notify();
        for partition in self.partitions() {
            partition.close();
        }
        for queue in &self.shard_inputs {
            queue.push(ShardInput::Stop);
        }
    }

    /// For a shutdown: waits until the topology's latest change is on disk, for `timeout` at
    /// most (a save still failing is reported; the file is only a cache).
    pub async fn wait_topology_written(&self, timeout: Duration) {
        if !self.topology_writer.written(timeout).await {
            eprintln!(
                "node {}: the topology's last change is not on disk (see the error above); the \
                 next start re-learns it from the cluster",
                self.settings.node_id
            );
        }
    }

    fn record_self_member(&self) {
        let member = Member {
            node_id: self.settings.node_id,
            address: self.settings.internal_advertised.clone(),
            state: MemberState::Alive,
            incarnation: self.swim.borrow().local().incarnation,
        };
        self.update_topology(|topology| topology.update_member(member).unwrap_or(false));
    }

    fn update_topology(&self, change: impl FnOnce(&mut Topology) -> bool) {
        let mut topology = self.topology.borrow_mut();
        if change(&mut topology) {
            // Written off the shard; a failed save is reported and retried, never fatal.
            self.topology_writer.submit(topology.checked_bytes());
        }
        drop(topology);
        self.publish_gateway_view();
    }

    /// Refreshes the gateway's snapshot of the cluster (brokers, their addresses, partition
    /// roles and leaders) after the topology or the gossiped metadata changed. The gateway's
    /// thread only reads it.
    pub fn publish_gateway_view(&self) {
        let Some(shared) = &self.settings.gateway_view else {
            return;
        };
        let own = crate::gateway::BrokerView {
            node_id: self.settings.node_id,
            command_api: self.settings.command_api_advertised.clone(),
            gateway: self.settings.gateway_advertised.clone(),
        };
        let mut brokers = vec![own];
        for peer in self.directory.borrow().values() {
            if matches!(peer.state, MemberState::Dead | MemberState::Left)
                || peer.node_id == self.settings.node_id
            {
                continue;
            }
            if let Some(metadata) = &peer.metadata {
                brokers.push(crate::gateway::BrokerView {
                    node_id: peer.node_id,
                    command_api: metadata.command_api.clone(),
                    gateway: metadata.gateway.clone(),
                });
            }
        }
        brokers.sort_by_key(|broker| broker.node_id);
        let topology = self.topology.borrow();
        let partitions = (1..=topology.shape().partitions_count())
            .map(|partition_id| crate::gateway::PartitionView {
                partition_id,
                leader: self.leader_hint(partition_id),
                replicas: topology
                    .replicas_of(partition_id)
                    .unwrap_or_default()
                    .iter()
                    .map(|replica| (replica.node_id, replica.role))
                    .collect(),
            })
            .collect();
        drop(topology);
        let view = crate::gateway::GatewayView {
            brokers,
            partitions,
        };
        match shared.write() {
            Ok(mut guard) => *guard = view,
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }

    fn resolve(&self, address: &str) -> Option<SocketAddr> {
        if let Some(socket) = self.resolved.borrow().get(address) {
            return Some(*socket);
        }
        let socket = address
            .parse::<SocketAddr>()
            .ok()
            .or_else(|| address.to_socket_addrs().ok()?.next())?;
        self.resolved
            .borrow_mut()
            .insert(address.to_owned(), socket);
        Some(socket)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Delivers the messages of a Raft batch from a peer to the replicas they address;
    /// drops (and counts) those claiming another sender than the peer's certificate names.
    fn receive_raft_batch(&self, incoming: &Incoming) {
        match decode_raft_batch(&incoming.frame) {
            Ok(messages) => {
                let own_replica = replica_id(self.settings.node_id);
                let peer_replica = replica_id(incoming.peer_node_id);
                let mut forged = 0_u64;
                let mut for_shards: BTreeMap<usize, Vec<(PartitionId, Message)>> = BTreeMap::new();
                let partitions = self.partitions.borrow();
                for (partition_id, message) in messages {
                    if message.from != peer_replica {
                        forged += 1;
                    } else if message.to != own_replica {
                        self.count_misrouted();
                    } else if let Some(partition) = partitions.get(&partition_id) {
                        partition.deliver(message);
                    } else if let Some(remote) = self.remote.get(&partition_id) {
                        for_shards
                            .entry(remote.shard)
                            .or_default()
                            .push((partition_id, message));
                    } else {
                        self.count_misrouted();
                    }
                }
                drop(partitions);
                if forged > 0 {
                    let c = &self.counters.raft_sender_mismatch;
                    c.set(c.get() + forged);
                    eprintln!(
                        "node {}: dropped {forged} raft messages from {} claiming a \
                         sender other than node {}, the one its certificate names",
                        self.settings.node_id, incoming.from, incoming.peer_node_id
                    );
                }
                for (shard, messages) in for_shards {
                    // Re-encoding a batch decoded from a valid frame cannot break a bound.
                    if let Ok(frame) = encode_raft_batch(&messages) {
                        self.shard_inputs[shard - 1]
                            .push(ShardInput::Raft(frame[FRAME_HEADER_BYTES..].to_vec()));
                    }
                }
            }
            Err(error) => {
                self.counters
                    .frames_malformed
                    .set(self.counters.frames_malformed.get() + 1);
                eprintln!(
                    "node {}: raft frame from {}: {error}",
                    self.settings.node_id, incoming.from
                );
            }
        }
    }

    /// A partition's internal command from a peer (only those travel in command frames). The
    /// sender hears nothing back (it re-sends until the reply command comes); what the partition
    /// refuses is counted and logged here.
    fn receive_internal_command(self: &Rc<Self>, incoming: &Incoming) {
        let body = &incoming.frame.body;
        let partition_id = body
            .get(..4)
            .map(|bytes| u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
        match partition_id {
            // Only a partition's command travels in these frames.
            Some(partition_id)
                if self.hosts(partition_id)
                    && body.get(4) == Some(&crate::apply::PAYLOAD_INTERNAL) =>
            {
                let payload = body[4..].to_vec();
                // Weak: a responder left queued at shutdown must not keep the node alive.
                let node = Rc::downgrade(self);
                let peer = incoming.peer_node_id;
                let responder: Responder = Box::new(move |outcome| {
                    if let (AppendOutcome::Invalid { message }, Some(node)) =
                        (outcome, node.upgrade())
                    {
                        let c = &node.counters.peer_commands_refused;
                        c.set(c.get() + 1);
                        eprintln!(
                            "node {}: refused node {peer}'s command for partition \
                             {partition_id}: {message}",
                            node.settings.node_id
                        );
                    }
                });
                let _ = self.append(partition_id, payload, responder);
            }
            _ => {
                let c = &self.counters.peer_commands_dropped;
                c.set(c.get() + 1);
            }
        }
    }

    async fn receive_task(self: Rc<Self>) {
        loop {
            let incoming = self.transport.recv().await;
            match incoming.frame.kind {
                FrameKind::RaftBatch => self.receive_raft_batch(&incoming),
                FrameKind::Command => self.receive_internal_command(&incoming),
                FrameKind::Request => {
                    if !crate::requests::serve_peer_request(
                        &self,
                        incoming.from,
                        incoming.peer_node_id,
                        &incoming.frame.body,
                    ) {
                        self.count_malformed();
                    }
                }
                FrameKind::Reply => {
                    if !crate::requests::take_peer_reply(
                        &self,
                        incoming.peer_node_id,
                        &incoming.frame.body,
                    ) {
                        // A reply to a request that aged out is expected now and then.
                        let c = &self.counters.replies_unmatched;
                        c.set(c.get() + 1);
                    }
                }
                FrameKind::Swim => match decode_swim_message(&incoming.frame) {
                    Ok(message) if message.sender_id != u64::from(incoming.peer_node_id) => {
                        let c = &self.counters.gossip_sender_mismatch;
                        c.set(c.get() + 1);
                    }
                    Ok(message) => {
                        let now = self.now_ms();
                        // An Err only says the core dropped the message; it counts it.
                        let _ = self.swim.borrow_mut().handle_message(
                            &incoming.from.to_string(),
                            message,
                            now,
                        );
                        self.swim_notify.notify();
                    }
                    Err(_) => self
                        .counters
                        .frames_malformed
                        .set(self.counters.frames_malformed.get() + 1),
                },
            }
        }
    }

    fn count_malformed(&self) {
        let c = &self.counters.frames_malformed;
        c.set(c.get() + 1);
    }

    fn count_misrouted(&self) {
        let c = &self.counters.raft_misrouted;
        c.set(c.get() + 1);
    }

    async fn shard_output_task(
        self: Rc<Self>,
        receiver: glommio::channels::shared_channel::ConnectedReceiver<ShardOutput>,
    ) {
        while let Some(item) = receiver.recv().await {
            match item {
                ShardOutput::Raft { to, body } => {
                    let socket = self.directory.borrow().get(&to).and_then(|p| p.socket);
                    if let Some(socket) = socket {
                        let _ = self.transport.send(socket, FrameKind::RaftBatch, &body);
                        let c = &self.counters.raft_frames_sent;
                        c.set(c.get() + 1);
                    } else {
                        let c = &self.counters.raft_unroutable;
                        c.set(c.get() + 1);
                    }
                }
                ShardOutput::Command {
                    partition_id,
                    payload,
                } => self.forward_command(partition_id, payload),
                ShardOutput::Appended { ticket, outcome } => {
                    let responder = self.tickets.borrow_mut().remove(&ticket);
                    if let Some(responder) = responder {
                        responder(outcome);
                    }
                }
                ShardOutput::Status { status, changed } => {
                    if let Some(remote) = self.remote.get(&status.partition_id) {
                        *remote.status.borrow_mut() = (*status).clone();
                    }
                    if changed {
                        self.role_changes.changes.borrow_mut().push(*status);
                        self.role_changes.notify.notify();
                    }
                }
            }
        }
        // The shard stopped: whatever it still owed is not coming.
        if !self.stopping.get() {
            eprintln!(
                "node {}: a shard stopped unexpectedly; its replicas are down (see the error above)",
                self.settings.node_id
            );
            self.shard_failed.set(true);
        }
        let owed: Vec<Responder> = self.tickets.borrow_mut().drain().map(|(_, r)| r).collect();
        for responder in owed {
            responder(AppendOutcome::Unavailable {
                message: "the broker is shutting down".to_owned(),
            });
        }
    }

    async fn gossip_task(self: Rc<Self>) {
        loop {
            let now = self.now_ms();
            if now >= self.swim.borrow().poll_timeout() {
                self.swim.borrow_mut().handle_tick(now);
            }
            loop {
                let transmit = self.swim.borrow_mut().poll_transmit();
                let Some(transmit) = transmit else { break };
                let Some(to) = self.resolve(&transmit.to_address) else {
                    continue;
                };
                match encode_swim_message(&transmit.message) {
                    Ok(frame) => {
                        let _ =
                            self.transport
                                .send(to, FrameKind::Swim, &frame[FRAME_HEADER_BYTES..]);
                    }
                    Err(error) => {
                        eprintln!("node {}: gossip message: {error}", self.settings.node_id);
                    }
                }
            }
            loop {
                let event = self.swim.borrow_mut().poll_event();
                let Some(event) = event else { break };
                self.apply_membership(event);
            }
            let deadline = self.swim.borrow().poll_timeout();
            if deadline == u64::MAX {
                return;
            }
            let wait_ms = deadline.saturating_sub(self.now_ms()).max(1);
            future::or(
                self.swim_notify.notified(),
                glommio::timer::sleep(Duration::from_millis(wait_ms)),
            )
            .await;
        }
    }

    fn apply_membership(&self, event: MembershipEvent) {
        let member = match event {
            MembershipEvent::MemberAdded(m)
            | MembershipEvent::MemberSuspect(m)
            | MembershipEvent::MemberAlive(m)
            | MembershipEvent::MemberDead(m)
            | MembershipEvent::MemberLeft(m)
            | MembershipEvent::MetadataChanged(m) => m,
        };
        let Ok(node_id) = NodeId::try_from(member.id) else {
            return;
        };
        let metadata: Option<MemberMetadata> = serde_json::from_slice(&member.metadata).ok();
        let state = member_state(member.state);
        if matches!(state, MemberState::Dead | MemberState::Left) {
            self.forwards.peer_gone(
                node_id,
                if state == MemberState::Left {
                    "left the cluster"
                } else {
                    "was declared dead"
                },
            );
        }
        let peer = Peer {
            node_id,
            socket: self.resolve(&member.address),
            address: member.address.clone(),
            state,
            metadata: metadata.clone(),
            incarnation: member.incarnation,
        };
        let previous = self.directory.borrow_mut().insert(node_id, peer);
        let life_of = |peer: &Peer| peer.metadata.as_ref().map_or(0, |m| m.life);
        if previous.is_some_and(|previous| {
            previous.incarnation < member.incarnation
                && life_of(&previous) != metadata.as_ref().map_or(0, |m| m.life)
        }) && !matches!(state, MemberState::Dead | MemberState::Left)
        {
            // A new life: what the old one was asked is lost. A higher incarnation of the same
            // life (new metadata, a refuted suspicion) still answers what it was asked.
            self.forwards.peer_gone(node_id, "restarted");
        }
        let record = Member {
            node_id,
            address: member.address,
            state,
            incarnation: member.incarnation,
        };
        self.update_topology(|topology| {
            let mut changed = topology.update_member(record).unwrap_or(false);
            if let Some(metadata) = &metadata {
                for (partition_id, role, term) in &metadata.partitions {
                    let role = match role.as_str() {
                        "LEADER" => Role::Leader,
                        "INACTIVE" => Role::Inactive,
                        _ => Role::Follower,
                    };
                    changed |= topology
                        .update_replica(*partition_id, node_id, role, *term)
                        .unwrap_or(false);
                }
            }
            changed
        });
    }

    async fn outbox_task(self: Rc<Self>) {
        loop {
            self.outbox.notify.notified().await;
            let commands = std::mem::take(&mut *self.outbox.commands.borrow_mut());
            for (partition_id, payload) in commands {
                self.forward_command(partition_id, payload);
            }
            let queued = std::mem::take(&mut *self.outbox.queued.borrow_mut());
            for (node_id, messages) in queued {
                let socket = self.directory.borrow().get(&node_id).and_then(|p| p.socket);
                let Some(socket) = socket else {
                    let c = &self.counters.raft_unroutable;
                    c.set(c.get() + messages.len() as u64);
                    continue;
                };
                for chunk in split_batches(&messages) {
                    match encode_raft_batch(chunk) {
                        Ok(frame) => {
                            let _ = self.transport.send(
                                socket,
                                FrameKind::RaftBatch,
                                &frame[FRAME_HEADER_BYTES..],
                            );
                            let c = &self.counters;
                            c.raft_frames_sent.set(c.raft_frames_sent.get() + 1);
                            c.raft_messages_sent
                                .set(c.raft_messages_sent.get() + chunk.len() as u64);
                        }
                        Err(error) => {
                            eprintln!(
                                "node {}: encoding a raft batch: {error}",
                                self.settings.node_id
                            );
                        }
                    }
                }
            }
        }
    }

    async fn roles_task(self: Rc<Self>) {
        loop {
            self.role_changes.notify.notified().await;
            let changes = std::mem::take(&mut *self.role_changes.changes.borrow_mut());
            if changes.is_empty() {
                continue;
            }
            let node_id = self.settings.node_id;
            self.update_topology(|topology| {
                let mut updated = false;
                for status in &changes {
                    updated |= topology
                        .update_replica(
                            status.partition_id,
                            node_id,
                            topology_role(status),
                            status.term,
                        )
                        .unwrap_or(false);
                    if let Some(leader) = status.leader
                        && leader != node_id
                    {
                        updated |= topology
                            .update_replica(status.partition_id, leader, Role::Leader, status.term)
                            .unwrap_or(false);
                    }
                }
                updated
            });
            for status in &changes {
                eprintln!(
                    "node {node_id} at {} ms: partition {} is {:?} in term {} (leader: {:?})",
                    self.uptime_ms(),
                    status.partition_id,
                    status.role,
                    status.term,
                    status.leader
                );
            }
            let metadata = MemberMetadata {
                command_api: self.settings.command_api_advertised.clone(),
                management: self.settings.management_advertised.clone(),
                gateway: self.settings.gateway_advertised.clone(),
                partitions: self
                    .replica_statuses()
                    .iter()
                    .map(|(status, _)| {
                        (
                            status.partition_id,
                            gossiped_role(status).to_owned(),
                            status.term,
                        )
                    })
                    .collect(),
                life: self.life,
            };
            let bytes = serde_json::to_vec(&metadata).expect("metadata serializes");
            if let Err(error) = self.swim.borrow_mut().update_metadata(bytes) {
                eprintln!("node {node_id}: gossip metadata: {error}");
            }
            self.swim_notify.notify();
        }
    }
}

type ShardOutputs = Vec<SharedReceiver<ShardOutput>>;

/// Connects shard 0's ends of the other shards' channels and spawns their input pumps.
async fn connect_shards(
    settings: &NodeSettings,
    shards: Vec<ShardEnds>,
) -> (
    BTreeMap<PartitionId, RemoteReplica>,
    Vec<Rc<ShardInputQueue>>,
    ShardOutputs,
) {
    let mut remote = BTreeMap::new();
    let mut shard_inputs = Vec::new();
    let mut shard_outputs = Vec::new();
    for ends in shards {
        for &partition_id in &ends.partitions {
            let preferred_leader = settings
                .layout
                .preferred_leader(partition_id)
                .unwrap_or(settings.node_id);
            remote.insert(
                partition_id,
                RemoteReplica {
                    shard: ends.shard,
                    status: RefCell::new(PartitionStatus::new(partition_id)),
                    preferred_leader,
                },
            );
        }
        let queue = Rc::new(ShardInputQueue::default());
        glommio::spawn_local(Rc::clone(&queue).pump(ends.input.connect().await)).detach();
        shard_inputs.push(queue);
        shard_outputs.push(ends.output);
    }
    (remote, shard_inputs, shard_outputs)
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// How long a start-up keeps retrying a bind whose port is still held: a broker restarted the
/// moment its previous process exited can find its ports held for a few milliseconds more
/// (the exiting process's `io_uring` rings release their sockets asynchronously).
pub const BIND_RETRY: Duration = Duration::from_secs(5);
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Calls `bind` until it succeeds or [`BIND_RETRY`] has passed; the last error names `what`.
pub async fn retry_bind<T>(
    what: &str,
    mut bind: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + BIND_RETRY;
    loop {
        match bind() {
            Ok(bound) => return Ok(bound),
            Err(error) if Instant::now() >= deadline => {
                return Err(error.context(format!(
                    "binding {what} (retried for {BIND_RETRY:?}); is another broker using the port?"
                )));
            }
            Err(_) => glommio::timer::sleep(BIND_RETRY_PAUSE).await,
        }
    }
}

/// How the replica of `partition_id` on this node is opened.
#[must_use]
pub fn partition_config(settings: &NodeSettings, partition_id: PartitionId) -> PartitionConfig {
    let replicas = settings
        .layout
        .replicas_of(partition_id)
        .expect("a partition of the layout")
        .to_vec();
    PartitionConfig {
        partition_id,
        partition_count: *settings.layout.partition_ids().end(),
        node_id: settings.node_id,
        dir: settings.data_dir.join(format!("partition-{partition_id}")),
        replicas,
        priority_election: settings.priority_election,
        heartbeat_interval_ms: settings.heartbeat_interval_ms,
        election_timeout_ms: settings.election_timeout_ms,
        segment_bytes: settings.segment_bytes,
        limits: settings.limits,
        snapshot_period_ms: settings.snapshot_period_ms,
        snapshot_records: settings.snapshot_records,
        backpressure: settings.backpressure,
        engine_caps: settings.engine_caps,
    }
}

/// Splits the messages for one node into frames of bounded size.
pub(crate) fn split_batches(messages: &[(PartitionId, Message)]) -> Vec<&[(PartitionId, Message)]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (at, (_, message)) in messages.iter().enumerate() {
        let size = match &message.body {
            MessageBody::Append { entries, .. } => {
                entries
                    .iter()
                    .map(|e| e.payload.len() as u64 + 64)
                    .sum::<u64>()
                    + 64
            }
            MessageBody::InstallSnapshot { data, .. } => data.len() as u64 + 64,
            _ => 64,
        };
        if at > start
            && (bytes + size > RAFT_FRAME_BYTES_TARGET || at - start >= RAFT_FRAME_MESSAGES_MAX)
        {
            chunks.push(&messages[start..at]);
            start = at;
            bytes = 0;
        }
        bytes += size;
    }
    if start < messages.len() {
        chunks.push(&messages[start..]);
    }
    chunks
}
