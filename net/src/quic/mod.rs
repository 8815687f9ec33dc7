//! QUIC between brokers: one endpoint per broker on one UDP socket, mutual TLS, frames on
//! unidirectional streams.
//!
//! The endpoint is server and client at once, so a connection's remote address is always the
//! peer's listen address, whichever side dialled. quinn-proto is driven directly by a task on
//! the current glommio executor (`quic/driver.rs` documents its loop); all types here are
//! `!Send`.
//!
//! How to drive it:
//!
//! ```text
//! // On a glommio executor:
//! let transport = Transport::bind(TransportConfig::new(listen_addr, identity))?;
//! transport.send(peer, FrameKind::RaftBatch, &encode_raft_batch(..)?)?;  // never blocks
//! loop {
//!     let Incoming { from, peer_node_id, frame } = transport.recv().await;  // one task receives
//!     match frame.kind {
//!         // Drop every message whose claimed sender is not `peer_node_id`.
//!         FrameKind::RaftBatch => hand decode_raft_batch(&frame)? to the partitions,
//!         FrameKind::Swim => swim.handle_message(.., decode_swim_message(&frame)?, now_ms),
//!     }
//! }
//! transport.close();              // on shutdown; then `transport.closed().await` to rebind
//! ```
//!
//! Delivery is best effort, like the network under it: `send` connects lazily and queues; a
//! connection that fails or idles out (nothing heard for `idle_timeout_ms`) drops what was
//! queued on it, counted in [`TransportStats::frames_dropped`], and the next `send` reconnects.
//! Raft and SWIM retransmit. While a connection lives, frames to a peer arrive in order per
//! [`FrameKind`]: each kind has its own stream per direction, so gossip never waits behind a
//! large Raft batch (the gossip stream also has send priority).
//!
//! A stream carrying a malformed frame is stopped (error code 1), counted in
//! [`TransportStats::malformed_streams`]; the connection and the other streams go on, and the
//! sender's next frames start on a new stream. Received frames wait in a bounded inbox
//! ([`RECEIVED_FRAMES_MAX`], [`RECEIVED_FRAME_BYTES_MAX`]); when it is full the transport stops
//! reading, so QUIC flow control slows the senders: backpressure, nothing is dropped.
//!
//! Who may connect. Both ends verify the other's certificate against the cluster CA and require
//! it to name exactly one node (`urn:sluice:node:<id>`, see [`crate::tls::node_id`]) other than
//! their own; refusals are counted in [`TransportStats::peers_refused_without_node_id`] and
//! [`TransportStats::peers_refused_own_node_id`]. Each received frame carries the sender's
//! certified node id ([`Incoming::peer_node_id`]), so the broker can drop a Raft or gossip
//! message that claims to come from another node. Before any of that, an incoming attempt from
//! an address not yet validated gets a QUIC Retry and no state ([`TransportStats::retries_sent`]);
//! only the validated attempt that follows allocates a connection, and only within
//! [`CONNECTIONS_PER_SOURCE_MAX`] and [`HANDSHAKES_PER_SOURCE_MAX`] per source and
//! [`INCOMING_CONNECTIONS_MAX`] and [`INCOMING_HANDSHAKES_MAX`] in all. Dialled connections
//! have their own budget, [`OUTGOING_CONNECTIONS_MAX`], so a flood of attempts never keeps this
//! broker from reaching its peers.
//!
//! The socket is not marked don't-fragment: keep `mtu_upper_bound_bytes` within the path MTU
//! (the default 1452 fits Ethernet; raise it on loopback only).

mod driver;
mod state;

use std::cell::RefCell;
use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{IdleTimeout, MtuDiscoveryConfig, VarInt};

pub use state::{
    CONNECTIONS_PER_SOURCE_MAX, HANDSHAKES_PER_SOURCE_MAX, INCOMING_CONNECTIONS_MAX,
    INCOMING_HANDSHAKES_MAX, OUTGOING_CONNECTIONS_MAX, RECEIVED_FRAME_BYTES_MAX,
    RECEIVED_FRAMES_MAX,
};

use crate::frame::{FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES, Frame, FrameKind, encode_frame};
use crate::tls::{self, TlsIdentity};
use crate::{Error, Result};

