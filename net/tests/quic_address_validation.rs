//! Incoming attempts before any state: a source not yet validated gets a QUIC Retry and nothing
//! else, and a validated source gets at most `HANDSHAKES_PER_SOURCE_MAX` handshakes and
//! `CONNECTIONS_PER_SOURCE_MAX` connections, while other sources and this broker's own dials go
//! on.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::raw_client::{Deliver, RawClient};
use common::{WAIT_MS_MAX, bind, bind_at, cluster, exchange, frame, run, stats_until, within};
use glommio::timer::sleep;
use sluice_net::quic::{CONNECTIONS_PER_SOURCE_MAX, HANDSHAKES_PER_SOURCE_MAX};
use sluice_net::{FrameKind, tls};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Another source on the loopback network (all of 127.0.0.0/8 is local on Linux).
const OTHER_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

#[test]
fn a_fresh_source_is_retried_before_it_gets_a_connection() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        exchange(&a, &b, &[frame(FrameKind::Swim, b"first".to_vec())]).await;
        let stats = b.stats();
        assert_eq!(stats.retries_sent, 1, "{stats:?}");
        assert_eq!(stats.connections_established, 1, "{stats:?}");
        // The other way rides on the same connection: nothing more to validate.
        exchange(&b, &a, &[frame(FrameKind::Swim, b"back".to_vec())]).await;
        assert_eq!(a.stats().retries_sent, 0);
        assert_eq!(b.stats().retries_sent, 1);
    });
}

#[test]
fn a_source_that_never_answers_the_retry_gets_no_state() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let b = bind(ids[1].clone());
        // As a spoofed source would: Initials go out, the Retries never come back.
        let client = RawClient::start(
            LOCALHOST,
            b.local_addr(),
            tls::client_config(&ids[0]).expect("client TLS"),
            HANDSHAKES_PER_SOURCE_MAX * 4,
            Deliver::Nothing,
        );
        stats_until(&b, "b to answer every attempt with a Retry", |stats| {
            stats.retries_sent >= (HANDSHAKES_PER_SOURCE_MAX * 4) as u64
        })
        .await;
        client.stop();
        let stats = b.stats();
        assert_eq!(stats.incoming_handshakes_open, 0, "{stats:?}");
        assert_eq!(stats.connections_established, 0, "{stats:?}");
        assert_eq!(stats.connections_refused, 0, "{stats:?}");
    });
}

#[test]
fn handshakes_from_one_source_are_capped_while_another_source_and_dials_go_on() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 4);
        let b = bind(ids[1].clone());
        // A source that proves its address, then leaves every handshake hanging.
        let extra = 3;
        let client = RawClient::start(
            LOCALHOST,
            b.local_addr(),
            tls::client_config(&ids[0]).expect("client TLS"),
            HANDSHAKES_PER_SOURCE_MAX + extra,
            Deliver::RetriesOnly,
        );
        stats_until(&b, "the source's handshakes to hit the cap", |stats| {
            stats.incoming_handshakes_open == HANDSHAKES_PER_SOURCE_MAX as u64
                && stats.connections_refused_per_source >= extra as u64
        })
        .await;

        // Another source connects, and b still reaches its peers.
        let c = bind_at(SocketAddr::new(OTHER_SOURCE, 0), ids[2].clone()).expect("bind c");
        exchange(&c, &b, &[frame(FrameKind::Swim, b"other source".to_vec())]).await;
        let d = bind(ids[3].clone());
        exchange(&b, &d, &[frame(FrameKind::RaftBatch, b"dial out".to_vec())]).await;

        let stats = b.stats();
        assert_eq!(
            stats.incoming_handshakes_open, HANDSHAKES_PER_SOURCE_MAX as u64,
            "{stats:?}"
        );
        assert_eq!(stats.connections_established, 2, "{stats:?}");
        assert_eq!(stats.connections_refused_at_capacity, 0, "{stats:?}");
        assert!(
            stats.retries_sent > HANDSHAKES_PER_SOURCE_MAX as u64,
            "{stats:?}"
        );
        client.stop();
    });
}

#[test]
fn connections_from_one_source_are_capped_while_another_source_goes_on() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 3);
        let b = bind(ids[1].clone());
        // One source opening more connections than it may hold, a few at a time so the
        // handshake cap is not what stops it.
        let extra = 2;
        let mut clients = Vec::new();
        let mut opened = 0;
        while opened < CONNECTIONS_PER_SOURCE_MAX + extra {
            let batch = HANDSHAKES_PER_SOURCE_MAX.min(CONNECTIONS_PER_SOURCE_MAX + extra - opened);
            let before = b.stats().connections_established + b.stats().connections_refused;
            clients.push(RawClient::start(
                LOCALHOST,
                b.local_addr(),
                tls::client_config(&ids[0]).expect("client TLS"),
                batch,
                Deliver::Everything,
            ));
            opened += batch;
            within(WAIT_MS_MAX, "the batch to be decided", async {
                loop {
                    let stats = b.stats();
                    if stats.connections_established + stats.connections_refused
                        >= before + batch as u64
                    {
                        break;
                    }
                    sleep(Duration::from_millis(10)).await;
                }
            })
            .await;
        }
        stats_until(&b, "the source's connections to hit the cap", |stats| {
            stats.connections_established == CONNECTIONS_PER_SOURCE_MAX as u64
                && stats.connections_refused_per_source >= extra as u64
        })
        .await;
        sleep(Duration::from_millis(200)).await;
        let stats = b.stats();
        assert_eq!(
            stats.connections_established, CONNECTIONS_PER_SOURCE_MAX as u64,
            "no more got in: {stats:?}"
        );
        let connected: usize = clients.iter().map(RawClient::connected).sum();
        assert_eq!(connected, CONNECTIONS_PER_SOURCE_MAX);

        let c = bind_at(SocketAddr::new(OTHER_SOURCE, 0), ids[2].clone()).expect("bind c");
        exchange(&c, &b, &[frame(FrameKind::Swim, b"other source".to_vec())]).await;
        for client in clients {
            client.stop();
        }
    });
}
