//! The node id a broker certificate is issued for.
//!
//! A broker's certificate names its node in exactly one subject alternative name of type URI,
//! `urn:sluice:node:<id>`, with `<id>` the broker's node id (`cluster.nodeId`) in decimal: no
//! sign, no leading zeros, 0 to 4294967295. The prefix is matched without regard to ASCII case,
//! as URN schemes and namespaces are. Other names stay as they are: the DNS name
//! [`super::SERVER_NAME`] for server-name verification, and any other URI (a SPIFFE id, say),
//! which is ignored. With OpenSSL, a broker certificate for node 3 carries:
//!
//! ```text
//! subjectAltName = DNS:sluice-broker, URI:urn:sluice:node:3
//! ```
//!
//! What uses it: the transport reads the node id from every peer's certificate once the CA has
//! verified it, refuses peers with none (or several, or a malformed one) and peers claiming this
//! broker's own id, and hands the id out with every received frame, so the broker can drop a
//! message whose claimed sender is another node. The broker checks its own certificate against
//! its configured node id at start ([`super::TlsIdentity::check_node_id`]).

use x509_parser::extensions::GeneralName;

use crate::{Error, Result};

/// The prefix of the URI subject alternative name that carries a broker's node id.
pub const NODE_ID_URI_PREFIX: &str = "urn:sluice:node:";

/// Longest part of a malformed name quoted in an error, in characters: enough to recognise it,
/// bounded because it comes from a peer.
const QUOTED_NAME_CHARS_MAX: usize = 128;

/// Decimal digits of the largest `u32`.
const NODE_ID_DIGITS_MAX: usize = 10;

/// The subject alternative name URI that says a certificate is node `node_id`'s.
#[must_use]
pub fn node_id_uri(node_id: u32) -> String {
    format!("{NODE_ID_URI_PREFIX}{node_id}")
}

/// The node id of the certificate `certificate_der` (one X.509 certificate, DER), read from its
/// `urn:sluice:node:<id>` subject alternative name.
///
/// It does not check the signature: call it on a certificate the cluster CA has verified (the
/// transport does), or on the broker's own.
///
/// # Errors
/// [`Error::CertificateUnreadable`] when the bytes are not one X.509 certificate (or its
/// subject alternative names cannot be parsed); [`Error::NodeIdMissing`] when no name carries a
/// node id; [`Error::NodeIdInvalid`] when one has the prefix but no valid id after it;
/// [`Error::NodeIdAmbiguous`] when several do.
pub fn certificate_node_id(certificate_der: &[u8]) -> Result<u32> {
    let (rest, certificate) =
        x509_parser::parse_x509_certificate(certificate_der).map_err(|error| {
            Error::CertificateUnreadable {
                reason: error.to_string(),
            }
        })?;
    if !rest.is_empty() {
        return Err(Error::CertificateUnreadable {
            reason: format!("{} bytes follow the certificate", rest.len()),
        });
    }
    let names = certificate
        .subject_alternative_name()
        .map_err(|error| Error::CertificateUnreadable {
            reason: format!("subject alternative names: {error}"),
        })?
        .ok_or(Error::NodeIdMissing)?;
    let mut node_ids = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => node_id_of_uri(uri),
            _ => None,
        });
    let node_id = node_ids.next().ok_or(Error::NodeIdMissing)??;
    let more = node_ids.count();
    if more > 0 {
        return Err(Error::NodeIdAmbiguous { count: 1 + more });
    }
    Ok(node_id)
}