/// Default [`TransportConfig::idle_timeout_ms`].
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 5_000;
/// Default [`TransportConfig::keep_alive_interval_ms`].
pub const DEFAULT_KEEP_ALIVE_INTERVAL_MS: u64 = 1_000;
/// Default [`TransportConfig::initial_mtu_bytes`]: the QUIC minimum, safe on any path.
pub const DEFAULT_INITIAL_MTU_BYTES: u16 = 1200;
/// Default [`TransportConfig::mtu_upper_bound_bytes`]: fits a 1500-byte Ethernet MTU.
pub const DEFAULT_MTU_UPPER_BOUND_BYTES: u16 = 1452;
/// Default [`TransportConfig::send_queue_bytes_max`].
pub const DEFAULT_SEND_QUEUE_BYTES_MAX: usize = 64 << 20;

/// Longest idle timeout accepted: beyond it a dead peer holds its queue for too long.
pub const IDLE_TIMEOUT_MS_MAX: u64 = 600_000;
/// The smallest UDP payload QUIC allows.
pub const MTU_BYTES_MIN: u16 = 1200;
/// The largest UDP payload (IPv6 jumbo-free maximum).
pub const MTU_BYTES_MAX: u16 = 65_527;

/// How much one stream may have in flight unread by the receiver: sized so a 16 MiB frame
/// streams without stalling on flow control, and 20–40 MB/s of Raft fits in a few round trips.
const STREAM_RECEIVE_WINDOW_BYTES: u32 = 16 << 20;
/// How much all streams of a connection together may have in flight: both kinds at full window.
const CONNECTION_RECEIVE_WINDOW_BYTES: u32 = 2 * STREAM_RECEIVE_WINDOW_BYTES;
/// How much unacknowledged data QUIC buffers per connection on the send side (on top of the
/// transport's own send queue).
const SEND_WINDOW_BYTES: u64 = 2 * STREAM_RECEIVE_WINDOW_BYTES as u64;
/// Unidirectional streams a peer may have open at once: one per kind, plus slack for streams
/// replaced after a malformed frame while the old ones wind down. Each may hold a partial frame
/// of up to `FRAME_BODY_BYTES_MAX` in its decoder, so this also bounds receive memory.
const UNI_STREAMS_MAX: u32 = 8;
/// Kernel socket buffer asked for (the kernel caps it at `net.core.rmem_max`/`wmem_max`); large
/// so bursts of a big transfer are not dropped at the socket.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// How to run a [`Transport`].
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// The UDP address to listen on and send from; peers reach this broker here.
    pub bind: SocketAddr,
    /// The broker's certificate, key and cluster CA.
    pub identity: TlsIdentity,
    /// A connection with nothing heard for this long is dropped (the smaller of both sides'
    /// values applies). 1 to [`IDLE_TIMEOUT_MS_MAX`].
    pub idle_timeout_ms: u64,
    /// Pings are sent after this long without sending, to keep idle connections up. Below
    /// `idle_timeout_ms`.
    pub keep_alive_interval_ms: u64,
    /// The UDP payload size used from the start. [`MTU_BYTES_MIN`] to `mtu_upper_bound_bytes`.
    pub initial_mtu_bytes: u16,
    /// The largest UDP payload MTU discovery tries; also the largest this endpoint accepts.
    /// Up to [`MTU_BYTES_MAX`]; discovery is off when equal to `initial_mtu_bytes`.
    pub mtu_upper_bound_bytes: u16,
    /// Encoded frame bytes queued per peer connection and not yet taken by QUIC; a `send`
    /// beyond it is dropped and counted. At least one largest frame.
    pub send_queue_bytes_max: usize,
}

impl TransportConfig {
    /// The defaults: 5 s idle timeout, 1 s keep-alive, MTU 1200 discovering up to 1452, 64 MiB
    /// send queue per peer.
    #[must_use]
    pub fn new(bind: SocketAddr, identity: TlsIdentity) -> Self {
        TransportConfig {
            bind,
            identity,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            keep_alive_interval_ms: DEFAULT_KEEP_ALIVE_INTERVAL_MS,
            initial_mtu_bytes: DEFAULT_INITIAL_MTU_BYTES,
            mtu_upper_bound_bytes: DEFAULT_MTU_UPPER_BOUND_BYTES,
            send_queue_bytes_max: DEFAULT_SEND_QUEUE_BYTES_MAX,
        }
    }

