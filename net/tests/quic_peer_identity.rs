//! Who a peer is: the node id in its CA-signed certificate. Every received frame carries it, a
//! certificate naming no node is refused, and so is one naming the receiver's own node.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::raw_client::{Deliver, RawClient, tls_without_node_rules};
use common::{WAIT_MS_MAX, bind, cluster, exchange, frame, recv_within, run, stats_until, within};
use sluice_net::tls::CertificateAuthority;
use sluice_net::{Error, FrameKind, Transport, TransportConfig};

#[test]
fn frames_carry_the_node_id_of_the_senders_certificate() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 3);
        let nodes: Vec<Transport> = ids.iter().map(|id| bind(id.clone())).collect();
        for (node, transport) in (0..).zip(&nodes) {
            assert_eq!(transport.local_node_id(), node);
        }
        // `exchange` checks each frame's `peer_node_id` against the sender's certificate.
        let hello = [frame(FrameKind::Swim, b"hello".to_vec())];
        exchange(&nodes[0], &nodes[1], &hello).await;
        exchange(&nodes[2], &nodes[1], &hello).await;
        exchange(&nodes[1], &nodes[0], &hello).await;
        let incoming = within(WAIT_MS_MAX, "a frame from node 2", async {
            nodes[2]
                .send(nodes[0].local_addr(), FrameKind::RaftBatch, b"append")
                .expect("send");
            nodes[0].recv().await
        })
        .await;
        assert_eq!(incoming.peer_node_id, 2);
        assert_eq!(incoming.from, nodes[2].local_addr());
    });
}

#[test]
fn a_certificate_for_another_node_is_reported_as_that_node() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = sluice_net::generate_dev_certs(dir.path(), 2).expect("dev certs");
        let b = bind(certs.identity(1).expect("node 1"));
        // A holder of a genuine certificate of the cluster CA, for node 7, whose messages claim
        // to come from node 0: the transport reports 7, so the claim shows as a mismatch.
        let ca = CertificateAuthority::from_pem(
            &std::fs::read_to_string(&certs.ca_cert).expect("CA"),
            &std::fs::read_to_string(&certs.ca_key).expect("CA key"),
        )
        .expect("CA");
        let impostor = bind(ca.issue_for_node(7).expect("node 7"));
        impostor
            .send(b.local_addr(), FrameKind::Swim, b"I am node 0")
            .expect("send");
        let incoming = within(WAIT_MS_MAX, "the impostor's frame", b.recv()).await;
        assert_eq!(incoming.peer_node_id, 7);
        assert_eq!(incoming.frame.body, b"I am node 0");
    });
}

#[test]
fn a_certificate_naming_no_node_is_refused() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let certs = sluice_net::generate_dev_certs(dir.path(), 2).expect("dev certs");
        let b = bind(certs.identity(1).expect("node 1"));
        let ca = CertificateAuthority::from_pem(
            &std::fs::read_to_string(&certs.ca_cert).expect("CA"),
            &std::fs::read_to_string(&certs.ca_key).expect("CA key"),
        )
        .expect("CA");
        let nameless = ca.issue("no node id").expect("nameless identity");

        // Such an identity cannot run a transport: every peer would refuse it.
        assert_eq!(
            Transport::bind(TransportConfig::new(common::loopback(), nameless.clone())).err(),
            Some(Error::NodeIdMissing)
        );

        // A client presenting it anyway is refused in the handshake.
        let client = RawClient::start(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            b.local_addr(),
            tls_without_node_rules(&nameless),
            1,
            Deliver::Everything,
        );
        stats_until(&b, "b to refuse the nameless certificate", |stats| {
            stats.peers_refused_without_node_id >= 1
        })
        .await;
        within(WAIT_MS_MAX, "the client to see the refusal", async {
            while client.lost() == 0 {
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
        .await;
        client.stop();
        let stats = b.stats();
        assert_eq!(stats.connections_established, 0, "{stats:?}");
        assert!(stats.connections_refused >= 1, "{stats:?}");
        assert_eq!(recv_within(&b, 200).await, None);

        // A well-named peer still gets in.
        let a = bind(certs.identity(0).expect("node 0"));
        exchange(&a, &b, &[frame(FrameKind::Swim, b"named".to_vec())]).await;
    });
}

#[test]
fn a_second_broker_with_our_node_id_is_refused_both_ways() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        // Another broker started with node 0's certificate (a copied configuration).
        let twin = bind(ids[0].clone());

        twin.send(a.local_addr(), FrameKind::Swim, b"I am node 0 too")
            .expect("send");
        stats_until(&twin, "the twin to refuse a", |stats| {
            stats.peers_refused_own_node_id >= 1
        })
        .await;
        a.send(twin.local_addr(), FrameKind::Swim, b"so am I")
            .expect("send");
        stats_until(&a, "a to refuse the twin", |stats| {
            stats.peers_refused_own_node_id >= 1
        })
        .await;
        assert_eq!(recv_within(&a, 200).await, None);
        assert_eq!(recv_within(&twin, 200).await, None);
        for transport in [&a, &twin] {
            let stats = transport.stats();
            assert_eq!(stats.connections_established, 0, "{stats:?}");
            assert_eq!(stats.peers_refused_without_node_id, 0, "{stats:?}");
        }

        // Node 1 talks to a as usual.
        let b = bind(ids[1].clone());
        exchange(&b, &a, &[frame(FrameKind::Swim, b"fine".to_vec())]).await;
    });
}
