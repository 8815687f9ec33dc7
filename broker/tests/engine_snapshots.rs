//! Snapshots on a real cluster: three brokers, one partition, replication factor 3, a snapshot
//! every 100 records and 5 MiB journal segments (the smallest), so compaction happens quickly.
//!
//! One follower is stopped (SIGSTOP) while instances with 16 KiB of variables pile up; the
//! leader snapshots and compacts its journal past what the follower has. Continued, the follower
//! can only catch up by installing the leader's snapshot, and does. Then the leader is killed:
//! the new leader serves the waiting instances' jobs; the killed broker restarts from its own
//! snapshot plus its log. Last, a follower's newest snapshot is damaged while it is stopped: it
//! falls back to the one before and catches up.
//!
//! Commands go through the gRPC gateway of a broker that is neither stopped nor killed at that
//! point (they used to go through the raw command API, which now takes raw appends only).

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use common::gateway::{self, Client};
use sluice_broker::dev::DevOptions;
use tokio::runtime::Runtime;

const PORT_OFFSET: u32 = 260;
const PARTITION: u32 = 1;
/// The gRPC deadline of every call; the gateway retries on a new leader within it.
const DEADLINE: Duration = Duration::from_secs(15);
/// Client-side bound of the channel: above every deadline, so the gateway's answer is seen.
const CHANNEL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one activation long-polls.
const POLL: Duration = Duration::from_secs(1);
/// Instances created while the follower is stopped (about 33 KiB of log each: 20 MB).
const INSTANCES: usize = 600;

/// A client of broker `index`'s gateway.
fn connect(runtime: &Runtime, index: usize) -> Client {
    let index = u32::try_from(index).expect("a broker index");
    let endpoint = gateway::plain_endpoint(PORT_OFFSET, index, CHANNEL_TIMEOUT);
    Client::new(runtime.block_on(gateway::connect(&endpoint, Duration::from_secs(20))))
}

fn activate_and_complete(runtime: &Runtime, client: &mut Client, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = 0;
    while done < count {
        assert!(
            Instant::now() < deadline,
            "completed only {done} of {count} jobs"
        );
        let max = i32::try_from(count - done).unwrap_or(32).min(32);
        let jobs = runtime.block_on(gateway::activate(
            client,
            "work",
            "snapshots-test",
            max,
            POLL,
            DEADLINE,
        ));
        for job in jobs {
            runtime
                .block_on(gateway::complete(client, job.key, DEADLINE))
                .unwrap_or_else(|status| panic!("completing job {}: {status:?}", job.key));
            done += 1;
        }
    }
}

/// Waits until the live replica at `index` has applied the leader's commit index.
fn wait_caught_up(cluster: &Cluster, index: usize, what: &str) {
    cluster.wait_until(what, Duration::from_mins(1), || {
        let (leader, leader_view) = cluster.settled_leader(PARTITION)?;
        let view = cluster.partition_view(index, PARTITION)?;
        if view.applied_index >= leader_view.commit_index && leader_view.commit_index > 0 {
            Ok(view)
        } else {
            Err(format!(
                "broker {index} applied {} of leader {leader}'s commit index {}",
                view.applied_index, leader_view.commit_index
            ))
        }
    });
}

