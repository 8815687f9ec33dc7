//! The transport's state without I/O: the quinn-proto endpoint and connections, the per-peer
//! send queues, the received-frames inbox and the counters.
//!
//! The driver ([`super::driver`]) feeds it datagrams and the clock and sends what it hands out;
//! [`super::Transport`] queues frames into it and pops received ones. Everything here runs
//! synchronously under one `RefCell` borrow, which is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::task::Waker;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, Dir, Event, ReadError, StreamEvent, StreamId,
    VarInt, WriteError,
};

use rustls_pki_types::CertificateDer;

use super::{Incoming, TransportStats};
use crate::frame::{FRAME_HEADER_BYTES, FrameDecoder, FrameKind};
use crate::tls::{PeerRefusals, SERVER_NAME, certificate_node_id};

/// Most connections other brokers opened to this one (handshaking, up, or draining); beyond it
/// incoming attempts are refused. A cluster needs one or two per peer.
pub const INCOMING_CONNECTIONS_MAX: usize = 512;

/// Most connections this broker dials (handshaking, up, or draining); beyond it sends to new
/// addresses are dropped. A budget of its own, so no flood of incoming attempts keeps this
/// broker from reaching its peers.
pub const OUTGOING_CONNECTIONS_MAX: usize = 512;

/// Most incoming connections still in their handshake. An attempt holds state from its
/// validated Initial until the handshake completes or times out (the idle timeout).
pub const INCOMING_HANDSHAKES_MAX: usize = 256;

/// Most incoming connections from one source (an IPv4 address, or an IPv6 /64 network, where
/// one host holds the whole prefix). Several brokers may share an address (a loopback cluster,
/// NAT) and a restarted peer's old connection lingers until it idles out, hence the room.
pub const CONNECTIONS_PER_SOURCE_MAX: usize = 32;

/// Most incoming handshakes in progress from one source (as in [`CONNECTIONS_PER_SOURCE_MAX`]):
/// a peer completes its handshake within a round trip or two, so only a source that starts
/// handshakes it does not finish reaches this.
pub const HANDSHAKES_PER_SOURCE_MAX: usize = 8;

const _: () = assert!(HANDSHAKES_PER_SOURCE_MAX <= CONNECTIONS_PER_SOURCE_MAX);
const _: () = assert!(CONNECTIONS_PER_SOURCE_MAX <= INCOMING_CONNECTIONS_MAX);
const _: () = assert!(INCOMING_HANDSHAKES_MAX <= INCOMING_CONNECTIONS_MAX);

/// Most frames waiting in the inbox for [`super::Transport::recv`]. When it (or
/// [`RECEIVED_FRAME_BYTES_MAX`]) is reached the driver stops reading streams, so QUIC flow
/// control pushes back on the senders; nothing received is dropped. Reading resumes when the
/// inbox is half empty. One stream chunk may overshoot the bound by the frames it completes.
pub const RECEIVED_FRAMES_MAX: usize = 4096;

/// Most frame bytes (headers and bodies) waiting in the inbox; see [`RECEIVED_FRAMES_MAX`].
pub const RECEIVED_FRAME_BYTES_MAX: usize = 64 << 20;

/// Most datagrams the endpoint itself wants sent (refusals, stateless resets, version
/// negotiation) that may wait for the socket; more are dropped, as the network might.
const OUTBOX_DATAGRAMS_MAX: usize = 256;

/// Application error code on a receive stream stopped because it carried a malformed frame.
const STREAM_ERROR_MALFORMED: u32 = 1;

/// Application error code of connections closed by [`super::Transport::close`].
const CLOSE_ERROR_SHUTDOWN: u32 = 0;

/// Application error code of a connection closed because the peer's node id could not be read
/// after the handshake (the verifiers make that unreachable; this is the belt to their braces).
const CLOSE_ERROR_PEER_IDENTITY: u32 = 2;

/// Send lanes per connection: one stream per group of [`FrameKind`]s, and one for the raw-bytes
/// test hook.
const LANES: usize = 4;
/// The lane of raw bytes written by `send_raw_stream_bytes_for_test`.
pub(super) const LANE_RAW_FOR_TEST: usize = 3;