    fn validate(&self) -> Result<()> {
        let invalid = |field: &'static str, reason: String| {
            Err(Error::InvalidTransportConfig { field, reason })
        };
        if !(1..=IDLE_TIMEOUT_MS_MAX).contains(&self.idle_timeout_ms) {
            return invalid(
                "idle_timeout_ms",
                format!(
                    "is {}, must be 1 to {IDLE_TIMEOUT_MS_MAX}",
                    self.idle_timeout_ms
                ),
            );
        }
        if !(1..self.idle_timeout_ms).contains(&self.keep_alive_interval_ms) {
            return invalid(
                "keep_alive_interval_ms",
                format!(
                    "is {}, must be at least 1 and below idle_timeout_ms ({}) or idle \
                     connections time out",
                    self.keep_alive_interval_ms, self.idle_timeout_ms
                ),
            );
        }
        if !(MTU_BYTES_MIN..=MTU_BYTES_MAX).contains(&self.mtu_upper_bound_bytes) {
            return invalid(
                "mtu_upper_bound_bytes",
                format!(
                    "is {}, must be {MTU_BYTES_MIN} to {MTU_BYTES_MAX}",
                    self.mtu_upper_bound_bytes
                ),
            );
        }
        if !(MTU_BYTES_MIN..=self.mtu_upper_bound_bytes).contains(&self.initial_mtu_bytes) {
            return invalid(
                "initial_mtu_bytes",
                format!(
                    "is {}, must be {MTU_BYTES_MIN} to mtu_upper_bound_bytes ({})",
                    self.initial_mtu_bytes, self.mtu_upper_bound_bytes
                ),
            );
        }
        let frame_bytes_max = FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX as usize;
        if self.send_queue_bytes_max < frame_bytes_max {
            return invalid(
                "send_queue_bytes_max",
                format!(
                    "is {}, must hold at least one largest frame ({frame_bytes_max} bytes)",
                    self.send_queue_bytes_max
                ),
            );
        }
        Ok(())
    }

    fn quic_transport(&self) -> Result<quinn_proto::TransportConfig> {
        let idle_timeout =
            VarInt::from_u64(self.idle_timeout_ms).map_err(|_| Error::InvalidTransportConfig {
                field: "idle_timeout_ms",
                reason: "is too large".to_owned(),
            })?;
        let mut transport = quinn_proto::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(VarInt::from_u32(0))
            .max_concurrent_uni_streams(VarInt::from_u32(UNI_STREAMS_MAX))
            .max_idle_timeout(Some(IdleTimeout::from(idle_timeout)))
            .keep_alive_interval(Some(Duration::from_millis(self.keep_alive_interval_ms)))
            .stream_receive_window(VarInt::from_u32(STREAM_RECEIVE_WINDOW_BYTES))
            .receive_window(VarInt::from_u32(CONNECTION_RECEIVE_WINDOW_BYTES))
            .send_window(SEND_WINDOW_BYTES)
            .initial_mtu(self.initial_mtu_bytes)
            .min_mtu(MTU_BYTES_MIN)
            .datagram_receive_buffer_size(None)
            // One datagram per send_to: glommio's socket has no segmentation offload.
            .enable_segmentation_offload(false);
        let discovery = (self.mtu_upper_bound_bytes > self.initial_mtu_bytes).then(|| {
            let mut discovery = MtuDiscoveryConfig::default();
            discovery.upper_bound(self.mtu_upper_bound_bytes);
            discovery
        });
        transport.mtu_discovery_config(discovery);
        Ok(transport)
    }
}

/// One received frame, the listen address of the broker that sent it and the node id its
/// certificate is issued for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's listen address (the same address `send` takes to reach it).
    pub from: SocketAddr,
    /// The node id in the sender's certificate, verified by the cluster CA in the handshake
    /// (see [`crate::tls::node_id`]). Never this broker's own: such a peer is refused. A
    /// message inside the frame that claims another sender is forged or misrouted: drop it.
    pub peer_node_id: u32,
    /// The checked frame.
    pub frame: Frame,
}