#[test]
#[expect(clippy::too_many_lines, reason = "one scenario, told step by step")]
fn engine_snapshots() {
    let options = DevOptions {
        dir: None,
        brokers: 3,
        partitions: 1,
        replication_factor: 3,
        port_offset: PORT_OFFSET,
    };
    let cluster = Cluster::create("engine_snapshots", options);
    for broker in &cluster.brokers {
        let mut env = broker.env.borrow_mut();
        env.retain(|(key, _)| key != "ZEEBE_BROKER_DATA_LOGSEGMENTSIZE");
        env.push(("ZEEBE_BROKER_DATA_LOGSEGMENTSIZE".into(), "5MB".into()));
        // Small segments hold the largest entry only with a smaller message limit.
        env.push(("ZEEBE_BROKER_NETWORK_MAXMESSAGESIZE".into(), "1MB".into()));
        env.push(("ZEEBE_BROKER_DATA_SNAPSHOTRECORDS".into(), "100".into()));
    }
    for index in 0..cluster.brokers.len() {
        cluster.spawn(index);
    }
    let (leader, _) = cluster.wait_until("a leader", Duration::from_secs(20), || {
        cluster.settled_leader(PARTITION)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The client uses the gateway of the broker that is neither stopped nor killed below.
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let other = (0..3)
        .find(|i| *i != leader && *i != follower)
        .expect("another follower");
    let mut client = connect(&runtime, other);
    let deployed = runtime.block_on(gateway::deploy(&mut client, &["one_task.bpmn"], DEADLINE));
    assert_eq!(deployed.deployments.len(), 1, "{deployed:?}");

    // A follower stops; the log grows well past several segments and snapshots.
    cluster.pause(follower);
    let padding = "x".repeat(16 << 10);
    for n in 0..INSTANCES {
        let variables = format!(r#"{{"n":{n},"padding":"{padding}"}}"#);
        runtime.block_on(gateway::create(
            &mut client,
            "one_task",
            &variables,
            DEADLINE,
        ));
    }
    let view = cluster
        .partition_view(leader, PARTITION)
        .expect("the leader's view");
    cluster.note(&format!(
        "leader {leader}: commit index {}, {} snapshots taken",
        view.commit_index, view.snapshots_taken
    ));
    assert!(view.snapshots_taken >= 2, "the leader snapshots: {view:?}");

    // Continued, the follower needs the leader's snapshot: its next entries are compacted.
    cluster.resume(follower);
    let caught_up = {
        wait_caught_up(&cluster, follower, "the stopped follower to catch up");
        cluster
            .partition_view(follower, PARTITION)
            .expect("the follower's view")
    };
    assert!(
        caught_up.snapshots_installed >= 1,
        "the follower caught up by installing a snapshot: {caught_up:?}"
    );

    // The leader dies; the new one serves the waiting instances.
    cluster.kill(leader);
    cluster.wait_until("a new leader", Duration::from_secs(30), || {
        cluster.settled_leader(PARTITION).and_then(|(new, view)| {
            if new == leader {
                Err("the killed broker still leads".to_owned())
            } else {
                Ok((new, view))
            }
        })
    });
    activate_and_complete(&runtime, &mut client, 50);
    cluster.note("the new leader completed 50 waiting instances");

    // The killed broker restarts from its own snapshot and log.
    cluster.spawn(leader);
    wait_caught_up(&cluster, leader, "the restarted broker to catch up");
    let log = std::fs::read_to_string(&cluster.brokers[leader].log).expect("its log");
    assert!(
        log.contains("restored the engine from the snapshot"),
        "the restarted broker started from its snapshot"
    );

    // A damaged newest snapshot: the one before it is used.
    let (current, _) = cluster.settled_leader(PARTITION).expect("a settled leader");
    // A follower that took its own snapshots (one that installed the leader's has no older
    // snapshot its journal can complete).
    let victim = (0..3)
        .find(|i| {
            *i != current
                && cluster
                    .partition_view(*i, PARTITION)
                    .is_ok_and(|view| view.snapshots_installed == 0 && view.snapshots_taken >= 2)
        })
        .expect("a follower with its own snapshots");
    let mut client = connect(&runtime, current);
    cluster.terminate(&[victim]);
    let snapshots = cluster.brokers[victim]
        .data_dir
        .join(format!("partition-{PARTITION}"))
        .join("snapshots");
    let mut files: Vec<_> = std::fs::read_dir(&snapshots)
        .expect("the snapshot directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .collect();
    files.sort();
    let newest = files.last().expect("a snapshot file").clone();
    let mut bytes = std::fs::read(&newest).expect("reads");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&newest, bytes).expect("writes");
    cluster.note(&format!("damaged {}", newest.display()));
    cluster.spawn(victim);
    wait_caught_up(
        &cluster,
        victim,
        "the broker with a damaged snapshot to catch up",
    );
    let log = std::fs::read_to_string(&cluster.brokers[victim].log).expect("its log");
    assert!(
        log.contains("damaged"),
        "the damaged snapshot was reported and skipped"
    );
    activate_and_complete(&runtime, &mut client, 20);
    cluster.note("after all that, jobs still complete");
}