/// The lane, and so the stream, that carries frames of a kind.
pub(super) fn lane_of(kind: FrameKind) -> usize {
    match kind {
        // Commands travel with Raft traffic: both are partition work, ordered per peer.
        FrameKind::RaftBatch | FrameKind::Command => 0,
        FrameKind::Swim => 1,
        // Clients' requests and their replies do not wait behind a multi-megabyte Raft batch.
        FrameKind::Request | FrameKind::Reply => 2,
    }
}

/// Stream priority of a lane: gossip goes before queued Raft data so failure detection does not
/// wait behind a multi-megabyte batch.
fn lane_priority(lane: usize) -> i32 {
    i32::from(lane == lane_of(FrameKind::Swim))
}

/// Whether a QUIC error code is a TLS alert (RFC 9001 §4.8: 0x0100 to 0x01ff): the handshake
/// was refused, e.g. for a certificate from another CA.
fn is_crypto_error(code: quinn_proto::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// What the driver sends next.
pub(super) enum Outgoing {
    /// A datagram is in the buffer, for this address.
    Datagram(SocketAddr),
    /// A datagram was produced for a blocked address and dropped; ask again.
    Dropped,
    /// Nothing to send until something is received, queued or times out.
    Idle,
}

/// One direction's queue of frames for a stream.
#[derive(Default)]
struct SendLane {
    /// The stream the lane writes to, opened when the first frame can be written.
    stream: Option<StreamId>,
    /// Encoded frames not yet fully accepted by QUIC; the front may be partly written.
    frames: VecDeque<Bytes>,
    /// The encoded length of each frame in `frames`, to tell a partly written front.
    frame_lengths: VecDeque<usize>,
}

impl SendLane {
    fn front_started(&self) -> bool {
        matches!(
            (self.frames.front(), self.frame_lengths.front()),
            (Some(frame), Some(&length)) if frame.len() < length
        )
    }

    /// Removes the front frame; returns its unwritten bytes.
    fn pop_front(&mut self) -> usize {
        self.frame_lengths.pop_front();
        self.frames.pop_front().map_or(0, |frame| frame.len())
    }
}

/// One receive stream opened by the peer.
struct RecvLane {
    decoder: FrameDecoder,
    /// Data or an end may be waiting: set by a Readable event, cleared when a read blocks.
    readable: bool,
}

/// One QUIC connection and what the transport keeps for it.
struct Conn {
    quic: quinn_proto::Connection,
    remote: SocketAddr,
    /// The handshake completed (and, server side, the client's certificate was verified).
    established: bool,
    /// The node id in the peer's certificate, known once established; frames are read only then.
    peer_node_id: Option<u32>,
    /// Lost: kept only until quinn-proto has drained it.
    lost: bool,
    lanes: [SendLane; LANES],
    /// Bytes in `lanes` not yet accepted by QUIC; bounded by `send_queue_bytes_max`.
    queued_bytes: usize,
    recv_lanes: HashMap<StreamId, RecvLane>,
}

impl Conn {
    fn new(quic: quinn_proto::Connection) -> Conn {
        Conn {
            remote: quic.remote_address(),
            quic,
            established: false,
            peer_node_id: None,
            lost: false,
            lanes: Default::default(),
            queued_bytes: 0,
            recv_lanes: HashMap::new(),
        }
    }

    /// Drops every queued frame, counting them; for a lost or closed connection.
    fn drop_queued(&mut self, stats: &mut TransportStats) {
        for lane in &mut self.lanes {
            stats.frames_dropped += lane.frames.len() as u64;
            lane.frames.clear();
            lane.frame_lengths.clear();
        }
        self.queued_bytes = 0;
    }

    /// Hands queued frames to QUIC streams until flow control or congestion blocks.
    fn flush(&mut self, stats: &mut TransportStats) {
        if !self.established || self.lost {
            return;
        }
        for (index, lane) in self.lanes.iter_mut().enumerate() {
            while !lane.frames.is_empty() {
                let stream = if let Some(stream) = lane.stream {
                    stream
                } else {
                    let Some(stream) = self.quic.streams().open(Dir::Uni) else {
                        // Out of stream credit: an Available event brings us back.
                        break;
                    };
                    // A fresh stream cannot be closed yet, so this cannot fail.
                    let _ = self
                        .quic
                        .send_stream(stream)
                        .set_priority(lane_priority(index));
                    lane.stream = Some(stream);
                    stream
                };
                match self
                    .quic
                    .send_stream(stream)
                    .write_chunks(lane.frames.make_contiguous())
                {
                    Ok(written) => {
                        // Fully written frames were taken out of their slots; pop them.
                        for _ in 0..written.chunks {
                            lane.pop_front();
                        }
                        self.queued_bytes -= written.bytes;
                        stats.frames_sent += written.chunks as u64;
                        stats.frame_bytes_sent += written.bytes as u64;
                        if written.chunks == 0 && written.bytes == 0 {
                            break;
                        }
                    }
                    Err(WriteError::Blocked) => break,
                    Err(WriteError::Stopped(_) | WriteError::ClosedStream) => {
                        // The peer stopped the stream (it found a frame malformed). A frame
                        // cut in the middle cannot continue on a new stream: drop it; the
                        // rest starts cleanly on the next stream.
                        lane.stream = None;
                        if lane.front_started() {
                            self.queued_bytes -= lane.pop_front();
                            stats.frames_dropped += 1;
                        }
                    }
                }
            }
        }
    }

    /// Reads readable streams into the inbox until they block or the inbox is full; nothing
    /// before the peer's node id is known.
    fn read(&mut self, inbox: &mut Inbox, stats: &mut TransportStats) {
        let Some(peer_node_id) = self.peer_node_id else {
            return;
        };
        let sender = Sender {
            from: self.remote,
            peer_node_id,
        };
        let mut finished = Vec::new();
        for (&id, lane) in &mut self.recv_lanes {
            if !lane.readable {
                continue;
            }
            if inbox.is_full() {
                inbox.read_paused = true;
                return;
            }
            match read_stream(&mut self.quic, id, lane, sender, inbox, stats) {
                StreamRead::Open => {}
                StreamRead::Gone => finished.push(id),
                StreamRead::Malformed => {
                    stats.malformed_streams += 1;
                    // Tell the sender to stop; its next frames go on a new stream.
                    let _ = self
                        .quic
                        .recv_stream(id)
                        .stop(VarInt::from_u32(STREAM_ERROR_MALFORMED));
                    finished.push(id);
                }
            }
        }
        for id in finished {
            self.recv_lanes.remove(&id);
        }
    }
}

/// Who sent what a connection reads.
#[derive(Clone, Copy)]
struct Sender {
    from: SocketAddr,
    peer_node_id: u32,
}

enum StreamRead {
    /// The stream stays open (it blocked, or the inbox filled).
    Open,
    /// It ended cleanly or was reset by the peer.
    Gone,
    /// It carried a malformed frame or ended inside one.
    Malformed,
}

fn read_stream(
    quic: &mut quinn_proto::Connection,
    id: StreamId,
    lane: &mut RecvLane,
    sender: Sender,
    inbox: &mut Inbox,
    stats: &mut TransportStats,
) -> StreamRead {
    let mut stream = quic.recv_stream(id);
    let Ok(mut chunks) = stream.read(true) else {
        return StreamRead::Gone;
    };
    let outcome = loop {
        if inbox.is_full() {
            inbox.read_paused = true;
            break StreamRead::Open;
        }
        match chunks.next(usize::MAX) {
            Ok(Some(chunk)) => {
                lane.decoder.push(&chunk.bytes);
                if drain_frames(&mut lane.decoder, sender, inbox, stats).is_err() {
                    break StreamRead::Malformed;
                }
            }
            Ok(None) => {
                break if lane.decoder.end_of_stream().is_ok() {
                    StreamRead::Gone
                } else {
                    StreamRead::Malformed
                };
            }
            Err(ReadError::Blocked) => {
                lane.readable = false;
                break StreamRead::Open;
            }
            // Whatever was buffered of a reset stream is gone; no frame of it was complete.
            Err(ReadError::Reset(_)) => break StreamRead::Gone,
        }
    };
    // Flow control credit goes out with the next transmit pass.
    let _ = chunks.finalize();
    outcome
}

fn drain_frames(
    decoder: &mut FrameDecoder,
    sender: Sender,
    inbox: &mut Inbox,
    stats: &mut TransportStats,
) -> crate::Result<()> {
    while let Some(frame) = decoder.next_frame()? {
        let frame_bytes = FRAME_HEADER_BYTES + frame.body.len();
        stats.frames_received += 1;
        stats.frame_bytes_received += frame_bytes as u64;
        inbox.frame_bytes += frame_bytes;
        inbox.frames.push_back(Incoming {
            from: sender.from,
            peer_node_id: sender.peer_node_id,
            frame,
        });
    }
    Ok(())
}

/// Received frames waiting for [`super::Transport::recv`].
#[derive(Default)]
struct Inbox {
    frames: VecDeque<Incoming>,
    /// Encoded bytes of `frames`.
    frame_bytes: usize,
    /// Reading stopped because the inbox was full; popping resumes it.
    read_paused: bool,
}

impl Inbox {
    fn is_full(&self) -> bool {
        self.frames.len() >= RECEIVED_FRAMES_MAX || self.frame_bytes >= RECEIVED_FRAME_BYTES_MAX
    }

    /// Reading resumes only once half the room is back, so a consumer at the bound does not
    /// wake the driver for every frame.
    fn is_half_empty(&self) -> bool {
        self.frames.len() <= RECEIVED_FRAMES_MAX / 2
            && self.frame_bytes <= RECEIVED_FRAME_BYTES_MAX / 2
    }
}

/// Where the transport is between bind and the driver's exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Lifecycle {
    Running,
    /// `close` was called (or every handle dropped); the driver has not acted on it yet.
    CloseRequested,
    /// Connections were closed; the driver exits once their close packets are out.
    Closing,
    /// The driver has exited and released the socket.
    Exited,
}

