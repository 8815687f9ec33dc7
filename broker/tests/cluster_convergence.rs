//! Three brokers, three partitions, replication factor 2: gossip converges, every partition
//! elects one leader among its replicas and every broker agrees on it, a rebalance puts each
//! partition's leadership on its preferred replica, and appends to every partition commit.

mod common;

use std::time::Duration;

use common::{Cluster, PartitionView, append_once, index_of, node_of, replicas_of};
use serde_json::Value;
use sluice_broker::dev::DevOptions;
use sluice_broker::partitioning::{PartitionId, PartitionLayout};

const PORT_OFFSET: u32 = 200;

#[test]
fn cluster_convergence() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 3,
        replication_factor: 2,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("cluster_convergence", options);
    let layout = cluster.layout();
    for partition in layout.partition_ids() {
        cluster.note(&format!(
            "layout: partition {partition} on nodes {:?} (preferred leader {:?})",
            replicas_of(&layout, partition),
            layout.preferred_leader(partition)
        ));
    }

    wait_for_gossip(&cluster, &layout);
    let leaders = wait_for_leaders(&cluster, &layout);
    for (partition, leader, view) in &leaders {
        cluster.note(&format!(
            "partition {partition}: leader broker {leader} in term {}, preferred leader {}",
            view.term, view.preferred_leader
        ));
        assert_eq!(
            Some(view.preferred_leader),
            layout.preferred_leader(*partition),
            "partition {partition}: the broker's preferred leader differs from the layout's"
        );
    }
    let own_entries = own_entry_problems(&cluster);
    assert!(
        own_entries.is_empty(),
        "brokers list themselves in /actuator/cluster without their API addresses:\n{}",
        own_entries.join("\n")
    );
    rebalance(&cluster, &layout);
    append_everywhere(&cluster, &layout);
    cluster.terminate_all();
}

/// Every broker lists every broker ALIVE, with its internal address, the API addresses it
/// gossips and its layout partitions.
fn wait_for_gossip(cluster: &Cluster, layout: &PartitionLayout) {
    cluster.wait_until(
        "every broker to list the three brokers ALIVE with their addresses",
        Duration::from_secs(20),
        || {
            for index in cluster.cluster_brokers() {
                let view = cluster.cluster_view(index)?;
                let shape = (
                    view.cluster_size,
                    view.partitions_count,
                    view.replication_factor,
                );
                if shape != (3, 3, 2) {
                    return Err(format!("broker {index} reports the shape {shape:?}"));
                }
                if view.brokers.len() != 3 {
                    return Err(format!(
                        "broker {index} lists {} brokers: {view:?}",
                        view.brokers.len()
                    ));
                }
                for other in cluster.cluster_brokers() {
                    let expected = &cluster.brokers[other];
                    let member = view
                        .broker(node_of(other))
                        .ok_or_else(|| format!("broker {index} does not list broker {other}"))?;
                    if member.state != "ALIVE"
                        || member.address != expected.internal_api().to_string()
                    {
                        return Err(format!("broker {index} lists broker {other} as {member:?}"));
                    }
                    let hosted: Vec<u32> =
                        member.partitions.iter().map(|p| p.partition_id).collect();
                    if hosted != layout.partitions_of(node_of(other)) {
                        return Err(format!(
                            "broker {index} lists broker {other} with partitions {hosted:?}, the \
                             layout says {:?}",
                            layout.partitions_of(node_of(other))
                        ));
                    }
                    // A broker learns the others' API addresses from gossip (its own entry is
                    // checked separately).
                    if other != index
                        && (member.command_api != Some(expected.command_api().to_string())
                            || member.management != Some(expected.management().to_string()))
                    {
                        return Err(format!(
                            "broker {index} lists broker {other} with commandApi {:?} and \
                             management {:?}",
                            member.command_api, member.management
                        ));
                    }
                }
            }
            Ok(())
        },
    );
}

