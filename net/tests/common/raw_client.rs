//! A bare quinn-proto client on a std UDP socket, pumped by a thread of its own. It opens many
//! connections from one source address and can withhold what the server sends, to drive the
//! transport's address validation, per-source limits and certificate checks the way a
//! well-behaved [`sluice_net::Transport`] never would.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{ClientConfig, DatagramEvent, Endpoint, EndpointConfig, Event};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sluice_net::TlsIdentity;
use sluice_net::tls::{ALPN_PROTOCOL, SERVER_NAME};

/// How long one receive waits before the thread runs timers and checks for a stop.
const RECV_TIMEOUT_MS: u64 = 5;

/// Which datagrams from the server reach the client's connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliver {
    /// None: the client sends Initials and never learns of a Retry, as a spoofed source would.
    Nothing,
    /// Only Retry packets: the client proves its address, and then stalls in the handshake.
    RetriesOnly,
    /// All: the handshakes complete.
    Everything,
}

impl Deliver {
    fn allows(self, datagram: &[u8]) -> bool {
        match self {
            Deliver::Nothing => false,
            // A long header (0x80) of type Retry (0x30); Retry has no header protection.
            Deliver::RetriesOnly => datagram.first().is_some_and(|byte| byte & 0xB0 == 0xB0),
            Deliver::Everything => true,
        }
    }
}

/// What the client's connections went through, read while it runs.
#[derive(Debug, Default)]
struct Counts {
    connected: AtomicUsize,
    lost: AtomicUsize,
}

/// The running client; stops (and joins its thread) on [`RawClient::stop`] or drop.
#[derive(Debug)]
pub struct RawClient {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    thread: Option<JoinHandle<()>>,
}

impl RawClient {
    /// Opens `connections` connections from one socket on `source` to `server`, all at once.
    pub fn start(
        source: IpAddr,
        server: SocketAddr,
        tls: rustls::ClientConfig,
        connections: usize,
        deliver: Deliver,
    ) -> RawClient {
        let socket = UdpSocket::bind((source, 0)).expect("raw client socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(RECV_TIMEOUT_MS)))
            .expect("read timeout");
        let config = ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls).expect("a TLS 1.3 configuration"),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let thread = {
            let stop = Arc::clone(&stop);
            let counts = Arc::clone(&counts);
            std::thread::spawn(move || {
                pump(
                    &socket,
                    server,
                    &config,
                    connections,
                    deliver,
                    &stop,
                    &counts,
                );
            })
        };
        RawClient {
            stop,
            counts,
            thread: Some(thread),
        }
    }

    /// Connections whose handshake completed.
    pub fn connected(&self) -> usize {
        self.counts.connected.load(Ordering::Relaxed)
    }

    /// Connections lost: refused, closed by the server or timed out.
    pub fn lost(&self) -> usize {
        self.counts.lost.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("raw client thread");
        }
    }
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.join();
    }
}

fn pump(
    socket: &UdpSocket,
    server: SocketAddr,
    config: &ClientConfig,
    connections: usize,
    deliver: Deliver,
    stop: &AtomicBool,
    counts: &Counts,
) {
    let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
    let mut conns = HashMap::new();
    for _ in 0..connections {
        let (handle, conn) = endpoint
            .connect(Instant::now(), config.clone(), server, SERVER_NAME)
            .expect("connect");
        conns.insert(handle, conn);
    }
    let mut transmit_buf = Vec::new();
    let mut recv_buf = vec![0; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (&handle, conn) in &mut conns {
            if conn.poll_timeout().is_some_and(|due| due <= now) {
                conn.handle_timeout(now);
            }
            while let Some(event) = conn.poll_endpoint_events() {
                if let Some(event) = endpoint.handle_event(handle, event) {
                    conn.handle_event(event);
                }
            }
            while let Some(event) = conn.poll() {
                match event {
                    Event::Connected => counts.connected.fetch_add(1, Ordering::Relaxed),
                    Event::ConnectionLost { .. } => counts.lost.fetch_add(1, Ordering::Relaxed),
                    _ => 0,
                };
            }
            loop {
                transmit_buf.clear();
                let Some(transmit) = conn.poll_transmit(now, 1, &mut transmit_buf) else {
                    break;
                };
                // A lost datagram is retransmitted; the tests wait on outcomes, not on speed.
                let _ = socket.send_to(&transmit_buf[..transmit.size], transmit.destination);
            }
        }
        let Ok((length, from)) = socket.recv_from(&mut recv_buf) else {
            continue;
        };
        let datagram = &recv_buf[..length];
        if !deliver.allows(datagram) {
            continue;
        }
        transmit_buf.clear();
        match endpoint.handle(
            now,
            from,
            None,
            None,
            BytesMut::from(datagram),
            &mut transmit_buf,
        ) {
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                if let Some(conn) = conns.get_mut(&handle) {
                    conn.handle_event(event);
                }
            }
            Some(DatagramEvent::Response(transmit)) => {
                let _ = socket.send_to(&transmit_buf[..transmit.size], transmit.destination);
            }
            Some(DatagramEvent::NewConnection(_)) | None => {}
        }
    }
}

/// A client TLS configuration presenting `identity` with the cluster CA's rules only (no
/// node-id rules), so a test can present a certificate the transport must refuse.
pub fn tls_without_node_rules(identity: &TlsIdentity) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&identity.ca_cert_pem) {
        roots.add(ca.expect("CA PEM")).expect("CA trust anchor");
    }
    let chain = CertificateDer::pem_slice_iter(&identity.cert_chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("chain PEM");
    let key = PrivateKeyDer::from_pem_slice(&identity.private_key_pem).expect("key PEM");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client configuration");
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config
}
