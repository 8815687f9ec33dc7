//! Development certificates: an in-memory CA that issues broker identities, and
//! [`generate_dev_certs`], which writes a CA and one identity per node into a directory once
//! and reuses them after.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::{
    SERVER_NAME, TlsIdentity, certificate_node_id, file_error, node_id_uri, parse_certificates,
    read_pem_file,
};
use crate::{Error, Result};

/// Most nodes [`generate_dev_certs`] makes certificates for in one call.
pub const DEV_NODES_MAX: u32 = 1024;

/// The subject common name of the CA [`generate_dev_certs`] creates.
const DEV_CA_COMMON_NAME: &str = "Sluice development CA";

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

    /// Node `node_id`'s broker identity signed by this CA: a new key and a certificate for
    /// [`SERVER_NAME`], `localhost` and 127.0.0.1 carrying the node id
    /// ([`node_id_uri`]), usable as TLS server and client, with subject `sluice node <id>`.
    pub fn issue_for_node(&self, node_id: u32) -> Result<TlsIdentity> {
        self.issue_with(&format!("sluice node {node_id}"), Some(node_id))
    }

    /// An identity like [`CertificateAuthority::issue_for_node`]'s but naming no node, with
    /// `common_name` as subject. The broker transport refuses it, at either end; it serves
    /// other TLS endpoints, and tests of that refusal.
    pub fn issue(&self, common_name: &str) -> Result<TlsIdentity> {
        self.issue_with(common_name, None)
    }

    fn issue_with(&self, common_name: &str, node_id: Option<u32>) -> Result<TlsIdentity> {
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
        if let Some(node_id) = node_id {
            let uri = node_id_uri(node_id)
                .try_into()
                .map_err(generation_error("node id name"))?;
            params.subject_alt_names.push(SanType::URI(uri));
        }
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
/// made by [`CertificateAuthority::issue_for_node`]: node `i`'s certificate carries node id `i`
/// (`urn:sluice:node:<i>`), so broker `i` must run with `cluster.nodeId` `i`. Key files are mode
/// 0600.
///
/// Existing files are never overwritten, so running it again is safe and keeps a cluster's
/// certificates: when `ca.pem` exists the existing CA is reused (its key `ca-key.pem` is then
/// needed only if some node files are missing) and only missing node pairs are issued. A
/// half-present pair (certificate without key or the reverse), node files or a CA key without
/// `ca.pem`, or an existing `node-{i}.pem` that does not carry node id `i` (made by a Sluice
/// from before node ids were certified), is refused, with the files to remove.
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
    for (node, paths) in (0..node_count).zip(&certs.nodes) {
        match (paths.cert.exists(), paths.key.exists()) {
            (true, true) => check_node_cert(&paths.cert, node)?,
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

/// Checks that an existing node certificate carries its node's id.
fn check_node_cert(path: &Path, node: u32) -> Result<()> {
    let refuse = |problem: String| {
        file_error(
            path,
            format!(
                "{problem}; remove node-{node}.pem and node-{node}-key.pem to issue a new pair \
                 for node {node}"
            ),
        )
    };
    let pem = read_pem_file(path)?;
    let chain = parse_certificates(&pem).map_err(|reason| file_error(path, reason))?;
    match certificate_node_id(&chain[0]) {
        Ok(id) if id == node => Ok(()),
        Ok(other) => Err(refuse(format!("is issued for node {other}, not {node}"))),
        Err(error) => Err(refuse(error.to_string())),
    }
}

fn write_nodes(ca: &CertificateAuthority, certs: &DevCerts, nodes: &[u32]) -> Result<()> {
    for &node in nodes {
        let paths = &certs.nodes[node as usize];
        let identity = ca.issue_for_node(node)?;
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
