//! A three-broker cluster, then a rogue broker with certificates from another CA: node id 2 of
//! a three-broker configuration, its own data and ports, its contact points the cluster's
//! internal ports. Mutual TLS must keep it out: no cluster broker ever lists the rogue's
//! address, the rogue sees no peer alive, the cluster counts refused connections, and the
//! cluster goes on serving appends.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, append_once, index_of, test_env};
use sluice_broker::dev::{self, DevOptions};

const PORT_OFFSET: u32 = 240;
/// The rogue's `network.portOffset`, inside this test's range (240..250).
const ROGUE_PORT_OFFSET: u32 = 243;
/// The rogue's node id: one the cluster has.
const ROGUE_NODE_ID: u32 = 2;
/// How long the cluster is watched while the rogue knocks.
const WATCH: Duration = Duration::from_secs(8);
const REFUSED: &str = "sluice_transport_connections_refused_total";
const ALIVE: &str = "sluice_cluster_members_alive";

#[test]
fn cluster_foreign_ca() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 3,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let mut cluster = Cluster::create("cluster_foreign_ca", options.clone());

    // The rogue: its own CA, certificates, data and ports; the cluster's contact points.
    let rogue_dir = cluster.dir.join("rogue");
    sluice_net::tls::generate_dev_certs(&rogue_dir.join("certs"), 3)
        .expect("generating the rogue's certificates");
    let cluster_ca = std::fs::read(cluster.dir.join("certs").join("ca.pem")).expect("cluster CA");
    let rogue_ca = std::fs::read(rogue_dir.join("certs").join("ca.pem")).expect("rogue CA");
    assert_ne!(cluster_ca, rogue_ca, "the rogue must have its own CA");
    let rogue_config = rogue_dir.join("rogue.yaml");
    std::fs::write(
        &rogue_config,
        dev::broker_yaml(&options, &rogue_dir, ROGUE_NODE_ID),
    )
    .expect("writing the rogue's configuration");
    let mut rogue_env = test_env();
    rogue_env.push((
        "ZEEBE_BROKER_NETWORK_PORTOFFSET".to_owned(),
        ROGUE_PORT_OFFSET.to_string(),
    ));
    let rogue = cluster.add_broker(
        "rogue",
        ROGUE_NODE_ID,
        ROGUE_PORT_OFFSET,
        rogue_config,
        rogue_dir
            .join(format!("broker-{ROGUE_NODE_ID}"))
            .join("data"),
        rogue_env,
    );
    let rogue_address = cluster.brokers[rogue].internal_api().to_string();

    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    let partitions: Vec<u32> = cluster.layout().partition_ids().collect();
    cluster.wait_until("the cluster to converge", Duration::from_secs(20), || {
        for index in cluster.cluster_brokers() {
            let alive = cluster.metric(index, ALIVE)?;
            if (alive - 2.0).abs() > f64::EPSILON {
                return Err(format!("broker {index} sees {alive} other brokers alive"));
            }
        }
        for &partition in &partitions {
            cluster.settled_leader(partition)?;
        }
        Ok(())
    });
    let refused_before = refused(&cluster);

    cluster.spawn(rogue);
    cluster.wait_until(
        "the rogue to serve its management API",
        Duration::from_secs(20),
        || cluster.cluster_view(rogue),
    );
    watch(&cluster, rogue, &rogue_address);

    let refused_after = refused(&cluster);
    cluster.note(&format!(
        "{REFUSED} over the cluster: {refused_before} before the rogue, {refused_after} after"
    ));
    assert!(
        refused_after > refused_before,
        "the cluster refused no connection from the rogue ({REFUSED}: {refused_before} before, \
         {refused_after} after)"
    );
    let rogue_refused = cluster.metric(rogue, REFUSED).unwrap_or(f64::NAN);
    cluster.note(&format!("the rogue's {REFUSED}: {rogue_refused}"));

    for &partition in &partitions {
        let index = append_once(
            cluster.command_apis(),
            partition,
            format!("after-rogue-p{partition}").as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        cluster.note(&format!(
            "partition {partition}: committed at index {index}"
        ));
    }
    cluster.terminate_all();
}

/// The refused-connection counters of the cluster's brokers, summed.
fn refused(cluster: &Cluster) -> f64 {
    cluster
        .cluster_brokers()
        .map(|index| {
            cluster
                .metric(index, REFUSED)
                .unwrap_or_else(|error| panic!("{error}"))
        })
        .sum()
}

/// For [`WATCH`]: no cluster broker lists the rogue's address or sees a third peer, broker 2 is
/// still the real one, and the rogue sees nobody alive.
fn watch(cluster: &Cluster, rogue: usize, rogue_address: &str) {
    let end = Instant::now() + WATCH;
    let mut polls = 0;
    while Instant::now() < end {
        cluster.assert_no_exits();
        polls += 1;
        for index in cluster.cluster_brokers() {
            let view = cluster
                .cluster_view(index)
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(
                view.brokers
                    .iter()
                    .all(|member| member.address != rogue_address),
                "broker {index} lists the rogue ({rogue_address}): {view:?}"
            );
            let real = cluster.brokers[index_of(ROGUE_NODE_ID)]
                .internal_api()
                .to_string();
            let member = view.broker(ROGUE_NODE_ID).unwrap_or_else(|| {
                panic!("broker {index} no longer lists node {ROGUE_NODE_ID}: {view:?}")
            });
            assert_eq!(
                member.address, real,
                "broker {index} lists node {ROGUE_NODE_ID} at another address"
            );
            let alive = cluster
                .metric(index, ALIVE)
                .unwrap_or_else(|error| panic!("{error}"));
            assert!(
                alive <= 2.0,
                "broker {index} sees {alive} other brokers alive in a three-broker cluster"
            );
        }
        let view = cluster
            .cluster_view(rogue)
            .unwrap_or_else(|error| panic!("the rogue: {error}"));
        let alive_peers: Vec<_> = view
            .brokers
            .iter()
            .filter(|member| member.node_id != ROGUE_NODE_ID && member.state == "ALIVE")
            .collect();
        assert!(
            alive_peers.is_empty(),
            "the rogue sees peers alive: {alive_peers:?}"
        );
        let alive = cluster
            .metric(rogue, ALIVE)
            .unwrap_or_else(|error| panic!("the rogue: {error}"));
        assert!(alive == 0.0, "the rogue sees {alive} other brokers alive");
        std::thread::sleep(Duration::from_millis(250));
    }
    cluster.note(&format!(
        "watched for {WATCH:?} ({polls} polls): the rogue stayed out"
    ));
}
