//! The QUIC transport end to end on 127.0.0.1: mutual TLS, ordering, corrupt input, restarts and
//! cut links. Each test runs its transports on one glommio executor with a small `io_memory` (the
//! process's locked-memory limit is shared by tests running in parallel) and bounds every wait,
//! so a hang fails the test instead of blocking CI.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use sluice_net::tls::CertificateAuthority;
use sluice_net::{Error, Frame, FrameKind, TlsIdentity, Transport, TransportConfig, encode_frame};

mod common;

use common::*;

#[test]
fn frames_cross_both_ways_in_order_including_a_4_mib_frame() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());

        let a_to_b = vec![
            frame(FrameKind::Swim, b"ping".to_vec()),
            frame(FrameKind::RaftBatch, body(1, 1024)),
            frame(FrameKind::RaftBatch, body(2, 4 << 20)),
            frame(FrameKind::Swim, Vec::new()),
            frame(FrameKind::RaftBatch, body(3, 100)),
            frame(FrameKind::Swim, body(4, 3000)),
        ];
        exchange(&a, &b, &a_to_b).await;

        // The other way reuses the connection a opened.
        let b_to_a: Vec<Frame> = (0..50_u32)
            .map(|i| {
                let kind = if i % 3 == 0 {
                    FrameKind::Swim
                } else {
                    FrameKind::RaftBatch
                };
                frame(kind, body(i, 64 + i as usize * 97))
            })
            .collect();
        exchange(&b, &a, &b_to_a).await;

        let a_stats = a.stats();
        let b_stats = b.stats();
        assert_eq!(a_stats.connections_established, 1, "{a_stats:?}");
        assert_eq!(b_stats.connections_established, 1, "{b_stats:?}");
        assert_eq!(a_stats.connections_open, 1);
        assert_eq!(a_stats.frames_sent, 6);
        assert_eq!(b_stats.frames_received, 6);
        assert_eq!(a_stats.frames_received, 50);
        assert_eq!(a_stats.frames_dropped + b_stats.frames_dropped, 0);
        assert_eq!(a_stats.malformed_streams + b_stats.malformed_streams, 0);

        let oversized = vec![0; sluice_net::FRAME_BODY_BYTES_MAX as usize + 1];
        assert!(matches!(
            a.send(b.local_addr(), FrameKind::RaftBatch, &oversized),
            Err(Error::FrameTooLarge { .. })
        ));
        a.close();
        b.close();
    });
}