/// The whole transport state, shared by the handle and the driver task.
pub(super) struct State {
    endpoint: quinn_proto::Endpoint,
    client_config: quinn_proto::ClientConfig,
    send_queue_bytes_max: usize,
    conns: BTreeMap<ConnectionHandle, Conn>,
    /// The connection `send` uses for each address: the first one made or accepted.
    by_addr: HashMap<SocketAddr, ConnectionHandle>,
    blocked: HashSet<SocketAddr>,
    inbox: Inbox,
    /// Endpoint-made datagrams waiting for the socket, bounded by [`OUTBOX_DATAGRAMS_MAX`].
    outbox: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Where the round-robin transmit pass resumes.
    transmit_cursor: ConnectionHandle,
    /// Scratch buffer for datagrams the endpoint writes.
    scratch: Vec<u8>,
    stats: TransportStats,
    /// Peers the certificate verifiers refused; read into the stats.
    peer_refusals: Arc<PeerRefusals>,
    lifecycle: Lifecycle,
    /// Set to make the driver run a pass; its waker is woken at the same time.
    driver_wake: bool,
    driver_waker: Option<Waker>,
    recv_waker: Option<Waker>,
    closed_waker: Option<Waker>,
}

impl State {
    pub(super) fn new(
        endpoint: quinn_proto::Endpoint,
        client_config: quinn_proto::ClientConfig,
        send_queue_bytes_max: usize,
        peer_refusals: Arc<PeerRefusals>,
    ) -> State {
        State {
            endpoint,
            client_config,
            send_queue_bytes_max,
            conns: BTreeMap::new(),
            by_addr: HashMap::new(),
            blocked: HashSet::new(),
            inbox: Inbox::default(),
            outbox: VecDeque::new(),
            transmit_cursor: ConnectionHandle(0),
            scratch: Vec::new(),
            stats: TransportStats::default(),
            peer_refusals,
            lifecycle: Lifecycle::Running,
            driver_wake: false,
            driver_waker: None,
            recv_waker: None,
            closed_waker: None,
        }
    }

