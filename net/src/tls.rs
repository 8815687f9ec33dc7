//! Mutual TLS between brokers: identities, rustls configurations and development certificates.
//!
//! Every broker of a cluster holds a [`TlsIdentity`]: the cluster CA's certificate, its own
//! certificate chain signed by that CA, and its private key. Both ends of a connection present
//! their certificate and verify the other's against the CA alone, so a peer with a certificate
//! from another CA, or with none, fails the handshake. Server certificates are checked against
//! [`SERVER_NAME`] (not the peer's address), so one certificate serves a broker wherever it runs;
//! what proves membership is the CA's signature. [`ALPN_PROTOCOL`] names the protocol.
//!
//! How to drive it:
//!
//! ```text
//! // Production: certificates made by the operator's PKI, paths from the broker configuration.
//! let identity = TlsIdentity::load(&ca_pem, &cert_pem, &key_pem)?;
//! // Development: one CA and one certificate per node, made once into a directory.
//! let certs = generate_dev_certs(dir, 3)?;
//! let (ca, cert, key) = certs.identity_paths(0);
//! let identity = TlsIdentity::load(ca, cert, key)?;
//! // Then hand the identity to `quic::TransportConfig::new(bind, identity)`.
//! ```
//!
//! [`server_config`] and [`client_config`] build the rustls configurations the QUIC transport
//! uses; they are public so other listeners can share the same rules.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::{Error, Result};

/// The name every broker certificate carries and every client checks: brokers are reached by
/// address, and what authenticates them is the cluster CA's signature, not a host name.
pub const SERVER_NAME: &str = "sluice-broker";

/// The ALPN protocol brokers speak; a peer offering anything else is refused.
pub const ALPN_PROTOCOL: &[u8] = b"sluice/1";

/// Largest PEM file read, in bytes: certificate chains and keys are a few KiB, so anything
/// larger is the wrong file.
pub const PEM_FILE_BYTES_MAX: u64 = 1 << 20;

/// Most nodes [`generate_dev_certs`] makes certificates for in one call.
pub const DEV_NODES_MAX: u32 = 1024;

/// The subject common name of the CA [`generate_dev_certs`] creates.
const DEV_CA_COMMON_NAME: &str = "Sluice development CA";

