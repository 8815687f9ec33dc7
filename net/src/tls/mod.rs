//! Mutual TLS between brokers: identities, rustls configurations and development certificates.
//!
//! Every broker of a cluster holds a [`TlsIdentity`]: the cluster CA's certificate, its own
//! certificate chain signed by that CA, and its private key. Both ends of a connection present
//! their certificate and verify the other's against the CA alone, so a peer with a certificate
//! from another CA, or with none, fails the handshake. Server certificates are checked against
//! [`SERVER_NAME`] (not the peer's address), so one certificate serves a broker wherever it runs;
//! what proves membership is the CA's signature. [`ALPN_PROTOCOL`] names the protocol.
//!
//! Each broker certificate also names its node: one subject alternative name URI
//! `urn:sluice:node:<id>` ([`node_id`] describes the form). A peer whose certificate names no
//! node, several, or this broker's own is refused in the handshake, and the transport hands the
//! peer's node id out with every frame, so a certificate of the cluster CA cannot speak for
//! another node.
//!
//! How to drive it:
//!
//! ```text
//! // Production: certificates made by the operator's PKI, paths from the broker configuration.
//! let identity = TlsIdentity::load(&ca_pem, &cert_pem, &key_pem)?;  // checks the node id is there
//! identity.check_node_id(configured_node_id)?;                         // refuse to start if not ours
//! // Development: one CA and one certificate per node, made once into a directory.
//! let certs = generate_dev_certs(dir, 3)?;
//! let (ca, cert, key) = certs.identity_paths(0);
//! let identity = TlsIdentity::load(ca, cert, key)?;
//! // Then hand the identity to `quic::TransportConfig::new(bind, identity)`.
//! ```
//!
//! [`server_config`] and [`client_config`] build the rustls configurations the QUIC transport
//! uses, node-id rules included, without session resumption (every handshake verifies the
//! peer's certificate); they are public so other listeners can share the same rules.

mod dev;
pub mod node_id;
mod verifier;

use std::fmt;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

pub use dev::{CertificateAuthority, DEV_NODES_MAX, DevCerts, NodeCertPaths, generate_dev_certs};
pub use node_id::{NODE_ID_URI_PREFIX, certificate_node_id, node_id_uri};
pub(crate) use verifier::PeerRefusals;

use crate::{Error, Result};

/// The name every broker certificate carries and every client checks: brokers are reached by
/// address, and what authenticates them is the cluster CA's signature, not a host name.
pub const SERVER_NAME: &str = "sluice-broker";

/// The ALPN protocol brokers speak; a peer offering anything else is refused.
pub const ALPN_PROTOCOL: &[u8] = b"sluice/1";

/// Largest PEM file read, in bytes: certificate chains and keys are a few KiB, so anything
/// larger is the wrong file.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// A broker's TLS identity: the cluster CA, its own certificate chain and its private key, all
/// PEM. Construct it with [`TlsIdentity::load`] (checked) or fill the fields directly; the
/// transport checks them again when it builds its configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The cluster CA certificate(s) peers are verified against.
    pub ca_cert_pem: Vec<u8>,
    /// This broker's certificate, then any intermediates, signed by the cluster CA. The first
    /// certificate carries the node id (see [`node_id`]).
    pub cert_chain_pem: Vec<u8>,
    /// This broker's private key (PKCS#8, PKCS#1 or SEC1).
    pub private_key_pem: Vec<u8>,
}

impl fmt::Debug for TlsIdentity {
    // The private key must never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("ca_cert_pem_bytes", &self.ca_cert_pem.len())
            .field("cert_chain_pem_bytes", &self.cert_chain_pem.len())
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

impl TlsIdentity {
    /// Reads and checks the three PEM files: the CA and the chain must hold at least one
    /// certificate, the first certificate of the chain exactly one node id, the key file a
    /// private key. The error names the file and what is wrong.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsIdentity> {
        let identity = TlsIdentity {
            ca_cert_pem: read_pem_file(ca)?,
            cert_chain_pem: read_pem_file(cert)?,
            private_key_pem: read_pem_file(key)?,
        };
        parse_certificates(&identity.ca_cert_pem).map_err(|reason| file_error(ca, reason))?;
        let chain = parse_certificates(&identity.cert_chain_pem)
            .map_err(|reason| file_error(cert, reason))?;
        certificate_node_id(&chain[0]).map_err(|error| file_error(cert, error.to_string()))?;
        parse_private_key(&identity.private_key_pem).map_err(|reason| file_error(key, reason))?;
        Ok(identity)
    }

    /// The node id this broker's certificate (the first of the chain) is issued for.
    ///
    /// # Errors
    /// [`Error::TlsConfig`] when the chain holds no certificate; otherwise the errors of
    /// [`certificate_node_id`] ([`Error::NodeIdMissing`] and the like).
    pub fn node_id(&self) -> Result<u32> {
        let chain =
            parse_certificates(&self.cert_chain_pem).map_err(|reason| Error::TlsConfig {
                reason: format!("certificate chain: {reason}"),
            })?;
        certificate_node_id(&chain[0])
    }

