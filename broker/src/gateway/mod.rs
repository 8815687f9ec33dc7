//! The Zeebe gRPC gateway (`gateway_protocol.Gateway` and `grpc.health.v1.Health`), served by
//! every broker on `gateway.network` (port 26500), plaintext unless `gateway.security.enabled`.
//!
//! # How it runs
//!
//! [`start`] binds the port on the calling thread (a bind failure is a start-up error), then
//! runs the gateway on its own OS thread with a tokio current-thread runtime; the broker's
//! glommio shards are untouched. The gateway is a client of the cluster's command API
//! ([`crate::client_api`]): [`client::CommandClient`] keeps one pipelined connection per broker,
//! sends each command to the partition's leader named by the [`GatewayView`], follows
//! `NotLeader` hints and retries `Unavailable` answers and broken connections until the request's
//! deadline. The node ([`crate::node::Node::publish_gateway_view`]) rewrites the view whenever
//! its topology or the gossiped member metadata changes; the gateway thread only reads it.
//!
//! ```text
//! let view = gateway::shared_view();                      // handed to the node's settings
//! let handle = gateway::start(GatewaySettings { .. }, view)?;
//! ...                                                     // broker serves
//! handle.stop();                                          // SIGTERM path
//! ```
//!
//! [`service`] maps each RPC to an engine command on the partition DESIGN.md names
//! (instances round-robin, messages by correlation key, deployments on partition 1, everything
//! keyed by the partition bits of its key) and maps the reply record back; [`mapping`] holds
//! the pure conversions and the status codes.
//!
//! # Bounds
//!
//! What one client can make the gateway hold is bounded ([`GatewayBounds`], from
//! `gateway.network`, `gateway.longPolling` and `gateway.jobStreams`):
//! - connections: at most `maxConnections` open, a new one beyond is closed at once; a new one
//!   must send its first bytes within `handshakeTimeout` ([`connections`]); TLS handshakes
//!   too;
//! - calls: at most `maxConcurrentStreams` open on one connection (the HTTP/2 setting: a client
//!   queues the others); each message at most `network.maxMessageSize` (`RESOURCE_EXHAUSTED`);
//! - dead or deaf peers: an HTTP/2 PING every `keepAliveInterval` that must be answered within
//!   `keepAliveTimeout`, a write that makes no progress for `keepAliveTimeout` (a client that
//!   reads nothing), and TCP keep-alive after `tcpKeepAlive` without traffic;
//! - long polls and job streams: at most `maxPolls` and `maxStreams` per gateway, beyond them
//!   `RESOURCE_EXHAUSTED`; a long poll lasts at most `maxRequestTimeout`
//!   ([`service::PollSlots`]), and the idle ones together ask the partitions at most
//!   [`service::IDLE_ACTIVATIONS_PER_SECOND_MAX`] times a second;
//! - the polls of job streams parked at a partition: bounded there too ([`crate::parked`]).
//!
//! An HTTP/2 connection that spoke and holds no call is not closed for being idle: keep-alive
//! proves its peer is there, and `maxConnections` bounds how many there are.

pub mod client;
pub mod connections;
pub mod mapping;
pub mod service;

use rustls_pki_types::pem::PemObject as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::partitioning::{NodeId, PartitionId};
use crate::topology::Role;

/// The code generated from `proto/` by the build script: messages, server and client stubs.
pub mod proto {
    /// `gateway_protocol`: Zeebe's gateway protocol.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations,
        reason = "generated code"
    )]
    pub mod gateway_protocol {
        include!(concat!(env!("OUT_DIR"), "/gateway_protocol.rs"));
    }
    /// `grpc.health.v1`: the standard health service.
    #[allow(
        clippy::all,
        clippy::pedantic,
        missing_debug_implementations,
        reason = "generated code"
    )]
    pub mod health {
        include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
    }
}

/// One broker as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    /// `cluster.nodeId`.
    pub node_id: NodeId,
    /// Its command API, "host:port".
    pub command_api: String,
    /// Its gRPC gateway, "host:port"; empty when it runs none.
    pub gateway: String,
}

/// One partition as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    /// `1..=partitionsCount`.
    pub partition_id: PartitionId,
    /// The leader's node id and command API, when known.
    pub leader: Option<(NodeId, String)>,
    /// Every replica with its last seen role.
    pub replicas: Vec<(NodeId, Role)>,
}

