//! A replica whose storage fails goes down, says so, and comes back without its broker
//! restarting, while the partition keeps serving from the other replicas.
//!
//! Three brokers, three partitions, replication factor 3, the fault switch on. The leader of
//! partition 1 is made to fail as on a journal error (`POST /actuator/faults?failStorage=1`),
//! with every attempt to reopen it failing until healed (`healStorage=1`). While it is down:
//! - its `/actuator/partitions` says why, its `/health` and `/ready` answer 503 naming
//!   partition 1, its metrics count one failure and say down;
//! - Topology, through its own gateway and another broker's, shows it INACTIVE and UNHEALTHY
//!   for partition 1;
//! - another replica leads partition 1, and every partition serves creations through both
//!   gateways (the down broker's gateway forwards to the new leader);
//! - its broker process stays up, and its other replicas keep working.
//!
//! Healed, it reopens from disk (one failure counted, not more), catches up, becomes healthy,
//! takes the lead back on a rebalance and serves partition 1 as its leader; then every partition
//! serves 30 creations through every gateway, `/health` is 200 everywhere and no broker died.

mod common;

use std::time::Duration;

use common::gateway::Client;
use common::serving::{self, CREATIONS_PER_PARTITION};
use common::{Cluster, node_of, replicas_of};
use sluice_broker::dev::DevOptions;
use sluice_broker::gateway::proto::gateway_protocol as pb;

const PORT_OFFSET: u32 = 370;
const PARTITIONS: u32 = 3;
const FAULTS_ENABLED: &str = "ZEEBE_BROKER_MANAGEMENT_FAULTS_ENABLED";
/// Bound of every wait: elections, gossip, reopening with its back-off (up to a few seconds by
/// the time the test heals it), catching up.
const WAIT: Duration = Duration::from_mins(1);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts to reopen that fail: more than the test could see before it heals the replica.
const REOPEN_FAILURES: u32 = 1_000_000;

#[test]
fn abuse_replica_failure() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: PARTITIONS,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("abuse_replica_failure", options);
    for broker in &cluster.brokers {
        broker
            .env
            .borrow_mut()
            .push((FAULTS_ENABLED.to_owned(), "true".to_owned()));
    }
    cluster.spawn_all_and_elect(WAIT);
    let runtime = serving::runtime();
    let (victim, _) = cluster.settled_leader(1).expect("partition 1 has a leader");
    let other = (victim + 1) % cluster.brokers.len();
    let mut victims_client = serving::client(&runtime, PORT_OFFSET, gateway_index(victim));
    let mut others_client = serving::client(&runtime, PORT_OFFSET, gateway_index(other));
    serving::deploy_one_task(&runtime, &mut others_client);
    cluster.note(&format!(
        "broker {victim} leads partition 1 and will fail; broker {other}'s gateway is the other"
    ));

    fail_and_check_down(
        &cluster,
        &runtime,
        victim,
        [&mut victims_client, &mut others_client],
    );
    heal_and_check_back(&cluster, &runtime, victim, &mut victims_client);
    serving::assert_still_serving(&cluster, &runtime, PORT_OFFSET);
    cluster.note(&format!(
        "every partition served {CREATIONS_PER_PARTITION} creations through every gateway"
    ));
    cluster.terminate_all();
}

/// Fails broker `victim`'s replica of partition 1 and checks what the cluster says and does
/// while it is down; `clients` are the victim's gateway's and another's.
fn fail_and_check_down(
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    victim: usize,
    clients: [&mut Client; 2],
) {
    let [victims_client, others_client] = clients;
    // The failure.
    let path = format!("/actuator/faults?failStorage=1&reopenFailures={REOPEN_FAILURES}");
    let (status, body) = cluster
        .post(victim, &path, HTTP_TIMEOUT)
        .expect("the fault switch");
    assert_eq!(status, 200, "{path}: {body}");
    let down = cluster.wait_until("the replica to report itself down", WAIT, || {
        let view = cluster.partition_view(victim, 1)?;
        view.down
            .clone()
            .ok_or_else(|| format!("not down yet: {view:?}"))
    });
    cluster.note(&format!("down: {down}"));
    assert!(down.contains("storage"), "the reason names storage: {down}");

    // Truthful while down (it stays down until healed: nothing here races the reopening).
    for path in ["/health", "/ready"] {
        let (status, body) = cluster.get(victim, path).expect(path);
        assert_eq!(status, 503, "{path} while partition 1 is down: {body}");
        assert!(body.contains('1'), "{path} names partition 1: {body}");
    }
    assert_eq!(metric(cluster, victim, "sluice_partition_down"), "1");
    assert_eq!(
        metric(cluster, victim, "sluice_partition_failures_total"),
        "1"
    );
    for index in cluster.cluster_brokers().filter(|&index| index != victim) {
        let (status, body) = cluster.get(index, "/health").expect("/health");
        assert_eq!(status, 200, "broker {index}'s /health: {body}");
    }
    let new_leader = cluster.wait_until("another replica to lead partition 1", WAIT, || {
        leader_among_others(cluster, victim)
    });
    cluster.note(&format!("broker {new_leader} leads partition 1 meanwhile"));
    for (name, client) in [
        ("the down broker's gateway", &mut *victims_client),
        ("another gateway", &mut *others_client),
    ] {
        cluster.wait_until(
            &format!("{name} to show broker {victim} INACTIVE and UNHEALTHY for partition 1"),
            WAIT,
            || inactive_in_topology(runtime, client, victim),
        );
    }
    for client in [victims_client, others_client] {
        let served = serving::creations_on_every_partition(runtime, client, PARTITIONS, 10);
        cluster.note(&format!("served while down: {served:?}"));
    }
    cluster.assert_no_exits();
    let still_down = cluster.partition_view(victim, 1).expect("its view");
    assert!(
        still_down.down.is_some(),
        "the replica stayed down until healed: {still_down:?}"
    );
}

