//! Three brokers, one partition, replication factor 3, a writer appending without pause.
//! SIGSTOP one follower: appends go on. SIGSTOP the other: nothing can commit, so no append is
//! acknowledged and the leader's commit index stands still. SIGCONT both: service resumes within
//! a bound. Finally every acknowledged append must be in every replica's journal at its
//! acknowledged index, and the journals must agree.

mod common;

use std::time::{Duration, Instant};

use common::{Cluster, ELECTION_TIMEOUT, Writer, check_ack_order, check_journals};
use sluice_broker::dev::DevOptions;

const PORT_OFFSET: u32 = 220;
const PARTITION: u32 = 1;
/// Bound of one append of the writer.
const APPEND_TIMEOUT: Duration = Duration::from_secs(3);
/// Acknowledgements to collect in each phase.
const ACKS_PER_PHASE: usize = 200;
/// After the second SIGSTOP, answers to appends the stopped follower had already taken may
/// still arrive for this long; after it, nothing may be acknowledged.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);
/// How long the partition stays without a majority, watched.
const NO_MAJORITY_WATCH: Duration = Duration::from_secs(7);

#[test]
fn cluster_sigstop() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 1,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::start("cluster_sigstop", options);
    cluster.wait_until(
        "partition 1 to elect a leader its replicas follow",
        Duration::from_secs(20),
        || cluster.settled_leader(PARTITION),
    );
    let writer = Writer::start(
        cluster.command_apis(),
        PARTITION,
        "s",
        APPEND_TIMEOUT,
        Duration::ZERO,
        Duration::from_mins(2),
    );
    cluster.wait_for_acks(&writer, ACKS_PER_PHASE, Duration::from_secs(20));
    let (leader, _) = cluster
        .settled_leader(PARTITION)
        .unwrap_or_else(|error| panic!("{error}"));
    let followers: Vec<usize> = cluster
        .cluster_brokers()
        .filter(|&index| index != leader)
        .collect();
    cluster.note(&format!(
        "broker {leader} leads, brokers {followers:?} follow"
    ));

    // One follower frozen: the leader and the other follower are a majority.
    let failures_before = writer.failures().len();
    cluster.pause(followers[0]);
    let acks = writer.ack_count();
    cluster.wait_for_acks(&writer, acks + ACKS_PER_PHASE, Duration::from_secs(10));
    let failures = writer.failures();
    assert_eq!(
        failures.len(),
        failures_before,
        "appends failed with one follower of three stopped: {:?}",
        &failures[failures_before..]
    );

    watch_without_majority(&cluster, &writer, leader, followers[1]);

    // Both continued: service resumes.
    cluster.resume(followers[0]);
    cluster.resume(followers[1]);
    let resumed_at = Instant::now();
    let first = cluster.wait_until(
        "an append to be acknowledged after SIGCONT",
        Duration::from_secs(20),
        || {
            writer
                .acks()
                .into_iter()
                .find(|ack| ack.finished >= resumed_at)
                .ok_or_else(|| {
                    format!(
                        "none yet; last failure: {:?}",
                        writer.last_failure().map(|failure| failure.error)
                    )
                })
        },
    );
    let resumed = first.finished - resumed_at;
    cluster.note(&format!(
        "service resumed {:.3} s after SIGCONT (index {})",
        resumed.as_secs_f64(),
        first.index
    ));
    let bound = ELECTION_TIMEOUT * 5 + APPEND_TIMEOUT;
    assert!(
        resumed <= bound,
        "the first acknowledgement after SIGCONT came after {resumed:?}, above {bound:?}"
    );
    let acks = writer.ack_count();
    cluster.wait_for_acks(&writer, acks + ACKS_PER_PHASE, Duration::from_secs(20));

    let (acks, failures) = writer.finish();
    cluster.note(&format!(
        "writer: {} acknowledged, {} failed",
        acks.len(),
        failures.len()
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

/// Freezes the second follower too, then watches for [`NO_MAJORITY_WATCH`]: no append may be
/// acknowledged (after [`IN_FLIGHT_GRACE`]) and the leader's commit index must not move, while
/// the writer keeps trying and failing.
fn watch_without_majority(cluster: &Cluster, writer: &Writer, leader: usize, follower: usize) {
    cluster.pause(follower);
    let stopped_at = Instant::now();
    let acks_at_stop = writer.ack_count();
    std::thread::sleep(IN_FLIGHT_GRACE);
    let acks_at_start = writer.ack_count();
    let failures_at_start = writer.failures().len();
    let view = cluster
        .partition_view(leader, PARTITION)
        .unwrap_or_else(|error| panic!("{error}"));
    let commit_at_start = view.commit_index;
    cluster.note(&format!(
        "no majority: {} acknowledged in the grace period; leader broker {leader} is {} in term \
         {} with commitIndex {commit_at_start}",
        acks_at_start - acks_at_stop,
        view.role,
        view.term
    ));
    let watch_end = Instant::now() + NO_MAJORITY_WATCH;
    let mut last_view = view;
    while Instant::now() < watch_end {
        cluster.assert_no_exits();
        let acks = writer.acks();
        let late: Vec<_> = acks[acks_at_start..]
            .iter()
            .map(|ack| {
                (
                    String::from_utf8_lossy(&ack.payload).into_owned(),
                    ack.index,
                )
            })
            .collect();
        assert!(
            late.is_empty(),
            "acknowledged while two of three replicas were stopped (more than \
             {IN_FLIGHT_GRACE:?} after the second SIGSTOP): {late:?}"
        );
        last_view = cluster
            .partition_view(leader, PARTITION)
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(
            last_view.commit_index, commit_at_start,
            "broker {leader}'s commitIndex moved without a majority: {last_view:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let failed = writer.failures().len() - failures_at_start;
    cluster.note(&format!(
        "no majority for {:.1} s: nothing acknowledged, commitIndex stayed {commit_at_start}, \
         {failed} appends failed; broker {leader} is now {} in term {}",
        stopped_at.elapsed().as_secs_f64(),
        last_view.role,
        last_view.term
    ));
    assert!(
        failed >= 1,
        "the writer saw no failed append in {NO_MAJORITY_WATCH:?} without a majority"
    );
}