/// What the gateway needs to route: the live brokers and who leads each partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayView {
    /// Live brokers with their addresses, by node id (this broker included).
    pub brokers: Vec<BrokerView>,
    /// Every partition, by id.
    pub partitions: Vec<PartitionView>,
}

/// The view shared between the node (writer) and the gateway thread (reader).
pub type SharedGatewayView = Arc<RwLock<GatewayView>>;

/// A fresh, empty shared view.
#[must_use]
pub fn shared_view() -> SharedGatewayView {
    Arc::new(RwLock::new(GatewayView::default()))
}

/// Reads a copy-free snapshot of the view, tolerating a poisoned lock (the writer never panics
/// while holding it, and a stale view only costs a redirect).
pub(crate) fn read_view<T>(view: &SharedGatewayView, read: impl FnOnce(&GatewayView) -> T) -> T {
    match view.read() {
        Ok(guard) => read(&guard),
        Err(poisoned) => read(&poisoned.into_inner()),
    }
}

/// The cluster's shape, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShapeView {
    /// `cluster.clusterSize`.
    pub cluster_size: u32,
    /// `cluster.partitionsCount`.
    pub partitions_count: u32,
    /// `cluster.replicationFactor`.
    pub replication_factor: u32,
}

/// Everything [`start`] needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// This broker's node id (for messages).
    pub node_id: NodeId,
    /// Where to listen (`gateway.network`, offset applied).
    pub bind: SocketAddr,
    /// The cluster's shape.
    pub shape: ClusterShapeView,
    /// `(certificate chain, private key)` PEM files when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The size limits from `network.maxMessageSize`.
    pub limits: crate::limits::SizeLimits,
    /// How commands reach the partitions' leaders (through this broker's node).
    pub link: crate::link::Link,
    /// What clients may hold open.
    pub bounds: GatewayBounds,
}

/// What clients may hold open on the gateway; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayBounds {
    /// `gateway.network.maxConnections`.
    pub connections_max: usize,
    /// `gateway.network.maxConcurrentStreams`.
    pub streams_per_connection_max: u32,
    /// `gateway.network.keepAliveInterval`.
    pub keep_alive_interval: Duration,
    /// `gateway.network.keepAliveTimeout`.
    pub keep_alive_timeout: Duration,
    /// `gateway.network.tcpKeepAlive`.
    pub tcp_keep_alive: Duration,
    /// `gateway.network.handshakeTimeout`.
    pub handshake_timeout: Duration,
    /// `gateway.longPolling`.
    pub long_polling: service::LongPolling,
    /// `gateway.longPolling.maxPolls`.
    pub long_polls_max: usize,
    /// `gateway.jobStreams.maxStreams`.
    pub job_streams_max: usize,
}

impl GatewayBounds {
    /// The bounds `config` sets.
    #[must_use]
    pub fn from_config(config: &crate::config::GatewayConfig) -> Self {
        let network = &config.network;
        let polling = &config.long_polling;
        let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        GatewayBounds {
            connections_max: count(network.max_connections),
            streams_per_connection_max: network.max_concurrent_streams,
            keep_alive_interval: Duration::from_millis(network.keep_alive_interval_ms),
            keep_alive_timeout: Duration::from_millis(network.keep_alive_timeout_ms),
            tcp_keep_alive: Duration::from_millis(network.tcp_keep_alive_ms),
            handshake_timeout: Duration::from_millis(network.handshake_timeout_ms),
            long_polling: service::LongPolling {
                enabled: polling.enabled,
                timeout: Duration::from_millis(polling.timeout_ms),
                request_timeout_max: Duration::from_millis(polling.max_request_timeout_ms),
            },
            long_polls_max: count(polling.max_polls),
            job_streams_max: count(config.job_streams.max_streams),
        }
    }
}

impl Default for GatewayBounds {
    fn default() -> Self {
        GatewayBounds::from_config(&crate::config::GatewayConfig::default())
    }
}

/// Time between TCP keep-alive probes once they started, and how many go unanswered before the
/// connection is dropped.
const TCP_KEEP_ALIVE_PROBE_INTERVAL: Duration = Duration::from_secs(10);
const TCP_KEEP_ALIVE_PROBES: u32 = 3;

