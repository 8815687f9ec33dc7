//! `sluice-net`: the broker-to-broker transport and cluster membership.
//!
//! Not implemented yet. This crate will hold QUIC between brokers (quinn-proto driven on a
//! glommio UDP loop, mutual TLS), the framing of rkyv messages, and SWIM gossip membership as a
//! sans-IO core plus a thin driver. Until then it exports nothing, so that nothing can depend on
//! a stand-in.