#[test]
fn a_peer_from_another_ca_can_neither_send_nor_receive() {
    run(|| async {
        let cluster_dir = tempfile::tempdir().expect("temp dir");
        let foreign_dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(cluster_dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        let foreign_ca = CertificateAuthority::generate("Some other CA").expect("foreign CA");
        let foreign = bind(foreign_ca.issue_for_node(5).expect("foreign identity"));
        // Dev certs of another directory are another CA too.
        let other_dev = bind(cluster(foreign_dir.path(), 1).remove(0));

        foreign
            .send(a.local_addr(), FrameKind::Swim, b"let me in")
            .expect("send");
        a.send(foreign.local_addr(), FrameKind::Swim, b"secret")
            .expect("send");
        other_dev
            .send(b.local_addr(), FrameKind::RaftBatch, b"append")
            .expect("send");
        stats_until(&a, "a to refuse the foreign CA", |stats| {
            stats.connections_refused >= 1
        })
        .await;
        stats_until(&foreign, "the foreign peer to refuse a", |stats| {
            stats.connections_refused >= 1
        })
        .await;
        stats_until(&b, "b to refuse the other dev CA", |stats| {
            stats.connections_refused >= 1
        })
        .await;

        // The cluster still works between its members, and nothing foreign got through.
        exchange(&a, &b, &[frame(FrameKind::Swim, b"member".to_vec())]).await;
        assert_eq!(recv_within(&a, 300).await, None);
        assert_eq!(recv_within(&foreign, 300).await, None);
        assert_eq!(recv_within(&b, 300).await, None);
        for transport in [&foreign, &other_dev] {
            let stats = transport.stats();
            assert_eq!(stats.connections_established, 0, "{stats:?}");
            assert_eq!(stats.frames_received, 0, "{stats:?}");
        }
        assert_eq!(a.stats().connections_established, 1);
    });
}

#[test]
fn garbage_datagrams_and_corrupt_streams_are_contained() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 3);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        let c = bind(ids[2].clone());

        // Raw datagrams: short, long-header-looking, large random, empty.
        let raw = std::net::UdpSocket::bind(loopback()).expect("raw socket");
        let mut garbage = vec![vec![0xC3; 1200], vec![0x40; 40], Vec::new(), body(9, 1500)];
        garbage.push({
            let mut initial = body(10, 1200);
            initial[0] = 0xC0;
            initial[1..5].copy_from_slice(&1_u32.to_be_bytes());
            initial
        });
        for datagram in &garbage {
            raw.send_to(datagram, b.local_addr()).expect("send garbage");
        }
        exchange(&a, &b, &[frame(FrameKind::Swim, b"still fine".to_vec())]).await;

        // A frame whose body was damaged after the checksum was computed.
        let mut damaged = Vec::new();
        encode_frame(FrameKind::RaftBatch, &body(5, 2048), &mut damaged).expect("encode");
        damaged[100] ^= 0x10;
        a.send_raw_stream_bytes_for_test(b.local_addr(), &damaged);
        stats_until(&b, "b to stop the damaged stream", |stats| {
            stats.malformed_streams >= 1
        })
        .await;
        assert_eq!(
            recv_within(&b, 200).await,
            None,
            "no frame from the damaged stream"
        );

        // Bytes that are not a frame at all, on another stream of the same connection.
        a.send_raw_stream_bytes_for_test(b.local_addr(), b"GET / HTTP/1.1\r\n\r\n");
        stats_until(&b, "b to stop the garbage stream", |stats| {
            stats.malformed_streams >= 2
        })
        .await;

        // The connection and its frame streams carry on, and other peers are unaffected.
        let after = [
            frame(FrameKind::RaftBatch, body(6, 5000)),
            frame(FrameKind::Swim, b"after".to_vec()),
        ];
        exchange(&a, &b, &after).await;
        exchange(&c, &b, &after).await;
        exchange(&b, &a, &after).await;
        assert_eq!(b.stats().connections_established, 2);
        assert_eq!(b.stats().connections_lost, 0);
    });
}

#[test]
fn sends_reconnect_to_a_restarted_peer() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        let b_addr = b.local_addr();
        exchange(&a, &b, &[frame(FrameKind::Swim, b"before".to_vec())]).await;

        b.close();
        within(WAIT_MS_MAX, "b to release its socket", b.closed()).await;
        drop(b);
        let restarted = within(WAIT_MS_MAX, "the address to be free", async {
            loop {
                match bind_at(b_addr, ids[1].clone()) {
                    Ok(transport) => break transport,
                    Err(Error::Bind { .. }) => sleep(Duration::from_millis(20)).await,
                    Err(other) => panic!("rebind: {other}"),
                }
            }
        })
        .await;
        assert_eq!(restarted.local_addr(), b_addr);

        // Raft and SWIM retransmit; so does this loop, until a frame makes it.
        let received = within(WAIT_MS_MAX, "a frame after the restart", async {
            let mut attempt = 0_u32;
            loop {
                a.send(b_addr, FrameKind::Swim, &attempt.to_le_bytes())
                    .expect("send");
                attempt += 1;
                if let Some(incoming) = recv_within(&restarted, 200).await {
                    break incoming;
                }
            }
        })
        .await;
        assert_eq!(received.from, a.local_addr());
        assert_eq!(received.frame.kind, FrameKind::Swim);
        let a_stats = a.stats();
        assert!(a_stats.connections_lost >= 1, "{a_stats:?}");
        assert_eq!(a_stats.connections_established, 2, "{a_stats:?}");

        // Both ways work on the new connection.
        exchange(
            &restarted,
            &a,
            &[frame(FrameKind::RaftBatch, body(7, 70_000))],
        )
        .await;
    });
}

