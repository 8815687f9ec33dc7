//! `sluice broker`: one broker process.
//!
//! [`run`] builds the node's settings from the configuration, starts the broker's shard (a
//! glommio executor), starts the [`Node`] on it with the command API and the management API, and
//! serves until `stop` turns true (SIGINT or SIGTERM in the binary). Then it leaves the gossip
//! group, stops the replicas (their journals flush what they hold) and returns.
//!
//! When `gateway.enable` is set, the gRPC gateway ([`crate::gateway`]) is bound before the shards
//! start (a bind failure is a start-up error) and runs on its own thread with its own tokio
//! runtime; the node keeps its routing view up to date, and it is stopped after the shards.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use sluice_net::swim::SwimConfig;
use sluice_net::tls::TlsIdentity;

use crate::config::BrokerConfig;
use crate::management::Management;
use crate::node::{self, Node, NodeSettings, ShardEnds};
use crate::shard::{self, CHANNEL_ITEMS_MAX, ShardLinks};
use glommio::channels::shared_channel;

/// Memory glommio registers for I/O per executor. `RLIMIT_MEMLOCK` is small on some machines
/// (8 MiB here), and each executor registers it with several rings, so keep it modest.
const IO_MEMORY_BYTES: usize = 1 << 20;
/// Threads of each executor's blocking pool. Snapshot, Raft state and topology writes run there
/// ([`crate::durable::off_shard`]), and so do the journal's renames and removals; a slow snapshot
/// write (a large state, a struggling disk) must not hold up a segment roll or a vote, so the
/// pool has room for a few long writes beside the short ones.
const BLOCKING_THREADS_PER_SHARD: usize = 4;
/// How often the shard checks whether it was asked to stop.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Time given to replicas and gossip to finish after a stop request.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(300);
/// How long a stopping broker waits for its topology's last save.
const TOPOLOGY_WRITE_WAIT: Duration = Duration::from_secs(2);

fn host_port(host: &str, addr: SocketAddr) -> String {
    format!("{host}:{}", addr.port())
}

/// The node's settings from a validated configuration.
pub fn node_settings(config: &BrokerConfig) -> anyhow::Result<NodeSettings> {
    let (ca, cert, key) = config.tls_paths()?;
    let tls = TlsIdentity::load(&ca, &cert, &key)?;
    // The certificate names the node it was issued to: peers trust that name, not a claim.
    tls.check_node_id(config.cluster.node_id)?;
    let internal_advertised = config.advertised_internal_addr();
    let advertised = internal_advertised
        .rsplit_once(':')
        .map_or(internal_advertised.as_str(), |(host, _)| host)
        .to_owned();
    let internal_bind = config.internal_api_addr();
    let membership = &config.cluster.membership;
    let swim = SwimConfig {
        probe_interval_ms: membership.probe_interval_ms,
        probe_timeout_ms: membership.probe_timeout_ms,
        suspect_probes: membership.suspect_probes,
        failure_timeout_ms: membership.failure_timeout_ms,
        gossip_interval_ms: membership.gossip_interval_ms,
        gossip_fanout: membership.gossip_fanout,
        sync_interval_ms: membership.sync_interval_ms,
        ..SwimConfig::default()
    };
    let loopback = internal_bind.ip().is_loopback();
    Ok(NodeSettings {
        node_id: config.cluster.node_id,
        layout: config.partition_layout()?,
        priority_election: config.cluster.raft.enable_priority_election,
        data_dir: config.data.directory.clone(),
        internal_bind,
        internal_advertised,
        command_api_advertised: host_port(&advertised, config.command_api_addr()),
        management_advertised: host_port(&advertised, config.management_addr()),
        gateway_advertised: if config.gateway.enable {
            host_port(&advertised, config.gateway_addr())
        } else {
            String::new()
        },
        gateway_view: config.gateway.enable.then(crate::gateway::shared_view),
        contact_points: config.cluster.initial_contact_points.clone(),
        swim,
        heartbeat_interval_ms: config.cluster.heartbeat_interval_ms,
        election_timeout_ms: config.cluster.election_timeout_ms,
        segment_bytes: config.data.log_segment_bytes,
        limits: config.size_limits(),
        snapshot_period_ms: config.data.snapshot_period_ms,
        snapshot_records: config.data.snapshot_records,
        backpressure: config.limiter(),
        engine_caps: config.engine_caps(),
        tls,
        // Loopback carries 64 KiB datagrams; elsewhere stay under common Ethernet MTUs.
        mtu_upper_bound_bytes: if loopback { 16_384 } else { 1452 },
    })
}

/// Starts the gRPC gateway when `gateway.enable` is set (the node's settings then carry its
/// view); a bind failure is a start-up error.
fn start_gateway(
    config: &BrokerConfig,
    settings: &NodeSettings,
    link: crate::link::Link,
) -> anyhow::Result<Option<crate::gateway::GatewayHandle>> {
    let Some(view) = &settings.gateway_view else {
        return Ok(None);
    };
    let shape = config.cluster_shape()?;
    let handle = crate::gateway::start(
        crate::gateway::GatewaySettings {
            node_id: settings.node_id,
            bind: config.gateway_addr(),
            shape: crate::gateway::ClusterShapeView {
                cluster_size: shape.cluster_size(),
                partitions_count: shape.partitions_count(),
                replication_factor: shape.replication_factor(),
            },
            tls: config.gateway_tls_paths()?,
            limits: config.size_limits(),
            link,
            bounds: crate::gateway::GatewayBounds::from_config(&config.gateway),
        },
        Arc::clone(view),
    )?;
    eprintln!(
        "node {}: gRPC gateway on {} ({})",
        settings.node_id,
        handle.local_addr(),
        if config.gateway.security.enabled {
            "TLS"
        } else {
            "plaintext"
        }
    );
    Ok(Some(handle))
}