/// `None` for a URI that is not a node id name; the id, or why not, for one that is.
fn node_id_of_uri(uri: &str) -> Option<Result<u32>> {
    let prefix = uri.get(..NODE_ID_URI_PREFIX.len())?;
    if !prefix.eq_ignore_ascii_case(NODE_ID_URI_PREFIX) {
        return None;
    }
    let digits = &uri[NODE_ID_URI_PREFIX.len()..];
    let canonical = (1..=NODE_ID_DIGITS_MAX).contains(&digits.len())
        && digits.bytes().all(|byte| byte.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'));
    Some(
        canonical
            .then(|| digits.parse::<u32>().ok())
            .flatten()
            .ok_or_else(|| Error::NodeIdInvalid {
                uri: uri.chars().take(QUOTED_NAME_CHARS_MAX).collect(),
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    /// A self-signed certificate with these subject alternative names.
    fn certificate(names: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.subject_alt_names = names;
        params
            .self_signed(&key)
            .expect("certificate")
            .der()
            .to_vec()
    }

    fn uri(text: &str) -> SanType {
        SanType::URI(text.try_into().expect("IA5 string"))
    }

    fn dns(text: &str) -> SanType {
        SanType::DnsName(text.try_into().expect("IA5 string"))
    }

    #[test]
    fn the_node_id_name_is_found_among_others() {
        for node_id in [0, 1, 41, u32::MAX] {
            let der = certificate(vec![
                dns(crate::tls::SERVER_NAME),
                uri("spiffe://cluster/broker"),
                uri(&node_id_uri(node_id)),
            ]);
            assert_eq!(certificate_node_id(&der), Ok(node_id));
        }
        let der = certificate(vec![uri("URN:Sluice:Node:7")]);
        assert_eq!(certificate_node_id(&der), Ok(7));
    }

    #[test]
    fn no_node_id_is_missing() {
        assert_eq!(
            certificate_node_id(&certificate(Vec::new())),
            Err(Error::NodeIdMissing)
        );
        // The form of another kind of name does not count.
        let der = certificate(vec![dns("urn:sluice:node:1"), uri("urn:sluice:nodes:1")]);
        assert_eq!(certificate_node_id(&der), Err(Error::NodeIdMissing));
    }

    #[test]
    fn several_node_ids_are_ambiguous_even_when_equal() {
        let der = certificate(vec![uri(&node_id_uri(1)), uri(&node_id_uri(2))]);
        assert_eq!(
            certificate_node_id(&der),
            Err(Error::NodeIdAmbiguous { count: 2 })
        );
        let der = certificate(vec![
            uri(&node_id_uri(3)),
            dns("x"),
            uri(&node_id_uri(3)),
            uri(&node_id_uri(3)),
        ]);
        assert_eq!(
            certificate_node_id(&der),
            Err(Error::NodeIdAmbiguous { count: 3 })
        );
    }

    #[test]
    fn malformed_ids_are_invalid() {
        for bad in [
            "urn:sluice:node:",
            "urn:sluice:node:01",
            "urn:sluice:node:+1",
            "urn:sluice:node:-1",
            "urn:sluice:node:1 ",
            "urn:sluice:node:4294967296",
            "urn:sluice:node:99999999999",
            "urn:sluice:node:0x10",
        ] {
            let der = certificate(vec![uri(bad)]);
            assert_eq!(
                certificate_node_id(&der),
                Err(Error::NodeIdInvalid {
                    uri: bad.to_owned()
                }),
                "{bad}"
            );
        }
        // A long name is quoted only in part.
        let long = format!("urn:sluice:node:{}", "9".repeat(1000));
        let Err(Error::NodeIdInvalid { uri: quoted }) =
            certificate_node_id(&certificate(vec![uri(&long)]))
        else {
            panic!("a long id is invalid");
        };
        assert_eq!(quoted.len(), QUOTED_NAME_CHARS_MAX);
    }

    #[test]
    fn bytes_that_are_no_certificate_are_unreadable() {
        let der = certificate(vec![uri(&node_id_uri(5))]);
        assert!(matches!(
            certificate_node_id(&[]),
            Err(Error::CertificateUnreadable { .. })
        ));
        assert!(matches!(
            certificate_node_id(&der[..der.len() - 1]),
            Err(Error::CertificateUnreadable { .. })
        ));
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(matches!(
            certificate_node_id(&trailing),
            Err(Error::CertificateUnreadable { .. })
        ));
        // Every single flipped byte gives a value or a typed error, never a panic.
        for index in 0..der.len() {
            let mut damaged = der.clone();
            damaged[index] ^= 0x5A;
            let _ = certificate_node_id(&damaged);
        }
    }
}