    pub(super) fn stats(&self) -> TransportStats {
        let (without_node_id, own_node_id) = self.peer_refusals.counts();
        let incoming_handshakes_open = self
            .conns
            .values()
            .filter(|conn| conn.quic.side().is_server() && !conn.established && !conn.lost)
            .count();
        TransportStats {
            incoming_handshakes_open: incoming_handshakes_open as u64,
            peers_refused_without_node_id: self.stats.peers_refused_without_node_id
                + without_node_id,
            peers_refused_own_node_id: own_node_id,
            ..self.stats
        }
    }

    fn wake_driver(&mut self) {
        self.driver_wake = true;
        if let Some(waker) = self.driver_waker.take() {
            waker.wake();
        }
    }

    /// Consumes a pending wake-up, or registers `waker` for the next one.
    pub(super) fn take_driver_wake(&mut self, waker: &Waker) -> bool {
        if std::mem::take(&mut self.driver_wake) {
            return true;
        }
        match &self.driver_waker {
            Some(current) if current.will_wake(waker) => {}
            _ => self.driver_waker = Some(waker.clone()),
        }
        false
    }

    pub(super) fn set_blocked(&mut self, peers: Vec<SocketAddr>) {
        self.blocked = peers.into_iter().collect();
        // Unblocked peers may have data waiting.
        self.wake_driver();
    }

