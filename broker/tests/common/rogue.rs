//! A rogue peer for the tests that forge a broker's identity: a QUIC transport with a
//! certificate from the cluster's own CA, on its own glommio thread (the brokers are other
//! processes), that sends the frames it is given and stays up until stopped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_broker::partitioning::NodeId;
use sluice_net::tls::CertificateAuthority;
use sluice_net::{FrameKind, Transport, TransportConfig, TransportStats};

use super::{Cluster, lock};

/// `io_memory` of the peer's executor: small, the locked-memory limit is per process.
const IO_MEMORY_BYTES: usize = 1 << 20;
/// How often the peer refreshes its counters and looks at its stop flag.
const REFRESH: Duration = Duration::from_millis(20);

/// A rogue QUIC peer: a transport on its own glommio thread that sends its frames and stays up
/// until stopped, so the brokers read them all.
pub struct Rogue {
    /// Where its transport is bound.
    pub address: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The transport's counters, refreshed while it runs; its error if it could not run.
    state: Arc<Mutex<Result<TransportStats, String>>>,
    frames: usize,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
}

impl Rogue {
    /// Starts a peer at `address` with a certificate the cluster's CA issues for
    /// `certificate_node`, sending `frames` (destination, kind, body) at once.
    #[must_use]
    pub fn start(
        cluster: &Cluster,
        certificate_node: NodeId,
        address: SocketAddr,
        frames: Vec<(SocketAddr, FrameKind, Vec<u8>)>,
    ) -> Rogue {
        let certs = cluster.dir.join("certs");
        let read = |name: &str| {
            std::fs::read_to_string(certs.join(name))
                .unwrap_or_else(|error| panic!("reading the cluster's {name}: {error}"))
        };
        let ca = CertificateAuthority::from_pem(&read("ca.pem"), &read("ca-key.pem"))
            .expect("the cluster's CA");
        let identity = ca
            .issue_for_node(certificate_node)
            .expect("a certificate from the cluster's CA");
        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(Ok(TransportStats::default())));
        let count = frames.len();
        let thread = {
            let stop = Arc::clone(&stop);
            let state = Arc::clone(&state);
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .name("rogue")
                .io_memory(IO_MEMORY_BYTES)
                .spawn(move || async move {
                    let transport = match Transport::bind(TransportConfig::new(address, identity)) {
                        Ok(transport) => transport,
                        Err(error) => {
                            *lock(&state) = Err(format!("binding {address}: {error}"));
                            return;
                        }
                    };
                    for (to, kind, body) in &frames {
                        if let Err(error) = transport.send(*to, *kind, body) {
                            *lock(&state) = Err(format!("sending {kind:?} to {to}: {error}"));
                            return;
                        }
                    }
                    while !stop.load(Ordering::Relaxed) {
                        *lock(&state) = Ok(transport.stats());
                        glommio::timer::sleep(REFRESH).await;
                    }
                    transport.close();
                })
                .expect("starting the rogue's executor")
        };
        Rogue {
            address,
            stop,
            state,
            frames: count,
            thread: Some(thread),
        }
    }

    /// What the peer's transport did, for messages.
    #[must_use]
    pub fn describe(&self) -> String {
        match &*lock(&self.state) {
            Ok(stats) => format!(
                "{}: {} of {} frames sent, {} dropped, {} connections established, {} refused",
                self.address,
                stats.frames_sent,
                self.frames,
                stats.frames_dropped,
                stats.connections_established,
                stats.connections_refused
            ),
            Err(error) => format!("{}: {error}", self.address),
        }
    }

    /// Closes the transport and waits for the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the rogue's thread panicked");
        }
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        // Not joined when the test failed: the thread ends at its next look at the flag.
        self.stop.store(true, Ordering::Relaxed);
    }
}
