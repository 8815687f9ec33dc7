//! Three brokers, three partitions, replication factor 3. After appends to every partition, all
//! three brokers shut down (SIGTERM) and start again without contact points
//! (`ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS=` empty), so they can find each other only
//! through the topology each kept on disk. The cluster must converge again, append after the
//! earlier entries, and every replica's journal must hold every acknowledged append.
//!
//! The brokers restart as soon as the old processes are reaped, as a supervisor would: their
//! ports can stay held for a few milliseconds after that (found by this test; the broker now
//! retries its binds at start-up).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Ack, Cluster, append_ack, check_ack_order, check_journals, node_of};
use sluice_broker::client_api::AppendClient;
use sluice_broker::dev::DevOptions;
use sluice_broker::partitioning::PartitionId;

const PORT_OFFSET: u32 = 230;
const APPENDS_PER_PARTITION: usize = 5;
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn cluster_full_restart() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 3,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("cluster_full_restart", options);
    let partitions: Vec<PartitionId> = cluster.layout().partition_ids().collect();
    wait_for_convergence(&cluster, "the first start");
    let mut acks: BTreeMap<PartitionId, Vec<Ack>> = BTreeMap::new();
    append_round(&cluster, &mut acks, "before");
    for &partition in &partitions {
        cluster.wait_replicas_synced(partition, Duration::from_secs(10));
    }
    cluster.terminate_all();

    for (index, broker) in cluster.brokers.iter().enumerate() {
        let path = broker.data_dir.join("topology.bin");
        let bytes = std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("broker {index}: {}: {error}", path.display()))
            .len();
        assert!(bytes > 0, "broker {index}: {} is empty", path.display());
        broker.env.borrow_mut().push((
            "ZEEBE_BROKER_CLUSTER_INITIALCONTACTPOINTS".to_owned(),
            String::new(),
        ));
    }
    for index in cluster.cluster_brokers() {
        cluster.spawn(index);
    }
    wait_for_convergence(&cluster, "the restart without contact points");

    let before: BTreeMap<PartitionId, u64> = acks
        .iter()
        .map(|(&partition, acks)| {
            let last = acks.last().expect("appended before the restart").index;
            (partition, last)
        })
        .collect();
    append_round(&cluster, &mut acks, "after");
    for (&partition, acks) in &acks {
        let first_after = acks[APPENDS_PER_PARTITION].index;
        assert!(
            first_after > before[&partition],
            "partition {partition}: the first append after the restart got index {first_after}, \
             not above the last before it ({})",
            before[&partition]
        );
        check_ack_order(acks).unwrap_or_else(|error| panic!("partition {partition}: {error}"));
    }
    for &partition in &partitions {
        cluster.wait_replicas_synced(partition, Duration::from_secs(10));
    }
    cluster.terminate_all();

    for (&partition, acks) in &acks {
        let journals = cluster.read_journals(partition);
        let check = check_journals(&journals, acks).unwrap_or_else(|error| {
            panic!(
                "partition {partition}: the journals do not hold what was acknowledged:\n{error}"
            )
        });
        cluster.note(&format!("partition {partition}: {check:?}"));
    }
}

/// Every broker sees the two others alive through gossip, lists all three ALIVE with the
/// others' command API addresses, and every partition has a leader its replicas follow.
fn wait_for_convergence(cluster: &Cluster, after: &str) {
    let partitions: Vec<PartitionId> = cluster.layout().partition_ids().collect();
    cluster.wait_until(
        &format!("the cluster to converge after {after}"),
        Duration::from_secs(30),
        || {
            for index in cluster.cluster_brokers() {
                // The topology on disk lists members as they were: gossip decides liveness.
                let alive = cluster.metric(index, "sluice_cluster_members_alive")?;
                if (alive - 2.0).abs() > f64::EPSILON {
                    return Err(format!("broker {index} sees {alive} other brokers alive"));
                }
                let view = cluster.cluster_view(index)?;
                for other in cluster.cluster_brokers() {
                    let member = view
                        .broker(node_of(other))
                        .ok_or_else(|| format!("broker {index} does not list broker {other}"))?;
                    let gossiped = other == index
                        || member.command_api
                            == Some(cluster.brokers[other].command_api().to_string());
                    if member.state != "ALIVE" || !gossiped {
                        return Err(format!("broker {index} lists broker {other} as {member:?}"));
                    }
                }
                let (status, body) = cluster.get(index, "/ready")?;
                if status != 200 {
                    return Err(format!("broker {index}: /ready answered {status}: {body}"));
                }
            }
            for &partition in &partitions {
                cluster.settled_leader(partition)?;
            }
            Ok(())
        },
    );
}

/// Appends [`APPENDS_PER_PARTITION`] payloads to every partition, recording the
/// acknowledgements.
fn append_round(cluster: &Cluster, acks: &mut BTreeMap<PartitionId, Vec<Ack>>, round: &str) {
    let mut client = AppendClient::new(cluster.command_apis());
    for partition in cluster.layout().partition_ids() {
        for seq in 0..APPENDS_PER_PARTITION {
            let payload = format!("{round}-p{partition}-{seq}");
            let ack = append_ack(&mut client, partition, payload.as_bytes(), APPEND_TIMEOUT)
                .unwrap_or_else(|error| panic!("{error}"));
            acks.entry(partition).or_default().push(ack);
        }
        let indexes: Vec<u64> = acks[&partition].iter().map(|ack| ack.index).collect();
        cluster.note(&format!(
            "partition {partition}: acknowledged at indexes {indexes:?}"
        ));
    }
}