    /// Queues one encoded frame (or raw bytes on the test lane) for `to`.
    pub(super) fn queue(&mut self, now: Instant, to: SocketAddr, lane: usize, bytes: Bytes) {
        if self.lifecycle != Lifecycle::Running {
            self.stats.frames_dropped += 1;
            return;
        }
        let Some(handle) = self.connection_to(now, to) else {
            self.stats.frames_dropped += 1;
            return;
        };
        let Some(conn) = self.conns.get_mut(&handle) else {
            self.stats.frames_dropped += 1;
            return;
        };
        if conn.queued_bytes + bytes.len() > self.send_queue_bytes_max {
            self.stats.frames_dropped += 1;
            return;
        }
        conn.queued_bytes += bytes.len();
        let lane = &mut conn.lanes[lane];
        lane.frame_lengths.push_back(bytes.len());
        lane.frames.push_back(bytes);
        // Straight into the stream when there is room, so the driver only has to transmit.
        conn.flush(&mut self.stats);
        self.wake_driver();
    }

    /// The connection to use for `to`, connecting if there is none.
    fn connection_to(&mut self, now: Instant, to: SocketAddr) -> Option<ConnectionHandle> {
        if let Some(&handle) = self.by_addr.get(&to) {
            return Some(handle);
        }
        let outgoing = self
            .conns
            .values()
            .filter(|conn| conn.quic.side().is_client())
            .count();
        if outgoing >= OUTGOING_CONNECTIONS_MAX {
            return None;
        }
        // Fails only for an address that cannot be dialled (port 0, unspecified IP).
        let (handle, quic) = self
            .endpoint
            .connect(now, self.client_config.clone(), to, SERVER_NAME)
            .ok()?;
        self.conns.insert(handle, Conn::new(quic));
        self.by_addr.insert(to, handle);
        Some(handle)
    }

    /// The next received frame; resumes reading when it makes room in a full inbox.
    pub(super) fn pop_incoming(&mut self, waker: &Waker) -> Option<Incoming> {
        let Some(incoming) = self.inbox.frames.pop_front() else {
            self.recv_waker = Some(waker.clone());
            return None;
        };
        self.inbox.frame_bytes -= FRAME_HEADER_BYTES + incoming.frame.body.len();
        if self.inbox.read_paused && self.inbox.is_half_empty() {
            self.inbox.read_paused = false;
            self.wake_driver();
        }
        Some(incoming)
    }

    pub(super) fn request_close(&mut self) {
        if self.lifecycle == Lifecycle::Running {
            self.lifecycle = Lifecycle::CloseRequested;
        }
        self.wake_driver();
    }

    /// Whether connections were closed and the driver may exit once nothing is left to send.
    pub(super) fn is_closing(&self) -> bool {
        self.lifecycle == Lifecycle::Closing
    }

    pub(super) fn set_driver_exited(&mut self) {
        self.lifecycle = Lifecycle::Exited;
        if let Some(waker) = self.closed_waker.take() {
            waker.wake();
        }
    }

    pub(super) fn poll_driver_exited(&mut self, waker: &Waker) -> bool {
        let exited = self.lifecycle == Lifecycle::Exited;
        if !exited {
            self.closed_waker = Some(waker.clone());
        }
        exited
    }

