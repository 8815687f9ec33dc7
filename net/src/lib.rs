//! `sluice-net`: the broker-to-broker transport and cluster membership.
//!
//! What is here today:
//! - [`swim`]: SWIM gossip membership as a sans-IO core ([`swim::Swim`]). It reads no clock and
//!   does no I/O: the driver feeds it messages and ticks with `now_ms`, and drains the messages
//!   to send, the membership events and the next deadline. See the module docs for the loop.
//! - [`frame`]: the framing of a broker-to-broker byte stream: a 16-byte checked header (magic,
//!   version, kind, body length, CRC32C of the body) and the body. [`encode_frame`] writes one;
//!   [`FrameDecoder`] takes bytes in chunks of any size and yields checked [`Frame`]s.
//! - [`wire`]: the rkyv encoding of what brokers send each other inside frames: batches of Raft
//!   messages of any partitions ([`encode_raft_batch`] / [`decode_raft_batch`]) and gossip
//!   messages ([`encode_swim_message`] / [`decode_swim_message`]). Decoding validates the
//!   archive and the wire bounds, so bytes from the network give a typed error, never a panic.
//! - [`quic`]: the broker-to-broker transport: one QUIC endpoint per broker on one UDP socket
//!   (quinn-proto driven by a task on the glommio executor), mutual TLS against the cluster CA,
//!   frames on one unidirectional stream per kind and direction. [`Transport::send`] queues a
//!   frame for a peer address and never blocks; [`Transport::recv`] yields the next received
//!   frame. See the module docs for the loop and the delivery rules.
//! - [`tls`]: the TLS identity of a broker ([`TlsIdentity`]), the node id its certificate names
//!   ([`certificate_node_id`], [`TlsIdentity::check_node_id`]), the rustls configurations, and
//!   development certificates ([`generate_dev_certs`]).
//! - [`Error`] / [`Result`]: the crate's one error type.
//!
//! The receive path of a connection:
//!
//! ```text
//! decoder.push(&bytes);
//! while let Some(frame) = decoder.next_frame()? {          // Err: close the connection
//!     match frame.kind {
//!         FrameKind::RaftBatch => hand decode_raft_batch(&frame)? to each partition's Raft,
//!         FrameKind::Swim => swim.handle_message(&from, decode_swim_message(&frame)?, now_ms),
//!     }
//! }
//! ```
//!
//! The glommio driver that pumps [`swim::Swim`] over the transport lives in the broker
//! (`sluice-broker`'s `node` module), next to the routing of Raft batches to partitions.

mod error;
pub mod frame;
pub mod quic;
pub mod swim;
pub mod tls;
pub mod wire;

pub use error::{Error, Result};
pub use frame::{FRAME_BODY_BYTES_MAX, Frame, FrameDecoder, FrameKind, encode_frame};
pub use quic::{Incoming, Transport, TransportConfig, TransportStats};
pub use tls::{DevCerts, TlsIdentity, certificate_node_id, generate_dev_certs};
pub use wire::{decode_raft_batch, decode_swim_message, encode_raft_batch, encode_swim_message};