/// How long [`GatewayHandle::stop`] lets open calls finish before it leaves them.
const STOP_GRACE: Duration = Duration::from_millis(500);
/// How long binding the port is retried (a previous broker's socket may linger briefly).
const BIND_RETRY: Duration = Duration::from_secs(5);
const BIND_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// What the gateway holds and refused, for the management API's metrics.
#[derive(Debug)]
pub struct GatewayStats {
    /// Its connections.
    pub connections: Arc<connections::ConnectionCounts>,
    /// Its long polls and job streams.
    pub slots: service::PollSlots,
}

/// The running gateway; [`GatewayHandle::stop`] ends it.
#[derive(Debug)]
pub struct GatewayHandle {
    local_addr: SocketAddr,
    stats: Arc<GatewayStats>,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GatewayHandle {
    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Its counts, updated as it runs.
    #[must_use]
    pub fn stats(&self) -> Arc<GatewayStats> {
        Arc::clone(&self.stats)
    }

    /// Stops accepting calls, gives open ones [`STOP_GRACE`] to finish, and joins the thread.
    pub fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let deadline = std::time::Instant::now() + BIND_RETRY;
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return Ok(listener),
            Err(error) if std::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!(
                    "binding the gRPC gateway on {addr} (retried for {BIND_RETRY:?}): {error}; \
                     is another broker or Zeebe gateway using the port? Change \
                     gateway.network.port (or network.portOffset), or set gateway.enable: false"
                ));
            }
            Err(_) => std::thread::sleep(BIND_RETRY_PAUSE),
        }
    }
}

fn tls_config(chain: &PathBuf, key: &PathBuf) -> anyhow::Result<tonic::transport::ServerTlsConfig> {
    let read = |path: &PathBuf, key: &str| {
        std::fs::read(path).map_err(|error| {
            anyhow::anyhow!(
                "reading {key} {}: {error}; point it at a readable PEM file",
                path.display()
            )
        })
    };
    let chain_path = chain;
    let key_path = key;
    let chain = read(chain_path, "gateway.security.certificateChainPath")?;
    let key = read(key_path, "gateway.security.privateKeyPath")?;
    // Checked here, at start-up, so that a bad file stops the broker with its key's name
    // rather than failing later on the gateway's thread.
    let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| {
            anyhow::anyhow!(
                "gateway.security.certificateChainPath {}: not valid PEM: {error}",
                chain_path.display()
            )
        })?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "gateway.security.certificateChainPath {}: holds no PEM certificate \
         (-----BEGIN CERTIFICATE-----)",
        chain_path.display()
    );
    rustls_pki_types::PrivateKeyDer::from_pem_slice(&key).map_err(|error| {
        anyhow::anyhow!(
            "gateway.security.privateKeyPath {}: not a PEM private key \
             (-----BEGIN PRIVATE KEY-----): {error}",
            key_path.display()
        )
    })?;
    let identity = tonic::transport::Identity::from_pem(chain, key);
    let config = tonic::transport::ServerTlsConfig::new().identity(identity);
    tonic::transport::Server::builder()
        .tls_config(config.clone())
        .map_err(|error| {
            anyhow::anyhow!(
                "gateway TLS: gateway.security.certificateChainPath {} and privateKeyPath {} \
                 do not make a usable identity ({error}); check that the key belongs to the \
                 first certificate",
                chain_path.display(),
                key_path.display()
            )
        })?;
    Ok(config)
}