    /// Feeds one received datagram to the endpoint.
    pub(super) fn handle_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.blocked.contains(&from) {
            self.stats.datagrams_blocked += 1;
            return;
        }
        self.stats.datagrams_received += 1;
        self.scratch.clear();
        let event = self.endpoint.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(data),
            &mut self.scratch,
        );
        match event {
            None => {}
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = self.conns.get_mut(&handle) {
                    conn.quic.handle_event(event);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(now, incoming),
            Some(DatagramEvent::Response(transmit)) => self.push_outbox(&transmit),
        }
    }

    /// Decides on a connection attempt: a Retry for an address not yet validated (no state
    /// kept), a refusal beyond a limit, else a new connection.
    fn accept(&mut self, now: Instant, incoming: quinn_proto::Incoming) {
        self.scratch.clear();
        if self.lifecycle != Lifecycle::Running {
            self.refuse(incoming, Refusal::AtCapacity);
            return;
        }
        if !incoming.remote_address_validated() {
            // A Retry is smaller than the Initial that asked for it, and only a peer that
            // receives at its address can answer it, so a spoofed flood costs no state.
            match self.endpoint.retry(incoming, &mut self.scratch) {
                Ok(transmit) => {
                    self.stats.retries_sent += 1;
                    self.push_outbox(&transmit);
                }
                // Unreachable (an unvalidated attempt may always be retried): drop it quietly.
                Err(error) => self.endpoint.ignore(error.into_incoming()),
            }
            return;
        }
        let load = self.incoming_load(source_of(incoming.remote_address().ip()));
        if load.from_source >= CONNECTIONS_PER_SOURCE_MAX
            || load.handshakes_from_source >= HANDSHAKES_PER_SOURCE_MAX
        {
            self.refuse(incoming, Refusal::PerSource);
            return;
        }
        if load.all >= INCOMING_CONNECTIONS_MAX || load.handshakes >= INCOMING_HANDSHAKES_MAX {
            self.refuse(incoming, Refusal::AtCapacity);
            return;
        }
        match self.endpoint.accept(incoming, now, &mut self.scratch, None) {
            Ok((handle, quic)) => {
                self.conns.insert(handle, Conn::new(quic));
            }
            Err(error) => {
                self.stats.connections_refused += 1;
                if let Some(transmit) = error.response {
                    self.push_outbox(&transmit);
                }
            }
        }
    }

    fn refuse(&mut self, incoming: quinn_proto::Incoming, why: Refusal) {
        self.stats.connections_refused += 1;
        match why {
            Refusal::PerSource => self.stats.connections_refused_per_source += 1,
            Refusal::AtCapacity => self.stats.connections_refused_at_capacity += 1,
        }
        self.scratch.clear();
        let transmit = self.endpoint.refuse(incoming, &mut self.scratch);
        self.push_outbox(&transmit);
    }

    /// The incoming connections now, in all and from `source`.
    fn incoming_load(&self, source: IpAddr) -> IncomingLoad {
        let mut load = IncomingLoad::default();
        for conn in self.conns.values() {
            if !conn.quic.side().is_server() {
                continue;
            }
            let handshaking = !conn.established && !conn.lost;
            let same_source = source_of(conn.remote.ip()) == source;
            load.all += 1;
            load.handshakes += usize::from(handshaking);
            load.from_source += usize::from(same_source);
            load.handshakes_from_source += usize::from(same_source && handshaking);
        }
        load
    }

    /// Queues the datagram the endpoint wrote into `scratch`.
    fn push_outbox(&mut self, transmit: &quinn_proto::Transmit) {
        if self.outbox.len() >= OUTBOX_DATAGRAMS_MAX {
            return;
        }
        let datagram = self.scratch[..transmit.size].to_vec();
        self.outbox.push_back((transmit.destination, datagram));
    }

    /// Runs connection timers that are due.
    pub(super) fn handle_timeouts(&mut self, now: Instant) {
        for conn in self.conns.values_mut() {
            if conn.quic.poll_timeout().is_some_and(|due| due <= now) {
                conn.quic.handle_timeout(now);
            }
        }
    }

    /// The earliest connection timer.
    pub(super) fn next_timeout(&mut self) -> Option<Instant> {
        self.conns
            .values_mut()
            .filter_map(|conn| conn.quic.poll_timeout())
            .min()
    }

    /// Processes what datagrams and timers produced: endpoint and connection events, stream
    /// reads and writes, lost and drained connections, and a requested close.
    pub(super) fn process(&mut self, now: Instant) {
        if self.lifecycle == Lifecycle::CloseRequested {
            self.close_all(now);
        }
        let mut drained = Vec::new();
        for (&handle, conn) in &mut self.conns {
            while let Some(event) = conn.quic.poll_endpoint_events() {
                if let Some(event) = self.endpoint.handle_event(handle, event) {
                    conn.quic.handle_event(event);
                }
            }
            while let Some(event) = conn.quic.poll() {
                handle_event(
                    now,
                    handle,
                    conn,
                    event,
                    &mut self.by_addr,
                    &mut self.inbox,
                    &mut self.stats,
                );
            }
            if !conn.lost {
                conn.flush(&mut self.stats);
                conn.read(&mut self.inbox, &mut self.stats);
            }
            if conn.quic.is_drained() {
                drained.push(handle);
            }
        }
        for handle in drained {
            if let Some(conn) = self.conns.remove(&handle)
                && self.by_addr.get(&conn.remote) == Some(&handle)
            {
                self.by_addr.remove(&conn.remote);
            }
        }
        if !self.inbox.frames.is_empty()
            && let Some(waker) = self.recv_waker.take()
        {
            waker.wake();
        }
    }

    fn close_all(&mut self, now: Instant) {
        self.lifecycle = Lifecycle::Closing;
        for conn in self.conns.values_mut() {
            conn.drop_queued(&mut self.stats);
            if !conn.lost {
                // quinn-proto reports no loss event for a local close: account for it here.
                conn.lost = true;
                if conn.established {
                    self.stats.connections_open -= 1;
                }
                conn.quic.close(
                    now,
                    VarInt::from_u32(CLOSE_ERROR_SHUTDOWN),
                    Bytes::from_static(b"broker shutting down"),
                );
            }
        }
        self.by_addr.clear();
    }

    /// Writes the next datagram to send into `buf`: endpoint datagrams first, then the
    /// connections in turn, one datagram each, so one busy peer does not starve the others.
    pub(super) fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Outgoing {
        buf.clear();
        let destination = if let Some((destination, datagram)) = self.outbox.pop_front() {
            buf.extend_from_slice(&datagram);
            destination
        } else {
            let cursor = self.transmit_cursor;
            let mut found = None;
            for (&handle, conn) in self
                .conns
                .range_mut((Bound::Excluded(cursor), Bound::Unbounded))
            {
                if let Some(transmit) = conn.quic.poll_transmit(now, 1, buf) {
                    found = Some((handle, transmit));
                    break;
                }
            }
            if found.is_none() {
                for (&handle, conn) in self.conns.range_mut(..=cursor) {
                    if let Some(transmit) = conn.quic.poll_transmit(now, 1, buf) {
                        found = Some((handle, transmit));
                        break;
                    }
                }
            }
            let Some((handle, transmit)) = found else {
                return Outgoing::Idle;
            };
            buf.truncate(transmit.size);
            self.transmit_cursor = handle;
            transmit.destination
        };
        if self.blocked.contains(&destination) {
            self.stats.datagrams_blocked += 1;
            return Outgoing::Dropped;
        }
        self.stats.datagrams_sent += 1;
        Outgoing::Datagram(destination)
    }

    pub(super) fn count_socket_error(&mut self) {
        self.stats.socket_errors += 1;
    }
}