/// Counters of a [`Transport`], from its start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Connections with a completed handshake that are up now.
    pub connections_open: u64,
    /// Handshakes completed.
    pub connections_established: u64,
    /// Incoming connections in their handshake now: validated attempts holding state, within
    /// [`HANDSHAKES_PER_SOURCE_MAX`] per source and [`INCOMING_HANDSHAKES_MAX`] in all.
    pub incoming_handshakes_open: u64,
    /// Handshakes that failed for TLS or protocol reasons on either side (a peer with a
    /// certificate from another CA or none, a certificate naming no node or this broker's own,
    /// another ALPN), and incoming attempts refused at a limit or while closing: the total of
    /// which the `connections_refused_*` and `peers_refused_*` counters are parts.
    pub connections_refused: u64,
    /// Incoming attempts from an address not yet validated, answered with a QUIC Retry and no
    /// connection state; the peer's next attempt proves it receives at its address.
    pub retries_sent: u64,
    /// Validated incoming attempts refused because their source already had
    /// [`CONNECTIONS_PER_SOURCE_MAX`] connections or [`HANDSHAKES_PER_SOURCE_MAX`] handshakes
    /// in progress.
    pub connections_refused_per_source: u64,
    /// Validated incoming attempts refused at [`INCOMING_CONNECTIONS_MAX`] or
    /// [`INCOMING_HANDSHAKES_MAX`], or while closing.
    pub connections_refused_at_capacity: u64,
    /// Handshakes this broker failed because the peer's CA-signed certificate names no node,
    /// several, or a malformed id.
    pub peers_refused_without_node_id: u64,
    /// Handshakes this broker failed because the peer's certificate names this broker's own
    /// node id: two brokers run with one id, a misconfiguration to fix.
    pub peers_refused_own_node_id: u64,
    /// Connection attempts with no answer within the idle timeout (peer down or cut off).
    pub connect_timeouts: u64,
    /// Established connections that failed, idled out or were closed by the peer.
    pub connections_lost: u64,
    /// Frames fully handed to QUIC.
    pub frames_sent: u64,
    /// Encoded frame bytes (headers included) handed to QUIC.
    pub frame_bytes_sent: u64,
    /// Checked frames received.
    pub frames_received: u64,
    /// Encoded bytes (headers included) of the frames received.
    pub frame_bytes_received: u64,
    /// Frames given to `send` that were not handed to QUIC: queue full, connection lost or
    /// closed, stream stopped mid-frame, no connection possible. Frames already handed to QUIC
    /// on a connection that then fails are not counted.
    pub frames_dropped: u64,
    /// Receive streams stopped because they carried a malformed frame.
    pub malformed_streams: u64,
    /// UDP datagrams sent.
    pub datagrams_sent: u64,
    /// UDP datagrams received (and not blocked).
    pub datagrams_received: u64,
    /// Datagrams dropped in or out by [`Transport::set_blocked`].
    pub datagrams_blocked: u64,
    /// Socket sends or receives that failed.
    pub socket_errors: u64,
}

/// What the handle and the driver share.
struct Shared {
    state: RefCell<state::State>,
}

/// Closes the transport when the last [`Transport`] clone is dropped; the driver holds only
/// [`Shared`], so it cannot keep itself alive.
struct Handle {
    shared: Rc<Shared>,
    local_addr: SocketAddr,
    local_node_id: u32,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.state.borrow_mut().request_close();
    }
}

/// The broker-to-broker transport: a cheap-to-clone handle to one QUIC endpoint. See the
/// module docs for how to drive it.
#[derive(Clone)]
pub struct Transport {
    handle: Rc<Handle>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("local_addr", &self.handle.local_addr)
            .field("local_node_id", &self.handle.local_node_id)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Binds the socket and spawns the driver task on the current glommio executor.
    ///
    /// # Errors
    /// [`Error::InvalidTransportConfig`] for a field out of range; [`Error::TlsConfig`] for an
    /// unusable identity; [`Error::NodeIdMissing`] (and the like) when its certificate names no
    /// node, since every peer would refuse it; [`Error::Bind`] when the socket cannot be bound.
    ///
    /// # Panics
    /// Outside a glommio executor.
    pub fn bind(config: TransportConfig) -> Result<Transport> {
        config.validate()?;
        let transport = Arc::new(config.quic_transport()?);
        let local_node_id = config.identity.node_id()?;
        let peer_refusals = Arc::new(tls::PeerRefusals::default());
        let TransportConfig {
            bind,
            identity,
            mtu_upper_bound_bytes,
            send_queue_bytes_max,
            ..
        } = config;

        let server_tls = QuicServerConfig::try_from(tls::server_config_counting(
            &identity,
            Arc::clone(&peer_refusals),
        )?)
        .map_err(|error| Error::TlsConfig {
            reason: format!("not usable for QUIC: {error}"),
        })?;
        let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(server_tls));
        server
            .transport_config(Arc::clone(&transport))
            // A broker is known by its address: a connection never moves to another one.
            .migration(false)
            .max_incoming(INCOMING_HANDSHAKES_MAX);