/// A broker's TLS identity: the cluster CA, its own certificate chain and its private key, all
/// PEM. Construct it with [`TlsIdentity::load`] (checked) or fill the fields directly; the
/// transport checks them again when it builds its configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The cluster CA certificate(s) peers are verified against.
    pub ca_cert_pem: Vec<u8>,
    /// This broker's certificate, then any intermediates, signed by the cluster CA.
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
    /// certificate, the key file a private key. The error names the file and what is wrong.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<TlsIdentity> {
        let identity = TlsIdentity {
            ca_cert_pem: read_pem_file(ca)?,
            cert_chain_pem: read_pem_file(cert)?,
            private_key_pem: read_pem_file(key)?,
        };
        parse_certificates(&identity.ca_cert_pem).map_err(|reason| file_error(ca, reason))?;
        parse_certificates(&identity.cert_chain_pem).map_err(|reason| file_error(cert, reason))?;
        parse_private_key(&identity.private_key_pem).map_err(|reason| file_error(key, reason))?;
        Ok(identity)
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
        Ok(IdentityParts {
            roots: Arc::new(roots),
            chain: parse_certificates(&self.cert_chain_pem)
                .map_err(|reason| invalid("certificate chain", reason))?,
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

/// The TLS 1.3 server side: presents this broker's certificate, requires a client certificate
/// and verifies it against the cluster CA alone.
pub fn server_config(identity: &TlsIdentity) -> Result<rustls::ServerConfig> {
    let parts = identity.parts()?;
    let provider = crypto_provider();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(parts.roots, provider.clone())
            .build()
            .map_err(|error| Error::TlsConfig {
                reason: format!("cannot verify clients against the CA: {error}"),
            })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error("TLS 1.3 is unavailable"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(parts.chain, parts.key)
        .map_err(rustls_error(
            "the certificate chain and private key do not form a pair",
        ))?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    Ok(config)
}

/// The TLS 1.3 client side: verifies the server's certificate against the cluster CA for
/// [`SERVER_NAME`] and presents this broker's certificate.
pub fn client_config(identity: &TlsIdentity) -> Result<rustls::ClientConfig> {
    let parts = identity.parts()?;
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(rustls_error("TLS 1.3 is unavailable"))?
        .with_root_certificates(parts.roots)
        .with_client_auth_cert(parts.chain, parts.key)
        .map_err(rustls_error(
            "the certificate chain and private key do not form a pair",
        ))?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    Ok(config)
}

fn generation_error(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |error| Error::CertificateGeneration {
        reason: format!("{what}: {error}"),
    }
}

/// A certificate authority held in memory, to issue broker certificates. Used by
/// [`generate_dev_certs`], and by tests that need a second, foreign CA.
#[derive(Clone)]
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem_bytes", &self.cert_pem.len())
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertificateAuthority {
    /// A new self-signed CA (ECDSA P-256) with this subject common name.
    pub fn generate(common_name: &str) -> Result<CertificateAuthority> {
        let key = KeyPair::generate().map_err(generation_error("CA key"))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(generation_error("CA parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params
            .self_signed(&key)
            .map_err(generation_error("CA certificate"))?;
        Ok(CertificateAuthority {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A CA from its certificate and private key in PEM, e.g. read back from files.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertificateAuthority> {
        let key = KeyPair::from_pem(key_pem).map_err(generation_error("CA private key"))?;
        // Parsing checks the certificate now rather than at the first issue.
        Issuer::from_ca_cert_pem(cert_pem, &key).map_err(generation_error("CA certificate"))?;
        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        })
    }

    /// The CA certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A broker identity signed by this CA: a new key and a certificate for [`SERVER_NAME`],
    /// `localhost` and 127.0.0.1, usable as TLS server and client, with `common_name` as subject.
    pub fn issue(&self, common_name: &str) -> Result<TlsIdentity> {
        let ca_key =
            KeyPair::from_pem(&self.key_pem).map_err(generation_error("CA private key"))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, &ca_key)
            .map_err(generation_error("CA certificate"))?;
        let key = KeyPair::generate().map_err(generation_error("node key"))?;
        let mut params = CertificateParams::new(vec![
            SERVER_NAME.to_owned(),
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .map_err(generation_error("node parameters"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generation_error("node certificate"))?;
        Ok(TlsIdentity {
            ca_cert_pem: self.cert_pem.clone().into_bytes(),
            cert_chain_pem: cert.pem().into_bytes(),
            private_key_pem: key.serialize_pem().into_bytes(),
        })
    }
}

/// Where [`generate_dev_certs`] put the files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevCerts {
    /// The directory holding them all.
    pub dir: PathBuf,
    /// `ca.pem`, the CA certificate.
    pub ca_cert: PathBuf,
    /// `ca-key.pem`, the CA private key (needed only to issue more node certificates).
    pub ca_key: PathBuf,
    /// For node `i`, at index `i`: `node-{i}.pem` and `node-{i}-key.pem`.
    pub nodes: Vec<NodeCertPaths>,
}

/// One node's certificate and key files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCertPaths {
    /// `node-{i}.pem`, the certificate signed by the CA.
    pub cert: PathBuf,
    /// `node-{i}-key.pem`, its private key (mode 0600).
    pub key: PathBuf,
}

impl DevCerts {
    /// The `(ca, cert, key)` paths for [`TlsIdentity::load`] of node `node`.
    ///
    /// # Panics
    /// If `node` is not below the `node_count` the certificates were generated for.
    #[must_use]
    pub fn identity_paths(&self, node: u32) -> (&Path, &Path, &Path) {
        let paths = usize::try_from(node)
            .ok()
            .and_then(|index| self.nodes.get(index))
            .unwrap_or_else(|| {
                panic!(
                    "node {node} has no dev certificate: {} were generated",
                    self.nodes.len()
                )
            });
        (&self.ca_cert, &paths.cert, &paths.key)
    }

    /// Loads node `node`'s identity; see [`DevCerts::identity_paths`].
    pub fn identity(&self, node: u32) -> Result<TlsIdentity> {
        let (ca, cert, key) = self.identity_paths(node);
        TlsIdentity::load(ca, cert, key)
    }
}

/// Makes development certificates in `dir` (created if missing): a CA (`ca.pem`, `ca-key.pem`)
/// and, for each node `i` in `0..node_count`, `node-{i}.pem` / `node-{i}-key.pem` signed by it,
/// with the subject alternative names of [`CertificateAuthority::issue`]. Key files are mode 0600.
///
/// Existing files are never overwritten, so running it again is safe and keeps a cluster's
/// certificates: when `ca.pem` exists the existing CA is reused (its key `ca-key.pem` is then
/// needed only if some node files are missing) and only missing node pairs are issued. A
/// half-present pair (certificate without key or the reverse), or node files or a CA key without
/// `ca.pem`, is refused: they would not match a new CA.
pub fn generate_dev_certs(dir: &Path, node_count: u32) -> Result<DevCerts> {
    if node_count > DEV_NODES_MAX {
        return Err(Error::CertificateGeneration {
            reason: format!("{node_count} nodes asked for, at most {DEV_NODES_MAX} are made"),
        });
    }
    fs::create_dir_all(dir).map_err(|error| file_error(dir, error.to_string()))?;
    let certs = DevCerts {
        dir: dir.to_path_buf(),
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca-key.pem"),
        nodes: (0..node_count)
            .map(|node| NodeCertPaths {
                cert: dir.join(format!("node-{node}.pem")),
                key: dir.join(format!("node-{node}-key.pem")),
            })
            .collect(),
    };

    let mut missing_nodes = Vec::new();
    for (node, paths) in certs.nodes.iter().enumerate() {
        match (paths.cert.exists(), paths.key.exists()) {
            (true, true) => {}
            (false, false) => missing_nodes.push(node),
            (true, false) => {
                return Err(file_error(
                    &paths.key,
                    "is missing but its certificate exists; remove both to issue a new pair",
                ));
            }
            (false, true) => {
                return Err(file_error(
                    &paths.cert,
                    "is missing but its key exists; remove both to issue a new pair",
                ));
            }
        }
    }

    if certs.ca_cert.exists() {
        if missing_nodes.is_empty() {
            return Ok(certs);
        }
        let cert_pem = read_pem_string(&certs.ca_cert)?;
        let key_pem = read_pem_string(&certs.ca_key)?;
        let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem)?;
        write_nodes(&ca, &certs, &missing_nodes)?;
        return Ok(certs);
    }

    if certs.ca_key.exists() {
        return Err(file_error(
            &certs.ca_cert,
            "is missing but the CA key exists; remove the key to make a new CA",
        ));
    }
    if missing_nodes.len() != certs.nodes.len() {
        return Err(file_error(
            &certs.ca_cert,
            "is missing but node certificates exist that an old CA signed; remove them to make \
             a new CA",
        ));
    }
    let ca = CertificateAuthority::generate(DEV_CA_COMMON_NAME)?;
    // The key first: a CA certificate without its key would make later runs refuse.
    write_new_file(&certs.ca_key, ca.key_pem().as_bytes(), true)?;
    write_new_file(&certs.ca_cert, ca.cert_pem().as_bytes(), false)?;
    write_nodes(&ca, &certs, &missing_nodes)?;
    Ok(certs)
}

fn write_nodes(ca: &CertificateAuthority, certs: &DevCerts, nodes: &[usize]) -> Result<()> {
    for &node in nodes {
        let paths = &certs.nodes[node];
        let identity = ca.issue(&format!("sluice node {node}"))?;
        write_new_file(&paths.key, &identity.private_key_pem, true)?;
        write_new_file(&paths.cert, &identity.cert_chain_pem, false)?;
    }
    Ok(())
}

fn read_pem_string(path: &Path) -> Result<String> {
    String::from_utf8(read_pem_file(path)?)
        .map_err(|_| file_error(path, "is not text, so not a PEM file"))
}

/// Creates `path` (failing if it exists) with `contents`, synced; mode 0600 when `secret`.
fn write_new_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|error| file_error(path, format!("cannot be created: {error}")))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| file_error(path, format!("cannot be written: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn dev_certs_load_and_build_configs_and_are_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = generate_dev_certs(dir.path(), 2).expect("generate");
        let identity = certs.identity(1).expect("load node 1");
        server_config(&identity).expect("server config");
        client_config(&identity).expect("client config");
        let mode = fs::metadata(&certs.nodes[1].key)
            .expect("key metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fs::metadata(&certs.ca_key)
                .expect("ca key metadata")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );

        // A second run keeps the CA and the existing nodes, and adds the missing node.
        let ca_before = fs::read(&certs.ca_cert).expect("ca");
        let node_before = fs::read(&certs.nodes[0].cert).expect("node 0");
        let again = generate_dev_certs(dir.path(), 3).expect("regenerate");
        assert_eq!(fs::read(&again.ca_cert).expect("ca"), ca_before);
        assert_eq!(fs::read(&again.nodes[0].cert).expect("node 0"), node_before);
        let third = again.identity(2).expect("load node 2");
        assert_eq!(third.ca_cert_pem, ca_before);
        client_config(&third).expect("client config");
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = generate_dev_certs(dir.path(), 1).expect("generate");
        let (ca, cert, key) = certs.identity_paths(0);
        let missing = dir.path().join("nope.pem");
        let error = TlsIdentity::load(ca, &missing, key).expect_err("missing file");
        assert!(
            matches!(&error, Error::TlsFile { path, .. } if *path == missing),
            "{error}"
        );
        // A certificate where the key belongs.
        let error = TlsIdentity::load(ca, cert, cert).expect_err("no key");
        assert!(error.to_string().contains("node-0.pem"), "{error}");
        assert!(error.to_string().contains("private key"), "{error}");
        // A key where the CA belongs.
        let error = TlsIdentity::load(key, cert, key).expect_err("no certificate");
        assert!(error.to_string().contains("node-0-key.pem"), "{error}");
    }

    #[test]
    fn half_present_pairs_are_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = generate_dev_certs(dir.path(), 1).expect("generate");
        fs::remove_file(&certs.nodes[0].key).expect("remove key");
        let error = generate_dev_certs(dir.path(), 1).expect_err("half pair");
        assert!(error.to_string().contains("node-0-key.pem"), "{error}");
    }

    /// Runs a TLS handshake in memory; the first error either side reports.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> std::result::Result<(), rustls::Error> {
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).expect("valid name");
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut server = rustls::ServerConnection::new(Arc::new(server))?;
        for _ in 0..16 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).expect("write to memory");
            server
                .read_tls(&mut bytes.as_slice())
                .expect("read from memory");
            server.process_new_packets()?;
            bytes.clear();
            server.write_tls(&mut bytes).expect("write to memory");
            client
                .read_tls(&mut bytes.as_slice())
                .expect("read from memory");
            client.process_new_packets()?;
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn only_peers_of_the_cluster_ca_complete_a_handshake() {
        let ca = CertificateAuthority::generate("cluster").expect("ca");
        let a = ca.issue("a").expect("a");
        let b = ca.issue("b").expect("b");
        let server = || server_config(&a).expect("server config");
        handshake(client_config(&b).expect("client"), server()).expect("same CA");

        // A client from another CA that trusts the cluster CA is refused by the server.
        let foreign = CertificateAuthority::generate("foreign")
            .expect("foreign ca")
            .issue("intruder")
            .expect("intruder");
        let mut posing = foreign.clone();
        posing.ca_cert_pem.clone_from(&a.ca_cert_pem);
        assert!(handshake(client_config(&posing).expect("client"), server()).is_err());

        // A client trusting only its own CA refuses the cluster's server.
        assert!(handshake(client_config(&foreign).expect("client"), server()).is_err());

        // A client presenting no certificate at all is refused.
        let parts = a.parts().expect("parts");
        let mut anonymous = rustls::ClientConfig::builder_with_provider(crypto_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3")
            .with_root_certificates(parts.roots)
            .with_no_client_auth();
        anonymous.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
        assert!(handshake(anonymous, server()).is_err());
    }

    #[test]
    fn debug_hides_private_keys() {
        let ca = CertificateAuthority::generate("test CA").expect("ca");
        let identity = ca.issue("node").expect("issue");
        let shown = format!("{identity:?} {ca:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
    }
}