/// Applies one connection event.
fn handle_event(
    now: Instant,
    handle: ConnectionHandle,
    conn: &mut Conn,
    event: Event,
    by_addr: &mut HashMap<SocketAddr, ConnectionHandle>,
    inbox: &mut Inbox,
    stats: &mut TransportStats,
) {
    match event {
        Event::Connected => {
            let Some(node_id) = peer_node_id(&conn.quic) else {
                // The verifiers refuse such a peer in the handshake; should one slip through,
                // its frames are never read.
                conn.lost = true;
                stats.connections_refused += 1;
                stats.peers_refused_without_node_id += 1;
                conn.drop_queued(stats);
                conn.quic.close(
                    now,
                    VarInt::from_u32(CLOSE_ERROR_PEER_IDENTITY),
                    Bytes::from_static(b"certificate names no node"),
                );
                return;
            };
            conn.peer_node_id = Some(node_id);
            conn.established = true;
            stats.connections_established += 1;
            stats.connections_open += 1;
            if conn.quic.side().is_server() {
                // A peer that just completed a handshake with us is alive at that address:
                // send over this connection from now on. An older one may lead to a previous
                // life of the peer (killed without a close) and would swallow frames until its
                // idle timeout. Both connections of a simultaneous connect stay open and usable.
                by_addr.insert(conn.remote, handle);
            } else {
                by_addr.entry(conn.remote).or_insert(handle);
            }
        }
        Event::ConnectionLost { reason } => {
            conn.lost = true;
            if by_addr.get(&conn.remote) == Some(&handle) {
                by_addr.remove(&conn.remote);
            }
            conn.drop_queued(stats);
            // Frames that arrived complete before the loss (say, just before the peer closed)
            // are still delivered.
            conn.read(inbox, stats);
            conn.recv_lanes.clear();
            if conn.established {
                stats.connections_open -= 1;
            }
            count_loss(conn.established, &reason, stats);
        }
        Event::Stream(StreamEvent::Opened { dir: Dir::Uni }) => {
            while let Some(id) = conn.quic.streams().accept(Dir::Uni) {
                conn.recv_lanes.insert(
                    id,
                    RecvLane {
                        decoder: FrameDecoder::new(),
                        readable: true,
                    },
                );
            }
        }
        Event::Stream(StreamEvent::Readable { id }) => {
            if let Some(lane) = conn.recv_lanes.get_mut(&id) {
                lane.readable = true;
            }
        }
        // Writable, Available and Stopped are acted on by the flush that follows; bidirectional
        // streams are not allowed by the transport parameters; datagrams are disabled.
        Event::Stream(_)
        | Event::HandshakeDataReady
        | Event::DatagramReceived
        | Event::DatagramsUnblocked => {}
    }
}

