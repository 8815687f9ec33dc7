//! Helpers shared by the QUIC transport tests: an executor with bounded waits, transports on
//! loopback with development certificates, and frame exchanges checked end to end.

#![allow(dead_code, reason = "each test file uses its own subset")]

pub mod raw_client;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use futures_lite::future;
use glommio::LocalExecutorBuilder;
use glommio::timer::{Timer, sleep};
use sluice_net::quic::TransportStats;
use sluice_net::{
    Frame, FrameKind, Incoming, TlsIdentity, Transport, TransportConfig, generate_dev_certs,
};

/// Longest any single wait in these tests may take before the test fails.
pub const WAIT_MS_MAX: u64 = 15_000;

/// `io_memory` per executor: small, the locked-memory limit is per process.
pub const IO_MEMORY_BYTES: usize = 1 << 20;

pub fn run<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    LocalExecutorBuilder::default()
        .io_memory(IO_MEMORY_BYTES)
        .make()
        .expect("glommio executor")
        .run(test());
}

/// `work`, or a panic naming `what` if it takes longer than `ms`.
pub async fn within<T>(ms: u64, what: &str, work: impl Future<Output = T>) -> T {
    future::or(work, async {
        Timer::new(Duration::from_millis(ms)).await;
        panic!("timed out after {ms} ms waiting for {what}");
    })
    .await
}

/// The next frame within `ms`, or `None`.
pub async fn recv_within(transport: &Transport, ms: u64) -> Option<Incoming> {
    future::or(async { Some(transport.recv().await) }, async {
        Timer::new(Duration::from_millis(ms)).await;
        None
    })
    .await
}

/// Waits until `check` holds on the stats.
pub async fn stats_until(
    transport: &Transport,
    what: &str,
    check: impl Fn(&TransportStats) -> bool,
) {
    within(WAIT_MS_MAX, what, async {
        while !check(&transport.stats()) {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn bind(identity: TlsIdentity) -> Transport {
    bind_at(loopback(), identity).expect("bind transport")
}

pub fn bind_at(addr: SocketAddr, identity: TlsIdentity) -> sluice_net::Result<Transport> {
    Transport::bind(TransportConfig::new(addr, identity))
}

pub fn cluster(dir: &Path, nodes: u32) -> Vec<TlsIdentity> {
    let certs = generate_dev_certs(dir, nodes).expect("dev certs");
    (0..nodes)
        .map(|node| certs.identity(node).expect("load identity"))
        .collect()
}

/// A body whose bytes depend on `seed`, so a mixed-up frame shows.
pub fn body(seed: u32, bytes: usize) -> Vec<u8> {
    (0..bytes)
        .map(|i| {
            let mixed = (i as u64)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(u64::from(seed));
            mixed.to_le_bytes()[3]
        })
        .collect()
}

/// Sends `frames` from `from` to `to`, then checks `to` receives exactly them in order per kind.
pub async fn exchange(from: &Transport, to: &Transport, frames: &[Frame]) {
    for frame in frames {
        from.send(to.local_addr(), frame.kind, &frame.body)
            .expect("frame within bounds");
    }
    let mut received = Vec::new();
    within(WAIT_MS_MAX, "the frames", async {
        while received.len() < frames.len() {
            let incoming = to.recv().await;
            assert_eq!(incoming.from, from.local_addr(), "sender address");
            assert_eq!(
                incoming.peer_node_id,
                from.local_node_id(),
                "sender node id"
            );
            received.push(incoming.frame);
        }
    })
    .await;
    for kind in FrameKind::ALL {
        let sent: Vec<&Frame> = frames.iter().filter(|frame| frame.kind == kind).collect();
        let got: Vec<&Frame> = received.iter().filter(|frame| frame.kind == kind).collect();
        assert!(got == sent, "{kind:?} frames differ or came out of order");
    }
}

pub fn frame(kind: FrameKind, body: Vec<u8>) -> Frame {
    Frame { kind, body }
}