        let client_tls = QuicClientConfig::try_from(tls::client_config_counting(
            &identity,
            Arc::clone(&peer_refusals),
        )?)
        .map_err(|error| Error::TlsConfig {
            reason: format!("not usable for QUIC: {error}"),
        })?;
        let mut client = quinn_proto::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);

        let mut endpoint_config = quinn_proto::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(mtu_upper_bound_bytes)
            .map_err(|_| Error::InvalidTransportConfig {
                field: "mtu_upper_bound_bytes",
                reason: format!("{mtu_upper_bound_bytes} is not a valid UDP payload size"),
            })?;
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(endpoint_config),
            Some(Arc::new(server)),
            true,
            None,
        );

        let socket = bind_socket(bind)?;
        let local_addr = socket.local_addr().map_err(|error| Error::Bind {
            addr: bind,
            reason: error.to_string(),
        })?;
        let shared = Rc::new(Shared {
            state: RefCell::new(state::State::new(
                endpoint,
                client,
                send_queue_bytes_max,
                peer_refusals,
            )),
        });
        glommio::spawn_local(driver::Driver::new(Rc::clone(&shared), socket).run()).detach();
        Ok(Transport {
            handle: Rc::new(Handle {
                shared,
                local_addr,
                local_node_id,
            }),
        })
    }

    fn state(&self) -> &RefCell<state::State> {
        &self.handle.shared.state
    }

    /// The bound address (with the port chosen when bound to port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// The node id in this broker's certificate; peers see it as [`Incoming::peer_node_id`].
    #[must_use]
    pub fn local_node_id(&self) -> u32 {
        self.handle.local_node_id
    }

    /// Queues one frame for `to`; connects lazily, reusing an existing incoming or outgoing
    /// connection to that address. Never blocks. Delivery is best effort: a frame that cannot
    /// be queued, or was queued on a connection that fails, is dropped and counted in
    /// [`TransportStats::frames_dropped`].
    ///
    /// # Errors
    /// [`Error::FrameTooLarge`] for a body over [`FRAME_BODY_BYTES_MAX`]; nothing is queued.
    pub fn send(&self, to: SocketAddr, kind: FrameKind, body: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + body.len());
        encode_frame(kind, body, &mut frame)?;
        self.state().borrow_mut().queue(
            Instant::now(),
            to,
            state::lane_of(kind),
            Bytes::from(frame),
        );
        Ok(())
    }

    /// Test hook: writes `bytes` as they are, not framed, on a stream of their own to `to`, to
    /// check how a peer takes a corrupt stream.
    #[doc(hidden)]
    pub fn send_raw_stream_bytes_for_test(&self, to: SocketAddr, bytes: &[u8]) {
        self.state().borrow_mut().queue(
            Instant::now(),
            to,
            state::LANE_RAW_FOR_TEST,
            Bytes::copy_from_slice(bytes),
        );
    }

    /// The next frame received from any peer; frames from one peer come in order per kind.
    /// Call it from one task at a time. It stays pending forever after [`Transport::close`].
    pub async fn recv(&self) -> Incoming {
        poll_fn(
            |cx| match self.state().borrow_mut().pop_incoming(cx.waker()) {
                Some(incoming) => Poll::Ready(incoming),
                None => Poll::Pending,
            },
        )
        .await
    }

    /// Fault switch for tests: while set, every datagram to or from these addresses is dropped,
    /// in and out, as if the network were cut. Replaces the previous set; empty clears it.
    pub fn set_blocked(&self, peers: Vec<SocketAddr>) {
        self.state().borrow_mut().set_blocked(peers);
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        self.state().borrow().stats()
    }

    /// Closes all connections (telling peers), drops what is queued and stops the driver.
    /// Returns at once; [`Transport::closed`] waits until the socket is released. Later sends
    /// are dropped and counted.
    pub fn close(&self) {
        self.state().borrow_mut().request_close();
    }

    /// Resolves once the driver has stopped and released the socket, so the address can be
    /// bound again. Only meaningful after [`Transport::close`]. Await it from one task.
    pub async fn closed(&self) {
        poll_fn(|cx| {
            if self.state().borrow_mut().poll_driver_exited(cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// A UDP socket on `addr`, without `SO_REUSEPORT` (which glommio's own `bind` sets): a second
/// broker on the same address must fail rather than share the traffic.
fn bind_socket(addr: SocketAddr) -> Result<glommio::net::UdpSocket> {
    let bind_error = |error: std::io::Error| Error::Bind {
        addr,
        reason: error.to_string(),
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .map_err(bind_error)?;
    // Best effort: the kernel caps both at its configured maximum, and smaller buffers only
    // cost some loss under bursts, which QUIC recovers.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.bind(&addr.into()).map_err(bind_error)?;
    Ok(glommio::net::UdpSocket::from(socket))
}