#[test]
fn blocked_peers_get_nothing_until_unblocked() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        exchange(&a, &b, &[frame(FrameKind::Swim, b"connected".to_vec())]).await;

        a.set_blocked(vec![b.local_addr()]);
        a.send(b.local_addr(), FrameKind::Swim, b"cut a to b")
            .expect("send");
        b.send(a.local_addr(), FrameKind::Swim, b"cut b to a")
            .expect("send");
        assert_eq!(recv_within(&b, 700).await, None, "a to b while blocked");
        assert_eq!(recv_within(&a, 300).await, None, "b to a while blocked");
        assert!(a.stats().datagrams_blocked > 0);

        a.set_blocked(Vec::new());
        // What was sent during the cut may arrive by retransmission; new sends must arrive.
        let delivered = Rc::new(Cell::new(false));
        within(WAIT_MS_MAX, "delivery after unblocking", async {
            while !delivered.get() {
                a.send(b.local_addr(), FrameKind::Swim, b"healed")
                    .expect("send");
                if let Some(incoming) = recv_within(&b, 200).await {
                    assert_eq!(incoming.from, a.local_addr());
                    assert!(
                        incoming.frame.body == b"healed" || incoming.frame.body == b"cut a to b",
                        "unexpected {:?}",
                        incoming.frame
                    );
                    delivered.set(true);
                }
            }
        })
        .await;
        let incoming = within(WAIT_MS_MAX, "b to a after unblocking", async {
            loop {
                b.send(a.local_addr(), FrameKind::Swim, b"healed too")
                    .expect("send");
                if let Some(incoming) = recv_within(&a, 200).await {
                    break incoming;
                }
            }
        })
        .await;
        assert_eq!(incoming.from, b.local_addr());
    });
}

#[test]
fn invalid_configuration_is_refused_before_binding() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let identity = cluster(dir.path(), 1).remove(0);
        let mut config = TransportConfig::new(loopback(), identity.clone());
        config.keep_alive_interval_ms = config.idle_timeout_ms;
        assert!(matches!(
            Transport::bind(config),
            Err(Error::InvalidTransportConfig {
                field: "keep_alive_interval_ms",
                ..
            })
        ));
        let mut config = TransportConfig::new(loopback(), identity.clone());
        config.initial_mtu_bytes = 1500;
        assert!(matches!(
            Transport::bind(config),
            Err(Error::InvalidTransportConfig {
                field: "initial_mtu_bytes",
                ..
            })
        ));
        let mut broken = identity;
        broken.private_key_pem = b"not a key".to_vec();
        assert!(matches!(
            Transport::bind(TransportConfig::new(loopback(), broken)),
            Err(Error::TlsConfig { .. })
        ));
    });
}

#[test]
fn a_full_inbox_pushes_back_without_losing_frames() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let a = bind(ids[0].clone());
        let b = bind(ids[1].clone());
        // More frames than the inbox holds, sent while b reads nothing.
        let count = sluice_net::quic::RECEIVED_FRAMES_MAX + 1000;
        let frames: Vec<Frame> = (0..count)
            .map(|i| {
                let kind = if i % 2 == 0 {
                    FrameKind::Swim
                } else {
                    FrameKind::RaftBatch
                };
                frame(kind, body(u32::try_from(i).expect("small"), 200))
            })
            .collect();
        for frame in &frames {
            a.send(b.local_addr(), frame.kind, &frame.body)
                .expect("send");
        }
        stats_until(&b, "b's inbox to fill", |stats| {
            stats.frames_received >= sluice_net::quic::RECEIVED_FRAMES_MAX as u64
        })
        .await;
        sleep(Duration::from_millis(200)).await;
        let stats = b.stats();
        assert!(
            stats.frames_received < count as u64,
            "reading stopped at the inbox bound: {stats:?}"
        );
        // Draining the inbox resumes reading; every frame arrives, in order per kind.
        let mut received = Vec::new();
        within(WAIT_MS_MAX, "all frames", async {
            while received.len() < count {
                received.push(b.recv().await.frame);
            }
        })
        .await;
        for kind in FrameKind::ALL {
            let sent = frames.iter().filter(|frame| frame.kind == kind);
            assert!(
                sent.eq(received.iter().filter(|frame| frame.kind == kind)),
                "{kind:?} frames differ"
            );
        }
        assert_eq!(a.stats().frames_dropped, 0);
    });
}

