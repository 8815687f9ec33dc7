//! Certificate verifiers: the cluster CA's rules (rustls' `WebPki` verifiers), then the node-id
//! rules of [`super::node_id`]. A peer's certificate must carry exactly one valid node id, and not
//! this broker's own: a second broker with our id is a misconfiguration, and letting it in would
//! let it speak for us. A refusal fails the TLS handshake (the peer gets a `bad_certificate`
//! alert) and is counted in [`PeerRefusals`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};

use super::node_id::certificate_node_id;
use crate::Error;

/// Peers whose CA-signed certificate the node-id rules refused, from the transport's start.
#[derive(Debug, Default)]
pub(crate) struct PeerRefusals {
    /// Certificates with no node id, several, or a malformed one.
    without_node_id: AtomicU64,
    /// Certificates with this broker's own node id.
    own_node_id: AtomicU64,
}

impl PeerRefusals {
    /// `(without_node_id, own_node_id)`.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.without_node_id.load(Ordering::Relaxed),
            self.own_node_id.load(Ordering::Relaxed),
        )
    }
}

/// What both verifiers add to the CA's check.
#[derive(Debug)]
struct NodeIdRules {
    local_node_id: u32,
    refusals: Arc<PeerRefusals>,
}

impl NodeIdRules {
    fn check(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let refuse = |counter: &AtomicU64, error: Error| {
            counter.fetch_add(1, Ordering::Relaxed);
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(error)),
            )))
        };
        match certificate_node_id(end_entity) {
            Ok(node_id) if node_id == self.local_node_id => refuse(
                &self.refusals.own_node_id,
                Error::PeerHasOwnNodeId { node_id },
            ),
            Ok(_) => Ok(()),
            Err(error) => refuse(&self.refusals.without_node_id, error),
        }
    }
}

/// The server side's check of client certificates.
#[derive(Debug)]
pub(super) struct NodeClientVerifier {
    ca: Arc<dyn ClientCertVerifier>,
    rules: NodeIdRules,
}

impl NodeClientVerifier {
    pub(super) fn new(
        ca: Arc<dyn ClientCertVerifier>,
        local_node_id: u32,
        refusals: Arc<PeerRefusals>,
    ) -> Self {
        NodeClientVerifier {
            ca,
            rules: NodeIdRules {
                local_node_id,
                refusals,
            },
        }
    }
}

impl ClientCertVerifier for NodeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.ca.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.ca.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.ca.verify_client_cert(end_entity, intermediates, now)?;
        self.rules.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.ca.supported_verify_schemes()
    }
}

/// The client side's check of server certificates.
#[derive(Debug)]
pub(super) struct NodeServerVerifier {
    ca: Arc<dyn ServerCertVerifier>,
    rules: NodeIdRules,
}

impl NodeServerVerifier {
    pub(super) fn new(
        ca: Arc<dyn ServerCertVerifier>,
        local_node_id: u32,
        refusals: Arc<PeerRefusals>,
    ) -> Self {
        NodeServerVerifier {
            ca,
            rules: NodeIdRules {
                local_node_id,
                refusals,
            },
        }
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.ca.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.rules.check(end_entity)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.ca.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.ca.root_hint_subjects()
    }
}