/// A shard's thread: its run's outcome when joined.
type ShardThread = glommio::ExecutorJoinHandle<anyhow::Result<()>>;

/// Starts a thread for each shard but the first (which runs on the calling thread) with the
/// replicas `per_shard` deals it; the node's ends of their channels, and their threads.
fn start_shards(
    settings: &node::NodeSettings,
    per_shard: &[Vec<u32>],
) -> anyhow::Result<(Vec<ShardEnds>, Vec<ShardThread>)> {
    let node_id = settings.node_id;
    let mut shard_ends = Vec::new();
    let mut shard_threads = Vec::new();
    for (shard, partitions) in per_shard.iter().enumerate().skip(1) {
        let (input_tx, input_rx) = shared_channel::new_bounded(CHANNEL_ITEMS_MAX);
        let (output_tx, output_rx) = shared_channel::new_bounded(CHANNEL_ITEMS_MAX);
        let configs: Vec<_> = partitions
            .iter()
            .map(|&partition_id| node::partition_config(settings, partition_id))
            .collect();
        let links = ShardLinks {
            input: input_rx,
            output: output_tx,
        };
        let handle = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("sluice-{node_id}-shard-{shard}"))
            .io_memory(IO_MEMORY_BYTES)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
            .spawn(move || async move { shard::run(configs, links).await })
            .map_err(|error| anyhow::anyhow!("starting shard {shard}: {error}"))?;
        shard_threads.push(handle);
        shard_ends.push(ShardEnds {
            shard,
            partitions: partitions.clone(),
            input: input_tx,
            output: output_rx,
        });
    }
    Ok((shard_ends, shard_threads))
}

/// Runs the broker until `stop` is set. See the module docs.
pub fn run(config: &BrokerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let settings = node_settings(config)?;
    let access = crate::management::Access::from_config(&config.management)?;
    if access.faults_enabled() {
        eprintln!(
            "node {}: management.faults.enabled is set: POST /actuator/faults can cut this broker \
             off from its peers; for tests only",
            settings.node_id
        );
    }
    let (link, link_receiver) = crate::link::link();
    let gateway = start_gateway(config, &settings, link)?;
    let gateway_stats = gateway.as_ref().map(crate::gateway::GatewayHandle::stats);
    // Without a gateway nothing sends on the link: the node need not drain it.
    let link_receiver = gateway.is_some().then_some(link_receiver);
    let command_api = config
        .network
        .command_api
        .enabled
        .then(|| config.command_api_addr());
    let management = config.management_addr();
    let node_id = settings.node_id;
    let shards_count = usize::try_from(config.threads.cpu_thread_count.max(1))
        .expect("cpuThreadCount is validated to a small number");
    // Deal the local replicas over the shards: the k-th local partition lives on shard k % N.
    let mut per_shard: Vec<Vec<u32>> = vec![Vec::new(); shards_count];
    for (k, partition_id) in settings
        .layout
        .partitions_of(node_id)
        .into_iter()
        .enumerate()
    {
        per_shard[k % shards_count].push(partition_id);
    }
    let (shard_ends, shard_threads) = start_shards(&settings, &per_shard)?;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .name(&format!("sluice-{node_id}-shard-0"))
        .io_memory(IO_MEMORY_BYTES)
        .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
        .make()
        .map_err(|error| anyhow::anyhow!("starting the shard's executor: {error}"))?;
    let result = executor.run(async move {
        let node = Node::start(settings, shard_ends, link_receiver).await?;
        if let Some(command_api) = command_api {
            let command_listener =
                node::retry_bind(&format!("the raw-append API on {command_api}"), || {
                    glommio::net::TcpListener::bind(command_api).map_err(|e| anyhow::anyhow!("{e}"))
                })
                .await?;
            glommio::spawn_local(crate::command_server::serve(
                Rc::clone(&node),
                command_listener,
            ))
            .detach();
        }
        let management_listener =
            node::retry_bind(&format!("the management API on {management}"), || {
                glommio::net::TcpListener::bind(management).map_err(|e| anyhow::anyhow!("{e}"))
            })
            .await?;
        let handler = Rc::new(Management::new(Rc::clone(&node), access, gateway_stats));
        glommio::spawn_local(crate::http::serve(management_listener, handler)).detach();
        eprintln!(
            "node {node_id}: serving with {shards_count} shard(s); internal {} (QUIC), raw-append \
             API {}, management http://{management}/",
            node.settings().internal_bind,
            command_api.map_or_else(|| "off".to_owned(), |addr| addr.to_string())
        );
        while !stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(STOP_POLL).await;
        }
        eprintln!("node {node_id}: stopping");
        node.shut_down();
        glommio::timer::sleep(SHUTDOWN_GRACE).await;
        node.wait_topology_written(TOPOLOGY_WRITE_WAIT).await;
        node.transport().close();
        Ok::<(), anyhow::Error>(())
    });
    if let Some(gateway) = gateway {
        gateway.stop();
    }
    for handle in shard_threads {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("node {node_id}: a shard failed: {error:#}"),
            Err(error) => eprintln!("node {node_id}: a shard's thread failed: {error}"),
        }
    }
    result
}