/// The node id in the certificate the peer presented in the handshake.
fn peer_node_id(quic: &quinn_proto::Connection) -> Option<u32> {
    let identity = quic.crypto_session().peer_identity()?;
    let chain = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    certificate_node_id(chain.first()?).ok()
}

/// Where incoming attempts are counted against [`CONNECTIONS_PER_SOURCE_MAX`]: an IPv4 address
/// (IPv4-mapped IPv6 included), or the /64 network of an IPv6 address.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Why an incoming attempt was refused.
#[derive(Clone, Copy)]
enum Refusal {
    /// [`CONNECTIONS_PER_SOURCE_MAX`] or [`HANDSHAKES_PER_SOURCE_MAX`].
    PerSource,
    /// [`INCOMING_CONNECTIONS_MAX`] or [`INCOMING_HANDSHAKES_MAX`], or the transport is closing.
    AtCapacity,
}

/// Incoming connections (handshaking, up or draining), in all and from one source.
#[derive(Default)]
struct IncomingLoad {
    all: usize,
    handshakes: usize,
    from_source: usize,
    handshakes_from_source: usize,
}

fn count_loss(established: bool, reason: &ConnectionError, stats: &mut TransportStats) {
    let refused = match reason {
        // We closed it (close()): not a failure.
        ConnectionError::LocallyClosed => return,
        ConnectionError::TransportError(error) => !established || is_crypto_error(error.code),
        ConnectionError::ConnectionClosed(close) => {
            !established || is_crypto_error(close.error_code)
        }
        ConnectionError::TimedOut if !established => {
            stats.connect_timeouts += 1;
            return;
        }
        ConnectionError::VersionMismatch
        | ConnectionError::ApplicationClosed(_)
        | ConnectionError::Reset
        | ConnectionError::TimedOut
        | ConnectionError::CidsExhausted => !established,
    };
    if refused {
        stats.connections_refused += 1;
    } else {
        stats.connections_lost += 1;
    }
}