/// Heals broker `victim`'s replica of partition 1 and checks that it comes back: reopened,
/// caught up, healthy, and leading again on a rebalance.
fn heal_and_check_back(
    cluster: &Cluster,
    runtime: &tokio::runtime::Runtime,
    victim: usize,
    victims_client: &mut Client,
) {
    // Healed: it reopens from disk and catches up.
    let (status, body) = cluster
        .post(victim, "/actuator/faults?healStorage=1", HTTP_TIMEOUT)
        .expect("the fault switch");
    assert_eq!(status, 200, "healStorage: {body}");
    let view = cluster.wait_until("the replica to reopen", WAIT, || {
        let view = cluster.partition_view(victim, 1)?;
        match view.down {
            None => Ok(view),
            Some(_) => Err(format!("still down: {view:?}")),
        }
    });
    assert_eq!(
        view.failures, 1,
        "one failure, however many reopenings failed: {view:?}"
    );
    cluster.wait_replicas_synced(1, WAIT);
    cluster.wait_until("the broker to be healthy again", WAIT, || {
        match cluster.get(victim, "/health")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    });
    assert_eq!(metric(cluster, victim, "sluice_partition_down"), "0");
    assert_eq!(
        metric(cluster, victim, "sluice_partition_failures_total"),
        "1"
    );

    // It leads again and serves as leader.
    let (status, body) = cluster
        .post(victim, "/actuator/rebalance", HTTP_TIMEOUT)
        .expect("rebalance");
    assert_eq!(status, 200, "rebalance: {body}");
    cluster.wait_until(
        "the reopened replica to lead partition 1 again",
        WAIT,
        || match cluster.settled_leader(1)? {
            (leader, _) if leader == victim => Ok(()),
            (leader, _) => Err(format!("broker {leader} leads")),
        },
    );
    let served = serving::creations_on_every_partition(runtime, victims_client, PARTITIONS, 10);
    cluster.note(&format!(
        "served after the reopened replica leads again: {served:?}"
    ));
}

fn gateway_index(index: usize) -> u32 {
    u32::try_from(index).expect("few brokers")
}

/// Metric `name` of broker `index`, as Prometheus prints a whole number.
fn metric(cluster: &Cluster, index: usize, name: &str) -> String {
    let value = cluster
        .metric(index, name)
        .unwrap_or_else(|error| panic!("{error}"));
    format!("{value}")
}

/// The broker that leads partition 1 with the other replica following it, neither `victim`.
fn leader_among_others(cluster: &Cluster, victim: usize) -> Result<usize, String> {
    let others: Vec<usize> = replicas_of(&cluster.layout(), 1)
        .into_iter()
        .map(common::index_of)
        .filter(|&index| index != victim)
        .collect();
    let views = others
        .iter()
        .map(|&index| cluster.partition_view(index, 1).map(|view| (index, view)))
        .collect::<Result<Vec<_>, String>>()?;
    let leader = views
        .iter()
        .find(|(_, view)| view.role == "LEADER")
        .map(|(index, _)| *index)
        .ok_or_else(|| format!("no leader among {views:?}"))?;
    if views
        .iter()
        .all(|(_, view)| view.leader == Some(node_of(leader)))
    {
        Ok(leader)
    } else {
        Err(format!("not settled: {views:?}"))
    }
}

/// `Ok` once Topology through `client` shows broker `victim`'s replica of partition 1 INACTIVE
/// and UNHEALTHY.
fn inactive_in_topology(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    victim: usize,
) -> Result<(), String> {
    let topology = runtime
        .block_on(client.topology(pb::TopologyRequest {}))
        .map_err(|status| format!("Topology: {status:?}"))?
        .into_inner();
    let node_id = i32::try_from(node_of(victim)).expect("a small node id");
    let replica = topology
        .brokers
        .iter()
        .find(|broker| broker.node_id == node_id)
        .and_then(|broker| broker.partitions.iter().find(|p| p.partition_id == 1))
        .ok_or_else(|| format!("no replica of partition 1 on node {node_id}: {topology:?}"))?;
    let inactive = replica.role == i32::from(pb::partition::PartitionBrokerRole::Inactive);
    let unhealthy = replica.health == i32::from(pb::partition::PartitionBrokerHealth::Unhealthy);
    if inactive && unhealthy {
        Ok(())
    } else {
        Err(format!("{replica:?}"))
    }
}
