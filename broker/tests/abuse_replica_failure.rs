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
//! takes the lead back on a rebalance and serves partition 1 as its leader.
//!
//! A replica going down and coming back changes what its broker gossips (a higher incarnation,
//! new metadata) but not its life: requests that wait at that broker for another partition
//! (creations with result, forwarded there by another broker's gateway) are still answered.
//!
//! Then every partition serves 30 creations through every gateway, `/health` is 200
//! everywhere and no broker died.

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
    waits_survive_metadata_changes(&cluster, &runtime);
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
            || inactive_in_topology(runtime, client, victim, 1),
        );
    }
    for client in [victims_client, others_client] {
        // Until a gateway hears of the new leader it sends partition 1's share elsewhere (no
        // creation fails, but the count per partition would not show partition 1 serving).
        cluster.wait_until(
            &format!("the gateway to name broker {new_leader} leader of partition 1"),
            WAIT,
            || leader_in_topology(runtime, client, new_leader, 1),
        );
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

/// Creations with result wait at each partition's leader, sent through one broker's gateway;
/// meanwhile every other broker changes what it gossips (one of its follower replicas goes
/// down, then reopens). Every creation is still answered once its job completes: a higher
/// incarnation of the same life is no reason to give up on what that broker was asked.
fn waits_survive_metadata_changes(cluster: &Cluster, runtime: &tokio::runtime::Runtime) {
    let leaders = spread_leaders(cluster);
    // The gateway of the leader of partition 1; the other partitions' waits are forwarded.
    let gateway = leaders[0];
    let mut client = serving::client(runtime, PORT_OFFSET, gateway_index(gateway));
    deploy_held_task(runtime, &mut client);
    let waiting = create_with_result(gateway);

    // Its jobs, activated (and held) once all three instances run.
    let mut jobs = Vec::new();
    cluster.wait_until("the three instances' jobs", WAIT, || {
        jobs.extend(runtime.block_on(common::gateway::activate(
            &mut client,
            "held",
            "waits",
            i32::try_from(PARTITIONS).expect("few"),
            Duration::from_secs(1),
            HTTP_TIMEOUT,
        )));
        if jobs.len() >= PARTITIONS as usize {
            Ok(())
        } else {
            Err(format!("{} jobs so far", jobs.len()))
        }
    });
    let partitions: std::collections::BTreeSet<u32> = jobs
        .iter()
        .map(|job| serving::partition_of_key(job.process_instance_key))
        .collect();
    assert_eq!(
        partitions.len(),
        PARTITIONS as usize,
        "one per partition: {jobs:?}"
    );

    // Every other broker's gossip changes twice: a follower replica down, then back.
    for &broker in leaders.iter().filter(|&&leader| leader != gateway) {
        let follows = (1..=PARTITIONS)
            .find(|&partition| leaders[partition as usize - 1] != broker)
            .expect("another partition");
        down_and_back(cluster, broker, follows, || {
            inactive_in_topology(runtime, &mut client, broker, follows)
        });
    }
    assert!(
        !waiting.is_finished(),
        "the creations waited for their jobs"
    );

    for job in &jobs {
        runtime
            .block_on(common::gateway::complete(
                &mut client,
                job.key,
                HTTP_TIMEOUT,
            ))
            .unwrap_or_else(|status| panic!("completing job {}: {status:?}", job.key));
    }
    let results = waiting.join().expect("the waiting thread");
    for (n, result) in results.into_iter().enumerate() {
        let result = result.unwrap_or_else(|status| {
            panic!("creation with result {n} after the gossip changes: {status:?}")
        });
        let variables: serde_json::Value =
            serde_json::from_str(&result.variables).expect("JSON variables");
        assert_eq!(variables, serde_json::json!({ "n": n }), "{result:?}");
        assert!(
            jobs.iter()
                .any(|job| job.process_instance_key == result.process_instance_key),
            "{result:?} is one of the held jobs' instances"
        );
    }
    cluster.note("creations with result waiting at other brokers outlived their gossip changes");
}

/// Rebalances and waits until each partition has a settled leader of its own; the leaders by
/// partition (index 0 is partition 1).
fn spread_leaders(cluster: &Cluster) -> Vec<usize> {
    let (status, body) = cluster
        .post(0, "/actuator/rebalance", HTTP_TIMEOUT)
        .expect("rebalance");
    assert_eq!(status, 200, "rebalance: {body}");
    cluster.wait_until("every broker to lead one partition", WAIT, || {
        let leaders = (1..=PARTITIONS)
            .map(|partition| cluster.settled_leader(partition).map(|(leader, _)| leader))
            .collect::<Result<Vec<_>, String>>()?;
        let mut distinct = leaders.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() == leaders.len() {
            Ok(leaders)
        } else {
            Err(format!("leaders of partitions 1..: {leaders:?}"))
        }
    })
}

/// Deploys `held_task`: `one_task` with jobs of type `held`, the only ones of their type.
fn deploy_held_task(runtime: &tokio::runtime::Runtime, client: &mut Client) {
    let held = String::from_utf8(common::gateway::bpmn("one_task.bpmn"))
        .expect("UTF-8")
        .replace("\"one_task\"", "\"held_task\"")
        .replace("type=\"work\"", "type=\"held\"");
    runtime
        .block_on(client.deploy_resource(common::gateway::with_deadline(
            pb::DeployResourceRequest {
                resources: vec![pb::Resource {
                    name: "held_task.bpmn".to_owned(),
                    content: held.into_bytes(),
                }],
                tenant_id: String::new(),
            },
            HTTP_TIMEOUT,
        )))
        .unwrap_or_else(|status| panic!("deploying held_task: {status:?}"));
}

type WithResult = Result<pb::CreateProcessInstanceWithResultResponse, tonic::Status>;

/// One creation with result of `held_task` per partition (round-robin) through broker
/// `gateway`'s gateway, with variables `{"n": i}`, waiting on a thread of its own so that its
/// HTTP/2 connection is served while the test's thread drives the cluster. (Its client is made
/// on that thread: a channel's worker runs on the runtime it was made on.)
fn create_with_result(gateway: usize) -> std::thread::JoinHandle<Vec<WithResult>> {
    std::thread::spawn(move || {
        let runtime = serving::runtime();
        let client = serving::client(&runtime, PORT_OFFSET, gateway_index(gateway));
        runtime.block_on(async move {
            let creations: Vec<_> = (0..PARTITIONS)
                .map(|n| {
                    let mut client = client.clone();
                    let request = pb::CreateProcessInstanceWithResultRequest {
                        request: Some(pb::CreateProcessInstanceRequest {
                            bpmn_process_id: "held_task".to_owned(),
                            version: -1,
                            variables: format!(r#"{{"n":{n}}}"#),
                            ..pb::CreateProcessInstanceRequest::default()
                        }),
                        request_timeout: i64::try_from(WAIT.as_millis() * 3).expect("short"),
                        fetch_variables: Vec::new(),
                    };
                    tokio::spawn(async move {
                        client
                            .create_process_instance_with_result(common::gateway::with_deadline(
                                request,
                                WAIT * 3,
                            ))
                            .await
                            .map(tonic::Response::into_inner)
                    })
                })
                .collect();
            let mut results = Vec::new();
            for creation in creations {
                results.push(creation.await.expect("the creation task"));
            }
            results
        })
    })
}

/// Takes broker `broker`'s replica of `partition` down until `seen` says the change was
/// gossiped, then heals it and waits until it is back in sync.
fn down_and_back(
    cluster: &Cluster,
    broker: usize,
    partition: u32,
    mut seen: impl FnMut() -> Result<(), String>,
) {
    let path = format!("/actuator/faults?failStorage={partition}&reopenFailures={REOPEN_FAILURES}");
    let (status, body) = cluster.post(broker, &path, HTTP_TIMEOUT).expect(&path);
    assert_eq!(status, 200, "{path}: {body}");
    cluster.wait_until(
        &format!("the gateway to see broker {broker}'s replica of {partition} INACTIVE"),
        WAIT,
        &mut seen,
    );
    let path = format!("/actuator/faults?healStorage={partition}");
    let (status, body) = cluster.post(broker, &path, HTTP_TIMEOUT).expect(&path);
    assert_eq!(status, 200, "{path}: {body}");
    cluster.wait_until("the replica to reopen", WAIT, || {
        match cluster.partition_view(broker, partition)?.down {
            None => Ok(()),
            Some(down) => Err(down),
        }
    });
    cluster.wait_replicas_synced(partition, WAIT);
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

/// `Ok` once Topology through `client` names broker `leader` the leader of `partition`.
fn leader_in_topology(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    leader: usize,
    partition: u32,
) -> Result<(), String> {
    let topology = runtime
        .block_on(client.topology(pb::TopologyRequest {}))
        .map_err(|status| format!("Topology: {status:?}"))?
        .into_inner();
    let node_id = i32::try_from(node_of(leader)).expect("a small node id");
    let partition_id = i32::try_from(partition).expect("few partitions");
    let leads = topology.brokers.iter().any(|broker| {
        broker.node_id == node_id
            && broker.partitions.iter().any(|p| {
                p.partition_id == partition_id
                    && p.role == i32::from(pb::partition::PartitionBrokerRole::Leader)
            })
    });
    if leads {
        Ok(())
    } else {
        Err(format!("{topology:?}"))
    }
}

/// `Ok` once Topology through `client` shows broker `victim`'s replica of `partition` INACTIVE
/// and UNHEALTHY.
fn inactive_in_topology(
    runtime: &tokio::runtime::Runtime,
    client: &mut Client,
    victim: usize,
    partition: u32,
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
        .and_then(|broker| {
            broker
                .partitions
                .iter()
                .find(|p| p.partition_id == i32::try_from(partition).expect("few partitions"))
        })
        .ok_or_else(|| {
            format!("no replica of partition {partition} on node {node_id}: {topology:?}")
        })?;
    let inactive = replica.role == i32::from(pb::partition::PartitionBrokerRole::Inactive);
    let unhealthy = replica.health == i32::from(pb::partition::PartitionBrokerHealth::Unhealthy);
    if inactive && unhealthy {
        Ok(())
    } else {
        Err(format!("{replica:?}"))
    }
}