    /// Checks that the certificate is issued for `configured_node_id`, so a broker started
    /// with another node's certificate (or another node's configuration) refuses to start.
    ///
    /// # Errors
    /// [`Error::NodeIdMismatch`] when it names another node; the errors of
    /// [`TlsIdentity::node_id`] when it names none.
    pub fn check_node_id(&self, configured_node_id: u32) -> Result<()> {
        let certificate = self.node_id()?;
        if certificate == configured_node_id {
            Ok(())
        } else {
            Err(Error::NodeIdMismatch {
                configured: configured_node_id,
                certificate,
            })
        }
    }

    fn parts(&self) -> Result<IdentityParts> {
        let invalid = |what: &str, reason: String| Error::TlsConfig {
            reason: format!("{what}: {reason}"),
        };
        let ca_certs = parse_certificates(&self.ca_cert_pem)
            .map_err(|reason| invalid("CA certificate", reason))?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in ca_certs {
            roots.add(ca).map_err(|error| Error::TlsConfig {
                reason: format!("the CA certificate is not a usable trust anchor: {error}"),
            })?;
        }
        let chain = parse_certificates(&self.cert_chain_pem)
            .map_err(|reason| invalid("certificate chain", reason))?;
        Ok(IdentityParts {
            roots: Arc::new(roots),
            node_id: certificate_node_id(&chain[0])?,
            chain,
            key: parse_private_key(&self.private_key_pem)
                .map_err(|reason| invalid("private key", reason))?,
        })
    }
}

/// An identity decoded into what rustls takes.
struct IdentityParts {
    roots: Arc<rustls::RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The node id of the first certificate of `chain`.
    node_id: u32,
}

fn file_error(path: &Path, reason: impl Into<String>) -> Error {
    Error::TlsFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read_pem_file(path: &Path) -> Result<Vec<u8>> {
    let metadata = fs::metadata(path).map_err(|error| file_error(path, error.to_string()))?;
    if metadata.len() > PEM_FILE_BYTES_MAX {
        return Err(file_error(
            path,
            format!(
                "is {} bytes, more than the {PEM_FILE_BYTES_MAX} a PEM certificate or key \
                 plausibly takes; is it the right file?",
                metadata.len()
            ),
        ));
    }
    fs::read(path).map_err(|error| file_error(path, error.to_string()))
}

/// The certificates of a PEM file; never empty.
fn parse_certificates(pem: &[u8]) -> std::result::Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| format!("is not valid PEM: {error}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

fn parse_private_key(pem: &[u8]) -> std::result::Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|error| match error {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "holds no PEM private key (-----BEGIN PRIVATE KEY-----)".to_owned()
        }
        other => format!("is not a valid PEM private key: {other}"),
    })
}

fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn rustls_error(what: &str) -> impl FnOnce(rustls::Error) -> Error + '_ {
    move |error| Error::TlsConfig {
        reason: format!("{what}: {error}"),
    }
}

/// The TLS 1.3 server side: presents this broker's certificate, requires a client certificate,
/// verifies it against the cluster CA alone and refuses one without exactly one node id or with
/// this broker's own.
///
/// # Errors
/// [`Error::TlsConfig`] for an unusable identity; [`Error::NodeIdMissing`] and the like when
/// this broker's own certificate names no node.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig> {
    server_config_counting(identity, Arc::default())
}

/// [`server_config`], counting the peers the node-id rules refuse in `refusals`.
pub(crate) fn server_config_counting(
    identity: &TlsIdentity,
    refusals: Arc<PeerRefusals>,
) -> Result<rustls::ServerConfig> {
    let parts = identity.parts()?;
    let provider = crypto_provider();
    let ca_verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(parts.roots, provider.clone())
            .build()
            .map_err(|error| Error::TlsConfig {
                reason: format!("cannot verify clients against the CA: {error}"),
            })?;
    let verifier = verifier::NodeClientVerifier::new(ca_verifier, parts.node_id, refusals);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error("TLS 1.3 is unavailable"))?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(parts.chain, parts.key)
        .map_err(rustls_error(
            "the certificate chain and private key do not form a pair",
        ))?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    // No session resumption: every handshake verifies the peer's certificate and node id.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The TLS 1.3 client side: verifies the server's certificate against the cluster CA for
/// [`SERVER_NAME`], refuses one without exactly one node id or with this broker's own, and
/// presents this broker's certificate.
///
/// # Errors
/// As [`server_config`].
pub fn client_config(identity: &TlsIdentity) -> Result<rustls::ClientConfig> {
    client_config_counting(identity, Arc::default())
}

/// [`client_config`], counting the peers the node-id rules refuse in `refusals`.
pub(crate) fn client_config_counting(
    identity: &TlsIdentity,
    refusals: Arc<PeerRefusals>,
) -> Result<rustls::ClientConfig> {
    let parts = identity.parts()?;
    let provider = crypto_provider();
    let ca_verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(parts.roots, provider.clone())
            .build()
            .map_err(|error| Error::TlsConfig {
                reason: format!("cannot verify servers against the CA: {error}"),
            })?;
    let verifier = verifier::NodeServerVerifier::new(ca_verifier, parts.node_id, refusals);
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error("TLS 1.3 is unavailable"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(parts.chain, parts.key)
        .map_err(rustls_error(
            "the certificate chain and private key do not form a pair",
        ))?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

#[cfg(test)]
mod tests;
