//! `sluice-net`: the broker-to-broker transport and cluster membership.
//!
//! What is here today:
//! - [`swim`]: SWIM gossip membership as a sans-IO core ([`swim::Swim`]). It reads no clock and
//!   does no I/O: the driver feeds it messages and ticks with `now_ms`, and drains the messages
//!   to send, the membership events and the next deadline. See the module docs for the loop.
//! - [`Error`] / [`Result`]: the crate's one error type.
//!
//! Not built yet: QUIC between brokers (quinn-proto driven on a glommio UDP loop, mutual TLS),
//! the rkyv framing of [`swim::Message`] and of the other broker-to-broker messages, and the
//! glommio driver that pumps [`swim::Swim`] against a socket. Until the transport exists nothing
//! here sends a byte: a broker cannot form a cluster with this crate alone.

mod error;
pub mod swim;

pub use error::{Error, Result};