#[test]
fn a_full_send_queue_drops_and_counts() {
    run(|| async {
        let dir = tempfile::tempdir().expect("temp dir");
        let ids = cluster(dir.path(), 2);
        let mut config = TransportConfig::new(loopback(), ids[0].clone());
        config.send_queue_bytes_max = sluice_net::FRAME_BODY_BYTES_MAX as usize + 16;
        let a = Transport::bind(config).expect("bind");
        let b = bind(ids[1].clone());
        exchange(&a, &b, &[frame(FrameKind::Swim, b"connected".to_vec())]).await;
        // Cut the link so nothing drains: QUIC's own send window fills, then the queue.
        a.set_blocked(vec![b.local_addr()]);
        let megabyte = body(1, 1 << 20);
        for _ in 0..80 {
            a.send(b.local_addr(), FrameKind::RaftBatch, &megabyte)
                .expect("send");
        }
        let stats = a.stats();
        assert!(stats.frames_dropped > 0, "{stats:?}");
        assert!(stats.frames_dropped < 80, "{stats:?}");
    });
}

/// Rough throughput of Raft-like traffic on loopback: 1 MiB frames, a bounded number in flight.
/// Run with `cargo test -p sluice-net --release --test quic -- --ignored --nocapture`.
#[test]
#[ignore = "measurement, prints MB/s"]
fn throughput_on_loopback() {
    for mtu_upper_bound_bytes in [1452_u16, 16_384, 65_527] {
        run(|| async move {
            const FRAME_BYTES: usize = 1 << 20;
            const FRAMES: usize = 512;
            const IN_FLIGHT_MAX: usize = 32;
            let dir = tempfile::tempdir().expect("temp dir");
            let ids = cluster(dir.path(), 2);
            let config = |identity: TlsIdentity| {
                let mut config = TransportConfig::new(loopback(), identity);
                config.mtu_upper_bound_bytes = mtu_upper_bound_bytes;
                config
            };
            let a = Transport::bind(config(ids[0].clone())).expect("bind");
            let b = Transport::bind(config(ids[1].clone())).expect("bind");
            let payload = body(1, FRAME_BYTES);
            let received = Rc::new(Cell::new(0_usize));
            let start = Instant::now();
            let reader = {
                let b = b.clone();
                let received = Rc::clone(&received);
                glommio::spawn_local(async move {
                    while received.get() < FRAMES {
                        let incoming = b.recv().await;
                        assert_eq!(incoming.frame.body.len(), FRAME_BYTES);
                        received.set(received.get() + 1);
                    }
                })
            };
            within(120_000, "the transfer", async {
                let mut sent = 0;
                while sent < FRAMES {
                    if sent - received.get() < IN_FLIGHT_MAX {
                        a.send(b.local_addr(), FrameKind::RaftBatch, &payload)
                            .expect("send");
                        sent += 1;
                    } else {
                        sleep(Duration::from_micros(200)).await;
                    }
                }
                reader.await;
            })
            .await;
            let seconds = start.elapsed().as_secs_f64();
            #[allow(clippy::cast_precision_loss)]
            let megabytes = (FRAMES * FRAME_BYTES) as f64 / 1e6;
            println!(
                "mtu_upper_bound_bytes {mtu_upper_bound_bytes}: {megabytes:.0} MB in \
                 {seconds:.2} s = {:.1} MB/s ({} datagrams sent, {} dropped frames)",
                megabytes / seconds,
                a.stats().datagrams_sent,
                a.stats().frames_dropped
            );
        });
    }
}
