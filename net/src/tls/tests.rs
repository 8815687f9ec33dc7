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
    assert_eq!(third.node_id(), Ok(2));
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
    let a = ca.issue_for_node(1).expect("a");
    let b = ca.issue_for_node(2).expect("b");
    let server = || server_config(&a).expect("server config");
    handshake(client_config(&b).expect("client"), server()).expect("same CA");

    // A client from another CA that trusts the cluster CA is refused by the server.
    let foreign = CertificateAuthority::generate("foreign")
        .expect("foreign ca")
        .issue_for_node(3)
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
    let identity = ca.issue_for_node(0).expect("issue");
    let shown = format!("{identity:?} {ca:?}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
}

/// A client configuration with the CA's rules only, so tests can present certificates the
/// node-id rules refuse.
fn client_config_without_node_rules(identity: &TlsIdentity) -> rustls::ClientConfig {
    let roots = parse_certificates(&identity.ca_cert_pem).expect("CA");
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots);
    let mut config = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(store)
        .with_client_auth_cert(
            parse_certificates(&identity.cert_chain_pem).expect("chain"),
            parse_private_key(&identity.private_key_pem).expect("key"),
        )
        .expect("client config");
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config
}

/// A server configuration with the CA's rules only; see [`client_config_without_node_rules`].
fn server_config_without_node_rules(identity: &TlsIdentity) -> rustls::ServerConfig {
    let roots = parse_certificates(&identity.ca_cert_pem).expect("CA");
    let mut store = rustls::RootCertStore::empty();
    store.add_parsable_certificates(roots);
    let provider = crypto_provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certificates(&identity.cert_chain_pem).expect("chain"),
            parse_private_key(&identity.private_key_pem).expect("key"),
        )
        .expect("server config");
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config
}

#[test]
fn peers_need_one_node_id_that_is_not_ours() {
    let ca = CertificateAuthority::generate("cluster").expect("ca");
    let node_1 = ca.issue_for_node(1).expect("node 1");
    let node_2 = ca.issue_for_node(2).expect("node 2");
    let nameless = ca.issue("no node id").expect("nameless");

    // Server side: a client without a node id, or with the server's own, is refused.
    let refusals = Arc::new(PeerRefusals::default());
    let server = || server_config_counting(&node_1, Arc::clone(&refusals)).expect("server");
    handshake(client_config(&node_2).expect("client"), server()).expect("node 2 to node 1");
    assert!(handshake(client_config_without_node_rules(&nameless), server()).is_err());
    assert_eq!(refusals.counts(), (1, 0));
    // (A client with the node rules would refuse the server first, for the same reason.)
    let twin = ca.issue_for_node(1).expect("another node 1");
    assert!(handshake(client_config_without_node_rules(&twin), server()).is_err());
    assert_eq!(refusals.counts(), (1, 1));

    // Client side: a server without a node id, or with the client's own, is refused.
    let refusals = Arc::new(PeerRefusals::default());
    let client = || client_config_counting(&node_2, Arc::clone(&refusals)).expect("client");
    assert!(handshake(client(), server_config_without_node_rules(&nameless)).is_err());
    assert_eq!(refusals.counts(), (1, 0));
    let twin = ca.issue_for_node(2).expect("another node 2");
    assert!(handshake(client(), server_config(&twin).expect("server")).is_err());
    assert_eq!(refusals.counts(), (1, 1));

    // A broker whose own certificate names no node cannot build either side.
    assert_eq!(server_config(&nameless).err(), Some(Error::NodeIdMissing));
    assert_eq!(client_config(&nameless).err(), Some(Error::NodeIdMissing));
}

#[test]
fn an_identity_knows_its_node_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = generate_dev_certs(dir.path(), 3).expect("generate");
    let identity = certs.identity(1).expect("load node 1");
    assert_eq!(identity.node_id(), Ok(1));
    assert_eq!(identity.check_node_id(1), Ok(()));
    let error = identity.check_node_id(2).expect_err("another node");
    assert_eq!(
        error,
        Error::NodeIdMismatch {
            configured: 2,
            certificate: 1
        }
    );
    assert!(error.to_string().contains("node 1"), "{error}");

    // A certificate without a node id does not load; the error names the file.
    let nameless = CertificateAuthority::generate("ca")
        .expect("ca")
        .issue("no node id")
        .expect("nameless");
    let cert = dir.path().join("nameless.pem");
    fs::write(&cert, &nameless.cert_chain_pem).expect("write");
    let (ca, _, key) = certs.identity_paths(0);
    let error = TlsIdentity::load(ca, &cert, key).expect_err("no node id");
    assert!(
        matches!(&error, Error::TlsFile { path, .. } if *path == cert),
        "{error}"
    );
    assert!(error.to_string().contains("urn:sluice:node:"), "{error}");
}

#[test]
fn dev_certs_without_their_node_id_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = generate_dev_certs(dir.path(), 2).expect("generate");
    // Node 1's certificate where node 0's belongs.
    let node_0 = fs::read(&certs.nodes[0].cert).expect("node 0");
    fs::write(
        &certs.nodes[0].cert,
        fs::read(&certs.nodes[1].cert).expect("node 1"),
    )
    .expect("swap");
    let error = generate_dev_certs(dir.path(), 2).expect_err("wrong node");
    let message = error.to_string();
    assert!(
        message.contains("node-0.pem") && message.contains("node 1"),
        "{message}"
    );

    // A certificate from before node ids (none in it).
    let ca = CertificateAuthority::from_pem(
        &fs::read_to_string(&certs.ca_cert).expect("ca"),
        &fs::read_to_string(&certs.ca_key).expect("ca key"),
    )
    .expect("ca");
    fs::write(
        &certs.nodes[0].cert,
        ca.issue("sluice node 0").expect("old").cert_chain_pem,
    )
    .expect("old certificate");
    let message = generate_dev_certs(dir.path(), 2)
        .expect_err("no node id")
        .to_string();
    assert!(
        message.contains("remove node-0.pem and node-0-key.pem"),
        "{message}"
    );

    fs::write(&certs.nodes[0].cert, node_0).expect("restore");
    generate_dev_certs(dir.path(), 2).expect("intact again");
}