/// Binds the gateway's port and starts serving on a new thread. See the module docs.
pub fn start(settings: GatewaySettings, view: SharedGatewayView) -> anyhow::Result<GatewayHandle> {
    let listener = bind(settings.bind)?;
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let tls = match &settings.tls {
        Some((chain, key)) => {
            Some(tls_config(chain, key)?.timeout(settings.bounds.handshake_timeout))
        }
        None => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("starting the gateway's runtime: {error}"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let node_id = settings.node_id;
    let stats = Arc::new(GatewayStats {
        connections: Arc::default(),
        slots: service::PollSlots::new(
            settings.bounds.long_polls_max,
            settings.bounds.job_streams_max,
        ),
    });
    let serve_stats = Arc::clone(&stats);
    let thread = std::thread::Builder::new()
        .name(format!("sluice-{node_id}-gateway"))
        .spawn(move || {
            let result =
                runtime.block_on(serve(settings, view, listener, tls, &serve_stats, stop_rx));
            if let Err(error) = result {
                eprintln!("node {node_id}: the gRPC gateway failed: {error:#}");
            }
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
        .map_err(|error| anyhow::anyhow!("starting the gateway's thread: {error}"))?;
    Ok(GatewayHandle {
        local_addr,
        stats,
        stop: stop_tx,
        thread: Some(thread),
    })
}

async fn serve(
    settings: GatewaySettings,
    view: SharedGatewayView,
    listener: std::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    stats: &GatewayStats,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let bounds = settings.bounds;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // No Nagle: a small reply held for the peer's delayed ACK costs some 40 ms.
    let tcp = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(bounds.tcp_keep_alive))
        .with_keepalive_interval(Some(TCP_KEEP_ALIVE_PROBE_INTERVAL))
        .with_keepalive_retries(Some(TCP_KEEP_ALIVE_PROBES));
    let incoming = connections::Incoming::new(
        tcp,
        connections::ConnectionBounds {
            connections_max: bounds.connections_max,
            handshake_timeout: bounds.handshake_timeout,
            write_stall_timeout: bounds.keep_alive_timeout,
        },
        Arc::clone(&stats.connections),
    );
    let gateway = service::GatewayService::new(
        settings.shape,
        Arc::clone(&view),
        settings.limits,
        settings.link.clone(),
        settings.node_id,
        bounds.long_polling,
        stats.slots.clone(),
    );
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(bounds.streams_per_connection_max))
        .http2_keepalive_interval(Some(bounds.keep_alive_interval))
        .http2_keepalive_timeout(Some(bounds.keep_alive_timeout))
        .layer(tower::layer::layer_fn(OversizeAsExhausted));
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|error| anyhow::anyhow!("gateway TLS: {error}; check the PEM files"))?;
    }
    let router = builder
        .add_service(
            proto::gateway_protocol::gateway_server::GatewayServer::new(gateway)
                .max_decoding_message_size(settings.limits.message_bytes)
                .max_encoding_message_size(settings.limits.message_bytes)
                // Zeebe's clients may compress requests (the Camunda 8 SDK always does); an
                // answer is compressed only for a client that says it accepts gzip.
                .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
                .send_compressed(tonic::codec::CompressionEncoding::Gzip),
        )
        .add_service(proto::health::health_server::HealthServer::new(
            service::HealthService,
        ));
    let mut stop_signal = stop.clone();
    let shutdown = async move {
        let _ = stop_signal.wait_for(|stopped| *stopped).await;
    };
    let mut stop_grace = stop;
    let grace = async move {
        let _ = stop_grace.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        result = router.serve_with_incoming_shutdown(incoming, shutdown) => {
            result.map_err(|error| anyhow::anyhow!("serving gRPC: {error}"))
        }
        () = grace => Ok(()),
    }
}

/// Answers a request message above `network.maxMessageSize` with
/// `RESOURCE_EXHAUSTED`, as Zeebe's gateway does, rather than tonic's `OUT_OF_RANGE`: tonic
/// refuses such a message before any handler runs, in a trailers-only response, and the
/// gateway's handlers never answer `OUT_OF_RANGE` themselves.
#[derive(Debug, Clone)]
struct OversizeAsExhausted<S>(S);

/// `grpc-status` of `OUT_OF_RANGE` and of `RESOURCE_EXHAUSTED`.
const GRPC_STATUS_OUT_OF_RANGE: &str = "11";
const GRPC_STATUS_RESOURCE_EXHAUSTED: &str = "8";

impl<S, Request, Body> tower::Service<Request> for OversizeAsExhausted<S>
where
    S: tower::Service<Request, Response = tonic::codegen::http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            if headers
                .get("grpc-status")
                .is_some_and(|status| status == GRPC_STATUS_OUT_OF_RANGE)
            {
                headers.insert(
                    "grpc-status",
                    tonic::codegen::http::HeaderValue::from_static(GRPC_STATUS_RESOURCE_EXHAUSTED),
                );
            }
            Ok(response)
        })
    }
}