/// Each broker runs exactly its layout partitions; every partition has one leader, one of its
/// replicas, that its replicas follow and that every broker's topology names alone.
fn wait_for_leaders(
    cluster: &Cluster,
    layout: &PartitionLayout,
) -> Vec<(PartitionId, usize, PartitionView)> {
    cluster.wait_until(
        "one leader per partition that every broker agrees on",
        Duration::from_secs(20),
        || {
            for index in cluster.cluster_brokers() {
                let local: Vec<u32> = cluster.partitions_view(index)?.into_keys().collect();
                if local != layout.partitions_of(node_of(index)) {
                    return Err(format!(
                        "broker {index} runs replicas of {local:?}, the layout says {:?}",
                        layout.partitions_of(node_of(index))
                    ));
                }
            }
            let mut leaders = Vec::new();
            for partition in layout.partition_ids() {
                let (leader, view) = cluster.settled_leader(partition)?;
                if !replicas_of(layout, partition).contains(&node_of(leader)) {
                    return Err(format!(
                        "partition {partition} is led by broker {leader}, not a replica"
                    ));
                }
                for index in cluster.cluster_brokers() {
                    let topology = cluster.cluster_view(index)?;
                    let named: Vec<(u32, u64)> = topology
                        .brokers
                        .iter()
                        .flat_map(|b| {
                            b.partitions
                                .iter()
                                .filter(|r| r.partition_id == partition && r.role == "LEADER")
                                .map(|r| (b.node_id, r.term))
                        })
                        .collect();
                    if named != [(node_of(leader), view.term)] {
                        return Err(format!(
                            "broker {index}'s topology names leaders {named:?} of partition \
                             {partition}; its replicas follow broker {leader} in term {}",
                            view.term
                        ));
                    }
                }
                leaders.push((partition, leader, view));
            }
            Ok(leaders)
        },
    )
}

/// A broker's own entry in its `/actuator/cluster` should carry its API addresses like the
/// others'; the problems found.
fn own_entry_problems(cluster: &Cluster) -> Vec<String> {
    let mut problems = Vec::new();
    for index in cluster.cluster_brokers() {
        let view = cluster.cluster_view(index).expect("cluster view");
        let own = view.broker(node_of(index)).expect("a broker lists itself");
        let expected = &cluster.brokers[index];
        if own.command_api != Some(expected.command_api().to_string())
            || own.management != Some(expected.management().to_string())
        {
            problems.push(format!(
                "broker {index} lists itself with commandApi {:?} and management {:?}, expected \
                 {} and {}",
                own.command_api,
                own.management,
                expected.command_api(),
                expected.management()
            ));
        }
    }
    problems
}

/// `POST /actuator/rebalance` on broker 0 reaches every broker, and every partition ends up led
/// by its preferred leader.
fn rebalance(cluster: &Cluster, layout: &PartitionLayout) {
    let (status, body) = cluster
        .post(0, "/actuator/rebalance", Duration::from_secs(10))
        .expect("POST /actuator/rebalance");
    assert_eq!(status, 200, "rebalance answered {status}: {body}");
    cluster.note(&format!(
        "rebalance answered {}",
        body.split_whitespace().collect::<String>()
    ));
    let answer: Value = serde_json::from_str(&body).expect("rebalance answers JSON");
    let transfers = answer
        .get("transfers")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("rebalance answer without transfers: {body}"));
    assert!(
        transfers.contains_key("0"),
        "broker 0 does not report its own transfers: {body}"
    );
    for other in [1, 2] {
        let address = cluster.brokers[other].management().to_string();
        let reply = transfers
            .get(&address)
            .unwrap_or_else(|| panic!("rebalance was not fanned out to broker {other}: {body}"));
        assert!(
            reply.get("error").is_none(),
            "rebalance on broker {other} failed: {reply}"
        );
    }
    cluster.wait_until(
        "every partition to be led by its preferred leader",
        Duration::from_secs(10),
        || {
            for partition in layout.partition_ids() {
                let (leader, view) = cluster.settled_leader(partition)?;
                if node_of(leader) != view.preferred_leader {
                    return Err(format!(
                        "partition {partition} is led by broker {leader}, preferred is {}",
                        view.preferred_leader
                    ));
                }
            }
            Ok(())
        },
    );
}

/// An append to every partition commits, at its preferred leader.
fn append_everywhere(cluster: &Cluster, layout: &PartitionLayout) {
    for partition in layout.partition_ids() {
        let payload = format!("convergence-p{partition}");
        let index = append_once(
            cluster.command_apis(),
            partition,
            payload.as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            index >= 2,
            "partition {partition}: committed at index {index}, before the leader's first entry"
        );
        let (leader, view) = cluster
            .settled_leader(partition)
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            view.commit_index >= index,
            "partition {partition}: leader broker {leader} reports commitIndex {} below the \
             acknowledged index {index}",
            view.commit_index
        );
        assert_eq!(
            index_of(view.preferred_leader),
            leader,
            "partition {partition}: leadership moved away from the preferred leader"
        );
        cluster.note(&format!(
            "partition {partition}: {payload} committed at index {index} by broker {leader}"
        ));
    }
}
