//! Three brokers, three partitions, replication factor 3. A writer appends to partition 1
//! without pause; its leader is killed with SIGKILL. A new leader must serve within a few
//! election timeouts; the killed broker, restarted, must catch up; a rebalance hands the
//! leadership back to it while the writer goes on. Finally every acknowledged append must be in
//! every replica's journal at its acknowledged index, and the journals must agree.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, ELECTION_TIMEOUT, Writer, check_ack_order, check_journals, node_of};
use sluice_broker::dev::DevOptions;
use sluice_broker::partitioning::NodeId;

const PORT_OFFSET: u32 = 210;
const PARTITION: u32 = 1;
/// Bound of one append of the writer.
const APPEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Acknowledgements to collect in each phase.
const ACKS_PER_PHASE: usize = 300;

#[test]
fn cluster_failover() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 3,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("cluster_failover", options);
    let layout = cluster.layout();
    let preferred = layout
        .preferred_leader(PARTITION)
        .expect("the partition exists");
    cluster.wait_until(
        "partition 1 to elect a leader its replicas follow",
        Duration::from_secs(20),
        || cluster.settled_leader(PARTITION),
    );

    let writer = Writer::start(
        cluster.command_apis(),
        PARTITION,
        "w",
        APPEND_TIMEOUT,
        Duration::ZERO,
        Duration::from_mins(2),
    );
    cluster.wait_for_acks(&writer, ACKS_PER_PHASE, Duration::from_secs(20));
    let killed = crash_leader(&cluster, &writer);
    restart_and_catch_up(&cluster, &writer, killed);
    rebalance_under_load(&cluster, &writer, preferred);

    let (acks, failures) = writer.finish();
    cluster.note(&format!(
        "writer: {} acknowledged, {} failed (first failure: {:?})",
        acks.len(),
        failures.len(),
        failures.first().map(|failure| &failure.error)
    ));
    check_ack_order(&acks).unwrap_or_else(|error| panic!("{error}"));
    cluster.wait_replicas_synced(PARTITION, Duration::from_secs(20));
    cluster.terminate_all();

    let journals = cluster.read_journals(PARTITION);
    let check = check_journals(&journals, &acks).unwrap_or_else(|error| {
        panic!("partition {PARTITION}: the journals do not hold what was acknowledged:\n{error}")
    });
    cluster.note(&format!("journals: {check:?}"));
}

/// Kills the leader of the partition with SIGKILL; a new leader must acknowledge within a few
/// election timeouts. Returns the killed broker.
fn crash_leader(cluster: &Cluster, writer: &Writer) -> usize {
    let (leader, view) = cluster
        .settled_leader(PARTITION)
        .unwrap_or_else(|error| panic!("{error}"));
    cluster.note(&format!(
        "killing broker {leader}, leader of partition {PARTITION} in term {} (commitIndex {})",
        view.term, view.commit_index
    ));
    let killed_at = Instant::now();
    cluster.kill(leader);
    let first = cluster.wait_until(
        "an append sent after the kill to be acknowledged",
        Duration::from_secs(20),
        || {
            writer.first_ack_sent_after(killed_at).ok_or_else(|| {
                format!(
                    "none yet; last failure: {:?}",
                    writer.last_failure().map(|failure| failure.error)
                )
            })
        },
    );
    let failover = first.finished - killed_at;
    cluster.note(&format!(
        "failover: first acknowledgement {:.3} s after the kill (index {})",
        failover.as_secs_f64(),
        first.index
    ));
    let bound = ELECTION_TIMEOUT * 5 + Duration::from_secs(1);
    assert!(
        failover <= bound,
        "the first append after the kill was acknowledged after {failover:?}, above {bound:?}"
    );
    let (new_leader, new_view) = cluster.wait_until(
        "the surviving replicas to settle on a new leader",
        Duration::from_secs(10),
        || cluster.settled_leader(PARTITION),
    );
    assert_ne!(new_leader, leader, "the killed broker cannot lead");
    assert!(
        new_view.term > view.term,
        "the new leader's term {} is not above the old {}",
        new_view.term,
        view.term
    );
    let acks = writer.ack_count();
    cluster.wait_for_acks(writer, acks + ACKS_PER_PHASE, Duration::from_secs(20));
    leader
}

/// Restarts the killed broker while the writer goes on; it must catch up with the leader.
fn restart_and_catch_up(cluster: &Cluster, writer: &Writer, killed: usize) {
    cluster.spawn(killed);
    let restarted_at = Instant::now();
    let (leader, view) = cluster.wait_until(
        &format!("restarted broker {killed} to answer and follow the leader"),
        Duration::from_secs(20),
        || cluster.settled_leader(PARTITION),
    );
    let target = view.commit_index;
    cluster.note(&format!(
        "broker {leader} leads; its commitIndex is {target}, {} acknowledged so far",
        writer.ack_count()
    ));
    cluster.wait_until(
        &format!("restarted broker {killed} to flush up to the leader's commitIndex {target}"),
        Duration::from_secs(20),
        || {
            let view = cluster.partition_view(killed, PARTITION)?;
            if view.durable_index >= target {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    );
    cluster.note(&format!(
        "catch-up: {:.3} s after the restart",
        restarted_at.elapsed().as_secs_f64()
    ));
}

/// A rebalance hands the leadership back to the preferred replica while the writer goes on.
fn rebalance_under_load(cluster: &Cluster, writer: &Writer, preferred: NodeId) {
    let (current, _) = cluster
        .settled_leader(PARTITION)
        .unwrap_or_else(|error| panic!("{error}"));
    cluster.note(&format!(
        "rebalancing: partition {PARTITION} is led by broker {current}, preferred is {preferred}"
    ));
    let (status, body) = cluster
        .post(current, "/actuator/rebalance", Duration::from_secs(10))
        .expect("POST /actuator/rebalance");
    assert_eq!(status, 200, "rebalance answered {status}: {body}");
    cluster.wait_until(
        "the preferred replica to lead partition 1 again",
        Duration::from_secs(10),
        || {
            let (leader, _) = cluster.settled_leader(PARTITION)?;
            if node_of(leader) == preferred {
                Ok(())
            } else {
                Err(format!("led by broker {leader}"))
            }
        },
    );
    let acks = writer.ack_count();
    cluster.wait_for_acks(writer, acks + ACKS_PER_PHASE, Duration::from_secs(20));
}
